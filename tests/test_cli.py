"""The dec2vec command line, run in-process on a tiny checkpoint."""

import json

import numpy as np
from typer.testing import CliRunner

from dec2vec import Encoder
from dec2vec.cli import app
from dec2vec.encoder import preferred_dtype
from dec2vec.search import Index
from dec2vec.shipped import DEFAULT_MODEL, SHIPPED

runner = CliRunner(env={"COLUMNS": "300"})  # no line wrapping inside rich error boxes


def test_embed_text_lines_to_npy(make_tiny_checkpoint, tmp_path):
    model = str(make_tiny_checkpoint("llama"))
    lines = ["a cat sat on the mat", "", "the stock market fell"]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    result = runner.invoke(
        app, ["embed", "-m", model, "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.npy")]
    )
    assert result.exit_code == 0, result.output
    dtype, reason = preferred_dtype()  # no --dtype: bfloat16 where the hardware has it, said once
    assert f"dtype: {dtype} ({reason}" in result.output
    assert ("--dtype float32 to opt out" in result.output) is (dtype != "float32")  # no opting out of float32
    expected = Encoder.load(model, dtype=dtype).encode(lines)
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), expected, atol=1e-6)
    result = runner.invoke(
        app, ["embed", "-m", model, "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o32.npy"),
              "--dtype", "float32"]
    )  # fmt: skip
    assert result.exit_code == 0 and "dtype:" not in result.output
    np.testing.assert_allclose(np.load(tmp_path / "o32.npy"), Encoder.load(model).encode(lines), atol=1e-6)
    bad = runner.invoke(
        app, ["embed", "-m", model, "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o4.npy"),
              "--dtype", "int4"]
    )  # fmt: skip
    assert bad.exit_code != 0
    assert "--dtype must be one of float32, bfloat16, float16, got 'int4'" in bad.output
    assert not (tmp_path / "o4.npy").exists()


def test_embed_jsonl_to_jsonl_keeps_ids(make_tiny_checkpoint, tmp_path):
    model = str(make_tiny_checkpoint("qwen3"))
    rows = [{"id": "a", "text": "a cat"}, {"id": "b", "text": "a dog"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["embed", "-m", model, "--attention", "bidirectional", "-i", str(tmp_path / "in.jsonl"),
            "--dtype", "float32"]  # fmt: skip
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == ["a", "b"]
    expected = Encoder.load(model, attention="bidirectional").encode(["a cat", "a dog"])
    np.testing.assert_allclose(np.array([r["embedding"] for r in out]), expected, atol=1e-6)


def test_embed_shards_line_files_and_each_shard_says_which_rows_it_holds(make_tiny_checkpoint, tmp_path):
    model = str(make_tiny_checkpoint("llama"))
    lines = [f"sentence number {i} about a cat" for i in range(7)]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    args = ["embed", "-m", model, "-i", str(tmp_path / "in.txt"), "--dtype", "float32"]
    rows = []
    for i in range(3):  # two machines each given a third used to both embed everything
        result = runner.invoke(app, [*args, "-o", str(tmp_path / f"part{i}.jsonl"), "--shard", f"{i}/3"])
        assert result.exit_code == 0, result.output
        rows += [json.loads(line) for line in (tmp_path / f"part{i}.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rows] == list(range(7)) and [r["id"] for r in rows] == list(range(7))
    expected = Encoder.load(model).encode(lines)
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), expected, atol=1e-5)
    refused = [
        (["-o", str(tmp_path / "o.npy"), "--shard", "1/2"], "could not say which rows"),
        (["-o", str(tmp_path / "o.npy"), "--shard", "2/2"], "expected 0 <= i < N"),
        (["-o", str(tmp_path / "o.npy"), "--chunk-tokens", "64"], "--chunk-tokens does not apply"),
        (["-o", str(tmp_path / "o.npy"), "--ray"], "--ray does not apply"),
        (["-o", str(tmp_path / "shards"), "--prompt-name", "query"], "--prompt-name does not apply"),
        (["-o", str(tmp_path / "o.npy"), "--batch-size", "0"], "--batch-size"),
    ]
    for extra, message in refused:
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "shards").exists()


def test_embed_malformed_jsonl_names_file_and_line(make_tiny_checkpoint, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "oops"}\n')
    result = runner.invoke(
        app,
        ["embed", "-m", str(make_tiny_checkpoint("llama")), "-i", str(bad), "-o", str(tmp_path / "o.npy")],
    )
    assert result.exit_code == 2
    assert "bad.jsonl:2" in result.output and "'text'" in result.output
    assert not (tmp_path / "o.npy").exists()


def test_similarity_and_bad_options(make_tiny_checkpoint):
    model = str(make_tiny_checkpoint("llama"))
    result = runner.invoke(app, ["similarity", "a cat", "a cat", "-m", model])
    assert result.exit_code == 0, result.output
    assert float(result.stdout.strip()) > 0.9999
    result = runner.invoke(app, ["similarity", "a", "b", "-m", model, "--pooling", "max"])
    assert result.exit_code == 2 and "pooling must be one of" in result.output


def test_models_lists_shipped_encoders_and_backbones():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert f"{DEFAULT_MODEL} (default)" in result.output
    assert all(name in result.output for name in SHIPPED)
    assert "smollm2-135m" in result.output and "gemma3-270m" in result.output


def test_demo_compares_answers_and_searches(make_tiny_checkpoint, tmp_path):
    """The main job, end to end on a tiny model: raw vs encoder scores, similarities, chat, search."""
    db = tmp_path / "demo.db"
    args = ["demo", "-m", str(make_tiny_checkpoint("llama")), "--db", str(db)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    dtype, reason = preferred_dtype()  # not a fixed bfloat16: emulated on CPUs without it, ~7x slower
    assert f"dtype: {dtype} ({reason}" in result.output
    assert "raw backbone vs dec2vec-converted encoder" in result.stdout
    assert "cosine similarity" in result.stdout and "What is the capital of France?" in result.stdout
    assert result.stdout.count("hybrid search:") == 3 and "3000 added, 0 unchanged" in result.stdout
    # the tiny model's 256-token context cannot hold three passages: said, not a crash
    assert "ask (retrieve, then answer" in result.stdout and "model's context is 256" in result.stdout
    with Index(str(db)) as index:  # the demo's SQLite index holds every bundled sentence
        assert index.stats()["documents"] == 3000
    again = runner.invoke(app, args)  # a rerun finds its index complete: nothing is embedded twice
    assert again.exit_code == 0 and "0 added, 3000 unchanged" in again.stdout
    assert again.stdout.count("hybrid search:") == 3
    forced = runner.invoke(app, [*args, "--dtype", "float32"])  # a chosen dtype is taken, not announced
    assert forced.exit_code == 0 and "dtype:" not in forced.output, forced.output
    assert forced.stdout.count("hybrid search:") == 3


def test_ask_answers_from_the_index_with_numbered_sources(make_tiny_checkpoint, tmp_path):
    from conftest import CORPUS

    from dec2vec.answering import Answerer

    model = str(make_tiny_checkpoint("llama"))
    db = str(tmp_path / "ask.db")
    rows = [{"id": f"c{i}", "title": f"t{i}", "text": text} for i, text in enumerate(CORPUS)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    added = runner.invoke(app, ["index", "add", db, str(tmp_path / "docs.jsonl"), "-m", model,
                                "--attention", "bidirectional", "--dtype", "float32"])  # fmt: skip
    assert added.exit_code == 0, added.output
    question = "Which city is the capital of France?"
    result = runner.invoke(app, ["ask", db, question, "-k", "2", "--max-new-tokens", "5", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    with Index(db) as index:
        expected = Answerer(index).ask(question, k=2, max_new_tokens=5, cache="off")
    assert payload["answer"] == expected.text and payload["question"] == question
    assert [s["id"] for s in payload["sources"]] == [s.id for s in expected.sources]
    assert payload["timings"]["prompt_tokens"] > 0 and 0 < payload["timings"]["new_tokens"] <= 5
    context = runner.invoke(app, ["ask", db, question, "-k", "2", "--context-only"])
    assert context.exit_code == 0 and "[1] " in context.output and "[2] " in context.output
    assert f"Question: {question}" in context.output
    shown = runner.invoke(app, ["ask", db, question, "-k", "2", "--max-new-tokens", "3"])
    assert shown.exit_code == 0 and "[1]" in shown.output and "sources" in shown.output
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "capital of France"}\n')
    lines = runner.invoke(app, ["ask", db, "--queries", str(tmp_path / "q.jsonl"), "--json", "-k", "1",
                                "--max-new-tokens", "2"])  # fmt: skip
    assert lines.exit_code == 0 and json.loads(lines.stdout)["query_id"] == "q1"
    for args, problem in [
        ([db, "   "], "question is empty"),
        ([db, question, "--cache", "maybe"], "cache must be one of"),
        ([db, "--queries", str(tmp_path / "q.jsonl")], "add --json"),
        ([str(tmp_path / "missing.db"), question], "no such index"),
        ([db, question, "--context-only", "--json"], "do not apply"),
        ([db, question, "--context-only", "--cache", "off"], "do not apply"),
    ]:
        failed = runner.invoke(app, ["ask", *args])
        assert failed.exit_code != 0 and problem in failed.output, (args, failed.output)


def test_classify_trains_a_head_and_predicts_json_lines_in_input_order(tmp_path):
    from intents import split

    train, test = split(5)
    (tmp_path / "train.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in train))
    (tmp_path / "test.jsonl").write_text(
        "".join(json.dumps({"text": t, "label": lb}) + "\n" for t, lb in test)
    )
    head = str(tmp_path / "h")
    trained = runner.invoke(app, ["classify", "train", str(tmp_path / "train.tsv"), "--out", head,
                                  "-m", "minilm", "--dtype", "float32"])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert "3 labels on 15 texts" in trained.output
    predicted = runner.invoke(app, ["classify", "predict", str(tmp_path / "h"), str(tmp_path / "test.jsonl"),
                                    "--json"])  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [row["text"] for row in lines] == [t for t, _ in test]
    assert sum(row["label"] == label for row, (_, label) in zip(lines, test, strict=True)) >= len(test) - 1
    assert all(0 < row["probability"] <= 1 for row in lines)
    shown = runner.invoke(app, ["classify", "predict", str(tmp_path / "h"), str(tmp_path / "test.jsonl")])
    assert shown.exit_code == 0 and "accuracy against the file's labels" in shown.output
    # bad files name the file and line
    (tmp_path / "bad.tsv").write_text("text\tlabel\nok\tcard\nno label here\n")
    (tmp_path / "nolabel.tsv").write_text("sentence\tlabel\nok\tcard\n")
    for args, problem in [
        (
            ["train", str(tmp_path / "bad.tsv"), "--out", str(tmp_path / "x")],
            "bad.tsv:3: expected 2 tab-separated",
        ),
        (
            ["train", str(tmp_path / "nolabel.tsv"), "--out", str(tmp_path / "x")],
            "nolabel.tsv:1: expected a header",
        ),
        (["predict", str(tmp_path), str(tmp_path / "test.jsonl")], "not a classifier"),
    ]:
        result = runner.invoke(app, ["classify", *args])
        assert result.exit_code == 2 and problem in result.output, result.output
    assert not (tmp_path / "x").exists()  # a bad file is refused before anything is loaded or written


def test_cluster_and_dedup_write_their_files(tmp_path):
    from intents import INTENTS

    texts = [t for group in INTENTS.values() for t in group]
    (tmp_path / "t.txt").write_text("\n".join([*texts, texts[0].upper()]) + "\n")
    result = runner.invoke(app, ["cluster", str(tmp_path / "t.txt"), "--out", str(tmp_path / "c"), "-k", "3",
                                 "-m", "minilm"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assignments = [
        json.loads(line) for line in (tmp_path / "c" / "assignments.jsonl").read_text().splitlines()
    ]
    clusters = [json.loads(line) for line in (tmp_path / "c" / "clusters.jsonl").read_text().splitlines()]
    assert [a["index"] for a in assignments] == list(range(len(texts) + 1))
    assert assignments[0]["cluster"] == assignments[-1]["cluster"]  # a copy lands with its original
    assert sorted(c["cluster"] for c in clusters) == [0, 1, 2] and sum(c["size"] for c in clusters) == 25
    assert {a["label"] for a in assignments} == {c["label"] for c in clusters}
    assert (tmp_path / "c" / "map.png").stat().st_size > 10_000
    bad = runner.invoke(app, ["cluster", str(tmp_path / "t.txt"), "--out", str(tmp_path / "c"), "-k", "3",
                              "--k-max", "5"])  # fmt: skip
    assert bad.exit_code == 2 and "--k-max applies only" in bad.output
    result = runner.invoke(app, ["dedup", str(tmp_path / "t.txt"), "--out", str(tmp_path / "d"),
                                 "--threshold", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    kept = [json.loads(line) for line in (tmp_path / "d" / "kept.jsonl").read_text().splitlines()]
    groups = [json.loads(line) for line in (tmp_path / "d" / "groups.jsonl").read_text().splitlines()]
    assert len(kept) == len(texts) and groups == [
        {"kept": 0, "duplicates": [len(texts)], "exact": [len(texts)]}
    ]
    assert "1 exact" in result.output
    exact_only = ["dedup", str(tmp_path / "t.txt"), "--out", str(tmp_path / "d"), "--threshold", "1"]
    bad = runner.invoke(app, [*exact_only, "-m", "minilm"])
    assert bad.exit_code == 2 and "do not apply" in bad.output
