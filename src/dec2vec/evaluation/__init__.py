"""Evaluation: MTEB-style tasks over local files, model comparison, reports, and the mteb adapter."""

from dec2vec.evaluation.data import DataFormatError
from dec2vec.evaluation.runner import Evaluation, evaluate
from dec2vec.evaluation.tasks import TASK_TYPES, build_task, load_suite, parse_task

__all__ = [
    "TASK_TYPES",
    "DataFormatError",
    "Evaluation",
    "build_task",
    "evaluate",
    "load_suite",
    "parse_task",
]
