"""Show an evaluation: a rich table (models as columns), JSON, Markdown, a bar chart and STS scatter plots."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from dec2vec.evaluation.runner import Evaluation


def _grid(evaluation: Evaluation) -> tuple[list[tuple[str, str]], dict[tuple[str, str, str], float]]:
    """(task, metric) rows in first-seen order, headline metric first per task, and the value lookup."""
    values = {(r["task"], r["metric"], r["model"]): r["value"] for r in evaluation.rows}
    keys = list(dict.fromkeys((r["task"], r["metric"]) for r in evaluation.rows))
    tasks = list(dict.fromkeys(t for t, _ in keys))
    keys.sort(key=lambda k: (tasks.index(k[0]), k[1] != evaluation.main_metrics.get(k[0])))
    return keys, values


def _cell(value: float | None, metric: str) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if metric == "seconds" else f"{value:.4f}"


def table(evaluation: Evaluation, title: str = "dec2vec eval") -> Table:
    keys, values = _grid(evaluation)
    out = Table("task", "metric", *evaluation.models, title=title)
    for task, metric in keys:
        style = "bold" if metric == evaluation.main_metrics.get(task) else None
        cells = [_cell(values.get((task, metric, m)), metric) for m in evaluation.models]
        out.add_row(task, metric, *cells, style=style)
    return out


def markdown(evaluation: Evaluation) -> str:
    keys, values = _grid(evaluation)
    lines = [
        "| task | metric | " + " | ".join(evaluation.models) + " |",
        "|---|---|" + "---|" * len(evaluation.models),
    ]
    for task, metric in keys:
        cells = [_cell(values.get((task, metric, m)), metric) for m in evaluation.models]
        if metric == evaluation.main_metrics.get(task):
            metric = f"**{metric}**"
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_json(evaluation: Evaluation, path: Path) -> None:
    path.write_text(json.dumps(evaluation.rows, indent=2) + "\n")


def bar_chart(evaluation: Evaluation, path: Path) -> None:
    """Grouped bars: each task's headline metric, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    _, values = _grid(evaluation)
    tasks = list(evaluation.main_metrics)
    models = evaluation.models
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks)), 4.5))
    for i, model in enumerate(models):
        heights = [values.get((t, evaluation.main_metrics[t], model), np.nan) for t in tasks]
        ax.bar(np.arange(len(tasks)) + i * width, heights, width, label=model)
    ax.set_xticks(np.arange(len(tasks)) + width * (len(models) - 1) / 2)
    ax.set_xticklabels([f"{t}\n{evaluation.main_metrics[t]}" for t in tasks], fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("headline metric per task")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sts_scatter(evaluation: Evaluation, path: Path) -> bool:
    """Predicted cosine vs gold score for every (model, STS task); False when there is no STS result."""
    panels = [(key, d) for key, d in evaluation.details.items() if "predicted" in d]
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    for ax, ((model, task), d) in zip(axes.flat, panels, strict=False):
        ax.scatter(d["gold"], d["predicted"], s=4, alpha=0.4)
        ax.set_title(f"{model}\n{task}", fontsize=8)
        ax.set_xlabel("gold")
        ax.set_ylabel("cosine")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
