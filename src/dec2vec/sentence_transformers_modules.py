"""sentence-transformers modules for what its own library lacks: NV-Embed latent-attention pooling.

Imported by sentence-transformers when it loads a saved encoder whose ``modules.json`` names it; dec2vec
itself never imports this module (sentence-transformers is slow to import).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from sentence_transformers.base.modules.module import Module
from sentence_transformers.sentence_transformer.modules.pooling import Pooling

from dec2vec.pooling import LatentAttention


class LatentAttentionPooling(Module):
    """Latent-attention pooling with prompt tokens excluded, reading dec2vec's ``1_Pooling/`` files."""

    config_keys: ClassVar[list[str]] = ["dim", "num_latents", "num_heads", "mlp_ratio"]

    def __init__(self, dim: int, num_latents: int = 512, num_heads: int = 8, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.dim, self.num_latents, self.num_heads, self.mlp_ratio = dim, num_latents, num_heads, mlp_ratio
        self.latent = LatentAttention(dim, num_latents, num_heads, mlp_ratio)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        mask = features["attention_mask"]
        if "prompt_length" in features:
            length = features["prompt_length"]
            length = int(length[0].item()) if isinstance(length, torch.Tensor) else int(length)
            mask = Pooling._exclude_prompt_from_mask(mask, length)
        features["sentence_embedding"] = self.latent(features["token_embeddings"].float(), mask)
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def save(self, output_path: str, *args, **kwargs) -> None:
        self.save_config(output_path)
        state = {k: v.contiguous() for k, v in self.latent.state_dict().items()}
        save_file(state, f"{output_path}/model.safetensors")

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs) -> LatentAttentionPooling:
        config = cls.load_config(model_name_or_path, subfolder=subfolder)
        module = cls(**config)
        weights = cls.load_file_path(model_name_or_path, filename="model.safetensors", subfolder=subfolder)
        module.latent.load_state_dict(load_file(weights))
        return module
