"""One server's state: settings, the encoder, its micro-batcher, the index, metrics, threads and keys.

Routes reach it through ``server(request)`` (it lives on ``app.state``), so each route module is a plain
``APIRouter`` and the state can be built and inspected without an app.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dec2vec.answering import Answerer
from dec2vec.encoder import Encoder
from dec2vec.kv_cache import PrefixCache
from dec2vec.search import Index
from dec2vec.serving.batching import MicroBatcher
from dec2vec.serving.wire import APIError


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
    kv_cache_mib: float = 256.0  # key-value states of grounded prompts kept for reuse (kv_cache.PrefixCache)
    allowed_hosts: list[str] | None = None  # Host header names accepted (DNS rebinding); None: any
    cors_origins: list[str] = field(default_factory=list)  # browser origins allowed to call; none by default
    generation: bool = True


class Metrics:
    """The Prometheus series one server exports at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dec2vec_requests", "HTTP requests", ["path", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "dec2vec_request_seconds", "Request latency", ["path"], registry=self.registry
        )
        self.batch_sizes = Histogram(
            "dec2vec_batch_size", "Texts per embedding forward pass", registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )  # fmt: skip
        self.tokens = Counter("dec2vec_tokens", "Tokens processed", ["kind"], registry=self.registry)

    def watch(self, cache: PrefixCache) -> None:
        """Export the key-value cache's counters, read at each scrape."""
        series = {
            "hits": "grounded prompts that started from cached key-value states",
            "misses": "grounded prompts that found nothing cached",
            "reused_tokens": "prompt tokens taken from the cache instead of prefilled",
            "prefilled_tokens": "prompt tokens prefilled (and cached)",
            "evictions": "cached prefixes dropped to stay within the size limit",
        }
        for name, help_text in series.items():
            gauge = Gauge(f"dec2vec_kv_cache_{name}", help_text, registry=self.registry)
            gauge.set_function(lambda name=name: getattr(cache.stats, name))
        size = Gauge("dec2vec_kv_cache_bytes", "Bytes of cached key-value states", registry=self.registry)
        size.set_function(lambda: cache.bytes)


class ServerState:
    """Everything the routes share. All model and index work runs on the one model thread; generation
    streams from its own pool on the same weights."""

    def __init__(self, encoder: Encoder, index_location: str | None, settings: ServerSettings) -> None:
        self.encoder, self.index_location, self.settings = encoder, index_location, settings
        self.index: Index | None = None  # opened at start, on the model thread
        self.kv_cache = PrefixCache(settings.kv_cache_mib)
        self.metrics = Metrics()
        self.metrics.watch(self.kv_cache)
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dec2vec-model")
        self.generation_threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dec2vec-generate")
        self.generating: set[threading.Event] = set()  # one per running generation: set it to stop it
        self.writing = asyncio.Lock()  # one document write at a time
        self.batcher = MicroBatcher(
            self._encode, self.model_thread, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
            on_batch=self.metrics.batch_sizes.observe,
        )  # fmt: skip

    def _encode(self, texts: list[str], prompt_name: str | None) -> np.ndarray:
        # One forward pass per micro-batch; a single large request is cut into passes of 64 texts.
        size = min(len(texts), 64)
        return self.encoder.encode(texts, prompt_name=prompt_name, batch_size=size, show_progress=False)

    async def on_model_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.model_thread, fn, *args)

    def the_index(self) -> Index:
        if self.index is None:
            raise APIError(404, "this server has no index: start it with --db")
        return self.index

    def the_answerer(self) -> Answerer:
        """Grounded answers from the index with the server's encoder; the cache lasts as the server does."""
        return Answerer(self.the_index(), self.encoder, cache=self.kv_cache)

    async def start(self) -> None:
        self.batcher.start()
        if self.index_location is not None:  # opened on the model thread, the only one to use it
            location = self.index_location
            self.index = await self.on_model_thread(lambda: Index(location, self.encoder))

    async def stop(self) -> None:
        for leave in list(self.generating):  # shutdown does not wait for answers nobody will read
            leave.set()
        self.generation_threads.shutdown(wait=False, cancel_futures=True)
        await self.batcher.stop()
        if self.index is not None:
            await self.on_model_thread(self.index.close)
        self.model_thread.shutdown(wait=True)


def server(request: Request) -> ServerState:
    """The state of the app serving ``request`` (a FastAPI dependency)."""
    return request.app.state.server


def _check_key(request: Request, admin: bool) -> None:
    settings = server(request).settings
    wanted = settings.admin_key if admin and settings.admin_key else settings.api_key
    if wanted is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":  # RFC 7235: the scheme is case-insensitive
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'")
    if not secrets.compare_digest(given.strip().encode(), wanted.encode()):
        raise APIError(403 if admin and settings.admin_key else 401, "invalid API key")


async def require_key(request: Request) -> None:
    """The API key, when the server has one (every endpoint but /healthz and the page)."""
    _check_key(request, admin=False)


async def require_admin_key(request: Request) -> None:
    """The admin key for writes when the server has one, else the API key."""
    _check_key(request, admin=True)


State = Annotated[ServerState, Depends(server)]  # a route parameter of this type receives the state
