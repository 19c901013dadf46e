"""The HTTP server: OpenAI-compatible embeddings and generation, search over an index, metrics, a web page.

One process holds one encoder. Embedding requests are micro-batched (``batching.py``); all model and
index work runs on one model thread, so the event loop keeps serving (health checks, slow clients,
streams) while a batch computes. Generation streams from its own thread on the same weights.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field, StrictInt, StrictStr, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dec2vec.encoder import Encoder
from dec2vec.search import Document, Index
from dec2vec.search.index import EMBED_DOCUMENTS, encoder_info
from dec2vec.serving.batching import MicroBatcher


@dataclass
class ServerSettings:
    """Limits and switches of one server; the CLI's ``dec2vec serve`` options map onto these."""

    model_name: str = "dec2vec"  # the ``model`` reported in responses
    api_key: str | None = None  # when set, every endpoint but /healthz (and the static page) needs it
    admin_key: str | None = None  # when set, document writes need this one instead
    max_inputs: int = 256  # texts per embeddings request
    max_input_tokens: int = 512  # tokens per text: longer ones are cut, or refused with 413
    long_inputs: Literal["truncate", "error"] = "truncate"
    max_body_bytes: int = 4 * 1024 * 1024
    max_batch: int = 64  # texts per forward pass; 1 serves one request at a time
    max_wait_ms: float = 20.0  # how long a batch may wait to be as large as the last one
    max_new_tokens: int = 1024  # cap on generation length
    max_prompt_tokens: int = 4096  # cap on a generation prompt (and never beyond the model's context)
    max_documents: int = 256  # documents per /v1/documents request
    allowed_hosts: list[str] | None = None  # Host header names accepted (DNS rebinding); None: any
    cors_origins: list[str] = field(default_factory=list)  # browser origins allowed to call; none by default
    generation: bool = True


class APIError(HTTPException):
    """An error answered as OpenAI does: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(status, message)
        self.param = param


def _error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error"
    )
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413, counting what actually arrives (not just
    Content-Length), before the app reads them into memory."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        seen, refused = 0, False

        # Over the limit, the 413 is sent at once and the app is told the client left: raising instead
        # would reach FastAPI's body parser, which turns any error into a 400.
        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                refused = True
                await self._refuse(send)
                return {"type": "http.disconnect"}
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, unless_refused)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(_error_body(413, f"request body over {self.limit} bytes")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Measure:
    """Counts requests by route and status and times them, for ``/metrics``.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs every
    request through an extra task and memory stream, a cost paid per embedding request under load.
    """

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            route = scope.get("route")  # set by the router once it has matched
            path = route.path if route is not None else "unmatched"
            self.requests.labels(path, str(status)).inc()
            self.latency.labels(path).observe(time.perf_counter() - start)


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


class ChatRequest(GenerationOptions):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(GenerationOptions):
    prompt: str | list[str]


class SearchRequest(Body):
    query: str = Field(min_length=1)
    k: int = Field(default=10, ge=1, le=1000)
    mode: Literal["dense", "lexical", "hybrid"] = "hybrid"
    filters: dict[str, Any] | list[str] | None = None
    rerank: Literal["maxsim", "yes"] | None = None
    rerank_candidates: int = Field(default=20, ge=1, le=200)
    rrf_k: int = Field(default=60, ge=1, le=100_000)
    weights: dict[Literal["dense", "lexical"], Weight] | None = None


class DocumentIn(Body):
    id: StrictStr | StrictInt  # strict: true must not become document "1"
    text: str = Field(min_length=1)
    title: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentsRequest(Body):
    documents: list[DocumentIn] = Field(default_factory=list)
    delete: list[str] = Field(default_factory=list)


# ---- the app ----------------------------------------------------------------------------------------

_END = object()


def create_app(encoder: Encoder, index: str | None = None, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``encoder`` and, if given, the index at ``index`` (path or URL)."""
    settings = settings or ServerSettings()
    model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dec2vec-model")
    generation_threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dec2vec-generate")
    writing = asyncio.Lock()
    generating: set[threading.Event] = set()  # one per running generation: set it and that one stops
    registry = CollectorRegistry()
    requests_total = Counter("dec2vec_requests", "HTTP requests", ["path", "status"], registry=registry)
    latency = Histogram("dec2vec_request_seconds", "Request latency", ["path"], registry=registry)
    batch_sizes = Histogram(
        "dec2vec_batch_size", "Texts per embedding forward pass", registry=registry,
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    )  # fmt: skip
    tokens_total = Counter("dec2vec_tokens", "Tokens processed", ["kind"], registry=registry)
    state: dict[str, Any] = {"index": None}

    def encode(texts: list[str], prompt_name: str | None) -> np.ndarray:
        # One forward pass per micro-batch; a single large request is cut into passes of 64 texts.
        size = min(len(texts), 64)
        return encoder.encode(texts, prompt_name=prompt_name, batch_size=size, show_progress=False)

    batcher = MicroBatcher(
        encode, model_thread, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
        on_batch=batch_sizes.observe,
    )  # fmt: skip

    async def on_model_thread(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(model_thread, fn, *args)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        if index is not None:  # opened on the model thread, which is the only one to use it
            state["index"] = await on_model_thread(lambda: Index(index, encoder))
        yield
        for leave in list(generating):  # shutdown does not wait for answers nobody will read
            leave.set()
        generation_threads.shutdown(wait=False, cancel_futures=True)
        await batcher.stop()
        if state["index"] is not None:
            await on_model_thread(state["index"].close)
        model_thread.shutdown(wait=True)

    public = settings.api_key is None  # with a key, the API description is behind it and no docs page
    app = FastAPI(
        title="dec2vec",
        lifespan=lifespan,
        docs_url="/docs" if public else None,
        redoc_url="/redoc" if public else None,
        openapi_url="/openapi.json" if public else None,
    )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    if settings.allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(Measure, requests=requests_total, latency=latency)  # outermost: sees the 413s too

    @app.exception_handler(StarletteHTTPException)  # FastAPI's, ours, and the router's 404/405
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        param = getattr(err, "param", None)
        body = _error_body(err.status_code, str(err.detail), param)
        return JSONResponse(body, status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse(_error_body(500, f"internal error: {type(err).__name__}"), status_code=500)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'][1:]) or 'body'}: {e['msg']}" for e in err.errors()
        )
        return JSONResponse(_error_body(400, f"invalid request: {problems}"), status_code=400)

    def key_check(admin: bool) -> Callable:
        async def check(request: Request) -> None:
            wanted = settings.admin_key if admin and settings.admin_key else settings.api_key
            if wanted is None:
                return
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer":  # RFC 7235: the scheme is case-insensitive
                raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'")
            if not secrets.compare_digest(given.strip().encode(), wanted.encode()):
                raise APIError(403 if admin and settings.admin_key else 401, "invalid API key")

        return check

    user = [Depends(key_check(admin=False))]
    admin = [Depends(key_check(admin=True))]

    # ---- embeddings ----------------------------------------------------------------------------------

    def texts_of(body: EmbeddingRequest) -> list[str]:
        given = body.input
        if given and not isinstance(given, str) and not isinstance(given[0], str):  # token ids
            vocabulary = len(encoder.tokenizer)
            for i, ids in enumerate(given if isinstance(given[0], list) else [given]):
                if bad := [t for t in ids if not 0 <= t < vocabulary]:  # type: ignore[union-attr]
                    raise APIError(
                        400, f"input[{i}]: token id {bad[0]} is not in 0..{vocabulary - 1}", "input"
                    )
        if isinstance(given, str):
            texts = [given]
        elif given and isinstance(given[0], int):  # one text as token ids
            texts = [encoder.tokenizer.decode(given)]
        elif given and isinstance(given[0], list):
            texts = [encoder.tokenizer.decode(ids) for ids in given]
        else:
            texts = list(given)  # type: ignore[arg-type]
        if not texts:
            raise APIError(400, "input is empty", "input")
        if len(texts) > settings.max_inputs:
            raise APIError(400, f"{len(texts)} inputs: at most {settings.max_inputs} per request", "input")
        if empty := [i for i, t in enumerate(texts) if not t.strip()]:
            raise APIError(400, f"input[{empty[0]}] is empty", "input")
        return texts

    def fit(texts: list[str]) -> tuple[list[str], int]:
        """Texts within the token limit (cut at a token boundary, or 413) and their total token count."""
        limit = settings.max_input_tokens
        counts = encoder.count_tokens(texts)
        if settings.long_inputs == "error" and (long := [i for i, n in enumerate(counts) if n > limit]):
            raise APIError(413, f"input[{long[0]}] is {counts[long[0]]} tokens: at most {limit}", "input")
        out = []
        for text, count in zip(texts, counts, strict=True):
            if count > limit:
                offsets = encoder.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
                text = text[: offsets["offset_mapping"][limit - 1][1]]
            out.append(text)
        return out, sum(min(n, limit) for n in counts)

    @app.post("/v1/embeddings", dependencies=user)
    async def embeddings(body: EmbeddingRequest) -> JSONResponse:
        texts, tokens = fit(texts_of(body))
        prompt = body.input_type if body.input_type in encoder.config.prompts else None
        vectors = await batcher.embed(texts, prompt)
        if body.dimensions is not None:
            if body.dimensions > vectors.shape[1]:
                raise APIError(400, f"dimensions must be at most {vectors.shape[1]}", "dimensions")
            vectors = vectors[:, : body.dimensions]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        tokens_total.labels("prompt").inc(tokens)
        if body.encoding_format == "base64":
            data = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vectors]
        else:
            data = [v.tolist() for v in vectors]
        # A ready response skips FastAPI's per-element validation of hundreds of floats per vector.
        return JSONResponse({
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
            "model": body.model or settings.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })  # fmt: skip

    # ---- generation ----------------------------------------------------------------------------------

    async def pieces(prompt: Any, options: GenerationOptions, budget: int, chat: bool) -> AsyncIterator[str]:
        """Generated text as it comes, from a thread that stops when this iterator is closed."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        leave = threading.Event()
        generating.add(leave)

        def pump() -> None:
            stream: Iterator[str] = encoder.generate_stream(
                prompt,
                max_new_tokens=budget,
                chat=chat,
                temperature=options.temperature,
                top_p=options.top_p,
            )
            try:
                for piece in stream:
                    if leave.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
            except Exception as err:
                loop.call_soon_threadsafe(queue.put_nowait, err)
            finally:
                stream.close()
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        loop.run_in_executor(generation_threads, pump)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            leave.set()
            generating.discard(leave)

    def usage(prompt_text: str, completion: str) -> dict[str, int]:
        prompt_tokens, completion_tokens = encoder.count_tokens([prompt_text, completion])
        tokens_total.labels("prompt").inc(prompt_tokens)
        tokens_total.labels("completion").inc(completion_tokens)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    def token_budget(options: GenerationOptions, prompt_tokens: int, param: str) -> int:
        """New tokens to allow: max_tokens (capped by the server) within what the context leaves."""
        left = encoder.context_length - prompt_tokens
        if options.max_tokens is not None and options.max_tokens > left:
            raise APIError(
                400,
                f"the context is {encoder.context_length} tokens: the prompt takes {prompt_tokens}, "
                f"max_tokens asks {options.max_tokens}",
                param,
            )
        return min(options.max_tokens or settings.max_new_tokens, settings.max_new_tokens, left)

    def finish_reason(completion_tokens: int, budget: int) -> str:
        return "length" if completion_tokens >= budget else "stop"

    def sse(chunks: AsyncIterator[dict]) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    def choice(chat: bool, text: str, finish: str | None, streamed: bool) -> dict[str, Any]:
        """One OpenAI ``choices`` entry: chat ``message``/``delta`` or completion ``text``."""
        if not chat:
            return {"index": 0, "text": text, "finish_reason": finish}
        if streamed:
            return {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
        return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}

    async def respond(
        request: Request, body: GenerationOptions, prompt: Any, prompt_text: str, chat: bool
    ) -> Any:
        """A completion, whole or as server-sent events, in the chat or the text-completion shape."""
        if not settings.generation:
            raise APIError(404, "generation is disabled on this server")
        param = "messages" if chat else "prompt"
        try:
            length = await asyncio.to_thread(encoder.prompt_tokens, prompt, chat=chat)
        except ValueError as err:
            raise APIError(400, str(err), param) from err
        limit = min(settings.max_prompt_tokens, encoder.context_length)
        if length > limit:
            raise APIError(413, f"the prompt is {length} tokens: at most {limit}", param)
        budget = token_budget(body, length, param)
        kind = "chat.completion" if chat else "text_completion"
        head = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": body.model or settings.model_name,
        }
        if not body.stream:
            text = ""
            async for piece in pieces(prompt, body, budget, chat):  # closing it stops the generator
                if await request.is_disconnected():
                    raise APIError(499, "the client went away")
                text += piece
            counts = usage(prompt_text, text)
            finish = finish_reason(counts["completion_tokens"], budget)
            return {
                **head,
                "object": kind,
                "choices": [choice(chat, text, finish, streamed=False)],
                "usage": counts,
            }
        kind += ".chunk" if chat else ""

        async def chunks() -> AsyncIterator[dict]:
            text = ""
            try:
                async for piece in pieces(prompt, body, budget, chat):
                    text += piece
                    yield {**head, "object": kind, "choices": [choice(chat, piece, None, streamed=True)]}
            except Exception as err:  # headers are sent: the error travels as the stream's last event
                yield _error_body(500, f"{err}")
                return
            finish = finish_reason(encoder.count_tokens([text])[0], budget)
            yield {**head, "object": kind, "choices": [choice(chat, "", finish, streamed=True)]}

        return sse(chunks())

    @app.post("/v1/chat/completions", dependencies=user)
    async def chat_completions(request: Request, body: ChatRequest) -> Any:
        messages = [m.model_dump() for m in body.messages]
        return await respond(request, body, messages, "\n".join(m["content"] for m in messages), chat=True)

    @app.post("/v1/completions", dependencies=user)
    async def completions(request: Request, body: CompletionRequest) -> Any:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise APIError(400, "give one prompt per request", "prompt")
        return await respond(request, body, prompts[0], prompts[0], chat=False)

    # ---- search and documents -----------------------------------------------------------------------

    def the_index() -> Index:
        if state["index"] is None:
            raise APIError(404, "this server has no index: start it with --db")
        return state["index"]

    @app.post("/v1/search", dependencies=user)
    async def search(body: SearchRequest) -> dict[str, Any]:
        index_ = the_index()
        options = body.model_dump(exclude={"query"})
        try:
            hits = await on_model_thread(lambda: index_.search(body.query, **options))
        except ValueError as err:  # e.g. a filter that cannot mean anything
            raise APIError(400, str(err), "filters") from err
        return {"object": "list", "data": [h.to_json() for h in hits]}

    @app.post("/v1/documents", dependencies=admin)
    async def documents(body: DocumentsRequest) -> dict[str, Any]:
        index_ = the_index()
        for name, items in (("documents", body.documents), ("delete", body.delete)):
            if len(items) > settings.max_documents:
                raise APIError(
                    413, f"{len(items)} {name}: at most {settings.max_documents} per request", name
                )
        docs = list(
            {str(d.id): Document(str(d.id), d.text, d.title, d.metadata) for d in body.documents}.values()
        )
        async with writing:  # one write request at a time, so what is found unchanged stays unchanged
            # Embedding runs in pieces on the model thread, so searches queued meanwhile run in between;
            # the write itself is one short transaction.
            embedded = []
            for start in range(0, len(docs), EMBED_DOCUMENTS):
                embedded += await on_model_thread(index_.embed, docs[start : start + EMBED_DOCUMENTS])

            def write() -> dict[str, Any]:
                added = {}
                if docs:
                    report = index_.add_embedded(
                        embedded, encoder_info(encoder), batch_size=max(len(embedded), 1), show_progress=False
                    )
                    unchanged = report.unchanged + len(docs) - len(embedded)
                    added = {"added": report.added, "updated": report.updated, "unchanged": unchanged}
                return {**added, "deleted": index_.delete(body.delete) if body.delete else 0}

            return await on_model_thread(write)

    # ---- operations and the page --------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": settings.model_name, "index": state["index"] is not None}

    if not public:

        @app.get("/openapi.json", dependencies=user, include_in_schema=False)
        async def openapi() -> dict[str, Any]:
            return app.openapi()

    @app.get("/metrics", dependencies=user)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    page = files("dec2vec.serving").joinpath("web")

    @app.get("/", response_class=HTMLResponse)
    async def home() -> str:
        return page.joinpath("index.html").read_text(encoding="utf-8")

    @app.get("/app.js")
    async def script() -> Response:
        return Response(page.joinpath("app.js").read_text(encoding="utf-8"), media_type="text/javascript")

    return app
