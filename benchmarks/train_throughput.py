"""Training throughput: LoRA on every layer against LoRA on the top layers only, same data, steps and seed.

    python benchmarks/train_throughput.py [--steps 80] [--top 15] [--only mntp,supervised,grit]

Three stages, each run twice on raw SmolLM2-135M (bidirectional, mean pooling, float32 weights, bfloat16
autocast, 2 CPU cores): ``mntp`` (masked next-token prediction on the bundled WikiSplit sentences, 16 per
step, 64 tokens, 20% masked), ``supervised`` (InfoNCE with hard negatives on the bundled SNLI triplets) and
the shipped default's GRIT stage (the same plus a next-token loss on the WikiSplit sentences).
With ``lora_layers`` only the top layers carry adapters, so the backward pass stops below them. Reported
per run: median examples/s over the steps after the third, minutes, and STS-B dev
Spearman after training (the quality the speed must not cost). Each run starts afresh under
benchmarks/runs/train-throughput/.

Prints one table and writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import json
import shutil
import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dec2vec.evaluation.tasks import STSTask
from dec2vec.models import load_model
from dec2vec.training.trainer import StageConfig, StageTrainer

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
console = Console(width=200)
STAGES = {
    "mntp": {"objective": "mntp", "data": ["builtin:demo_sentences.txt"]},
    "supervised": {"objective": "supervised", "data": ["builtin:snli_triplets.jsonl"]},
    "grit": {
        "objective": "supervised",
        "data": ["builtin:snli_triplets.jsonl"],
        "generation_data": ["builtin:demo_sentences.txt"],
    },
}


def run(name: str, lora_layers: int, steps: int, out: Path, sts: STSTask) -> dict:
    folder = out / f"{name}-top{lora_layers or 'all'}"
    shutil.rmtree(folder, ignore_errors=True)
    encoder = load_model("smollm2-135m:bidirectional:mean:float32")
    stage = StageConfig(
        name=name,
        **STAGES[name],
        steps=steps,
        batch_size=16,
        learning_rate=2e-4,
        max_length=64,
        lora_layers=lora_layers,
        checkpoint_every=steps + 1,
    )
    StageTrainer(encoder, stage, folder).run()
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return {
        "stage": name,
        "LoRA layers": lora_layers or "all 30",
        "examples/s": round(statistics.median(r["examples_per_s"] for r in log[3:]), 2),
        "minutes": round(sum(r["seconds"] for r in log) / 60, 1),
        "final loss (mean of last 10)": round(statistics.mean(r["loss"] for r in log[-10:]), 4),
        "STS-B dev Spearman": round(sts.run(encoder).metrics["spearman"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--top", type=int, default=15, help="lora_layers of the faster run")
    parser.add_argument("--only", default=",".join(STAGES), help=f"comma-separated, of {list(STAGES)}")
    parser.add_argument("--runs", type=Path, default=HERE / "runs" / "train-throughput")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "train_throughput.json")
    args = parser.parse_args()
    names = args.only.split(",")
    if unknown := sorted(set(names) - set(STAGES)):
        parser.error(f"--only: unknown stages {unknown}")
    sts = STSTask(DATA / "sts" / "stsb_dev.tsv")
    rows = [run(name, layers, args.steps, args.runs, sts) for name in names for layers in (0, args.top)]
    for row in rows:
        base = next(r for r in rows if r["stage"] == row["stage"])
        row["speed-up"] = round(row["examples/s"] / base["examples/s"], 2)
        row["STS-B change"] = round(row["STS-B dev Spearman"] - base["STS-B dev Spearman"], 4)
    table = Table(*rows[0], title=f"training throughput ({args.steps} steps of 16, 2 CPU cores)")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)
    result = {"steps": args.steps, "batch_size": 16, "max_length": 64, "rows": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print_json(json.dumps(result))


if __name__ == "__main__":
    main()
