"""``POST /v1/chat/completions`` and ``/v1/completions``: generation from the encoder's own weights."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from dec2vec.serving.state import ServerState, State, require_key
from dec2vec.serving.wire import (
    APIError,
    ChatRequest,
    CompletionRequest,
    GenerationOptions,
    RetrievalOptions,
    choice,
    error_body,
    finish_reason,
    sources,
    token_budget,
    usage,
)

router = APIRouter(dependencies=[Depends(require_key)])
_END = object()


async def pieces(state: ServerState, start: Callable[[], Iterator[str]]) -> AsyncIterator[str]:
    """Generated text as it comes, from a thread that stops when this iterator is closed."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    leave = threading.Event()
    state.generating.add(leave)

    def pump() -> None:
        stream = iter(start())  # a generator: closing it stops generation
        try:
            for piece in stream:
                if leave.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, piece)
        except Exception as err:
            loop.call_soon_threadsafe(queue.put_nowait, err)
        finally:
            stream.close()  # type: ignore[attr-defined]
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    loop.run_in_executor(state.generation_threads, pump)
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        leave.set()
        state.generating.discard(leave)


def _sse(chunks: AsyncIterator[dict]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def grounded(state: ServerState, messages: list[dict[str, str]], search: RetrievalOptions) -> Any:
    """Retrieve for the last user message on the model thread; the prompt built from the hits (unstarted)."""
    if messages[-1]["role"] != "user":
        raise APIError(400, "a grounded chat answers the last message: it must be the user's", "messages")
    answerer = state.the_answerer()
    question = messages[-1]["content"]
    try:
        hits = await state.on_model_thread(lambda: answerer.retrieve(question, **search.model_dump()))
    except ValueError as err:
        raise APIError(400, str(err), "dec2vec.search") from err
    return answerer, question, hits


async def respond(
    request: Request,
    state: ServerState,
    body: GenerationOptions,
    prompt: Any,
    prompt_text: str,
    chat: bool,
    search: RetrievalOptions | None = None,
) -> Any:
    """A completion, whole or as server-sent events, in the chat or the text-completion shape; with
    ``search``, grounded in the server's index, its sources under ``dec2vec`` in the response."""
    settings, encoder = state.settings, state.encoder
    if not settings.generation:
        raise APIError(404, "generation is disabled on this server")
    param = "messages" if chat else "prompt"
    answerer, answer_stream = None, None
    try:
        if search is not None:
            answerer, question, hits = await grounded(state, prompt, search)
            segments = answerer.segments(question, hits)
            length = sum(len(s) for s in segments)
        else:
            length = await asyncio.to_thread(encoder.prompt_tokens, prompt, chat=chat)
    except ValueError as err:
        raise APIError(400, str(err), param) from err
    limit = min(settings.max_prompt_tokens, encoder.context_length)
    if length > limit:
        raise APIError(413, f"the prompt is {length} tokens: at most {limit}", param)
    budget = token_budget(body.max_tokens, length, encoder.context_length, settings.max_new_tokens, param)
    sampling = {"temperature": body.temperature, "top_p": body.top_p}
    if answerer is not None:
        answer_stream = answerer.stream(question, hits=hits, max_new_tokens=budget, **sampling)

        def start() -> Iterator[str]:
            return iter(answer_stream)
    else:

        def start() -> Iterator[str]:
            return encoder.generate_stream(prompt, max_new_tokens=budget, chat=chat, **sampling)

    def extra() -> dict[str, Any]:
        if answer_stream is None or answer_stream.answer is None:
            return {}
        answer = answer_stream.answer
        return {"dec2vec": {"sources": sources(answer.sources), "timings": answer.timings}}

    kind = "chat.completion" if chat else "text_completion"
    head = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": body.model or settings.model_name,
    }

    def counted(text: str) -> dict[str, int]:
        if answerer is not None:  # the grounded prompt was built as token ids: its length is known
            prompt_tokens, (completion_tokens,) = length, encoder.count_tokens([text])
        else:
            prompt_tokens, completion_tokens = encoder.count_tokens([prompt_text, text])
        state.metrics.tokens.labels("prompt").inc(prompt_tokens)
        state.metrics.tokens.labels("completion").inc(completion_tokens)
        return usage(prompt_tokens, completion_tokens)

    if not body.stream:
        text = ""
        async for piece in pieces(state, start):  # closing it stops the generator
            if await request.is_disconnected():
                raise APIError(499, "the client went away")
            text += piece
        counts = counted(text)
        finish = finish_reason(counts["completion_tokens"], budget)
        return {
            **head,
            "object": kind,
            "choices": [choice(chat, text, finish, streamed=False)],
            "usage": counts,
            **extra(),
        }
    kind += ".chunk" if chat else ""

    async def chunks() -> AsyncIterator[dict]:
        text = ""
        try:
            async for piece in pieces(state, start):
                text += piece
                yield {**head, "object": kind, "choices": [choice(chat, piece, None, streamed=True)]}
        except Exception as err:  # headers are sent: the error travels as the stream's last event
            yield error_body(500, f"{err}")
            return
        finish = finish_reason(counted(text)["completion_tokens"], budget)
        last = {**head, "object": kind, "choices": [choice(chat, "", finish, streamed=True)]}
        yield {**last, **extra()}

    return _sse(chunks())


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, body: ChatRequest, state: State) -> Any:
    messages = [m.model_dump() for m in body.messages]
    prompt_text = "\n".join(m["content"] for m in messages)
    search = body.dec2vec.search if body.dec2vec is not None else None
    return await respond(request, state, body, messages, prompt_text, chat=True, search=search)


@router.post("/v1/completions")
async def completions(request: Request, body: CompletionRequest, state: State) -> Any:
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise APIError(400, "give one prompt per request", "prompt")
    return await respond(request, state, body, prompts[0], prompts[0], chat=False)
