"""Micro-batching: embedding requests that arrive together share one forward pass.

Requests queue up; a worker takes the first and waits at most ``max_wait_ms`` until as many texts are
queued as the last forward pass had (the callers just answered are likely on their way back), then takes
whatever else is already queued (never beyond ``max_batch`` texts), and runs them as one ``encode`` call per
prompt on the model thread, off the event loop. Each caller gets exactly its own rows back.

Waiting for the last pass's size rather than for a fixed window keeps concurrent clients in one pass
instead of splitting into groups that alternate, and costs a lone client nothing (its last pass had one text).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

EncodeFn = Callable[[list[str], str | None], np.ndarray]  # (texts, prompt name) -> (n, dim) float32


@dataclass
class _Request:
    texts: list[str]
    prompt_name: str | None
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Collects concurrent ``embed`` calls into shared batches (``max_batch=1``: one request at a time)."""

    def __init__(
        self,
        encode: EncodeFn,
        executor: Executor,
        *,
        max_batch: int = 64,
        max_wait_ms: float = 20.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.encode, self.executor = encode, executor
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.on_batch = on_batch or (lambda size: None)
        self.queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._held: _Request | None = None  # did not fit into the last batch: first in the next
        self._expected = max_batch  # texts worth waiting for: the last batch's size (at first, a full one)
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def embed(self, texts: Sequence[str], prompt_name: str | None = None) -> np.ndarray:
        """This request's embeddings, computed in a batch with whatever else arrived alongside it."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Request(list(texts), prompt_name, future))
        return await future

    async def _gather(self) -> list[_Request]:
        held, self._held = self._held, None
        batch = [held if held is not None else await self.queue.get()]
        size = len(batch[0].texts)
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch:
            try:
                if self.queue.empty():  # wait for more only up to the expected size, within the window
                    if size >= self._expected:
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    request = await asyncio.wait_for(self.queue.get(), remaining)
                else:
                    request = self.queue.get_nowait()
            except TimeoutError:
                break
            if size + len(request.texts) > self.max_batch:
                self._held = request
                break
            batch.append(request)
            size += len(request.texts)
        self._expected = size
        return batch

    def _compute(self, batch: list[_Request]) -> list[np.ndarray]:
        """On the model thread: one encode per prompt over all texts that share it, split back per request."""
        out: list[np.ndarray] = [np.empty(0)] * len(batch)
        for prompt in dict.fromkeys(r.prompt_name for r in batch):
            members = [i for i, r in enumerate(batch) if r.prompt_name == prompt]
            vectors = self.encode([t for i in members for t in batch[i].texts], prompt)
            offset = 0
            for i in members:
                out[i] = vectors[offset : offset + len(batch[i].texts)]
                offset += len(batch[i].texts)
        self.on_batch(sum(len(r.texts) for r in batch))
        return out

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            try:
                results = await loop.run_in_executor(self.executor, self._compute, batch)
            except Exception as err:  # every caller of the failed batch hears about it
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(err)
                continue
            for request, vectors in zip(batch, results, strict=True):
                if not request.future.done():  # a caller that went away has a cancelled future
                    request.future.set_result(vectors)
