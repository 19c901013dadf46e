"""Health, metrics, the API description behind the key, and the static web page."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dec2vec.serving.state import State, require_key

router = APIRouter()
PAGE = files("dec2vec.serving").joinpath("web")


@router.get("/healthz")
async def healthz(state: State) -> dict[str, Any]:
    return {"status": "ok", "model": state.settings.model_name, "index": state.index is not None}


@router.get("/metrics", dependencies=[Depends(require_key)])
async def metrics(state: State) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", dependencies=[Depends(require_key)], include_in_schema=False)
async def openapi(request: Request) -> dict[str, Any]:
    """Behind the key. Without a key FastAPI's own open copy, registered first, answers instead."""
    return request.app.openapi()


@router.get("/", response_class=HTMLResponse)
async def home() -> str:
    return PAGE.joinpath("index.html").read_text(encoding="utf-8")


@router.get("/app.js")
async def script() -> Response:
    return Response(PAGE.joinpath("app.js").read_text(encoding="utf-8"), media_type="text/javascript")
