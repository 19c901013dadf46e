"""Run a dec2vec Encoder in mteb (v2), and build mteb tasks from local files so it runs offline.

    import mteb
    from dec2vec import Encoder
    from dec2vec.evaluation.mteb_adapter import MtebEncoder, local_sts_task

    encoder = MtebEncoder(Encoder.load("smollm2-135m"))
    results = mteb.evaluate(encoder, [local_sts_task("stsb_dev.tsv")], cache=None)

Needs ``pip install mteb`` (the ``dec2vec[mteb]`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta
from mteb.types import PromptType

from dec2vec.encoder import Encoder
from dec2vec.evaluation.data import read_tsv


class MtebEncoder(AbsEncoder):
    """mteb's EncoderProtocol over a dec2vec Encoder: query/document prompt types use its named prompts."""

    def __init__(self, encoder: Encoder, name: str | None = None, batch_size: int = 32) -> None:
        self.model = encoder
        self.batch_size = batch_size
        config = encoder.config
        self.mteb_model_meta = ModelMeta(
            loader=None,
            name=name or f"dec2vec/{Path(config.backbone).name}-{config.attention}-{config.pooling}",
            revision=encoder.fingerprint()[:12],
            release_date=None,
            languages=None,
            n_parameters=sum(p.numel() for p in encoder.model.parameters()),
            memory_usage_mb=None,
            max_tokens=config.max_length,
            embed_dim=encoder.dim,
            license=None,
            open_weights=True,
            public_training_code=None,
            public_training_data=None,
            framework=["PyTorch", "safetensors"],
            similarity_fn_name="cosine",
            use_instructions=bool(config.prompts),
            training_datasets=None,
        )

    def encode(
        self,
        inputs,
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        if prompt_type == PromptType.query:
            return self.model.encode_queries(texts, batch_size=self.batch_size)
        if prompt_type == PromptType.document:
            return self.model.encode_documents(texts, batch_size=self.batch_size)
        return self.model.encode(texts, batch_size=self.batch_size)


def local_sts_task(
    path: str | Path, name: str | None = None, min_score: float = 0, max_score: float = 5
) -> AbsTaskSTS:
    """An mteb STS task over a local TSV (sentence1, sentence2, score): no hub access."""
    path = Path(path)
    rows = read_tsv(path, ["sentence1", "sentence2", "score"], {"score": float})

    class LocalSTS(AbsTaskSTS):
        metadata = TaskMetadata(
            name=name or f"Local{path.stem}",
            dataset={"path": str(path), "revision": "local"},
            description=f"STS pairs read from {path}",
            reference=None,
            type="STS",
            category="t2t",
            modalities=["text"],
            eval_splits=["test"],
            eval_langs=["eng-Latn"],
            main_score="cosine_spearman",
            date=None,
            domains=None,
            task_subtypes=None,
            license=None,
            annotations_creators=None,
            dialect=None,
            sample_creation=None,
            bibtex_citation="",
        )

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            # Replaces the hub download: the rows were read (and checked) from the local file above.
            self.dataset = DatasetDict({"test": Dataset.from_list(rows)})
            self.data_loaded = True

    LocalSTS.min_score, LocalSTS.max_score = min_score, max_score
    return LocalSTS()
