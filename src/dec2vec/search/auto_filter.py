"""Hard constraints read out of a query by the instruct model, restricted to the index's own metadata.

In "how to read a file in Python", "in Python" is a constraint, not a similarity signal. For each metadata
field of the index with a few text values (``Store.facets``), the causal model scores the query as the
continuation of "A search for documents whose {field} is {value}." for each value that occurs, and of the
same sentence with no value (``NO_FILTER``). A value's score is how much more likely it makes the query, in
nats: ``log P(query | value) - log P(query | no value)``. It becomes a filter when that gain exceeds
``margin``; a value the index does not hold is never proposed, and nothing is parsed from free text.

Why this direction: asked to *name* the value, SmolLM2-135M answered "any" to nearly every query
(recall 0.03 on benchmarks/auto_filter.py); asked how well each value *explains* the query — noisy-channel
prompting (Min et al., 2022, "Noisy Channel Language Model Prompting for Few-Shot Text Classification")
— the same model finds the subject of most queries that state one (see the README's table).

    reading = read_filters(encoder, "how to read a file in Python", {"lang": {"python": 40, "go": 12}})
    reading.filters    # {"lang": "python"}
    reading.explain()  # each field's values and the nats each adds to the query's log-probability
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NO_FILTER = "any"
MAX_VALUES = 30  # a field with more distinct values is not offered (each value is one more scoring pass)
MARGIN = 2.0  # nats; below it, "how to read a whole file into memory" would be read as lang=python
PROMPT = "A search for documents whose {field} is {value}.\nQuery:"
PROMPT_NO_VALUE = "A search for documents.\nQuery:"


@dataclass
class Reading:
    """What the model read: the filters it proposes and, per field, each value's gain over no value."""

    query: str
    filters: dict[str, Any]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    margin: float = MARGIN

    def explain(self) -> list[str]:
        """One line per field considered: the chosen value and the runners-up with their gains."""
        lines = []
        for name, options in self.scores.items():
            ranked = sorted(options.items(), key=lambda kv: -kv[1])
            shown = ", ".join(f"{value} {score:+.2f}" for value, score in ranked[:4])
            chosen = f"{name}={self.filters[name]}" if name in self.filters else f"{name}: no filter"
            lines.append(f"{chosen}  (nats over '{NO_FILTER}': {shown}; margin {self.margin})")
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
    margin: float = MARGIN,
    max_values: int = MAX_VALUES,
) -> Reading:
    """Propose ``{field: value}`` filters for ``query`` from ``facets`` (field -> value -> documents)."""
    if not query.strip():
        raise ValueError("the query is empty")
    if not hasattr(generator, "continuation_logprobs"):
        raise ValueError(
            f"{generator.spec} cannot read queries (a sentence-transformers model?): "
            "auto-filter needs a dec2vec decoder, e.g. the shipped default encoder"
        )
    reading = Reading(query, {}, margin=margin)
    for name, values in offered(facets, max_values).items():
        prompts = [PROMPT_NO_VALUE, *(PROMPT.format(field=name, value=value) for value in values)]
        base, *given = generator.continuation_logprobs(prompts, " " + query.strip())
        reading.scores[name] = {NO_FILTER: 0.0} | {v: s - base for v, s in zip(values, given, strict=True)}
        best = max(values, key=reading.scores[name].__getitem__)
        if reading.scores[name][best] > margin:
            reading.filters[name] = best
    return reading
