"""Run every model on every task (embeddings cached on disk) into flat {model, task, metric, value} rows."""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console

from dec2vec.backbone import dec2vec_home
from dec2vec.evaluation.cache import CachedEncoder
from dec2vec.evaluation.tasks import NotApplicable, Task
from dec2vec.models import load_model

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """All scores of one run, plus per-(model, task) details for plots (STS predictions)."""

    rows: list[dict] = field(default_factory=list)  # {model, task, metric, value}
    details: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    main_metrics: dict[str, str] = field(default_factory=dict)  # task name -> its headline metric

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r["model"] for r in self.rows))


def default_cache_dir() -> Path:
    return dec2vec_home() / "embeddings"


def evaluate(
    model_specs: list[str],
    tasks: list[Task],
    *,
    cache_dir: Path | None = None,
    console: Console | None = None,
) -> Evaluation:
    """Score each model spec on each task; a model's wall time per task is recorded as metric ``seconds``."""
    console = console or Console(stderr=True)
    cache_dir = cache_dir or default_cache_dir()
    result = Evaluation(main_metrics={t.name: t.main_metric for t in tasks})
    for spec in model_specs:
        start = time.perf_counter()
        model = load_model(spec)
        if hasattr(model, "encode"):
            model = CachedEncoder(model, cache_dir)  # type: ignore[arg-type]
        console.print(f"[bold]{spec}[/] loaded in {time.perf_counter() - start:.1f} s")
        for task in tasks:
            start = time.perf_counter()
            try:
                outcome = task.run(model)
            except NotApplicable:
                console.print(f"  {task.name}: not applicable to {spec}")
                continue
            seconds = time.perf_counter() - start
            for metric, value in {**outcome.metrics, "seconds": seconds}.items():
                result.rows.append({"model": spec, "task": task.name, "metric": metric, "value": value})
            result.details[(spec, task.name)] = outcome.details
            main = outcome.metrics[task.main_metric]
            console.print(f"  {task.name}: {task.main_metric} {main:.4f} ({seconds:.1f} s)")
        if isinstance(model, CachedEncoder):
            console.print(f"  embedding cache: {model.hits} hits, {model.misses} computed ({model.dir})")
        del model
        gc.collect()
    return result
