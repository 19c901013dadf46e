"""Metadata filters (equality, IN, numeric ranges): a closed grammar, parsed from the CLI or a dict.

Each store backend compiles them to its own SQL (``where`` in ``sqlite_store.py``, ``postgres_store.py``),
splicing in only the clauses in use: optional-filter forms such as ``(:x IS NULL OR col = :x)`` silently
return nothing inside sqlite-vec's KNN.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

RANGE_OPS = (">=", "<=", ">", "<")
OPS = ("=", "in", *RANGE_OPS)  # the closed grammar: backends splice the operator into SQL text
FIELD = re.compile(r"^[A-Za-z0-9_.\-]+$")
MAX_IN_VALUES = 256
MAX_TEXT = 1000


def _check_scalar(where: str, value: Any) -> None:
    """A filter value is a string, a boolean, an integer or a finite float, as JSON metadata holds."""
    if isinstance(value, bool) or (isinstance(value, str) and len(value) <= MAX_TEXT):
        return
    if isinstance(value, int) and abs(value) < 2**63:
        return
    if isinstance(value, float) and math.isfinite(value):
        return
    raise ValueError(
        f"filter {where}: {value!r} is not a value to compare with (expected a string of at most "
        f"{MAX_TEXT} characters, a boolean, a 64-bit integer or a finite number)"
    )


@dataclass(frozen=True)
class Filter:
    """``metadata[field] op value``; for ``in`` the value is a tuple of allowed values."""

    field: str
    op: Literal["=", "in", ">", ">=", "<", "<="]
    value: Any

    def __post_init__(self) -> None:
        if not isinstance(self.field, str) or not FIELD.match(self.field):
            raise ValueError(f"filter field {self.field!r}: use letters, digits, '_', '-' and '.'")
        if self.op not in OPS:
            raise ValueError(f"filter {self.field}: unknown operator {self.op!r} (one of {', '.join(OPS)})")
        if self.op == "in":
            if not isinstance(self.value, tuple) or not 0 < len(self.value) <= MAX_IN_VALUES:
                raise ValueError(f"filter {self.field}: a list of 1 to {MAX_IN_VALUES} values is expected")
            for value in self.value:
                _check_scalar(self.field, value)
            return
        _check_scalar(self.field, self.value)
        numeric = isinstance(self.value, (int, float)) and not isinstance(self.value, bool)
        if self.op in RANGE_OPS and not numeric:
            raise ValueError(f"filter {self.field}{self.op}{self.value!r}: a range needs a number")


def _scalar(text: str) -> Any:
    """``2000`` → 2000, ``true`` → True, anything else stays a string."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, (int, float, bool)) else text


def parse_filter(text: str) -> Filter:
    """``lang=en``, ``lang=en,fr`` (IN), ``year>=2000``, ``year<2010``."""
    for op in (*RANGE_OPS, "="):
        field, sep, value = text.partition(op)
        if sep and field and value:
            field = field.strip()
            if op != "=":
                return Filter(field, op, _scalar(value.strip()))  # type: ignore[arg-type]
            values = [_scalar(v.strip()) for v in value.split(",")]
            return Filter(field, "in", tuple(values)) if len(values) > 1 else Filter(field, "=", values[0])
    raise ValueError(f"filter {text!r}: expected FIELD=VALUE, FIELD=V1,V2, or FIELD>=N (also >, <, <=)")


def normalize(filters: Mapping[str, Any] | Sequence[Filter | str] | None) -> list[Filter]:
    """Filters from a dict (``{"lang": "en", "tag": ["a", "b"], "year": {">=": 2000}}``) or a list."""
    if not filters:
        return []
    if isinstance(filters, Mapping):
        out = []
        for field, value in filters.items():
            if isinstance(value, Mapping):  # {"year": {">=": 2000}}: only range operators go here
                for op, bound in value.items():
                    if op not in RANGE_OPS:
                        raise ValueError(
                            f"filter {field}: unknown operator {op!r} (one of {', '.join(RANGE_OPS)})"
                        )
                    out.append(Filter(field, op, bound))
            elif isinstance(value, (list, tuple)):
                out.append(Filter(field, "in", tuple(value)))
            else:
                out.append(Filter(field, "=", value))
        return out
    return [f if isinstance(f, Filter) else parse_filter(f) for f in filters]
