"""Recipes: TOML files naming the stages that turn a decoder into an encoder, and the runner for them.

A recipe sets the final encoder's attention, pooling and prompts, optional layer pruning, and a list of
``[[stage]]`` tables (see :class:`StageConfig`). Built-in recipes live in ``dec2vec/recipes/*.toml``.
Each stage writes ``NN-name/`` (checkpoint, log.jsonl, loss.png) and ``NN-name/model/`` (a saved encoder);
the final encoder is saved at the output directory itself.
"""

from __future__ import annotations

import logging
import os
import shutil
import tomllib
from dataclasses import dataclass, field, fields
from importlib.resources import files
from pathlib import Path

from dec2vec.backbone import prune_layers
from dec2vec.encoder import CONFIG_NAME, Encoder
from dec2vec.files import DataFormatError
from dec2vec.training import data as data_io
from dec2vec.training import distributed
from dec2vec.training.trainer import OBJECTIVES, StageConfig, StageTrainer, load_stage_data

log = logging.getLogger(__name__)


@dataclass
class Recipe:
    name: str
    description: str = ""
    attention: str = "bidirectional"
    pooling: str = "mean"
    prompts: dict[str, str] = field(default_factory=dict)
    keep_layers: int | float | None = None
    stages: list[StageConfig] = field(default_factory=list)


def builtin_recipes() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml")
        for p in files("dec2vec").joinpath("recipes").iterdir()
        if p.name.endswith(".toml")
    )


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A built-in recipe by name (``quick``, ``llm2vec``, ``supervised``, ``grit``) or a TOML file."""
    path = Path(name_or_path)
    if not path.is_file():
        if str(name_or_path) not in builtin_recipes():
            raise ValueError(f"recipe {name_or_path!r}: not a file nor one of {', '.join(builtin_recipes())}")
        path = Path(str(files("dec2vec").joinpath("recipes", f"{name_or_path}.toml")))
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise DataFormatError(f"{path}: {err}") from err
    stages = [StageConfig.from_dict(s) for s in table.pop("stage", [])]
    known = {f.name for f in fields(Recipe)}
    if unknown := sorted(set(table) - known):
        raise ValueError(f"{path}: unknown recipe keys {unknown}")
    if not stages:
        raise ValueError(f"{path}: a recipe needs at least one [[stage]]")
    return Recipe(**table, stages=stages)


def assign_data(recipe: Recipe, paths: list[str]) -> None:
    """Give user data to the stages that take its kind: pairs to supervised/grit, text to mntp/simcse, any
    to distill."""
    if not paths:
        return
    pairs = [p for p in paths if data_io.is_pair_file(p)]
    by_kind = {"pairs": pairs, "text": [p for p in paths if p not in pairs], "any": paths}
    for stage in recipe.stages:
        chosen = by_kind[OBJECTIVES[stage.objective].data]
        if chosen:
            stage.data = list(chosen)


def train(
    recipe: Recipe,
    model: str,
    out: Path,
    *,
    data: list[str] | None = None,
    resume: bool = False,
    dtype: str = "float32",
) -> Encoder:
    """Run every stage of ``recipe`` on ``model`` and save the final encoder in ``out``.

    Under torchrun every process runs this; each trains on its slice of the batches, the first one saves.
    """
    distributed.setup()
    assign_data(recipe, data or [])
    for stage in recipe.stages:  # check every stage's data before any training starts
        load_stage_data(stage)
    out.mkdir(parents=True, exist_ok=True)
    if not resume and any(out.glob("[0-9][0-9]-*")):
        raise FileExistsError(
            f"{out} holds an earlier run: pass --resume to continue it, or choose another --out"
        )
    encoder = Encoder.load(
        model, attention=recipe.attention, pooling=recipe.pooling, prompts=recipe.prompts, dtype=dtype
    )
    if recipe.keep_layers is not None:
        kept = prune_layers(encoder.model, recipe.keep_layers)
        log.warning("pruned %s to its first %d layers", model, kept)
    for number, stage in enumerate(recipe.stages, start=1):
        directory = out / f"{number:02d}-{stage.name}"
        if resume and (directory / "model" / CONFIG_NAME).exists():
            log.warning("stage %s already done: loading %s", stage.name, directory / "model")
            encoder = Encoder.load(directory / "model", dtype=dtype)
            continue
        StageTrainer(encoder, stage, directory).run(resume=resume)
        if distributed.is_main():
            # Saved beside, then renamed: a crash mid-save never leaves a "done" stage with half a model.
            shutil.rmtree(directory / "model.partial", ignore_errors=True)
            encoder.save(directory / "model.partial")
            os.replace(directory / "model.partial", directory / "model")
        distributed.barrier()
    if distributed.is_main():
        encoder.save(out)
    distributed.barrier()
    return encoder
