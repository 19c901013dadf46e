"""Hard constraints read out of a query by the instruct model, restricted to the index's own metadata.

In "how to read a file in Python", "in Python" is a constraint, not a similarity signal. For each metadata
field of the index with a few text values (``Store.facets``), the generator is asked which value the query
restricts that field to, and the answer is a constrained choice: the log-probability of each allowed
answer — ``any`` or one of the values that occur — as the model's whole reply (``choice_logprobs``), never
free text that could name a value the index does not hold. A value becomes a filter when the model prefers
it to ``any`` by more than ``margin`` (natural log).

    reading = read_filters(encoder, "how to read a file in Python", {"lang": {"python": 40, "go": 12}})
    reading.filters    # {"lang": "python"}
    reading.explain()  # each field's options and their log-probabilities
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NO_FILTER = "any"
MAX_VALUES = 30  # a field with more distinct values is not offered (the prompt would list them all)
PROMPT = (
    "A search engine holds documents tagged with a field '{field}'. Its values are: {values}.\n"
    'Search query: "{query}"\n'
    "Does the query itself say that only documents with one particular {field} are wanted? Reply with "
    "that value exactly, or with '{none}' if the query does not name or imply one."
)


@dataclass
class Reading:
    """What the model read: the filters it proposes and, per field, each option's log-probability."""

    query: str
    filters: dict[str, Any]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    margin: float = 0.0

    def explain(self) -> list[str]:
        """One line per field considered: the chosen option and the runners-up with their log-probs."""
        lines = []
        for name, options in self.scores.items():
            ranked = sorted(options.items(), key=lambda kv: -kv[1])
            shown = ", ".join(f"{option} {score:.2f}" for option, score in ranked[:4])
            chosen = f"{name}={self.filters[name]}" if name in self.filters else f"{name}: no filter"
            lines.append(f"{chosen}  (log-probs: {shown}; margin over '{NO_FILTER}' {self.margin})")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {"filters": self.filters, "scores": self.scores, "margin": self.margin}


def offered(facets: Mapping[str, Mapping[Any, int]], max_values: int = MAX_VALUES) -> dict[str, list[str]]:
    """The fields worth asking about: text values only, 2 to ``max_values`` of them, most frequent first."""
    fields = {}
    for name, counts in facets.items():
        values = [v for v, _ in sorted(counts.items(), key=lambda kv: -kv[1]) if isinstance(v, str) and v]
        if 2 <= len(values) <= max_values and NO_FILTER not in values:
            fields[name] = values
    return fields


def read_filters(
    generator: Any,
    query: str,
    facets: Mapping[str, Mapping[Any, int]],
    *,
    margin: float = 0.0,
    max_values: int = MAX_VALUES,
) -> Reading:
    """Propose ``{field: value}`` filters for ``query`` from ``facets`` (field -> value -> documents)."""
    if not query.strip():
        raise ValueError("the query is empty")
    if not hasattr(generator, "choice_logprobs"):
        raise ValueError(
            f"{generator.spec} cannot read queries (a sentence-transformers model?): "
            "auto-filter needs a dec2vec decoder, e.g. the shipped smollm2-135m-embed"
        )
    reading = Reading(query, {}, margin=margin)
    for name, values in offered(facets, max_values).items():
        prompt = PROMPT.format(field=name, values=", ".join(values), query=query, none=NO_FILTER)
        options = [NO_FILTER, *values]
        scores = generator.choice_logprobs([{"role": "user", "content": prompt}], options)
        reading.scores[name] = dict(zip(options, scores, strict=True))
        best = max(range(1, len(options)), key=scores.__getitem__)
        if scores[best] > scores[0] + margin:
            reading.filters[name] = options[best]
    return reading
