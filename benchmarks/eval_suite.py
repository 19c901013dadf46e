"""The development evaluation suite: baselines and raw SmolLM2 variants side by side.

    python benchmarks/eval_suite.py [--suite benchmarks/suites/dev.toml] [--extended] [--dtype bfloat16]

Prints the comparison table and writes JSON, Markdown and PNG plots to benchmarks/results/. Embeddings are
cached (``$DEC2VEC_HOME/embeddings``), so a rerun only embeds for models that changed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import json
import time
from pathlib import Path

from rich.console import Console

from dec2vec.evaluation import evaluate, load_suite, report

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=HERE / "suites" / "dev.toml")
    parser.add_argument("--extended", action="store_true", help="also run suites/extended.toml")
    parser.add_argument("--dtype", default="bfloat16", help="dtype of the SmolLM2 variants")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    tasks = load_suite(args.suite) + (load_suite(HERE / "suites" / "extended.toml") if args.extended else [])
    models = ["minilm", "bm25"] + [
        f"smollm2-135m:{variant}:{args.dtype}"
        for variant in ("causal:last", "causal:mean", "echo:mean", "bidirectional:mean")
    ]
    start = time.perf_counter()
    evaluation = evaluate(models, tasks)
    console = Console()
    console.print(report.table(evaluation, title=f"dev suite ({time.perf_counter() - start:.0f} s in all)"))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "eval_suite_extended" if args.extended else "eval_suite"
    report.write_json(evaluation, args.out / f"{stem}.json")
    (args.out / f"{stem}.md").write_text(report.markdown(evaluation))
    report.bar_chart(evaluation, args.out / f"{stem}.png")
    report.sts_scatter(evaluation, args.out / f"{stem}_sts.png")
    seconds = {
        m: sum(r["value"] for r in evaluation.rows if r["model"] == m and r["metric"] == "seconds")
        for m in models
    }
    console.print(
        json.dumps({"seconds per model (suite total)": {m: round(s) for m, s in seconds.items()}}, indent=2)
    )


if __name__ == "__main__":
    main()
