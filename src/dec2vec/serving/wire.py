"""OpenAI's wire format, as pure functions and models: request bodies, errors, and response shaping.

Nothing here touches the model, the index or the server's state, so every piece is testable alone.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator
from transformers import PreTrainedTokenizerBase

from dec2vec.search.index import Mode
from dec2vec.search.rerank import Reranker


class APIError(HTTPException):
    """An error answered as OpenAI does: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(status, message)
        self.param = param


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error"
    )
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


# ---- request bodies ---------------------------------------------------------------------------------


def _text_everywhere(value: Any, where: str = "body") -> None:
    """Every string in a body (keys too) must be valid Unicode: JSON escapes can smuggle in lone surrogates,
    which cannot be tokenized, stored or written back out."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"{where}: invalid text (a lone surrogate at character {err.start})") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _text_everywhere(key, where)
            _text_everywhere(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _text_everywhere(item, f"{where}[{i}]")


class Body(BaseModel):
    """A request body: unknown fields are ignored, as OpenAI's are; all text must be valid Unicode."""

    @model_validator(mode="before")
    @classmethod
    def _valid_text(cls, data: Any) -> Any:
        _text_everywhere(data)
        return data


Weight = Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]


class EmbeddingRequest(Body):
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None
    input_type: Literal["query", "document"] | None = None  # dec2vec: apply that prompt of the encoder


class ChatMessage(Body):
    role: Literal["system", "user", "assistant"]
    content: str


class GenerationOptions(Body):
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stream: bool = False
    user: str | None = None


class RetrievalOptions(Body):
    """``dec2vec.search`` of a chat request: ground the answer in the server's index."""

    model_config = ConfigDict(extra="forbid")  # our own block: a misspelt option is an error, not ignored
    k: int = Field(default=4, ge=1, le=32)
    mode: Mode = "hybrid"
    filters: dict[str, Any] | list[str] | None = None
    rerank: Reranker | None = None


class Dec2vecOptions(Body):
    model_config = ConfigDict(extra="forbid")
    search: RetrievalOptions


class ChatRequest(GenerationOptions):
    messages: list[ChatMessage] = Field(min_length=1)
    dec2vec: Dec2vecOptions | None = None  # opt-in retrieval (an extra body field for OpenAI clients)


class CompletionRequest(GenerationOptions):
    prompt: str | list[str]


class SearchRequest(Body):
    query: str = Field(min_length=1)
    k: int = Field(default=10, ge=1, le=1000)
    mode: Mode = "hybrid"
    filters: dict[str, Any] | list[str] | None = None
    rerank: Reranker | None = None
    rerank_candidates: int = Field(default=20, ge=1, le=200)
    rrf_k: int = Field(default=60, ge=1, le=100_000)
    weights: dict[Literal["dense", "lexical"], Weight] | None = None
    auto_filter: bool = False  # the model reads hard filters out of the query; the response says which
    auto_filter_margin: float | None = None  # nats a value must add to the query (default MARGIN)


class DocumentIn(Body):
    id: StrictStr | StrictInt  # strict: true must not become document "1"
    text: str = Field(min_length=1)
    title: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentsRequest(Body):
    documents: list[DocumentIn] = Field(default_factory=list)
    delete: list[str] = Field(default_factory=list)


# ---- embeddings -------------------------------------------------------------------------------------


def texts_of(given: EmbeddingRequest, tokenizer: PreTrainedTokenizerBase, max_inputs: int) -> list[str]:
    """The texts an embeddings request means: a string, strings, or token ids (checked, then decoded)."""
    raw = given.input
    if raw and not isinstance(raw, str) and not isinstance(raw[0], str):  # token ids
        vocabulary = len(tokenizer)
        for i, ids in enumerate(raw if isinstance(raw[0], list) else [raw]):
            if bad := [t for t in ids if not 0 <= t < vocabulary]:  # type: ignore[union-attr]
                raise APIError(400, f"input[{i}]: token id {bad[0]} is not in 0..{vocabulary - 1}", "input")
    if isinstance(raw, str):
        texts = [raw]
    elif raw and isinstance(raw[0], int):  # one text as token ids
        texts = [tokenizer.decode(raw)]
    elif raw and isinstance(raw[0], list):
        texts = [tokenizer.decode(ids) for ids in raw]
    else:
        texts = list(raw)  # type: ignore[arg-type]
    if not texts:
        raise APIError(400, "input is empty", "input")
    if len(texts) > max_inputs:
        raise APIError(400, f"{len(texts)} inputs: at most {max_inputs} per request", "input")
    if empty := [i for i, t in enumerate(texts) if not t.strip()]:
        raise APIError(400, f"input[{empty[0]}] is empty", "input")
    return texts


def fit(
    texts: list[str],
    tokenizer: PreTrainedTokenizerBase,
    limit: int,
    long_inputs: Literal["truncate", "error"],
) -> tuple[list[str], int]:
    """Texts within ``limit`` tokens (cut at a token boundary, or 413) and their total token count."""
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    counts = [len(ids) for ids in encoded["input_ids"]]
    if long_inputs == "error" and (long := [i for i, n in enumerate(counts) if n > limit]):
        raise APIError(413, f"input[{long[0]}] is {counts[long[0]]} tokens: at most {limit}", "input")
    out = [
        text[: offsets[limit - 1][1]] if count > limit else text
        for text, count, offsets in zip(texts, counts, encoded["offset_mapping"], strict=True)
    ]
    return out, sum(min(n, limit) for n in counts)


def embedding_list(
    vectors: np.ndarray, dimensions: int | None, encoding_format: str, model: str, tokens: int
) -> dict[str, Any]:
    """The ``/v1/embeddings`` response: vectors cut to ``dimensions`` (and renormalised), float or base64."""
    if dimensions is not None:
        if dimensions > vectors.shape[1]:
            raise APIError(400, f"dimensions must be at most {vectors.shape[1]}", "dimensions")
        vectors = vectors[:, :dimensions]
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    if encoding_format == "base64":
        data: Sequence[Any] = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vectors]
    else:
        data = [v.tolist() for v in vectors]
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# ---- generation -------------------------------------------------------------------------------------


def choice(chat: bool, text: str, finish: str | None, streamed: bool) -> dict[str, Any]:
    """One OpenAI ``choices`` entry: chat ``message``/``delta`` or completion ``text``."""
    if not chat:
        return {"index": 0, "text": text, "finish_reason": finish}
    if streamed:
        return {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
    return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def token_budget(
    max_tokens: int | None, prompt_tokens: int, context: int, server_cap: int, param: str
) -> int:
    """New tokens to allow: ``max_tokens`` (capped by the server) within what the context leaves."""
    left = context - prompt_tokens
    if max_tokens is not None and max_tokens > left:
        raise APIError(
            400,
            f"the context is {context} tokens: the prompt takes {prompt_tokens}, "
            f"max_tokens asks {max_tokens}",
            param,
        )
    return min(max_tokens or server_cap, server_cap, left)


def sources(answer_sources: Sequence[Any]) -> list[dict[str, Any]]:
    """The passages a grounded answer was given, in prompt order (``[n]`` in the answer is ``number`` n)."""
    return [
        {"number": s.number, "id": s.id, "title": s.title, "score": s.score, "text": s.text, "cited": s.cited}
        for s in answer_sources
    ]


def finish_reason(completion_tokens: int, budget: int) -> str:
    return "length" if completion_tokens >= budget else "stop"
