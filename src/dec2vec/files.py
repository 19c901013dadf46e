"""Reading data files with errors that name the file, the line and what was expected."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path


class DataFormatError(ValueError):
    """A data file does not have the expected format; the message names the file and line."""


def all_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its line ending) for every line; bytes that are not UTF-8 are an error
    naming the line."""
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise DataFormatError(
                    f"{path}:{number}: not UTF-8 text (byte {raw[err.start]:#04x} at column {err.start + 1})"
                ) from None


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline) for every non-blank line."""
    return ((number, line) for number, line in all_lines(path) if line.strip())


def parse_json_object(path: Path, number: int, line: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}:{number}: not valid JSON ({err.msg})") from err
    if not isinstance(row, dict):
        raise DataFormatError(f"{path}:{number}: expected a JSON object")
    return row


def read_jsonl(
    path: Path, required: dict[str, type], check: Callable[[dict], str | None] | None = None
) -> list[dict]:
    """JSONL objects with ``required`` fields of the given types; ``check`` may return a complaint."""
    rows = []
    for number, line in read_lines(path):
        row = parse_json_object(path, number, line)
        for name, kind in required.items():
            if not isinstance(row.get(name), kind):
                raise DataFormatError(f"{path}:{number}: expected a {kind.__name__} field {name!r}")
        if check is not None and (problem := check(row)):
            raise DataFormatError(f"{path}:{number}: {problem}")
        rows.append(row)
    if not rows:
        raise DataFormatError(f"{path}: no records")
    return rows


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (model weights are hundreds of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_table(path: Path, required: list[str], optional: tuple[str, ...] = ()) -> list[dict]:
    """Records with string fields ``required`` (and ``optional`` where present) from a headed, unquoted
    TSV (other columns allowed), JSONL, or — when only ``text`` is required — a text file, one per line.

    Every record also carries ``line``, its line number, for errors raised further on.
    """
    if path.suffix == ".jsonl":
        rows = read_jsonl(path, dict.fromkeys(required, str))
        numbers = [number for number, _ in read_lines(path)]
        return [
            {"line": n, **{k: row[k] for k in (*required, *optional) if isinstance(row.get(k), str)}}
            for n, row in zip(numbers, rows, strict=True)
        ]
    if path.suffix == ".tsv":
        lines = all_lines(path)
        _, header_line = next(lines, (1, ""))
        header = header_line.split("\t")
        missing = [name for name in required if name not in header]
        if missing:
            raise DataFormatError(
                f"{path}:1: expected a header row with the columns {', '.join(required)} "
                f"(tab-separated), got {header_line[:80]!r}"
            )
        keep = [name for name in (*required, *optional) if name in header]
        rows = []
        for number, line in lines:
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != len(header):
                raise DataFormatError(
                    f"{path}:{number}: expected {len(header)} tab-separated fields, got {len(fields)}"
                )
            rows.append({"line": number, **{name: fields[header.index(name)] for name in keep}})
    elif required == ["text"]:
        rows = [{"line": number, "text": line} for number, line in read_lines(path)]
    else:
        raise DataFormatError(f"{path}: expected a .tsv or .jsonl file with {', '.join(required)}")
    if not rows:
        raise DataFormatError(f"{path}: no records")
    return rows
