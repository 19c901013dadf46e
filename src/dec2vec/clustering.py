"""Clustering with written labels: k-means on the encoder's vectors, each cluster named by the same model.

The number of clusters is given or chosen by the cosine silhouette (scikit-learn). A cluster's label is
written by the encoder's own generator from its most central members (GRIT: the weights that embed also
write); a model that cannot generate gets keywords instead — the terms that set the cluster apart
(TF-IDF over one document per cluster, the c-TF-IDF idea of BERTopic). ``save_map`` draws a 2-D map.

    result = cluster_texts(encoder, texts)          # k from the silhouette
    for c in result.clusters: print(c.size, c.label, c.examples[0])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import silhouette_score

# A plain few-shot completion, not a chat turn: asked in chat, SmolLM2-135M answers the texts instead of
# naming them ("The largest city in the U.S. is Los Angeles"); shown two named groups it writes "weather
# forecast".
LABEL_PROMPT = (
    "Name the topic of each group of texts in two to four words.\n\n"
    "Group:\n- How do I reset my password?\n- I forgot my login details\n- Can't sign in to my account\n"
    "Topic: account login problems\n\n"
    "Group:\n- Who painted the Mona Lisa?\n- When did Picasso die?\n- What style did Monet paint in?\n"
    "Topic: painters and art history\n\n"
    "Group:\n{examples}\nTopic:"
)
SILHOUETTE_SAMPLE = 5000  # silhouette is quadratic; scored on a fixed random sample beyond this


@dataclass
class Cluster:
    id: int
    size: int
    label: str
    keywords: list[str]
    examples: list[str]  # most central first
    members: list[int] = field(repr=False)  # indices into the input texts


@dataclass
class Clustering:
    assignments: np.ndarray  # (n,) cluster id per text
    clusters: list[Cluster]  # largest first; ids are positions in this list
    vectors: np.ndarray = field(repr=False)  # (n, dim) unit vectors
    silhouette: dict[int, float]  # k -> score, for each k tried (empty when k was given)


def choose_k(vectors: np.ndarray, candidates: Sequence[int], seed: int = 0) -> tuple[int, dict[int, float]]:
    """The k of ``candidates`` with the best cosine silhouette of its k-means clustering."""
    scores = {}
    for k in candidates:
        assignments = KMeans(k, n_init=3, random_state=seed).fit_predict(vectors)
        scores[k] = float(
            silhouette_score(
                vectors,
                assignments,
                metric="cosine",
                sample_size=min(len(vectors), SILHOUETTE_SAMPLE),
                random_state=seed,
            )
        )
    return max(scores, key=scores.__getitem__), scores


def keywords(texts: Sequence[str], assignments: np.ndarray, n_clusters: int, top: int = 5) -> list[list[str]]:
    """Per cluster, the ``top`` terms (words or word pairs) that most set it apart from the others."""
    documents = [
        " ".join(t for t, a in zip(texts, assignments, strict=True) if a == c) for c in range(n_clusters)
    ]
    vectorizer = TfidfVectorizer(stop_words="english", ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    try:
        weights = vectorizer.fit_transform(documents).toarray()  # (clusters, terms)
    except ValueError:  # nothing but stop words
        return [[] for _ in range(n_clusters)]
    terms = vectorizer.get_feature_names_out()
    return [[terms[i] for i in row.argsort()[::-1][:top] if row[i] > 0] for row in weights]


def write_label(generator: Any, examples: Sequence[str], max_new_tokens: int = 12) -> str:
    """A short title for ``examples`` from the generator (greedy, few-shot), its first line."""
    listed = "\n".join(f"- {' '.join(text.split())[:200]}" for text in examples)
    answer = generator.generate(LABEL_PROMPT.format(examples=listed), max_new_tokens=max_new_tokens)
    line = next((part for part in answer.splitlines() if part.strip()), "")
    return line.strip(" \"'*.")


def cluster_texts(
    encoder: Any,
    texts: Sequence[str],
    k: int | None = None,
    *,
    k_max: int = 20,
    examples: int = 5,
    labels: str = "auto",
    generator: Any = None,
    seed: int = 0,
    batch_size: int = 32,
    show_progress: bool = False,
) -> Clustering:
    """Embed, cluster into ``k`` groups (None: the best silhouette over 2..``k_max``) and label each.

    ``labels``: ``generate`` (``generator`` writes them: by default the encoder itself), ``keywords``, or
    ``auto`` (generate when there is a model that can, else keywords).
    """
    texts = list(texts)
    if labels not in ("auto", "generate", "keywords"):
        raise ValueError(f"labels must be auto, generate or keywords, got {labels!r}")
    generator = generator if generator is not None else encoder
    can_generate = hasattr(generator, "generate")
    if labels == "generate" and not can_generate:
        raise ValueError(f"{generator.spec} cannot generate labels; use labels='keywords'")
    if k is not None and not 1 <= k <= len(texts):
        raise ValueError(f"k must be between 1 and the number of texts ({len(texts)}), got {k}")
    if k is None and len(texts) < 3:
        raise ValueError(f"choosing k needs at least 3 texts, got {len(texts)}; give k")
    vectors = encoder.encode(texts, batch_size=batch_size, show_progress=show_progress)
    scores: dict[int, float] = {}
    if k is None:
        k, scores = choose_k(vectors, range(2, min(k_max, len(texts) - 1) + 1), seed)
    model = KMeans(k, n_init=3, random_state=seed).fit(vectors)
    # renumber: largest cluster first
    order = np.argsort(-np.bincount(model.labels_, minlength=k), kind="stable")
    renumber = np.empty(k, dtype=int)
    renumber[order] = np.arange(k)
    assignments = renumber[model.labels_]
    centroids = model.cluster_centers_[order]
    terms = keywords(texts, assignments, k)
    clusters = []
    for c in range(k):
        members = np.flatnonzero(assignments == c)
        central = members[np.argsort(-(vectors[members] @ centroids[c]), kind="stable")]
        shown = [texts[i] for i in central[:examples]]
        label = (
            write_label(generator, shown)
            if labels == "generate" or (labels == "auto" and can_generate)
            else ""
        )
        clusters.append(
            Cluster(c, len(members), label or ", ".join(terms[c][:3]), terms[c], shown, members.tolist())
        )
    return Clustering(assignments, clusters, vectors, scores)


def project_2d(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, 2) map coordinates: t-SNE (cosine) up to 5,000 points, PCA beyond (t-SNE grows too slow)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if len(vectors) < 5:
        return PCA(2).fit_transform(vectors) if len(vectors) > 2 else np.zeros((len(vectors), 2))
    if len(vectors) <= 5000:
        perplexity = min(30.0, (len(vectors) - 1) / 3)
        return TSNE(2, metric="cosine", init="pca", perplexity=perplexity, random_state=seed).fit_transform(
            vectors
        )
    return PCA(2, random_state=seed).fit_transform(vectors)


def save_map(result: Clustering, path: Path, title: str = "") -> Path:
    """A PNG scatter of the texts, coloured by cluster, each cluster's label at its centre."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = project_2d(result.vectors)
    fig, ax = plt.subplots(figsize=(10, 8), dpi=110)
    colours = plt.get_cmap("tab20")
    for cluster in result.clusters:
        points = xy[cluster.members]
        ax.scatter(points[:, 0], points[:, 1], s=8, alpha=0.6, color=colours(cluster.id % 20))
        x, y = np.median(points, axis=0)
        ax.annotate(
            f"{cluster.label} ({cluster.size})",
            (x, y),
            fontsize=8,
            ha="center",
            bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8, "lw": 0},
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{len(result.assignments)} texts, {len(result.clusters)} clusters")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
