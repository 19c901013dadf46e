"""Converted encoders that ship inside the package: small weight deltas over pip-installed GGUF backbones.

A shipped encoder is a folder ``dec2vec/shipped/NAME/`` holding

- ``delta.safetensors``: for every weight the recipe changed, low-rank factors ``B (out, r)`` and
  ``A (r, in)`` so that ``W_trained = W_backbone + B @ A`` (a LoRA run's merged update, exactly);
- ``card.json``: the backbone (a named default) and its GGUF's sha256, the encoder settings, the sha256 of
  every shipped file, the recipe, measured scores and reference vectors of a few fixed sentences;
- ``README.md`` (the model card for people) and ``recipe.toml`` (the recipe that made it).

``Encoder.load(NAME)`` checks those hashes, applies the delta to the converted backbone once and caches the
result as a saved encoder under ``DEC2VEC_HOME`` (like a converted GGUF), so later loads take seconds and
transformers or sentence-transformers can load the cached folder too.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from dec2vec.backbone import NAMED_BACKBONES, dec2vec_home
from dec2vec.files import sha256_file

if TYPE_CHECKING:
    from dec2vec.encoder import Encoder

log = logging.getLogger(__name__)

DELTA = "delta.safetensors"
CARD = "card.json"
RECIPE = "recipe.toml"
# The fixed sentences whose vectors each card records at release and the tests compare against.
REFERENCE_SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The stock market fell sharply on Monday.",
    "How do plants turn sunlight into sugar?",
]


class ShippedModelError(RuntimeError):
    """A shipped encoder's files or backbone do not match what its card records."""


@dataclass(frozen=True)
class ShippedEncoder:
    """One shipped encoder: its folder inside the package and what its card says."""

    name: str
    directory: Path
    card: dict[str, Any]

    @property
    def description(self) -> str:
        return self.card["description"]

    @property
    def backbone(self) -> str:
        return self.card["backbone"]["name"]

    def verify(self) -> None:
        """Every shipped file must hash to the sha256 its card records."""
        for name, expected in self.card["files"].items():
            path = self.directory / name
            if not path.exists():
                raise ShippedModelError(f"{path}: missing (a broken install? reinstall dec2vec)")
            if (found := sha256_file(path)) != expected:
                raise ShippedModelError(f"{path}: sha256 {found} != {expected} recorded in its {CARD}")

    def cached_dir(self) -> Path:
        """Where the merged encoder is cached: keyed by the delta's hash, so a new release rebuilds."""
        return dec2vec_home() / "shipped" / f"{self.name}-{self.card['files'][DELTA][:12]}"

    def materialize(self, encoder_class: type[Encoder]) -> Path:
        """The merged, saved encoder directory (built once: checks, backbone + delta, save).

        ``Encoder.load`` calls this with its own class, so this module needs no import of the encoder.
        """
        target = self.cached_dir()
        if (target / CARD).exists():
            return target
        self.verify()
        recorded, weights = self.card["backbone"], backbone_file(self.backbone)
        if (found := sha256_file(weights)) != recorded["sha256"]:
            raise ShippedModelError(
                f"{weights}: sha256 {found} is not the backbone {self.name} was trained on "
                f"({recorded['sha256']}); install it with `{recorded['install']}`"
            )
        log.warning("building shipped encoder %s in %s (once)", self.name, target)
        encoder = encoder_class.load(self.backbone, **self.card["encoder"])
        apply_delta(encoder.model, load_file(self.directory / DELTA))
        encoder.config = replace(encoder.config, backbone=self.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
        try:
            encoder.save(tmp)
            shutil.copy(self.directory / CARD, tmp / CARD)  # written last: marks the folder complete
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target


def backbone_file(backbone: str) -> Path:
    """The file a delta's base weights come from: a named default's GGUF, else a checkpoint's weights."""
    if backbone in NAMED_BACKBONES:
        named = NAMED_BACKBONES[backbone]
        gguf = named.locate_gguf()
        if not gguf.exists():
            raise ShippedModelError(f"backbone {backbone} is not installed: run `{named.pip_command}`")
        return gguf
    return Path(backbone) / "model.safetensors"


SHIPPED_ROOT = Path(str(files("dec2vec").joinpath("shipped")))


def discover() -> dict[str, ShippedEncoder]:
    """Every shipped encoder in the package, by name (read from the cards)."""
    found = {}
    for card in sorted(SHIPPED_ROOT.glob(f"*/{CARD}")):
        data = json.loads(card.read_text())
        found[data["name"]] = ShippedEncoder(data["name"], card.parent, data)
    return found


SHIPPED: dict[str, ShippedEncoder] = discover()
# What every command loads when no --model is given: the best shipped encoder.
DEFAULT_MODEL = "smollm2-135m-embed"


# ---- deltas ---------------------------------------------------------------------------------------------


def low_rank_delta(
    base: dict[str, torch.Tensor], trained: dict[str, torch.Tensor], rank: int, *, tolerance: float = 1e-3
) -> dict[str, torch.Tensor]:
    """Factors ``{name.B, name.A}`` with ``trained[name] ≈ base[name] + B @ A`` for each changed weight.

    LoRA stages change each linear weight by a product of rank ≤ (sum of the stages' ranks), which the
    truncated SVD recovers exactly; a change that is not low-rank (full fine-tuning), or any other changed
    tensor (norms, embeddings), is refused rather than approximated.
    """
    delta: dict[str, torch.Tensor] = {}
    for name, after in trained.items():
        before = base[name]
        change = after.float() - before.float()
        if not change.any():
            continue
        if change.dim() != 2:
            raise ValueError(f"{name}: changed but is not a matrix; only low-rank weight updates ship")
        u, s, vh = torch.linalg.svd(change, full_matrices=False)
        root = s[:rank].sqrt()
        b, a = u[:, :rank] * root, root[:, None] * vh[:rank]
        error = (b @ a - change).norm() / change.norm()
        if error > tolerance:
            raise ValueError(f"{name}: the change is not rank {rank} (relative error {error:.2e})")
        delta[f"{name}.B"], delta[f"{name}.A"] = b.contiguous(), a.contiguous()
    if not delta:
        raise ValueError("the trained weights equal the base weights: nothing to ship")
    return delta


def apply_delta(model: torch.nn.Module, delta: dict[str, torch.Tensor]) -> None:
    """Add ``B @ A`` to each named weight of ``model`` in place (computed in float32)."""
    params = dict(model.named_parameters())
    names = {key.rsplit(".", 1)[0] for key in delta}
    if missing := sorted(names - params.keys()):
        raise ShippedModelError(f"the delta names weights this model lacks: {missing[:3]}")
    with torch.no_grad():
        for name in sorted(names):
            weight = params[name]
            update = delta[f"{name}.B"].float() @ delta[f"{name}.A"].float()
            weight.copy_((weight.float() + update.to(weight.device)).to(weight.dtype))


def write_release(directory: Path, card: dict[str, Any], delta: dict[str, torch.Tensor], recipe: str) -> None:
    """Write a shipped encoder's delta, recipe and card (with the sha256 of each file) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in delta.items()}, directory / DELTA)
    (directory / RECIPE).write_text(recipe, encoding="utf-8")
    card = {**card, "files": {name: sha256_file(directory / name) for name in (DELTA, RECIPE)}}
    (directory / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
