"""Recipes on SmolLM2-135M: raw poolings vs each training recipe, STS-B dev and Cranfield, with training time.

    python benchmarks/recipes.py [--only quick,llm2vec,supervised,llm2vec-supervised,grit] [--out DIR]

Rows: raw causal last-token, raw causal mean, echo, bidirectional mean (no training), then after the quick
recipe, after MNTP, after MNTP+SimCSE (the llm2vec recipe), after supervised training on the shared SNLI
triplets + MRPC pairs (on top of llm2vec), the whole llm2vec-supervised recipe (all three stages, timed end
to end), and GRIT (with held-out perplexity before and after) next to its control: the same stage, data and
steps without the generation loss. Training runs resume if interrupted; finished runs are reused. Prints a
table, writes benchmarks/results/recipes.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from dec2vec import Encoder
from dec2vec.encoder import CONFIG_NAME
from dec2vec.evaluation import build_task, evaluate
from dec2vec.training.recipes import Recipe, load_recipe, train

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
MODEL = "smollm2-135m"


def timed_train(recipe: str | Recipe, model: str, out: Path, data: list[str] | None = None) -> float:
    """Train (or reuse a finished run); returns wall-clock seconds, recorded next to the run."""
    record = out / "train_seconds.json"
    if (out / CONFIG_NAME).exists() and record.exists():
        return json.loads(record.read_text())["seconds"]
    start = time.perf_counter()
    train(recipe if isinstance(recipe, Recipe) else load_recipe(recipe), model, out, data=data, resume=True)
    seconds = time.perf_counter() - start
    record.write_text(json.dumps({"seconds": seconds}))
    return seconds


def stage_seconds(stage_dir: Path) -> float:
    """Training time of one stage from its log: the sum of its step times (batch / examples per second)."""
    rows = [json.loads(line) for line in (stage_dir / "log.jsonl").read_text().splitlines()]
    batch = load_recipe("llm2vec").stages[0].batch_size
    return sum(r.get("seconds", batch / r["examples_per_s"]) for r in rows)


def perplexity(encoder: Encoder, texts: list[str]) -> float:
    """Causal perplexity of the LM head over held-out paragraphs (generation quality on the same weights)."""
    total, count = 0.0, 0
    model = encoder.model
    with torch.inference_mode():
        for text in texts:
            ids = encoder.tokenizer(text, return_tensors="pt", truncation=True, max_length=256)["input_ids"]
            loss = model(input_ids=ids, labels=ids).loss
            total += loss.item() * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    return math.exp(total / count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="quick,llm2vec,supervised,llm2vec-supervised,grit")
    parser.add_argument("--out", type=Path, default=HERE / "runs")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    tasks = [
        build_task("sts", DATA / "sts" / "stsb_dev.tsv", name="STS-B dev"),
        build_task("retrieval", DATA / "retrieval" / "cranfield", name="Cranfield"),
    ]
    models: dict[str, tuple[str, float | None]] = {
        "raw causal last": (f"{MODEL}:causal:last", None),
        "raw causal mean": (f"{MODEL}:causal:mean", None),
        "echo mean": (f"{MODEL}:echo:mean", None),
        "bidirectional mean, untrained": (f"{MODEL}:bidirectional:mean", None),
    }
    extra: dict[str, dict] = {}
    if "quick" in wanted:
        models["quick recipe"] = (str(args.out / "quick"), timed_train("quick", MODEL, args.out / "quick"))
    if "llm2vec" in wanted or "supervised" in wanted:
        seconds = timed_train("llm2vec", MODEL, args.out / "llm2vec")
        models["after MNTP"] = (
            str(args.out / "llm2vec" / "01-mntp" / "model"),
            stage_seconds(args.out / "llm2vec" / "01-mntp"),
        )
        models["after MNTP + SimCSE (llm2vec)"] = (str(args.out / "llm2vec"), seconds)
    triplets = [
        str(DATA / "training" / "snli_devtest_triplets.jsonl"),
        str(DATA / "training" / "mrpc_paraphrase_pairs.jsonl"),
    ]
    if "supervised" in wanted:
        seconds = timed_train("supervised", str(args.out / "llm2vec"), args.out / "supervised", data=triplets)
        models["llm2vec + supervised (SNLI + MRPC)"] = (str(args.out / "supervised"), seconds)
    if "llm2vec-supervised" in wanted:
        out = args.out / "llm2vec-supervised"
        seconds = timed_train("llm2vec-supervised", MODEL, out, data=triplets)
        models["llm2vec-supervised recipe (SNLI + MRPC)"] = (str(out), seconds)
    if "grit" in wanted:
        held_out = (DATA / "training" / "wikitext2_test_paragraphs.txt").read_text().splitlines()[:100]
        before = perplexity(Encoder.load(MODEL), held_out)
        seconds = timed_train("grit", MODEL, args.out / "grit")
        after = perplexity(Encoder.load(args.out / "grit"), held_out)
        models["grit"] = (str(args.out / "grit"), seconds)
        # The control: GRIT's stage with the generation loss taken out (same start, data, steps, lr).
        control = load_recipe("grit")
        control.stages = [
            replace(stage, name="supervised", objective="supervised", generation_data=[])
            for stage in control.stages
        ]
        seconds = timed_train(control, MODEL, args.out / "grit-control")
        models["grit control: same stage, no generation loss"] = (str(args.out / "grit-control"), seconds)
        extra["grit_perplexity"] = {"before": before, "after": after, "change": after / before - 1}

    specs = [spec for spec, _ in models.values()]
    evaluation = evaluate([f"{s}:bfloat16" for s in specs], tasks)
    value = {(r["model"], r["task"], r["metric"]): r["value"] for r in evaluation.rows}
    rows = []
    for label, (spec, seconds) in models.items():
        key = f"{spec}:bfloat16"
        rows.append(
            {
                "model": label,
                "stsb_dev_spearman": round(value[(key, "STS-B dev", "spearman")], 4),
                "cranfield_ndcg@10": round(value[(key, "Cranfield", "ndcg@10")], 4),
                "training_minutes": None if seconds is None else round(seconds / 60, 1),
            }
        )
    table = Table(
        "model",
        "STS-B dev Spearman",
        "Cranfield nDCG@10",
        "training (min, 2 cores)",
        title="recipes on SmolLM2-135M",
    )
    for row in rows:
        table.add_row(*(str(v) if v is not None else "—" for v in row.values()))
    console = Console()
    console.print(table)
    if extra:
        console.print(json.dumps(extra, indent=2))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "recipes.json").write_text(json.dumps({"results": rows, **extra}, indent=2) + "\n")


if __name__ == "__main__":
    main()
