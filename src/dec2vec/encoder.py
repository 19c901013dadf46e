"""The encoder: backbone + attention mode + pooling + prompts + max length, behind ``encode``.

Everything else in dec2vec (CLI, evaluation, search, serving) goes through :class:`Encoder`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from dec2vec import sentence_transformers_format
from dec2vec.attention import ATTENTION, check_switch, hidden_states, supports_packing
from dec2vec.backbone import DEFAULT_BACKBONE, Backbone, load_backbone
from dec2vec.generation import Generation
from dec2vec.pooling import POOLING_METHODS, LatentAttention, PoolingMethod, pool
from dec2vec.shipped import DEFAULT_MODEL, SHIPPED

log = logging.getLogger(__name__)

AttentionName = Literal["causal", "bidirectional", "echo"]  # the keys of attention.ATTENTION
ATTENTION_MODES: tuple[str, ...] = tuple(ATTENTION)
CONFIG_NAME = "dec2vec_config.json"
LATENT_WEIGHTS = f"{sentence_transformers_format.POOLING_DIR}/model.safetensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def preferred_dtype() -> tuple[str, str]:
    """bfloat16 where the hardware computes it natively, else float32; with the reason, for the log.

    Native: CUDA devices that support bfloat16, and CPUs with AVX512-BF16 or AMX (Linux /proc/cpuinfo).
    Quality is the same to about four decimals on the dev suite; speed is about 1.6-2x on such CPUs.
    """
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported():
            return "bfloat16", f"{name} computes bfloat16 natively"
        return "float32", f"{name} has no native bfloat16"
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    if native := sorted(flags & {"avx512_bf16", "amx_bf16"}):
        return "bfloat16", f"this CPU has {', '.join(native)}"
    return "float32", "this CPU has no native bfloat16 (avx512_bf16 or amx_bf16)"


def warn_if_emulated(dtype: torch.dtype) -> None:
    """Obey an explicit bfloat16 on hardware without it, but say so: emulated bfloat16 matmuls ran at
    0.8 GFLOP/s against float32's 86 on a Zen 3 EPYC."""
    if dtype == torch.bfloat16 and (preferred := preferred_dtype())[0] != "bfloat16":
        log.warning("bfloat16 asked for, but %s: it runs many times slower than float32", preferred[1])


@dataclass
class EncoderConfig:
    """What turns a backbone into an encoder; saved as ``dec2vec_config.json`` next to the weights."""

    backbone: str = DEFAULT_BACKBONE
    # causal: the model as trained; bidirectional: is_causal=False (needs MNTP/contrastive training to shine);
    # echo: causal over "<template with the text twice>", pooling only the second copy (zero-training trick).
    attention: AttentionName = "causal"
    pooling: PoolingMethod = "mean"
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    max_length: int = 512
    echo_template: str = "Rewrite the sentence: {text}\nRewritten sentence: {text}"
    latent_attention: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {self.attention!r}")
        if self.pooling not in POOLING_METHODS:
            raise ValueError(f"pooling must be one of {', '.join(POOLING_METHODS)}, got {self.pooling!r}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be positive, got {self.max_length}")
        if self.echo_template.count("{text}") != 2 or not self.echo_template.endswith("{text}"):
            raise ValueError("echo_template must contain {text} twice and end with the second one")
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ValueError(f"default_prompt_name {self.default_prompt_name!r} is not among the prompts")

    def save(self, directory: Path) -> None:
        (directory / CONFIG_NAME).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> EncoderConfig:
        path = directory / CONFIG_NAME
        data = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ValueError(f"{path}: unknown keys {unknown}")
        return cls(**data)


@dataclass
class Tokenized:
    """Token ids per text, how many leading ids are prompt/echo prefix, and the text tokens' char spans."""

    ids: list[list[int]]
    n_prefix: list[int]
    text_offsets: list[list[tuple[int, int]]]


def weights_digest(*modules: torch.nn.Module, extra: str = "") -> str:
    """blake2b over ``extra`` and every tensor (name, dtype, bytes) of ``modules``."""
    digest = hashlib.blake2b(extra.encode(), digest_size=16)
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ValueError("encode expects a list of strings, got a single string: wrap it in a list")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] is {type(text).__name__}, expected str")
    return texts


class Encoder(Generation):
    """A decoder LLM used as a text encoder (and, on the same weights, still a causal generator)."""

    def __init__(
        self, backbone: Backbone, config: EncoderConfig, latent: LatentAttention | None = None
    ) -> None:
        self.model = backbone.model
        self.tokenizer = backbone.tokenizer
        # Attention is chosen per call (is_causal kwarg); a saved is_causal=False in the config would make
        # generate() bidirectional, so drop it from the in-memory config.
        if hasattr(self.model.config, "is_causal"):
            del self.model.config.is_causal
        if config.pooling == "latent_attention" and latent is None:
            latent = LatentAttention(self.dim, **(config.latent_attention or {}))
        if latent is not None:  # a copy: the caller's config is theirs
            config = replace(config, latent_attention={k: v for k, v in latent.config.items() if k != "dim"})
        self.config = config
        self.source = config.backbone  # what load() was given; an index records it to reopen this encoder
        self.latent = latent.to(self.model.device) if latent is not None else None
        self.mode = ATTENTION[config.attention]
        if not self.mode.causal:
            check_switch(self.model)
        # mixed-length batches run unpadded where this model is shown to give the same states that way
        self.packing = supports_packing(self.model, causal=self.mode.causal)

    # ---- construction -------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike = DEFAULT_MODEL,
        *,
        attention: AttentionName | None = None,
        pooling: PoolingMethod | None = None,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        max_length: int | None = None,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device | None = None,
    ) -> Encoder:
        """Load a shipped encoder (``smollm2-135m-embed``, the default) or a saved one, or wrap a backbone
        (named default such as ``smollm2-135m``, .gguf, HF checkpoint dir) as one.

        Keyword arguments override what a saved encoder recorded.
        """
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
            dtype = DTYPES[dtype]
        warn_if_emulated(dtype)
        path = Path(name_or_path)
        if str(name_or_path) in SHIPPED and not path.exists():
            path = SHIPPED[str(name_or_path)].materialize(cls)  # checked, merged and cached once
        saved = (path / CONFIG_NAME).exists()
        config = EncoderConfig.load(path) if saved else EncoderConfig(backbone=str(name_or_path))
        overrides = {
            "attention": attention,
            "pooling": pooling,
            "prompts": prompts,
            "default_prompt_name": default_prompt_name,
            "max_length": max_length,
        }
        config = EncoderConfig(**{**asdict(config), **{k: v for k, v in overrides.items() if v is not None}})
        backbone = load_backbone(path if saved else name_or_path, dtype=dtype, device=device)
        latent = None
        if config.pooling == "latent_attention" and (path / LATENT_WEIGHTS).exists():
            latent = LatentAttention(
                backbone.model.config.get_text_config().hidden_size, **config.latent_attention
            )
            latent.load_state_dict(load_file(path / LATENT_WEIGHTS))
        encoder = cls(backbone, config, latent)
        given = Path(name_or_path)  # a shipped or named default is recorded by name, a folder by full path
        encoder.source = str(given.resolve()) if given.exists() else str(name_or_path)
        return encoder

    @property
    def spec(self) -> str:
        """A model spec, ``source:attention:pooling:dtype``, that loads this encoder again (evaluation's)."""
        dtype = str(self.model.dtype).removeprefix("torch.")
        return f"{self.source}:{self.config.attention}:{self.config.pooling}:{dtype}"

    @property
    def dim(self) -> int:
        return self.model.config.get_text_config().hidden_size

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ---- encoding -----------------------------------------------------------------------------------

    def _prompt(self, prompt: str | None, prompt_name: str | None) -> str:
        if prompt is not None and prompt_name is not None:
            raise ValueError("give prompt or prompt_name, not both")
        if prompt is not None:
            return prompt
        name = prompt_name or self.config.default_prompt_name
        if name is None:
            return ""
        if name not in self.config.prompts:
            known = ", ".join(self.config.prompts) or "none"
            raise ValueError(f"unknown prompt_name {name!r}; this encoder's prompts: {known}")
        return self.config.prompts[name]

    def _prefixes(self, texts: list[str], prompt: str) -> list[str]:
        """The part before each text that is attended to but not pooled: the prompt, plus the echo copy."""
        if not self.mode.echo:
            return [prompt] * len(texts)
        head, middle, _ = self.config.echo_template.split("{text}")
        return [f"{prompt}{head}{text}{middle}" for text in texts]

    def tokenize(
        self, texts: list[str], prefixes: list[str], max_length: int | None = None, *, warn: bool = True
    ) -> Tokenized:
        """Token ids of ``prefix + text`` (truncated to max_length) and how many leading tokens are prefix.

        The prefix length comes from character offsets of the joint tokenization, so it is exact per example
        even where a BPE merge crosses the prompt/text boundary (that token counts as text).
        """
        full = [p + t for p, t in zip(prefixes, texts, strict=True)]
        max_length = max_length or self.config.max_length
        enc = self.tokenizer(full, truncation=True, max_length=max_length, return_offsets_mapping=True)
        truncated = sum(bool(e.overflowing) for e in enc.encodings)
        if truncated and warn:
            log.warning(
                "%d of %d inputs were longer than max_length=%d tokens and were truncated",
                truncated,
                len(full),
                max_length,
            )
        out = Tokenized([], [], [])
        for row, offsets, prefix in zip(enc["input_ids"], enc["offset_mapping"], prefixes, strict=True):
            count = 0
            if prefix:
                while count < len(row) and offsets[count][1] <= len(prefix):
                    count += 1
            if not row:  # an empty text with a tokenizer that adds no special tokens: attend to one token,
                row, offsets = [self.tokenizer.eos_token_id or self.tokenizer.pad_token_id], [(0, 0)]
                count = 1  # pool none (the zero vector, see pooling.pool)
            out.ids.append(row)
            out.n_prefix.append(count)
            shift = len(prefix)
            out.text_offsets.append([(max(a - shift, 0), max(b - shift, 0)) for a, b in offsets[count:]])
        return out

    def _sorted_batches(
        self, texts: list[str], prompt: str, batch_size: int, show_progress: bool | None
    ) -> Iterator[tuple[list[int], dict[str, torch.Tensor], Tokenized]]:
        """Length-sorted, dynamically padded batches: (indices into texts, collated batch, tokenization)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not texts:
            return
        tokenized = self.tokenize(texts, self._prefixes(texts, prompt))
        order = sorted(range(len(texts)), key=lambda i: -len(tokenized.ids[i]))
        if show_progress is None:
            show_progress = len(texts) > 4 * batch_size
        for start in tqdm(range(0, len(order), batch_size), desc="encode", disable=not show_progress):
            chunk = order[start : start + batch_size]
            yield (
                chunk,
                self._collate([tokenized.ids[i] for i in chunk], [tokenized.n_prefix[i] for i in chunk]),
                tokenized,
            )

    def collate(
        self, texts: list[str], *, prefix: str = "", max_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """A padded batch of ``prefix + text`` (the prefix attended to, not pooled), for training loops.

        Texts beyond ``max_length`` tokens are cut silently: a training stage sets its length on purpose.
        """
        tokenized = self.tokenize(_check_texts(texts), [prefix] * len(texts), max_length, warn=False)
        return self._collate(tokenized.ids, tokenized.n_prefix)

    def _collate(
        self, ids: list[list[int]], n_prefix: list[int], *, left: bool | None = None
    ) -> dict[str, torch.Tensor]:
        """Pad a batch on the tokenizer's side (or on the left with ``left=True``, as generation needs) and
        build its attention and pooling masks.

        Written by hand because ``tokenizer.pad`` cannot carry the per-example pooling mask along.
        """
        width = max(map(len, ids))
        batch = torch.full((len(ids), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        pooled = torch.zeros((len(ids), width), dtype=torch.long)
        left = self.tokenizer.padding_side == "left" if left is None else left
        for i, (row, skip) in enumerate(zip(ids, n_prefix, strict=True)):
            start = width - len(row) if left else 0
            batch[i, start : start + len(row)] = torch.tensor(row)
            attention[i, start : start + len(row)] = 1
            pooled[i, start + skip : start + len(row)] = 1
        device = self.device
        return {
            "input_ids": batch.to(device),
            "attention_mask": attention.to(device),
            "pool_mask": pooled.to(device),
        }

    def _hidden(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return hidden_states(
            self.model,
            batch["input_ids"],
            batch["attention_mask"],
            causal=self.mode.causal,
            pack=self.packing,
        )

    def embed_batch(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled float32 embeddings of one collated batch (differentiable: used by training too)."""
        return pool(
            self._hidden(batch), batch["attention_mask"], batch["pool_mask"], self.config.pooling, self.latent
        )

    def encode(
        self,
        texts: Sequence[str],
        *,
        prompt: str | None = None,
        prompt_name: str | None = None,
        batch_size: int = 32,
        normalize: bool = True,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` into a float32 ``(len(texts), dim)`` array, L2-normalized unless told otherwise.

        Texts are sorted by length and padded per batch only to the batch's longest, then put back in order.
        """
        texts = _check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for chunk, batch, _ in self._sorted_batches(
                texts, self._prompt(prompt, prompt_name), batch_size, show_progress
            ):
                vectors = self.embed_batch(batch)
                if normalize:
                    vectors = torch.nn.functional.normalize(vectors, dim=-1)
                out[chunk] = vectors.cpu().numpy()
        return out

    def token_embeddings(
        self,
        texts: Sequence[str],
        *,
        prompt: str | None = None,
        prompt_name: str | None = None,
        batch_size: int = 32,
        show_progress: bool | None = None,
    ) -> list[tuple[np.ndarray, list[tuple[int, int]]]]:
        """Per text: the float32 hidden states of its own tokens (prompt excluded) and their character spans.

        Spans index into the text itself, so callers can align tokens with words (probes, late interaction).
        """
        texts = _check_texts(texts)
        out: list = [None] * len(texts)
        with torch.inference_mode():
            for chunk, batch, tokenized in self._sorted_batches(
                texts, self._prompt(prompt, prompt_name), batch_size, show_progress
            ):
                hidden = self._hidden(batch).float()
                for row, index in enumerate(chunk):
                    states = hidden[row, batch["pool_mask"][row].bool()].cpu().numpy()
                    out[index] = (states, tokenized.text_offsets[index])
        return out

    def fingerprint(self) -> str:
        """A hash of everything that determines the vectors: config (less its source name), dtype, weights.

        Hashing the weights (about a second for SmolLM2) makes caches safe across retraining in place.
        """
        config = {k: v for k, v in asdict(self.config).items() if k != "backbone"}
        modules = [self.model] + ([self.latent] if self.latent is not None else [])
        return weights_digest(*modules, extra=json.dumps(config, sort_keys=True))

    def prompt_for(self, kind: str) -> str | None:
        """``kind`` (``query``, ``document``) as a prompt name if this encoder has that prompt, else None."""
        return kind if kind in self.config.prompts else None

    def encode_queries(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        """Embed search queries with the ``query`` prompt when this encoder has one."""
        return self.encode(texts, prompt_name=self.prompt_for("query"), **kwargs)

    def encode_documents(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        """Embed documents with the ``document`` prompt when this encoder has one."""
        return self.encode(texts, prompt_name=self.prompt_for("document"), **kwargs)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cosine similarity matrix between two lists of texts."""
        return self.encode(a) @ self.encode(b).T

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text is (without prompts or special tokens): usage counts and limits."""
        return [
            len(ids) for ids in self.tokenizer(_check_texts(texts), add_special_tokens=False)["input_ids"]
        ]

    # ---- saving -------------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> Path:
        """Write a directory that :meth:`load`, transformers and sentence-transformers all load."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # is_causal in config.json makes plain transformers / sentence-transformers loads use our attention.
        self.model.config.is_causal = self.mode.causal
        try:
            self.model.save_pretrained(directory)
        finally:
            del self.model.config.is_causal
        self.tokenizer.model_max_length = self.config.max_length
        # sentence-transformers passes no position ids, so left padding would shift absolute positions
        # (GPT-2, OPT): save right padding, which is exact for every architecture there and here.
        side, self.tokenizer.padding_side = self.tokenizer.padding_side, "right"
        try:
            self.tokenizer.save_pretrained(directory)
        finally:
            self.tokenizer.padding_side = side
        self.config.save(directory)
        sentence_transformers_format.write(directory, self.config, self.dim)
        if self.latent is not None:
            (directory / LATENT_WEIGHTS).parent.mkdir(exist_ok=True)
            save_file(
                {k: v.contiguous() for k, v in self.latent.state_dict().items()}, directory / LATENT_WEIGHTS
            )
        return directory
