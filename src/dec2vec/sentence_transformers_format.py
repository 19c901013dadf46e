"""Write the sentence-transformers side of a saved encoder: ``modules.json``, pooling and prompt configs.

Only JSON is written here (sentence-transformers itself is not imported: it is slow to import and only
needed by whoever loads the directory with it). The layout is the one sentence-transformers 5/6 saves:
module 0 is the Transformer at the root, module 1 the pooling in ``1_Pooling/``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from dec2vec.attention import ATTENTION

if TYPE_CHECKING:
    from dec2vec.encoder import EncoderConfig

log = logging.getLogger(__name__)

POOLING_DIR = "1_Pooling"
# dec2vec pooling name -> sentence-transformers Pooling mode
ST_POOLING_MODES = {"mean": "mean", "last": "lasttoken", "weighted_mean": "weightedmean", "first": "cls"}
ST_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
ST_POOLING = "sentence_transformers.sentence_transformer.modules.pooling.Pooling"
LATENT_POOLING = "dec2vec.sentence_transformers_modules.LatentAttentionPooling"


def _dump(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def write(directory: Path, config: EncoderConfig, dim: int) -> None:
    """Add the sentence-transformers files for ``config`` to an encoder directory holding the weights."""
    if ATTENTION[config.attention].echo:
        # Echo repeats each text inside a template: no sentence-transformers module does that.
        log.warning("echo encoders load in dec2vec only; sentence-transformers files are not written")
        return
    pooling_dir = directory / POOLING_DIR
    pooling_dir.mkdir(exist_ok=True)
    if config.pooling == "latent_attention":
        pooling_type = LATENT_POOLING
        _dump(pooling_dir / "config.json", {"dim": dim, **(config.latent_attention or {})})
    else:
        pooling_type = ST_POOLING
        _dump(
            pooling_dir / "config.json",
            {
                "embedding_dimension": dim,
                "pooling_mode": ST_POOLING_MODES[config.pooling],
                "include_prompt": False,
            },
        )
    _dump(
        directory / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": ST_TRANSFORMER},
            {"idx": 1, "name": "1", "path": POOLING_DIR, "type": pooling_type},
        ],
    )
    _dump(
        directory / "sentence_bert_config.json",
        {
            "transformer_task": "feature-extraction",
            "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
            "module_output_name": "token_embeddings",
            "max_seq_length": config.max_length,
        },
    )
    _dump(
        directory / "config_sentence_transformers.json",
        {
            "model_type": "SentenceTransformer",
            "prompts": config.prompts,
            "default_prompt_name": config.default_prompt_name,
            "similarity_fn_name": "cosine",
        },
    )
