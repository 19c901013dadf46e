"""Documents to index, read from text, Markdown and JSONL files or whole directories."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dec2vec.files import DataFormatError, read_jsonl

TEXT_SUFFIXES = (".txt", ".md")
SUFFIXES = (*TEXT_SUFFIXES, ".jsonl")


@dataclass
class Document:
    """One unit of ingest: ``id`` is the caller's key (upserts and deletes use it)."""

    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def content_hash(self) -> str:
        """Changes whenever anything stored for the document would change; unchanged documents are skipped."""
        payload = json.dumps([self.text, self.title, self.metadata], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()


def _check_jsonl(row: dict[str, Any]) -> str | None:
    doc_id = row.get("id", row.get("_id"))
    if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        return "expected an 'id' (string or integer; BEIR's '_id' works too)"
    if not row["text"].strip() and not str(row.get("title", "")).strip():
        return "'text' and 'title' are both empty"
    if not isinstance(row.get("title", ""), str):
        return "'title' must be a string"
    if not isinstance(row.get("metadata", {}), dict):
        return "'metadata' must be an object"
    if unknown := sorted(set(row) - {"id", "_id", "text", "title", "metadata"}):
        return f"unknown keys {unknown} (expected id, text, title, metadata)"
    return None


def _text_file(path: Path, root: Path) -> Document:
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataFormatError(f"{path}: empty file")
    title = path.stem
    if path.suffix == ".md":  # a leading "# Heading" is the title
        first = text.lstrip().split("\n", 1)[0]
        if first.startswith("# "):
            title = first[2:].strip()
    return Document(
        id=path.relative_to(root).as_posix(), text=text, title=title, metadata={"source": str(path)}
    )


def read_documents(paths: list[str | Path]) -> Iterator[Document]:
    """Documents from files (.txt/.md: one per file, id = path; .jsonl: one per line) and directories.

    JSONL lines are ``{"id", "text", "title"?, "metadata"?}``; a bad line raises with file:line.
    """
    for given in map(Path, paths):
        if given.is_dir():
            files = sorted(p for p in given.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
            root = given
        elif given.is_file():
            files, root = [given], given.parent
        else:
            raise DataFormatError(f"{given}: no such file or directory")
        for path in files:
            if path.suffix == ".jsonl":
                for row in read_jsonl(path, required={"text": str}, check=_check_jsonl):
                    yield Document(
                        id=str(row.get("id", row.get("_id"))),
                        text=row["text"],
                        title=row.get("title", ""),
                        metadata=row.get("metadata", {}),
                    )
            elif path.suffix in TEXT_SUFFIXES:
                yield _text_file(path, root)
            else:
                raise DataFormatError(
                    f"{path}: cannot index {path.suffix or 'suffixless'} files (use {SUFFIXES})"
                )


def read_queries(path: Path) -> list[tuple[Any, str]]:
    """(query id, text) per line of a JSONL file of ``{"_id" (or "id"), "text"}``; no id: the line's index."""
    rows = read_jsonl(path, {"text": str})
    return [(row.get("_id", row.get("id", i)), row["text"]) for i, row in enumerate(rows)]
