"""A text classifier: a logistic-regression head over a frozen encoder's vectors.

The head is scikit-learn's ``LogisticRegression`` (multinomial, L2, lbfgs), trained on the encoder's unit
vectors. It is saved as plain arrays (``head.safetensors``: ``coef``, ``intercept``) and a JSON file naming
the encoder spec, its fingerprint and the classes — no pickle, so a head from elsewhere runs no code when
loaded. Prediction recomputes the softmax from the arrays.

    classifier = Classifier.train(load_model("smollm2-135m-embed"), texts, labels)
    classifier.save("intent-head")
    Classifier.load("intent-head").predict(["I lost my card"])[0]  # Prediction(label=..., probability=...)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.linear_model import LogisticRegression

from dec2vec.models import TextEncoder, load_model

HEAD_CONFIG = "classifier.json"
HEAD_WEIGHTS = "head.safetensors"


class HeadMismatchError(ValueError):
    """A saved head does not fit the encoder it is loaded with (other weights or dimension)."""


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float
    probabilities: dict[str, float]  # every class, as trained


class Classifier:
    """An encoder plus a linear head; ``train`` fits it, ``predict`` returns labels with probabilities."""

    def __init__(self, encoder: TextEncoder, classes: list[str], coef: np.ndarray, intercept: np.ndarray):
        rows = len(classes) if len(classes) > 2 else 1  # scikit-learn keeps one row for two classes
        if coef.shape != (rows, encoder.dim) or intercept.shape != (rows,):
            raise HeadMismatchError(
                f"head of shape {coef.shape} for {len(classes)} classes, dim {encoder.dim}"
            )
        self.encoder, self.classes, self.coef, self.intercept = encoder, classes, coef, intercept

    @classmethod
    def train(
        cls,
        encoder: TextEncoder,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        c: float = 1.0,
        max_iter: int = 1000,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> Classifier:
        """Embed ``texts`` once and fit the head; ``c`` is the inverse L2 strength (scikit-learn's ``C``)."""
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        if len(set(labels)) < 2:
            raise ValueError(f"need at least two distinct labels to train on, got {sorted(set(labels))}")
        vectors = encoder.encode(list(texts), batch_size=batch_size, show_progress=show_progress)
        head = LogisticRegression(C=c, max_iter=max_iter).fit(vectors, list(labels))
        return cls(encoder, [str(c) for c in head.classes_], head.coef_, head.intercept_)

    def probabilities(self, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False):
        """(n, classes) probabilities in the order of ``self.classes``."""
        vectors = self.encoder.encode(list(texts), batch_size=batch_size, show_progress=show_progress)
        logits = vectors.astype(np.float64) @ self.coef.T + self.intercept  # (n, classes) or (n, 1)
        if len(self.classes) == 2:  # one row: p(second class) = sigmoid(logit) = softmax([0, logit])
            logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False):
        """One ``Prediction`` per text, in order."""
        probs = self.probabilities(texts, batch_size, show_progress)
        return [
            Prediction(
                self.classes[int(row.argmax())],
                float(row.max()),
                dict(zip(self.classes, map(float, row), strict=True)),
            )
            for row in probs
        ]

    def save(self, directory: str | Path, **extra: object) -> Path:
        """Write ``classifier.json`` (encoder spec, fingerprint, classes, ``extra``) and the head arrays."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # safetensors writes an array's memory as is: scikit-learn's coef_ is Fortran-ordered
        arrays = {"coef": np.ascontiguousarray(self.coef), "intercept": np.ascontiguousarray(self.intercept)}
        save_file(arrays, str(directory / HEAD_WEIGHTS))
        config = {
            "model": self.encoder.spec,
            "fingerprint": self.encoder.fingerprint(),
            "dim": self.encoder.dim,
            "classes": self.classes,
            **extra,
        }
        (directory / HEAD_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path, encoder: TextEncoder | None = None) -> Classifier:
        """A saved head with the encoder it was trained on (loaded from its spec unless given); an encoder
        whose weights differ from the recorded fingerprint is refused."""
        directory = Path(directory)
        if not (directory / HEAD_CONFIG).is_file():
            raise FileNotFoundError(f"{directory}: no {HEAD_CONFIG} (not a classifier saved by dec2vec)")
        config = json.loads((directory / HEAD_CONFIG).read_text())
        encoder = encoder if encoder is not None else load_model(config["model"])
        if encoder.fingerprint() != config["fingerprint"]:
            raise HeadMismatchError(
                f"{directory}: trained on {config['model']} with other weights than this encoder's "
                f"({encoder.spec}); retrain the head"
            )
        arrays = load_file(str(directory / HEAD_WEIGHTS))
        return cls(encoder, config["classes"], arrays["coef"], arrays["intercept"])
