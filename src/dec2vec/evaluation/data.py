"""Readers for evaluation files, failing with ``file:line`` and what was expected.

Formats (as in the project's shared data): TSV with a header and no quoting, BEIR folders
(``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``), and CoNLL column files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dec2vec.files import DataFormatError, read_jsonl


def read_tsv(path: Path, columns: list[str], types: dict[str, Callable] | None = None) -> list[dict]:
    """Rows of a headed, unquoted TSV whose header must equal ``columns``; ``types`` converts fields."""
    types = types or {}
    rows = []
    with _open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        if header != columns:
            raise DataFormatError(
                f"{path}:1: expected header {'<TAB>'.join(columns)!r}, got {'<TAB>'.join(header)!r}"
            )
        for number, line in enumerate(f, start=2):
            line = line.rstrip("\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != len(columns):
                raise DataFormatError(
                    f"{path}:{number}: expected {len(columns)} tab-separated fields, got {len(fields)}"
                )
            row = dict(zip(columns, fields, strict=True))
            for name, convert in types.items():
                try:
                    row[name] = convert(row[name])
                except ValueError as err:
                    raise DataFormatError(
                        f"{path}:{number}: {name} {row[name]!r} is not a {convert.__name__}"
                    ) from err
            rows.append(row)
    if not rows:
        raise DataFormatError(f"{path}: no rows after the header")
    return rows


@dataclass
class BeirData:
    corpus: dict[str, str]  # doc id -> "title text"
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> relevance


def read_beir(folder: Path, split: str = "test") -> BeirData:
    """A BEIR retrieval folder; documents are embedded as ``title + " " + text`` (as MTEB does)."""
    corpus = {
        row["_id"]: f"{row.get('title') or ''} {row['text']}".strip()
        for row in read_jsonl(folder / "corpus.jsonl", {"_id": str, "text": str})
    }
    queries = {
        row["_id"]: row["text"] for row in read_jsonl(folder / "queries.jsonl", {"_id": str, "text": str})
    }
    qrels: dict[str, dict[str, int]] = {}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for row in read_tsv(qrels_path, ["query-id", "corpus-id", "score"], {"score": int}):
        qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = row["score"]
    missing = sorted(set(qrels) - set(queries))[:3]
    if missing:
        raise DataFormatError(f"{qrels_path}: query ids {missing} are not in queries.jsonl")
    return BeirData(corpus, {q: t for q, t in queries.items() if q in qrels}, qrels)


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """Sentences of a CoNLL file as (words, tags): first column the word, last column the tag."""
    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    with _open(path) as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if words:
                    sentences.append((words, tags))
                    words, tags = [], []
                continue
            if len(fields) < 2:
                raise DataFormatError(
                    f"{path}:{number}: expected 'word ... tag' columns, got {line.strip()!r}"
                )
            words.append(fields[0])
            tags.append(fields[-1])
    if words:
        sentences.append((words, tags))
    if not sentences:
        raise DataFormatError(f"{path}: no sentences")
    return sentences


def _open(path: Path):
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    return path.open(encoding="utf-8")
