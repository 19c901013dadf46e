"""The ``dec2vec`` command line: embed files, compare texts, list models, run the demo."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from dec2vec.backbone import DEFAULT_BACKBONE, NAMED_BACKBONES, BackboneNotFoundError
from dec2vec.encoder import ATTENTION_MODES, DTYPES, Encoder
from dec2vec.files import read_jsonl
from dec2vec.pooling import POOLING_METHODS

app = typer.Typer(help="Turn any decoder-only LLM into a text encoder.", no_args_is_help=True)
console = Console()

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Named default, .gguf file, checkpoint or saved encoder.")
]
AttentionOpt = Annotated[str | None, typer.Option(help=f"One of {', '.join(ATTENTION_MODES)}.")]
PoolingOpt = Annotated[str | None, typer.Option(help=f"One of {', '.join(POOLING_METHODS)}.")]
DtypeOpt = Annotated[str, typer.Option(help=f"Weights dtype: {', '.join(DTYPES)}.")]

DEMO_SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The stock market fell sharply today.",
    "Share prices dropped after the announcement.",
    "A cat is sleeping on the sofa.",
]


def _load(model: str, attention: str | None, pooling: str | None, dtype: str) -> Encoder:
    try:
        return Encoder.load(model, attention=attention, pooling=pooling, dtype=dtype)  # type: ignore[arg-type]
    except (BackboneNotFoundError, ValueError) as err:
        raise typer.BadParameter(str(err), param_hint="--model/--attention/--pooling/--dtype") from err


def read_texts(path: Path, field: str) -> tuple[list[str], list[object]]:
    """Texts and ids from a text file (one text per line) or JSONL (``{field: ..., "id": ...}`` per line)."""
    if path.suffix == ".jsonl":
        rows = read_jsonl(path, {field: str})
        return [row[field] for row in rows], [row.get("id", i) for i, row in enumerate(rows)]
    texts = path.read_text(encoding="utf-8").splitlines()
    return texts, list(range(len(texts)))


@app.command()
def embed(
    input: Annotated[Path, typer.Option("--input", "-i", exists=True, dir_okay=False, help=".txt or .jsonl")],
    output: Annotated[Path, typer.Option("--output", "-o", help=".npy or .jsonl")],
    model: ModelOpt = DEFAULT_BACKBONE,
    attention: AttentionOpt = None,
    pooling: PoolingOpt = None,
    dtype: DtypeOpt = "float32",
    prompt_name: Annotated[
        str | None, typer.Option(help="Named prompt of the encoder (query, document).")
    ] = None,
    field: Annotated[str, typer.Option(help="JSONL field holding the text.")] = "text",
    batch_size: int = 32,
) -> None:
    """Embed every line of a text or JSONL file into a .npy matrix or JSONL {id, embedding} rows."""
    if output.suffix not in (".npy", ".jsonl"):
        raise typer.BadParameter("output must end in .npy or .jsonl", param_hint="--output")
    try:
        texts, ids = read_texts(input, field)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--input") from err
    encoder = _load(model, attention, pooling, dtype)
    vectors = encoder.encode(texts, prompt_name=prompt_name, batch_size=batch_size, show_progress=True)
    if output.suffix == ".npy":
        np.save(output, vectors)
    else:
        with output.open("w", encoding="utf-8") as out:
            for row_id, vector in zip(ids, vectors, strict=True):
                out.write(json.dumps({"id": row_id, "embedding": vector.tolist()}) + "\n")
    console.print(f"wrote {len(texts)} embeddings of dimension {encoder.dim} to {output}")


@app.command()
def similarity(
    a: str,
    b: str,
    model: ModelOpt = DEFAULT_BACKBONE,
    attention: AttentionOpt = None,
    pooling: PoolingOpt = None,
    dtype: DtypeOpt = "float32",
) -> None:
    """Print the cosine similarity of two texts."""
    encoder = _load(model, attention, pooling, dtype)
    vectors = encoder.encode([a, b])
    console.print(f"{float(vectors[0] @ vectors[1]):.4f}")


@app.command()
def models() -> None:
    """List the named default backbones, whether their package is installed and whether they are cached."""
    table = Table("name", "description", "package", "converted checkpoint")
    for backbone in NAMED_BACKBONES.values():
        installed, checkpoint = backbone.status()
        package = "installed" if installed else f"missing: {backbone.pip_command}"
        table.add_row(backbone.name, backbone.description, package, str(checkpoint or "not yet"))
    console.print(table)


@app.command("eval")
def eval_command(
    model: Annotated[
        list[str],
        typer.Option(
            "--model", "-m", help="Repeatable: model spec, e.g. smollm2-135m:causal:last, minilm, bm25."
        ),
    ],
    task: Annotated[
        list[str] | None, typer.Option("--task", "-t", help="Repeatable: TYPE:PATH, e.g. sts:stsb_dev.tsv.")
    ] = None,
    suite: Annotated[Path | None, typer.Option(help="TOML suite file of [[task]] entries.")] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write [{model, task, metric, value}].")
    ] = None,
    markdown_path: Annotated[Path | None, typer.Option("--markdown", help="Write a Markdown table.")] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG bar chart of each task's headline metric.")
    ] = None,
    scatter: Annotated[Path | None, typer.Option(help="Write a PNG of STS predicted vs gold.")] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Embedding cache (default $DEC2VEC_HOME/embeddings).")
    ] = None,
) -> None:
    """Score models side by side on local STS, retrieval, classification, clustering, pair and word tasks."""
    from dec2vec.evaluation import evaluate, load_suite, parse_task, report

    try:
        tasks = [parse_task(spec) for spec in task or []] + (load_suite(suite) if suite else [])
    except (ValueError, OSError) as err:
        raise typer.BadParameter(str(err), param_hint="--task/--suite") from err
    if not tasks:
        raise typer.BadParameter("give at least one --task or a --suite", param_hint="--task/--suite")
    try:
        evaluation = evaluate(model, tasks, cache_dir=cache_dir)
    except (BackboneNotFoundError, ValueError) as err:
        raise typer.BadParameter(str(err), param_hint="--model") from err
    console.print(report.table(evaluation))
    if json_path:
        report.write_json(evaluation, json_path)
    if markdown_path:
        markdown_path.write_text(report.markdown(evaluation))
    if plot:
        report.bar_chart(evaluation, plot)
    if scatter and not report.sts_scatter(evaluation, scatter):
        console.print("no STS task: no scatter plot written")


@app.command()
def train(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output directory: stage dirs, then the final encoder.")
    ],
    recipe: Annotated[str, typer.Option(help="Built-in recipe name or a TOML file.")] = "quick",
    model: ModelOpt = DEFAULT_BACKBONE,
    data: Annotated[
        list[str] | None,
        typer.Option(
            help="Repeatable: text (.txt/.jsonl) or pairs JSONL; replaces the recipe's data of that kind."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted run from its last checkpoint.")
    ] = False,
    dtype: DtypeOpt = "float32",
) -> None:
    """Train an encoder with a recipe (quick, llm2vec, llm2vec-supervised, supervised, grit) or TOML file."""
    from dec2vec.training.recipes import load_recipe
    from dec2vec.training.recipes import train as run_recipe
    from dec2vec.training.trainer import TrainingInterrupted

    try:
        plan = load_recipe(recipe)
        encoder = run_recipe(plan, model, out, data=data, resume=resume, dtype=dtype)
    except TrainingInterrupted as stop:
        console.print(f"[yellow]{stop}[/]")
        raise typer.Exit(130) from stop
    except (BackboneNotFoundError, ValueError, FileExistsError) as err:
        raise typer.BadParameter(str(err), param_hint="--recipe/--model/--data/--out") from err
    cfg = encoder.config
    console.print(
        f"saved encoder to {out} ({cfg.attention} attention, {cfg.pooling} pooling, {encoder.dim} dims)"
    )


@app.command()
def demo(
    model: ModelOpt = DEFAULT_BACKBONE,
    out: Annotated[
        Path, typer.Option(help="Where the quick recipe's encoder is written (reused if complete).")
    ] = Path("dec2vec-quick"),
) -> None:
    """The main job on the embedded defaults: train the quick recipe, compare raw and converted models."""
    from dec2vec.encoder import CONFIG_NAME
    from dec2vec.evaluation import build_task, evaluate, report
    from dec2vec.training.data import resolve
    from dec2vec.training.recipes import load_recipe
    from dec2vec.training.recipes import train as run_recipe

    if (out / CONFIG_NAME).exists():
        console.print(f"{out} already holds a trained encoder: evaluating it (delete it to train again)")
    else:
        console.print(
            f"training the quick recipe on {model} into {out} (Ctrl-C checkpoints; rerun to resume)"
        )
        run_recipe(load_recipe("quick"), model, out, resume=True)
    task = build_task("sts", resolve("builtin:demo_sts.tsv"), name="SICK-R trial (bundled)")
    labels = {
        f"{model}:causal:mean": "raw: causal mean",
        f"{model}:causal:last": "raw: causal last",
        f"{model}:bidirectional:mean": "raw: bidirectional mean",
        str(out): f"converted: {out.name}",
    }
    evaluation = evaluate(list(labels), [task])
    for row in evaluation.rows:
        row["model"] = labels[row["model"]]
    console.print(report.table(evaluation, title="raw backbone vs dec2vec-converted encoder"))
    encoder = Encoder.load(out)
    sims = encoder.encode(DEMO_SENTENCES) @ encoder.encode(DEMO_SENTENCES).T
    table = Table(
        "", *[str(i) for i in range(len(DEMO_SENTENCES))], title="converted encoder: cosine similarity"
    )
    for i, sentence in enumerate(DEMO_SENTENCES):
        table.add_row(f"{i}: {sentence}", *[f"{s:.2f}" for s in sims[i]])
    console.print(table)
    console.print(
        "Same weights, causal generation:",
        repr(encoder.generate("The capital of France is", max_new_tokens=8)),
    )


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
