"""Training on tiny real models: every objective, LoRA merge, pruning, bad data, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from typer.testing import CliRunner

from dec2vec import Encoder
from dec2vec.cli import app
from dec2vec.files import DataFormatError
from dec2vec.training import trainer as trainer_module
from dec2vec.training.objectives import causal_labels, info_nce, similarity_distillation
from dec2vec.training.recipes import Recipe, load_recipe, train
from dec2vec.training.trainer import StageConfig, StageTrainer, add_residual_dropout, load_stage_data

ANIMALS = ["cat", "dog", "bird", "fish", "horse", "mouse", "sheep", "goat"]
PLACES = ["park", "house", "street", "garden", "river", "forest", "beach", "field"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    pairs = [
        {
            "query": f"a {a} in the {p}",
            "positive": f"the {a} is at the {p}",
            "negative": f"a {a} far from any {p}",
        }
        for a in ANIMALS
        for p in PLACES
    ]
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    (folder / "text.txt").write_text(
        "".join(f"the {a} walks to the {p} today\n" for a in ANIMALS for p in PLACES)
    )
    return folder


def _stage(corpus, objective, **kw):
    data = [str(corpus / ("pairs.jsonl" if objective in ("supervised", "grit", "distill") else "text.txt"))]
    defaults = {
        "data": data,
        "steps": 30,
        "batch_size": 8,
        "learning_rate": 5e-3,
        "bf16": False,
        "checkpoint_every": 10,
    }
    if objective == "grit":
        defaults["generation_data"] = [str(corpus / "text.txt")]
    return StageConfig(name=objective, objective=objective, **{**defaults, **kw})


def _losses(directory):
    return [json.loads(line)["loss"] for line in (directory / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("objective", ["mntp", "simcse", "supervised", "grit", "distill"])
def test_each_objective_trains_and_lowers_its_loss(objective, corpus, make_tiny_checkpoint, tmp_path):
    encoder = Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional")
    extra = {"dropout": 0.1} if objective == "simcse" else {}
    if objective == "distill":  # any model spec teaches: here another tiny decoder, as a dec2vec encoder
        extra = {"teacher": f"{make_tiny_checkpoint('qwen2')}:causal:mean"}
    StageTrainer(encoder, _stage(corpus, objective, **extra), tmp_path / "stage").run()
    losses = _losses(tmp_path / "stage")
    assert len(losses) == 30 and np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert (tmp_path / "stage" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not any("lora" in name for name, _ in encoder.model.named_parameters())  # merged at the end
    if objective == "grit":  # one set of weights: embeds bidirectionally, generates causally
        assert encoder.encode(["a cat in the park"]).shape == (1, 32)
        assert isinstance(encoder.generate("the cat", max_new_tokens=4), str)
        # the log names both terms, and they add up to the loss (lambda_rep = lambda_gen = 1)
        rows = [json.loads(line) for line in (tmp_path / "stage" / "log.jsonl").read_text().splitlines()]
        assert all(r["loss"] == pytest.approx(r["rep_loss"] + r["gen_loss"], rel=1e-5) for r in rows)
        assert np.mean([r["gen_loss"] for r in rows[-5:]]) < np.mean([r["gen_loss"] for r in rows[:5]])
    if objective == "distill":  # on pairs: the teacher's similarity structure plus InfoNCE (lambda_rep = 1)
        rows = [json.loads(line) for line in (tmp_path / "stage" / "log.jsonl").read_text().splitlines()]
        assert all(r["loss"] == pytest.approx(r["rep_loss"] + r["distill_loss"], rel=1e-5) for r in rows)
        assert np.mean([r["distill_loss"] for r in rows[-5:]]) < np.mean(
            [r["distill_loss"] for r in rows[:5]]
        )


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_next_token_loss_with_left_padding_is_each_rows_own_packed_or_not(
    arch, corpus, make_tiny_checkpoint, tmp_path
):
    """Gemma's tokenizer pads on the left: no pad may predict a row's first token, packed or padded."""
    encoder = Encoder.load(make_tiny_checkpoint(arch, padding_side="left"), attention="bidirectional")
    trainer = StageTrainer(encoder, _stage(corpus, "grit", steps=2), tmp_path / "stage")
    assert trainer.packing[True]
    texts = ["the cat", "the dog walks to the river today", "a bird in the park"]

    def loss(batch_texts: list[str]) -> torch.Tensor:
        batch = trainer._collate(batch_texts)
        labels = causal_labels(batch["input_ids"], batch["attention_mask"])
        with torch.no_grad():
            return trainer._token_loss(batch["input_ids"], batch["attention_mask"], labels, causal=True)

    packed = loss(texts)
    trainer.packing[True] = False
    padded = loss(texts)
    counts = [len(trainer._collate([t])["input_ids"][0]) - 1 for t in texts]
    alone = sum(loss([t]) * n for t, n in zip(texts, counts, strict=True)) / sum(counts)
    torch.testing.assert_close(packed, padded, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(padded, alone, rtol=1e-4, atol=1e-5)


def test_distill_on_text_caches_the_teacher_and_keeps_generation(corpus, make_tiny_checkpoint, tmp_path):
    teacher = f"{make_tiny_checkpoint('qwen2')}:causal:mean"
    stage = _stage(
        corpus, "distill", data=[str(corpus / "text.txt")], teacher=teacher, lambda_gen=0.5,
        generation_data=[str(corpus / "text.txt")], steps=20,
    )  # fmt: skip
    encoder = Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional")
    first = StageTrainer(encoder, stage, tmp_path / "a")
    texts = {text for _, indices in first.data.plan for i in indices for text in [first.data.datasets[0][i]]}
    assert set(first.teacher_vectors) == texts  # exactly the texts the plan trains on
    first.run()
    rows = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert set(rows[0]) >= {"distill_loss", "gen_loss"} and "rep_loss" not in rows[0]  # text: no pairs
    assert all(r["loss"] == pytest.approx(r["distill_loss"] + 0.5 * r["gen_loss"], rel=1e-5) for r in rows)
    cache = list((tmp_path / "dec2vec-home" / "embeddings").rglob("*.npz"))
    assert len(cache) == 1  # one file for the teacher's vectors of this stage's texts
    again = StageTrainer(
        Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional"), stage, tmp_path / "b"
    )
    assert list((tmp_path / "dec2vec-home" / "embeddings").rglob("*.npz")) == cache
    np.testing.assert_array_equal(
        again.teacher_vectors[next(iter(texts))], first.teacher_vectors[next(iter(texts))]
    )
    with pytest.raises(ValueError, match="a teacher is what a distill stage needs"):
        _stage(corpus, "distill")
    with pytest.raises(ValueError, match="a teacher is what a distill stage needs"):
        _stage(corpus, "supervised", teacher=teacher)
    with pytest.raises(ValueError, match="apply to distill stages only"):
        _stage(corpus, "supervised", distill_loss="mse")
    with pytest.raises(ValueError, match="distill_loss must be 'kl' or 'mse'"):
        _stage(corpus, "distill", teacher=teacher, distill_loss="cosine")
    with pytest.raises(ValueError, match="apply to distill stages only"):
        _stage(corpus, "supervised", distill_temperature=0.2)
    with pytest.raises(ValueError, match="apply to distill stages only"):
        _stage(corpus, "grit", distill_memory=64)
    with pytest.raises(ValueError, match="distill_memory is a count of texts >= 0"):
        _stage(corpus, "distill", teacher=teacher, distill_memory=-1)
    with pytest.raises(ValueError, match="distill_temperature applies to distill_loss = 'kl' only"):
        _stage(corpus, "distill", teacher=teacher, distill_loss="mse", distill_temperature=0.2)


def test_distill_temperature_softens_the_kl_and_leaves_infonce_alone(corpus, make_tiny_checkpoint, tmp_path):
    stage = _stage(
        corpus, "distill", teacher=f"{make_tiny_checkpoint('qwen2')}:causal:mean", distill_temperature=0.5
    )
    trainer = StageTrainer(
        Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional"), stage, tmp_path
    )
    dataset, indices = trainer.data.plan[0]
    pairs = [trainer.data.datasets[dataset][i] for i in indices]
    texts = [p.query for p in pairs] + [p.positive for p in pairs] + [n for p in pairs for n in p.negatives]
    with torch.no_grad():
        terms = trainer._loss(0)
        queries, keys = trainer._embed(texts[: len(pairs)]), trainer._embed(texts[len(pairs) :])
        teacher = trainer._teacher(texts)
    student = torch.cat([queries, keys])
    soft = similarity_distillation(student, teacher, 0.5).item()
    assert terms["distill_loss"].item() == pytest.approx(soft, rel=1e-4)
    assert soft != pytest.approx(
        similarity_distillation(student, teacher, stage.temperature).item(), rel=1e-2
    )
    # InfoNCE keeps the stage's own temperature
    assert terms["rep_loss"].item() == pytest.approx(
        info_nce(queries, keys, stage.temperature).item(), rel=1e-4
    )


def test_distill_memory_keeps_the_last_batches_and_joins_every_row(corpus, make_tiny_checkpoint, tmp_path):
    teacher = f"{make_tiny_checkpoint('qwen2')}:causal:mean"
    stage = _stage(corpus, "distill", data=[str(corpus / "text.txt")], teacher=teacher, distill_memory=16)
    trainer = StageTrainer(
        Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional"), stage, tmp_path
    )
    batches = [[trainer.data.datasets[d][i] for i in indices] for d, indices in trainer.data.plan[:3]]
    with torch.no_grad():
        first, second = trainer._loss(0)["loss"], trainer._loss(1)["loss"]
        assert trainer.memory[0].shape == (16, 32)  # two batches of 8: the memory is full
        trainer._loss(2)  # a third pushes the first out
        np.testing.assert_array_equal(trainer.memory[1].numpy(), trainer._teacher(batches[1] + batches[2]))
        student = [trainer._embed(b) for b in batches[:2]]
        teachers = [trainer._teacher(b) for b in batches[:2]]
    assert first.item() == pytest.approx(similarity_distillation(student[0], teachers[0]).item(), rel=1e-4)
    with_memory = similarity_distillation(student[1], teachers[1], memory=(student[0], teachers[0]))
    assert second.item() == pytest.approx(with_memory.item(), rel=1e-4)
    assert second.item() != pytest.approx(similarity_distillation(student[1], teachers[1]).item(), rel=1e-2)
    small = StageTrainer(
        Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional"),
        _stage(corpus, "distill", data=[str(corpus / "text.txt")], teacher=teacher, distill_memory=5),
        tmp_path / "small",
    )
    with torch.no_grad():
        small._loss(0)
    np.testing.assert_array_equal(
        small.memory[1].numpy(), small._teacher(batches[0][-5:])
    )  # fewer than a batch


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_residual_dropout_makes_twins_differ_only_while_training(arch, make_tiny_checkpoint):
    encoder = Encoder.load(make_tiny_checkpoint(arch), attention="bidirectional")
    texts = ["a cat in the park", "the dog is at the house"]
    baseline = encoder.encode(texts)
    encoder.model.train()  # llama has no dropout modules: without hooks, train-mode twins are equal
    batch = encoder.collate(texts)
    twins = lambda: [encoder.embed_batch(batch) for _ in range(2)]  # noqa: E731
    if arch == "llama":
        assert torch.equal(*twins())
    hooks = add_residual_dropout(encoder.model, 0.3)
    first, second = twins()
    assert not torch.allclose(first, second)
    encoder.model.eval()
    assert np.allclose(encoder.encode(texts), baseline, atol=1e-6)  # inactive in eval mode
    encoder.model.train()
    for hook in hooks:
        hook.remove()
    if arch == "llama":
        assert torch.equal(*twins())
    encoder.model.eval()


def test_the_teacher_embeds_only_what_the_student_reads(corpus, make_tiny_checkpoint, tmp_path):
    """Texts past max_length are cut where the student's tokenizer cuts them before the teacher sees them."""
    teacher_spec = f"{make_tiny_checkpoint('qwen2')}:causal:mean"
    stage = _stage(corpus, "distill", data=[str(corpus / "text.txt")], teacher=teacher_spec, max_length=3)
    trainer = StageTrainer(Encoder.load(make_tiny_checkpoint("llama")), stage, tmp_path / "run")
    text = sorted(trainer.teacher_vectors)[0]  # e.g. "the bird walks to the beach today"
    ids = trainer.encoder.tokenizer(text, truncation=True, max_length=3)["input_ids"]
    read = trainer._student_view([text])[0]
    assert text.startswith(read) and len(read) < len(text)
    assert trainer.encoder.tokenizer(read)["input_ids"] == ids  # the cut keeps exactly the student's tokens
    teacher = Encoder.load(make_tiny_checkpoint("qwen2"), attention="causal", pooling="mean")
    np.testing.assert_allclose(trainer.teacher_vectors[text], teacher.encode([read])[0], atol=1e-5)
    assert not np.allclose(trainer.teacher_vectors[text], teacher.encode([text])[0], atol=1e-3)


def test_full_fine_tuning_with_gradient_checkpointing_and_accumulation(
    corpus, make_tiny_checkpoint, tmp_path
):
    encoder = Encoder.load(make_tiny_checkpoint("gemma3_text"), attention="bidirectional")
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    stage = _stage(
        corpus, "supervised", lora=False, gradient_checkpointing=True, grad_accum=2, learning_rate=1e-3
    )
    StageTrainer(encoder, stage, tmp_path / "stage").run()
    losses = _losses(tmp_path / "stage")
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    changed = [k for k, v in encoder.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("layers.0.self_attn" in k for k in changed) and not encoder.model.is_activation_checkpointing


def test_per_dataset_instructions_reach_the_queries(corpus, make_tiny_checkpoint, tmp_path):
    encoder = Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional")
    pairs = str(corpus / "pairs.jsonl")
    data = [{"path": pairs, "instruction": "Find the place:\n"}, pairs]
    trainer = StageTrainer(
        encoder, _stage(corpus, "supervised", data=data, instruction="Default:\n"), tmp_path / "s"
    )
    assert trainer.data.instructions == ["Find the place:\n", "Default:\n"]
    examples = trainer.data.datasets[0][:8]
    with torch.no_grad():
        assert trainer._contrastive(examples, "Find the place:\n") != trainer._contrastive(examples, "")
    with pytest.raises(DataFormatError, match="data entries are paths or"):
        StageTrainer(encoder, _stage(corpus, "supervised", data=[{"file": pairs}]), tmp_path / "t")


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # the test's own probe, by design
def test_lora_on_the_top_layers_only_trains_those_and_backpropagates_no_further(
    corpus, make_tiny_checkpoint, tmp_path
):
    encoder = Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional")
    layers = encoder.model.model.layers
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    reached = []  # layers the backward pass went through
    for i, layer in enumerate(layers):
        layer.register_full_backward_hook(lambda module, grad_in, grad_out, i=i: reached.append(i))
    StageTrainer(encoder, _stage(corpus, "supervised", lora_layers=1), tmp_path / "stage").run()
    losses = _losses(tmp_path / "stage")
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    top = len(layers) - 1
    assert reached and set(reached) == {top}
    state = encoder.model.state_dict()
    changed = {k.split(".")[2] for k, v in state.items() if not torch.equal(v, before[k])}
    assert changed == {str(top)}  # model.layers.<top>.… only, merged
    with pytest.raises(ValueError, match="lora_layers 9 > 2 layers"):
        StageTrainer(encoder, _stage(corpus, "supervised", lora_layers=9), tmp_path / "too-many")
    with pytest.raises(ValueError, match="applies with lora only"):
        _stage(corpus, "supervised", lora=False, lora_layers=1)


def test_lora_merged_model_embeds_like_the_unmerged_one(corpus, make_tiny_checkpoint, tmp_path):
    encoder = Encoder.load(make_tiny_checkpoint("qwen2"), attention="bidirectional")
    stage = _stage(corpus, "supervised", steps=10, warmup_ratio=0.0, schedule="constant_with_warmup")
    trainer = StageTrainer(encoder, stage, tmp_path / "stage")
    encoder.model.train()
    for step in range(5):  # move the LoRA weights away from their zero initialisation
        trainer._loss(step)["loss"].backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
    encoder.model.eval()
    texts = ["a cat in the park", "the dog is at the river", "a bird"]
    unmerged = encoder.encode(texts)
    encoder.model = trainer.peft.merge_and_unload()
    np.testing.assert_allclose(encoder.encode(texts), unmerged, atol=1e-5)  # float32: rounding only
    assert not np.allclose(
        unmerged, Encoder.load(make_tiny_checkpoint("qwen2"), attention="bidirectional").encode(texts)
    )


def test_malformed_data_fails_before_training_with_file_and_line(corpus, make_tiny_checkpoint, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "positive": "p"}\n{"query": "q"}\n')
    recipe = Recipe(name="t", stages=[_stage(corpus, "supervised"), _stage(corpus, "simcse")])
    with pytest.raises(DataFormatError, match=r"bad.jsonl:2: expected a str field 'positive'"):
        train(recipe, str(make_tiny_checkpoint("llama")), tmp_path / "out", data=[str(bad)])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    with pytest.raises(DataFormatError, match="needs pairs JSONL"):
        train(
            Recipe(name="t", stages=[_stage(corpus, "supervised", data=[str(corpus / "text.txt")])]),
            "x",
            tmp_path / "o",
        )


def test_recipe_with_pruning_saves_an_encoder_that_everything_loads(corpus, make_tiny_checkpoint, tmp_path):
    recipe = Recipe(
        name="t",
        attention="bidirectional",
        pooling="last",
        keep_layers=1,
        stages=[_stage(corpus, "mntp", steps=5)],
    )
    encoder = train(recipe, str(make_tiny_checkpoint("mistral")), tmp_path / "out")
    assert encoder.model.config.num_hidden_layers == 1
    reloaded = Encoder.load(tmp_path / "out")
    assert reloaded.model.config.num_hidden_layers == 1 and reloaded.config.pooling == "last"
    texts = ["a cat in the park", "a dog"]
    np.testing.assert_allclose(reloaded.encode(texts), encoder.encode(texts), atol=1e-6)
    st = SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(st, encoder.encode(texts), atol=2e-5)
    assert (tmp_path / "out" / "01-mntp" / "model" / "dec2vec_config.json").exists()


def test_builtin_recipes_load():
    for name in (
        "quick",
        "llm2vec",
        "llm2vec-supervised",
        "supervised",
        "grit",
        "retrieval",
        "smollm2-135m-embed",
        "distill-mpnet",
        "smollm2-135m-embed-half",
    ):
        for stage in load_recipe(name).stages:
            data = load_stage_data(stage)  # every bundled file a stage names: there, well formed, right kind
            assert all(len(rows) > 400 for rows in data.datasets), (name, stage.name)


def _recipe_file(tmp_path, corpus, steps):
    path = tmp_path / "recipe.toml"
    path.write_text(
        f"""name = "resume-test"
attention = "bidirectional"
[[stage]]
name = "simcse"
objective = "simcse"
data = ["{corpus / "text.txt"}"]
steps = {steps}
batch_size = 8
learning_rate = 1e-3
dropout = 0.1
bf16 = false
checkpoint_every = 5
"""
    )
    return path


def _weights(path):
    encoder = Encoder.load(path)
    return {k: v.clone() for k, v in encoder.model.state_dict().items()}


def _start(recipe, model, out):
    cmd = [
        sys.executable,
        "-m",
        "dec2vec.cli",
        "train",
        "--recipe",
        str(recipe),
        "--model",
        model,
        "--out",
        str(out),
    ]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )


def _wait_for_step(log, step, process, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= step:
            return
        assert process.poll() is None, process.stdout.read().decode()
        time.sleep(0.05)
    raise AssertionError("training never reached the step")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_killed_training_resumes_to_the_uninterrupted_result(how, corpus, make_tiny_checkpoint, tmp_path):
    model = str(make_tiny_checkpoint("llama"))
    steps = 300
    recipe = _recipe_file(tmp_path, corpus, steps)
    train(load_recipe(recipe), model, tmp_path / "straight")

    process = _start(recipe, model, tmp_path / "killed")
    log = tmp_path / "killed" / "01-simcse" / "log.jsonl"
    _wait_for_step(log, 12, process)
    process.send_signal(how)
    code = process.wait(timeout=60)
    checkpoint = torch.load(tmp_path / "killed" / "01-simcse" / "checkpoint.pt", weights_only=True)
    if how == signal.SIGTERM:
        assert code == 130  # checkpointed at the step it was on, then exited cleanly
    else:
        assert code == -signal.SIGKILL  # no chance to save: the last periodic checkpoint is used
        assert checkpoint["step"] % 5 == 0
    assert 0 < checkpoint["step"] < steps

    runner = CliRunner()
    args = ["train", "--recipe", str(recipe), "--model", model, "--out", str(tmp_path / "killed")]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "--resume" in refused.output
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert len(_losses(tmp_path / "killed" / "01-simcse")) == steps
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "killed")
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)


class _Planted:
    """What an attacker pickles: loading it with weights_only=False touches the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_checkpoint_is_refused_and_runs_nothing(corpus, make_tiny_checkpoint, tmp_path):
    recipe = _recipe_file(tmp_path, corpus, 10)
    stage = tmp_path / "out" / "01-simcse"
    stage.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"step": 5, "config": _Planted(marker)}, stage / "checkpoint.pt")
    with pytest.raises(ValueError, match="dec2vec did not write it"):
        train(load_recipe(recipe), str(make_tiny_checkpoint("llama")), tmp_path / "out", resume=True)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("hardware", "bf16", "autocast"),
    [("float32", None, False), ("bfloat16", None, True), ("float32", True, True), ("bfloat16", False, False)],
)
def test_bf16_autocast_follows_the_hardware_unless_the_stage_says(
    hardware, bf16, autocast, corpus, make_tiny_checkpoint, tmp_path, monkeypatch
):
    """Emulated bfloat16 is many times slower than float32, so by default a stage autocasts only where the
    device computes it natively; ``bf16 = true/false`` in a stage decides regardless."""
    monkeypatch.setattr(trainer_module, "preferred_dtype", lambda: (hardware, "as the test says"))
    encoder = Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional")
    trainer = StageTrainer(encoder, _stage(corpus, "mntp", steps=1, bf16=bf16), tmp_path / "stage")
    with trainer._autocast():
        product = torch.ones(2, 2) @ torch.ones(2, 2)
    assert (product.dtype == torch.bfloat16) is autocast
