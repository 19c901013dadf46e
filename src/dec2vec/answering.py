"""Retrieval-augmented answers from one model: search an index, ground a prompt in the hits, generate.

GRIT's point made usable: the index's own encoder (the shipped default embeds *and* chats) retrieves the
passages and writes the answer. The prompt is built from token segments — the fixed instruction, one per
numbered passage, then the question — so a ``PrefixCache`` can hand generation the causal states of a
prefix it has seen (the instruction always; passages when the same ones come back in the same order)::

    from dec2vec.answering import Answerer
    from dec2vec.search import Index

    with Index("dec2vec-demo.db") as index:
        answer = Answerer(index).ask("Who painted the Mona Lisa?", k=4)
    print(answer.text, [s.id for s in answer.sources if s.cited])
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from dec2vec.kv_cache import PrefixCache
from dec2vec.search.index import Hit, Index

INSTRUCTION = (
    "Answer the question using the numbered passages. Cite the passages you use like [1] or [2]. "
    "If the passages do not contain the answer, say that you do not know."
)
CACHE_MODES = ("prefix", "off")  # what PrefixCache does, and no reuse at all
_CITATION = re.compile(r"\[(\d+)\]")


def cited_numbers(text: str) -> set[int]:
    """The passage numbers an answer cites as ``[n]``."""
    return {int(n) for n in _CITATION.findall(text)}


@dataclass
class Source:
    """A passage the answer was grounded in: its number in the prompt and whether the answer cites it."""

    number: int
    id: str
    title: str
    score: float
    text: str
    cited: bool = False


@dataclass
class Answer:
    question: str
    text: str
    sources: list[Source]
    # seconds: retrieve, first_token (after retrieval), generate; tokens: prompt, reused, new; new tokens/s
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.text,
            "sources": [{k: v for k, v in asdict(s).items() if k != "text"} for s in self.sources],
            "timings": self.timings,
        }


class AnswerStream:
    """The answer's text piece by piece; after the last piece, ``answer`` holds the whole ``Answer``."""

    def __init__(self, pieces: Iterator[str], finish: Callable[[str], Answer]) -> None:
        self._pieces, self._finish = pieces, finish
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        said = []
        for piece in self._pieces:
            said.append(piece)
            yield piece
        self.answer = self._finish("".join(said))


class Answerer:
    """Answers questions from ``index`` with ``generator`` (default: the index's own encoder); with no index,
    ``stream``/``ask`` take the passages as ``hits``."""

    def __init__(
        self,
        index: Index | None,
        generator: Any = None,
        *,
        cache: PrefixCache | None = None,
        instruction: str = INSTRUCTION,
    ) -> None:
        self.index = index
        if index is None and generator is None:
            raise ValueError("an Answerer needs an index, a generator, or both")
        self.generator = generator if generator is not None else index.encoder  # type: ignore[union-attr]
        if not hasattr(self.generator, "stream_ids"):
            raise ValueError(
                f"{self.generator.spec} cannot generate (a sentence-transformers model?): "
                "ask needs a dec2vec decoder, e.g. the shipped default encoder"
            )
        self.cache = cache if cache is not None else PrefixCache()
        self.instruction = instruction

    def segments(self, question: str, hits: list[Hit]) -> list[list[int]]:
        """The prompt's token ids in segments: instruction (with the chat template's opening), one per
        passage, then the question (with the template's closing and the assistant's turn)."""
        tokenizer = self.generator.tokenizer
        marker = "\x00PASSAGES\x00"
        if tokenizer.chat_template:
            messages = [{"role": "system", "content": self.instruction}, {"role": "user", "content": marker}]
            templated = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            head, tail = templated.split(marker)
        else:
            head, tail = f"{self.instruction}\n\n", "\nAnswer:"
        texts = [f"{head}Passages:\n"]
        texts += [f"[{n}] {h.title}\n{h.text}\n\n" if h.title else f"[{n}] {h.text}\n\n" for n, h in
                  enumerate(hits, start=1)]  # fmt: skip
        texts.append(f"Question: {question.strip()}{tail}")
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        if tokenizer.bos_token_id is not None and not tokenizer.chat_template:
            ids[0] = [tokenizer.bos_token_id, *ids[0]]
        return ids

    def context(self, question: str, **search: Any) -> str:
        """The prompt generation would be given, as text (``--context-only``)."""
        hits = self.retrieve(question, **search)
        return self.generator.tokenizer.decode([t for s in self.segments(question, hits) for t in s])

    def stream(
        self,
        question: str,
        *,
        max_new_tokens: int = 128,
        cache: str = "prefix",
        hits: list[Hit] | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        **search: Any,
    ) -> AnswerStream:
        """Retrieve with ``search`` options (``k``, ``mode``, ``filters``, ``rerank`` …), or take ``hits``
        already retrieved (the server searches on its model thread), then stream the answer."""
        if cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")
        if not question.strip():
            raise ValueError("the question is empty")
        start = time.perf_counter()
        if hits is None:
            hits = self.retrieve(question, **search)
        elif search:
            raise ValueError(f"search options {sorted(search)} do not apply to hits already retrieved")
        retrieved = time.perf_counter()
        segments = self.segments(question, hits)
        ids = [t for s in segments for t in s]
        if len(ids) + max_new_tokens > self.generator.context_length:
            raise ValueError(
                f"the grounded prompt is {len(ids)} tokens and the answer may take {max_new_tokens}: the "
                f"model's context is {self.generator.context_length}; ask for fewer passages (-k)"
            )
        timings: dict[str, float] = {"retrieve_s": round(retrieved - start, 4), "prompt_tokens": len(ids)}

        def pieces() -> Iterator[str]:
            states, reused = (
                self.cache.prefill(self.generator.model, segments) if cache != "off" else (None, 0)
            )
            timings["reused_tokens"] = reused
            sampling = {"temperature": temperature, "top_p": top_p}
            usage: dict[str, int] = {}
            for piece in self.generator.stream_ids(
                ids, past_key_values=states, max_new_tokens=max_new_tokens, usage=usage, **sampling
            ):
                timings.setdefault("first_token_s", round(time.perf_counter() - retrieved, 4))
                yield piece
            done = time.perf_counter()
            new_tokens = usage.get("new_tokens", 0)
            timings["generate_s"] = round(done - retrieved, 4)
            timings["new_tokens"] = new_tokens
            if "first_token_s" in timings and done > retrieved + timings["first_token_s"]:
                timings["tokens_per_s"] = round(
                    max(new_tokens - 1, 0) / (done - retrieved - timings["first_token_s"]), 2
                )

        def finish(text: str) -> Answer:
            cited = cited_numbers(text)
            sources = [
                Source(n, h.id, h.title, round(h.score, 6), h.text, cited=n in cited)
                for n, h in enumerate(hits, start=1)
            ]
            return Answer(question, text.strip(), sources, timings)

        return AnswerStream(pieces(), finish)

    def ask(self, question: str, **options: Any) -> Answer:
        """The whole answer at once; options as for ``stream``."""
        stream = self.stream(question, **options)
        for _ in stream:
            pass
        assert stream.answer is not None
        return stream.answer

    def retrieve(self, question: str, **search: Any) -> list[Hit]:
        """The passages to ground ``question`` in: ``Index.search`` with ``k=4`` unless told otherwise."""
        if not question.strip():
            raise ValueError("the question is empty")
        if self.index is None:
            raise ValueError("this Answerer has no index: give the passages as hits")
        return self.index.search(question, **{"k": 4, **search})
