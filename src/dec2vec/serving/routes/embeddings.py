"""``POST /v1/embeddings``: OpenAI's embeddings endpoint over the micro-batcher."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from dec2vec.serving.state import State, require_key
from dec2vec.serving.wire import EmbeddingRequest, embedding_list, fit, texts_of

router = APIRouter(dependencies=[Depends(require_key)])


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, state: State) -> JSONResponse:
    settings, encoder = state.settings, state.encoder
    texts = texts_of(body, encoder.tokenizer, settings.max_inputs)
    texts, tokens = fit(texts, encoder.tokenizer, settings.max_input_tokens, settings.long_inputs)
    prompt = encoder.prompt_for(body.input_type) if body.input_type else None
    vectors = await state.batcher.embed(texts, prompt)
    response = embedding_list(
        vectors, body.dimensions, body.encoding_format, body.model or settings.model_name, tokens
    )
    state.metrics.tokens.labels("prompt").inc(tokens)
    # A ready response skips FastAPI's per-element validation of hundreds of floats per vector.
    return JSONResponse(response)
