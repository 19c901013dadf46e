"""``POST /v1/search`` and ``POST /v1/documents`` over the server's ``--db`` index."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from dec2vec.search import Document
from dec2vec.search.index import EMBED_DOCUMENTS, encoder_info
from dec2vec.serving.state import State, require_admin_key, require_key
from dec2vec.serving.wire import APIError, DocumentsRequest, SearchRequest

router = APIRouter()


@router.post("/v1/search", dependencies=[Depends(require_key)])
async def search(body: SearchRequest, state: State) -> dict[str, Any]:
    index = state.the_index()
    options = body.model_dump(exclude={"query", "auto_filter", "auto_filter_margin"})
    if body.auto_filter_margin is not None and not body.auto_filter:
        raise APIError(400, "auto_filter_margin applies with auto_filter only", "auto_filter_margin")
    if body.auto_filter_margin is not None:
        options["margin"] = body.auto_filter_margin
    try:
        if body.auto_filter:
            reading, hits = await state.on_model_thread(lambda: index.search_auto(body.query, **options))
        else:
            reading, hits = None, await state.on_model_thread(lambda: index.search(body.query, **options))
    except ValueError as err:  # e.g. a filter that cannot mean anything
        raise APIError(400, str(err), "filters") from err
    read = {"auto_filter": reading.to_json()} if reading is not None else {}
    return {"object": "list", "data": [h.to_json() for h in hits], **read}


@router.post("/v1/documents", dependencies=[Depends(require_admin_key)])
async def documents(body: DocumentsRequest, state: State) -> dict[str, Any]:
    index, limit = state.the_index(), state.settings.max_documents
    for name, items in (("documents", body.documents), ("delete", body.delete)):
        if len(items) > limit:
            raise APIError(413, f"{len(items)} {name}: at most {limit} per request", name)
    docs = list(
        {str(d.id): Document(str(d.id), d.text, d.title, d.metadata) for d in body.documents}.values()
    )
    async with state.writing:  # one write request at a time, so what is found unchanged stays unchanged
        # Embedding runs in pieces on the model thread, so searches queued meanwhile run in between; the
        # write itself is one short transaction.
        embedded = []
        for start in range(0, len(docs), EMBED_DOCUMENTS):
            embedded += await state.on_model_thread(index.embed, docs[start : start + EMBED_DOCUMENTS])

        def write() -> dict[str, Any]:
            added = {}
            if docs:
                report = index.add_embedded(
                    embedded,
                    encoder_info(state.encoder),
                    batch_size=max(len(embedded), 1),
                    show_progress=False,
                )
                unchanged = report.unchanged + len(docs) - len(embedded)
                added = {"added": report.added, "updated": report.updated, "unchanged": unchanged}
            return {**added, "deleted": index.delete(body.delete) if body.delete else 0}

        return await state.on_model_thread(write)
