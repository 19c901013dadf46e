"""Scale-out on this machine: training throughput with 1 vs 2 processes, GradCache's and FSDP's peak memory.

    python benchmarks/scale.py [--model smollm2-135m] [--steps 6]

Each configuration trains a supervised LoRA stage on the bundled SNLI triplets in a fresh process (or two,
under torchrun with gloo), and reports examples/s (from the stage log, first step excluded), the peak
resident memory of the training process (per process under torchrun) and the training state each process
holds (weights, gradients and Adam moments, from the stage log). GradCache rows use a 4x larger
batch in chunks of the full-batch row's size. The last two rows fine-tune all weights (no LoRA) on 2
processes, replicated (DDP-style) and with FSDP (decoder layers, their gradients and Adam state sharded).
Prints a table, writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
RECIPE = """name = "scale"
attention = "bidirectional"
[[stage]]
name = "sup"
objective = "supervised"
data = ["builtin:demo_triplets.jsonl"]
steps = {steps}
batch_size = {batch}
grad_cache_chunk = {chunk}
lora = {lora}
fsdp = {fsdp}
learning_rate = 1e-4
max_length = 64
checkpoint_every = 1000
"""


def child(recipe: str, model: str, out: str) -> None:
    """Train in this process, then print its peak resident memory (MiB) on the last line."""
    from dec2vec.training import distributed
    from dec2vec.training.recipes import load_recipe, train

    train(load_recipe(recipe), model, Path(out))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rank": distributed.rank(), "peak_mib": round(peak)}), flush=True)


def run(
    model: str,
    steps: int,
    batch: int,
    chunk: int,
    processes: int,
    threads: int,
    lora: bool = True,
    fsdp: bool = False,
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "recipe.toml"
        options = {"lora": str(lora).lower(), "fsdp": str(fsdp).lower()}
        recipe.write_text(RECIPE.format(steps=steps, batch=batch, chunk=chunk, **options))
        script = [__file__, "--child", str(recipe), model, str(Path(tmp) / "out")]
        if processes > 1:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                       "--master-port", str(port), *script]  # fmt: skip
        else:
            command = [sys.executable, *script]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
        output = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
        peaks = [json.loads(line)["peak_mib"] for line in output.splitlines() if line.startswith('{"rank"')]
        log = [json.loads(line) for line in (Path(tmp) / "out" / "01-sup" / "log.jsonl").open()]
    seconds = sum(row["seconds"] for row in log[1:])
    examples = batch * processes * (len(log) - 1)
    return {
        "processes": processes,
        "threads each": threads,
        "weights trained": "LoRA" if lora else "all" + (", FSDP" if fsdp else ""),
        "batch per process": batch,
        "grad_cache_chunk": chunk or "—",
        "effective batch": batch * processes,
        "examples/s": round(examples / seconds, 2),
        "peak MiB per process": max(peaks),
        "state MiB per process": round(max(row["state_mib"] for row in log)),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(*sys.argv[2:5])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    b = args.batch
    rows = [
        run(args.model, args.steps, b, 0, processes=1, threads=2),
        run(args.model, args.steps, b // 2, 0, processes=2, threads=1),  # same global batch, 2 processes
        run(args.model, args.steps, 4 * b, 0, processes=1, threads=2),  # 4x batch, all at once
        run(args.model, args.steps, 4 * b, b, processes=1, threads=2),  # 4x batch through GradCache
        run(args.model, args.steps, b // 2, 0, processes=2, threads=1, lora=False),  # full fine-tuning
        run(args.model, args.steps, b // 2, 0, processes=2, threads=1, lora=False, fsdp=True),
    ]
    table = Table(*rows[0].keys(), title=f"training scale-out, {args.model}, 2 CPU cores")
    for row in rows:
        table.add_row(*map(str, row.values()))
    Console(width=200).print(table)
    (HERE / "results" / "scale.json").write_text(
        json.dumps({"model": args.model, "results": rows}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
