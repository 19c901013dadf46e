"""MTEB-style evaluation tasks over local files.

Each task reads and checks its files when it is built (so a malformed file fails before any model runs)
and ``run(model)`` returns metrics. Protocols follow MTEB: cosine similarity throughout; classification is
a logistic-regression probe on ``samples_per_label`` examples per label, averaged over ``n_experiments``;
clustering is mini-batch k-means with as many clusters as labels, V-measure averaged over ``n_runs``.
"""

from __future__ import annotations

import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytrec_eval
from scipy.stats import pearsonr, spearmanr
from sklearn.cluster import MiniBatchKMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score, v_measure_score

from dec2vec.evaluation.data import DataFormatError, read_beir, read_conll, read_tsv
from dec2vec.models import LexicalRetriever, TextEncoder


class NotApplicable(Exception):
    """The model cannot run this kind of task (BM25 on anything but retrieval)."""


@dataclass
class TaskResult:
    metrics: dict[str, float]
    details: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. STS predicted vs gold, for plots


def _dense(model: TextEncoder | LexicalRetriever) -> TextEncoder:
    if not hasattr(model, "encode"):
        raise NotApplicable
    return model  # type: ignore[return-value]


def _pair_cosines(model: TextEncoder | LexicalRetriever, pairs: list[tuple[str, str]]) -> np.ndarray:
    """Cosine similarity of each (first, second) pair (the encoders return normalized vectors)."""
    model = _dense(model)
    return (model.encode([p[0] for p in pairs]) * model.encode([p[1] for p in pairs])).sum(1)


@dataclass
class STSTask:
    """Spearman and Pearson correlation of cosine similarity with gold; TSV sentence1/sentence2/score."""

    path: Path
    name: str = ""
    kind: ClassVar[str] = "sts"
    main_metric: ClassVar[str] = "spearman"

    def __post_init__(self) -> None:
        rows = read_tsv(self.path, ["sentence1", "sentence2", "score"], {"score": float})
        self.pairs = [(r["sentence1"], r["sentence2"]) for r in rows]
        self.gold = np.array([r["score"] for r in rows])

    def run(self, model: TextEncoder | LexicalRetriever) -> TaskResult:
        predicted = _pair_cosines(model, self.pairs)
        metrics = {
            "spearman": float(spearmanr(predicted, self.gold).statistic),
            "pearson": float(pearsonr(predicted, self.gold).statistic),
        }
        return TaskResult(metrics, {"predicted": predicted, "gold": self.gold})


@dataclass
class RetrievalTask:
    """nDCG@10, MRR@10, Recall@100 and MAP (pytrec_eval) over a BEIR folder; exact cosine top-k."""

    path: Path
    name: str = ""
    split: str = "test"
    top_k: int = 1000
    kind: ClassVar[str] = "retrieval"
    main_metric: ClassVar[str] = "ndcg@10"

    def __post_init__(self) -> None:
        self.data = read_beir(self.path, self.split)

    def run(self, model: TextEncoder | LexicalRetriever) -> TaskResult:
        doc_ids, docs = list(self.data.corpus), list(self.data.corpus.values())
        query_ids, queries = list(self.data.queries), list(self.data.queries.values())
        k = min(self.top_k, len(docs))
        if hasattr(model, "search"):
            top, scores = model.search(queries, docs, k)  # type: ignore[union-attr]
        else:
            similarity = model.encode_queries(queries) @ model.encode_documents(docs).T  # type: ignore[union-attr]
            top = np.argsort(-similarity, axis=1)[:, :k]
            scores = np.take_along_axis(similarity, top, axis=1)
        run = {
            qid: {doc_ids[d]: float(s) for d, s in zip(top[i], scores[i], strict=True)}
            for i, qid in enumerate(query_ids)
        }
        full = pytrec_eval.RelevanceEvaluator(self.data.qrels, {"ndcg_cut.10", "recall.100", "map"}).evaluate(
            run
        )
        # MRR@10: reciprocal rank of the first relevant document within the top 10 only.
        top10 = {q: dict(sorted(d.items(), key=lambda x: -x[1])[:10]) for q, d in run.items()}
        mrr = pytrec_eval.RelevanceEvaluator(self.data.qrels, {"recip_rank"}).evaluate(top10)
        return TaskResult(
            {
                "ndcg@10": float(np.mean([m["ndcg_cut_10"] for m in full.values()])),
                "mrr@10": float(np.mean([m["recip_rank"] for m in mrr.values()])),
                "recall@100": float(np.mean([m["recall_100"] for m in full.values()])),
                "map": float(np.mean([m["map"] for m in full.values()])),
            }
        )


def _labelled_split(path: Path, test_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """train/test rows of text<TAB>label: a folder's train.tsv/test.tsv, or one file split (stratified)."""
    columns, types = ["text", "label"], None
    if path.is_dir():
        return read_tsv(path / "train.tsv", columns, types), read_tsv(path / "test.tsv", columns, types)
    rows = read_tsv(path, columns, types)
    by_label: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
    rng = np.random.RandomState(seed)
    train, test = [], []
    for label in sorted(by_label):
        group = by_label[label]
        order = rng.permutation(len(group))
        n_test = round(len(group) * test_fraction)
        test += [group[i] for i in order[:n_test]]
        train += [group[i] for i in order[n_test:]]
    return train, test


@dataclass
class ClassificationTask:
    """Logistic-regression probe (MTEB protocol): accuracy and macro-F1 on the test split."""

    path: Path
    name: str = ""
    samples_per_label: int = 8
    n_experiments: int = 10
    test_fraction: float = 0.2
    seed: int = 42
    kind: ClassVar[str] = "classification"
    main_metric: ClassVar[str] = "accuracy"

    def __post_init__(self) -> None:
        self.train, self.test = _labelled_split(self.path, self.test_fraction, self.seed)

    def _experiments(self) -> list[list[int]]:
        """Per experiment, up to samples_per_label training rows per label from a reshuffled order."""
        rng = np.random.RandomState(self.seed)
        order = list(range(len(self.train)))
        chosen = []
        for _ in range(self.n_experiments):
            rng.shuffle(order)
            counts: Counter[str] = Counter()
            picked = []
            for i in order:
                label = self.train[i]["label"]
                if counts[label] < self.samples_per_label:
                    counts[label] += 1
                    picked.append(i)
            chosen.append(picked)
        return chosen

    def run(self, model: TextEncoder | LexicalRetriever) -> TaskResult:
        model = _dense(model)
        experiments = self._experiments()
        needed = sorted({i for picked in experiments for i in picked})  # embed each training row once
        position = {row: n for n, row in enumerate(needed)}
        train_x = model.encode([self.train[i]["text"] for i in needed])
        test_x = model.encode([r["text"] for r in self.test])
        test_y = [r["label"] for r in self.test]
        accuracy, macro_f1 = [], []
        for picked in experiments:
            probe = LogisticRegression(max_iter=100)
            probe.fit(train_x[[position[i] for i in picked]], [self.train[i]["label"] for i in picked])
            predicted = probe.predict(test_x)
            accuracy.append(float(np.mean(predicted == np.array(test_y))))
            macro_f1.append(float(f1_score(test_y, predicted, average="macro")))
        return TaskResult({"accuracy": float(np.mean(accuracy)), "f1_macro": float(np.mean(macro_f1))})


@dataclass
class ClusteringTask:
    """Mini-batch k-means with one cluster per label; V-measure against the labels."""

    path: Path
    name: str = ""
    n_runs: int = 10
    kind: ClassVar[str] = "clustering"
    main_metric: ClassVar[str] = "v_measure"

    def __post_init__(self) -> None:
        rows = read_tsv(self.path, ["text", "label"])
        self.texts, self.labels = [r["text"] for r in rows], [r["label"] for r in rows]

    def run(self, model: TextEncoder | LexicalRetriever) -> TaskResult:
        vectors = _dense(model).encode(self.texts)
        n_clusters = len(set(self.labels))
        scores = [
            v_measure_score(
                self.labels,
                MiniBatchKMeans(
                    n_clusters=n_clusters, batch_size=512, n_init=1, random_state=seed
                ).fit_predict(vectors),
            )
            for seed in range(self.n_runs)
        ]
        return TaskResult({"v_measure": float(np.mean(scores))})


@dataclass
class PairClassificationTask:
    """Average precision of cosine similarity for binary pair labels; TSV sentence1/sentence2/label."""

    path: Path
    name: str = ""
    kind: ClassVar[str] = "pairclf"
    main_metric: ClassVar[str] = "cosine_ap"

    def __post_init__(self) -> None:
        rows = read_tsv(self.path, ["sentence1", "sentence2", "label"], {"label": int})
        self.pairs = [(r["sentence1"], r["sentence2"]) for r in rows]
        self.labels = np.array([r["label"] for r in rows])
        if not set(self.labels) <= {0, 1}:
            raise DataFormatError(f"{self.path}: labels must be 0 or 1, got {sorted(set(self.labels))}")

    def run(self, model: TextEncoder | LexicalRetriever) -> TaskResult:
        cosine = _pair_cosines(model, self.pairs)
        return TaskResult({"cosine_ap": float(average_precision_score(self.labels, cosine))})


def word_vectors(states: np.ndarray, spans: list[tuple[int, int]], words: list[str]) -> np.ndarray:
    """One vector per word of ``" ".join(words)``: the mean of the token states overlapping the word."""
    out = np.zeros((len(words), states.shape[1]), dtype=np.float32)
    start = 0
    for w, word in enumerate(words):
        end = start + len(word)
        hits = [t for t, (a, b) in enumerate(spans) if a < end and b > start]
        if hits:  # a word cut off by truncation keeps a zero vector
            out[w] = states[hits].mean(0)
        start = end + 1
    return out


@dataclass
class WordProbeTask:
    """Token-level linear probe (LLM2Vec's word-level test): CoNLL tags predicted from word vectors.

    Reports micro-F1 over words whose gold or predicted tag is an entity (not ``O``), and accuracy.
    """

    path: Path
    name: str = ""
    max_train_sentences: int = 1000
    max_eval_sentences: int = 300
    kind: ClassVar[str] = "wordprobe"
    main_metric: ClassVar[str] = "entity_f1"

    def __post_init__(self) -> None:
        self.train = read_conll(self.path / "train.conll")[: self.max_train_sentences]
        self.eval = read_conll(self.path / "dev.conll")[: self.max_eval_sentences]

    def _features(self, model: TextEncoder, sentences: list[tuple[list[str], list[str]]]):
        states = model.token_embeddings([" ".join(words) for words, _ in sentences])
        x = np.concatenate(
            [word_vectors(s, sp, words) for (s, sp), (words, _) in zip(states, sentences, strict=True)]
        )
        return x, [tag for _, tags in sentences for tag in tags]

    def run(self, model: TextEncoder | LexicalRetriever) -> TaskResult:
        model = _dense(model)
        train_x, train_y = self._features(model, self.train)
        eval_x, eval_y = self._features(model, self.eval)
        probe = LogisticRegression(max_iter=300).fit(train_x, train_y)
        predicted = probe.predict(eval_x)
        entities = sorted({t for t in train_y + eval_y if t != "O"})
        return TaskResult(
            {
                "entity_f1": float(f1_score(eval_y, predicted, labels=entities, average="micro")),
                "accuracy": float(np.mean(predicted == np.array(eval_y))),
            }
        )


TASK_TYPES: dict[str, type] = {
    t.kind: t
    for t in (
        STSTask,
        RetrievalTask,
        ClassificationTask,
        ClusteringTask,
        PairClassificationTask,
        WordProbeTask,
    )
}
Task = STSTask | RetrievalTask | ClassificationTask | ClusteringTask | PairClassificationTask | WordProbeTask


def build_task(kind: str, path: str | Path, name: str | None = None, **options: Any) -> Task:
    """A task of ``kind`` over ``path`` (files are read and checked now)."""
    if kind not in TASK_TYPES:
        raise ValueError(f"unknown task type {kind!r}; expected one of {', '.join(TASK_TYPES)}")
    path = Path(path)
    try:
        return TASK_TYPES[kind](path=path, name=name or _default_name(path), **options)
    except TypeError as err:
        raise ValueError(f"task {kind}:{path}: {err}") from err


def _default_name(path: Path) -> str:
    return path.parent.name + "/" + path.stem if path.suffix else path.name


def parse_task(spec: str) -> Task:
    """``TYPE:PATH``, e.g. ``sts:data/stsb_dev.tsv`` or ``retrieval:data/cranfield``."""
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise ValueError(f"task {spec!r}: expected TYPE:PATH with TYPE one of {', '.join(TASK_TYPES)}")
    return build_task(kind, path)


def load_suite(path: Path) -> list[Task]:
    """Tasks from a TOML suite: ``[[task]]`` tables with type, path (relative to the file), name, options."""
    try:
        suite = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise DataFormatError(f"{path}: {err}") from err
    tasks = []
    for number, entry in enumerate(suite.get("task", []), start=1):
        entry = dict(entry)
        try:
            kind, task_path = entry.pop("type"), entry.pop("path")
        except KeyError as err:
            raise DataFormatError(f"{path}: task #{number} needs a {err.args[0]!r} key") from err
        tasks.append(build_task(kind, path.parent / task_path, **entry))
    if not tasks:
        raise DataFormatError(f"{path}: no [[task]] entries")
    return tasks
