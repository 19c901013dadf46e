"""One attention switch for every architecture: transformers' generic ``is_causal`` forward kwarg.

transformers >= 5.2 builds the attention mask from ``is_causal`` (kwarg first, then ``config.is_causal``)
for any model using its shared masking utilities, so the same weights run causally (to generate) or
bidirectionally (to embed) per call, with no per-architecture code. Because a model with its own mask code
can silently ignore the flag, :func:`check_switch` proves the switch works before a model is used.
"""

from __future__ import annotations

import logging

import torch
from transformers import PreTrainedModel

log = logging.getLogger(__name__)


class AttentionSwitchError(RuntimeError):
    """The architecture ignores ``is_causal=False``: bidirectional attention cannot be enabled generically."""


def _forward(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, causal: bool, **kw
):
    # Positions count real tokens only, so a left-padded row gets the same positions as when run alone
    # (models with absolute position embeddings, such as GPT-2, would otherwise shift).
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        is_causal=causal,
        use_cache=False,
        **kw,
    )


def hidden_states(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    causal: bool,
) -> torch.Tensor:
    """Last hidden states ``(batch, seq, dim)`` of the decoder stack (no LM head), causal or bidirectional."""
    return _forward(model.base_model, input_ids, attention_mask, causal).last_hidden_state


def lm_logits(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    causal: bool,
) -> torch.Tensor:
    """Language-model logits ``(batch, seq, vocab)``, causal or bidirectional (MNTP uses the latter)."""
    return _forward(model, input_ids, attention_mask, causal).logits


def _probe_changes(model: PreTrainedModel, *, causal: bool) -> list[float]:
    """How much the first token's hidden state moves when only the last token changes.

    Measured on an unpadded and on a padded batch, since kernels take different mask paths for the two.
    """
    vocab = model.config.get_text_config().vocab_size
    ids = torch.tensor([[3, 7, 11, 13, 17], [3, 7, 11, 13, 19]], device=model.device) % vocab
    padded = torch.cat([ids, torch.zeros_like(ids[:, :1])], dim=1)
    padded_mask = torch.ones_like(padded)
    padded_mask[:, -1] = 0
    changes = []
    with torch.inference_mode():
        for batch, mask in ((ids, torch.ones_like(ids)), (padded, padded_mask)):
            h = hidden_states(model, batch, mask, causal=causal).float()
            changes.append(float((h[0, 0] - h[1, 0]).abs().max()))
    return changes


def is_bidirectional(model: PreTrainedModel) -> bool:
    """True when ``is_causal=False`` lets the first token see the last, padded batch or not."""
    return min(_probe_changes(model, causal=False)) > 1e-6


def check_switch(model: PreTrainedModel) -> None:
    """Raise unless causal mode is causal and bidirectional mode is really bidirectional for this model.

    If the configured attention kernel ignores the switch but eager attention honours it, the model is moved
    to eager attention (with a warning): still bidirectional, never a silent fall back to causal.
    """
    name = type(model).__name__
    if max(_probe_changes(model, causal=True)) > 1e-5:
        raise AttentionSwitchError(f"{name}: causal mode lets an earlier token see a later one")
    if is_bidirectional(model):
        return
    impl = model.config._attn_implementation
    if impl != "eager":
        model.set_attn_implementation("eager")
        if is_bidirectional(model):
            log.warning(
                "%s ignores is_causal=False under %r attention; using eager attention instead", name, impl
            )
            return
        model.set_attn_implementation(impl)
    raise AttentionSwitchError(
        f"{name} ignores is_causal=False: its attention stays causal, so bidirectional encoding is "
        "unsupported for this architecture. Use attention='causal' (or 'echo') with it instead."
    )
