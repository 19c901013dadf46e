"""GPU check in one short run: the attention switch, packing and pooling on CUDA for tiny random models of
several architectures, a bfloat16 training step of every objective, and encode and training throughput
at the real SmolLM2-135M and Gemma 3 270M shapes with random weights (speed does not depend on values).

    python benchmarks/gpu_check.py              # on a CUDA machine: about 6 minutes
    python benchmarks/gpu_check.py --smoke      # anywhere (CPU too): tiny shapes, proves the script runs

Needs no downloaded weights, tokenizer or data beyond the package (a BPE tokenizer is trained in memory on
the bundled sentences). Prints one table and writes benchmarks/results/gpu_check.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from dec2vec.attention import hidden_states, supports_packing
from dec2vec.backbone import Backbone
from dec2vec.encoder import Encoder, EncoderConfig
from dec2vec.training.data import resolve
from dec2vec.training.trainer import OBJECTIVES, StageConfig, StageTrainer

HERE = Path(__file__).resolve().parent
TINY = {  # per-architecture overrides of a 2-layer, width-32 config (as in the unit tests)
    "llama": {},
    "qwen2": {},
    "mistral": {},
    "gemma3_text": {"sliding_window": 16},
    "phi3": {},
    "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256},
}
REAL = {  # the real shapes, from the released configs
    "smollm2-135m": ("llama", {
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "max_position_embeddings": 8192,
        "rope_theta": 100000.0, "tie_word_embeddings": True,
    }),
    "gemma3-270m": ("gemma3_text", {
        "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 4,
        "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144, "max_position_embeddings": 32768,
        "sliding_window": 512, "tie_word_embeddings": True,
    }),
}  # fmt: skip
TEXT_DATA = {"mntp": "builtin:demo_sentences.txt", "simcse": "builtin:demo_sentences.txt"}
PAIR_DATA = "builtin:snli_triplets.jsonl"


def tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in memory on the bundled sentences (no tokenizer download)."""
    sentences = resolve("builtin:demo_sentences.txt").read_text(encoding="utf-8").splitlines()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", "<mask>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    bpe = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, initial_alphabet=alphabet)
    tok.train_from_iterator(sentences, bpe)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", mask_token="<mask>"
    )


def model(arch: str, overrides: dict, vocab: int, device: str, impl: str) -> torch.nn.Module:
    base = {"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 256,
            "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}  # fmt: skip
    if arch == "gpt2":
        base = {
            k: v
            for k, v in base.items()
            if k in ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")
        }
    config = AutoConfig.for_model(arch, **{**base, **overrides})
    config._attn_implementation = impl
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).to(device).eval()  # eval: no dropout, as when loaded


def encoder(net: torch.nn.Module, tok: PreTrainedTokenizerFast, attention: str) -> Encoder:
    return Encoder(Backbone(net, tok, Path(".")), EncoderConfig(backbone="random", attention=attention))


def check_architecture(arch: str, tok: PreTrainedTokenizerFast, device: str, impl: str) -> dict:
    """The switch proven (Encoder raises otherwise), packing equal to padding, pooling finite and unit."""
    row: dict = {"check": f"{arch} ({impl})"}
    try:
        enc = encoder(model(arch, TINY[arch], len(tok), device, impl), tok, "bidirectional")
        texts = ["a short one", "a much longer sentence about rivers, towns and the sea " * 3, "x"]
        batch = enc.collate(texts)
        with torch.inference_mode():
            padded = hidden_states(enc.model, batch["input_ids"], batch["attention_mask"], causal=False)
            packed = hidden_states(
                enc.model, batch["input_ids"], batch["attention_mask"], causal=False, pack=True
            )
        real = batch["attention_mask"].bool()
        vectors = enc.encode(texts)
        row |= {
            "switch": "ok",
            "packing": supports_packing(enc.model, causal=False),
            "packed-padded max": float((packed[real] - padded[real]).abs().max()) if enc.packing else None,
            "unit vectors": bool(torch.allclose(torch.tensor(vectors).norm(dim=1), torch.ones(3), atol=1e-3)),
        }
    except Exception as err:  # the table shows what failed; the run goes on
        row["switch"] = f"FAILED: {type(err).__name__}: {str(err)[:80]}"
    return row


def train_step_all(tok: PreTrainedTokenizerFast, device: str, work: Path) -> list[dict]:
    """One short bf16 stage per objective on a tiny llama (distill's teacher: the same model, saved)."""
    teacher = work / "teacher"
    encoder(model("llama", {}, len(tok), device, "sdpa"), tok, "bidirectional").save(teacher)
    rows = []
    for name in OBJECTIVES:
        enc = encoder(model("llama", {}, len(tok), device, "sdpa"), tok, "bidirectional")
        data = [TEXT_DATA.get(name, PAIR_DATA)]
        extra = {"generation_data": ["builtin:demo_sentences.txt"]} if name == "grit" else {}
        extra |= {"teacher": str(teacher)} if name == "distill" else {}
        stage = StageConfig(name=name, objective=name, data=data, steps=3, batch_size=8, bf16=True,
                            checkpoint_every=10**6, max_length=64, **extra)  # fmt: skip
        start = time.perf_counter()
        try:
            StageTrainer(enc, stage, work / name).run()
            losses = [
                json.loads(line)["loss"] for line in (work / name / "log.jsonl").read_text().splitlines()
            ]
            status = "ok" if all(map(torch.isfinite, torch.tensor(losses))) else f"non-finite loss {losses}"
        except Exception as err:
            status = f"FAILED: {type(err).__name__}: {str(err)[:80]}"
        rows.append(
            {
                "check": f"bf16 step: {name}",
                "status": status,
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    return rows


def throughput(name: str, tok: PreTrainedTokenizerFast, device: str, smoke: bool, work: Path) -> dict:
    """Encode sentences/s and tokens/s (bf16, bidirectional mean) and supervised-stage examples/s."""
    arch, shape = REAL[name]
    shape = {**TINY.get(arch, {}), **({"num_hidden_layers": 2} if smoke else shape)}
    vocab = max(len(tok), shape.get("vocab_size", 0))
    enc = encoder(model(arch, shape, vocab, device, "sdpa").to(torch.bfloat16), tok, "bidirectional")
    text = resolve("builtin:demo_sentences.txt").read_text(encoding="utf-8").splitlines()
    sentences = text[: 64 if smoke else 3000]
    enc.encode(sentences[:64], batch_size=64)  # warm-up: kernels, allocator
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    enc.encode(sentences, batch_size=128)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = sum(enc.count_tokens(sentences))
    train = encoder(model(arch, shape, vocab, device, "sdpa"), tok, "bidirectional")
    steps, batch = (2, 8) if smoke else (20, 64)
    stage = StageConfig(
        name="supervised", objective="supervised", data=[PAIR_DATA], steps=steps, batch_size=batch,
        bf16=True, checkpoint_every=10**6, max_length=64,
    )  # fmt: skip
    started = time.perf_counter()
    StageTrainer(train, stage, work / f"throughput-{name}").run()
    train_seconds = time.perf_counter() - started
    return {
        "check": f"throughput: {name}",
        "status": "ok",
        "encode sentences/s": round(len(sentences) / seconds, 1),
        "encode tokens/s": round(tokens / seconds),
        "supervised examples/s": round(steps * batch / train_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, any device: proves the script")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gpu_check.json")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.smoke:
        parser.error("no CUDA device here: run with --smoke to check the script on CPU")
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    rows: list[dict] = [{"check": "device", "status": name, "torch": torch.__version__}]
    tok = tokenizer(4096 if args.smoke else 32000)
    impls = ["sdpa", *(["flash_attention_2"] if device == "cuda" and _has_flash() else [])]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DEC2VEC_HOME"] = tmp  # the distill teacher's cache stays in the run
        work = Path(tmp)
        rows += [check_architecture(arch, tok, device, impl) for impl in impls for arch in TINY]
        rows += train_step_all(tok, device, work)
        rows += [throughput(name, tok, device, args.smoke, work) for name in REAL]
    for row in rows:
        print(" | ".join(f"{k}: {v}" for k, v in row.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    failed = [r for r in rows if "FAILED" in str(r.get("switch", r.get("status", "")))]
    raise SystemExit(1 if failed else 0)


def _has_flash() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
