"""One attention switch for every architecture: transformers' generic ``is_causal`` forward kwarg.

transformers >= 5.2 builds the attention mask from ``is_causal`` (kwarg first, then ``config.is_causal``)
for any model using its shared masking utilities, so the same weights run causally (to generate) or
bidirectionally (to embed) per call, with no per-architecture code. Because a model with its own mask code
can silently ignore the flag, :func:`check_switch` proves the switch works before a model is used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttentionMode:
    """How an encoder runs its backbone: the mask, and whether each text is written twice (echo)."""

    name: str
    causal: bool  # the model's own causal mask; False: ``is_causal=False`` (checked by check_switch)
    echo: bool = False  # the text inside a template twice, only the second copy pooled (causal only)
    description: str = ""


ATTENTION = {
    mode.name: mode
    for mode in (
        AttentionMode("causal", causal=True, description="the model as trained"),
        AttentionMode(
            "bidirectional", causal=False, description="is_causal=False: LLM2Vec/GRIT, after training"
        ),
        AttentionMode("echo", causal=True, echo=True, description="the text twice, the second copy pooled"),
    )
}


class AttentionSwitchError(RuntimeError):
    """The architecture ignores ``is_causal=False``: bidirectional attention cannot be enabled generically."""


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only, so a padded row gets the positions it has when run alone
    (models with absolute position embeddings, such as GPT-2, would otherwise shift)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _forward(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, causal: bool, **kw
):
    return model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=_positions(attention_mask),
        is_causal=causal,
        use_cache=False,
        **kw,
    )


# Packing attends over (tokens x tokens); past this many tokens that costs more than padding wastes.
PACK_MAX_TOKENS = 2048


def hidden_states(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    causal: bool,
    pack: bool = False,
) -> torch.Tensor:
    """Last hidden states ``(batch, seq, dim)`` of the decoder stack (no LM head), causal or bidirectional.

    With ``pack`` (for models :func:`supports_packing` approves), a batch with much padding runs as one
    unpadded sequence instead; the result has the same layout either way.
    """
    if pack and _worth_packing(model, attention_mask):
        return _packed_hidden_states(model, input_ids, attention_mask, causal)
    return _forward(model.base_model, input_ids, attention_mask, causal).last_hidden_state


def _worth_packing(model: PreTrainedModel, attention_mask: torch.Tensor) -> bool:
    tokens = int(attention_mask.sum())
    window = getattr(model.config.get_text_config(), "sliding_window", None)
    if window and attention_mask.shape[1] > window:  # the block mask would not slide: keep the model's own
        return False
    return tokens <= PACK_MAX_TOKENS and tokens < 0.9 * attention_mask.numel()


def _packed_inputs(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, causal: bool
) -> dict[str, torch.Tensor | bool]:
    """The batch's rows end to end in one sequence: positions restart per row and a block-diagonal mask
    keeps rows apart, so no compute goes to padding (micro-batches of short texts of mixed lengths are
    often more than half padding). transformers uses a 4D mask as given, for any architecture.
    """
    keep = attention_mask.bool()
    row = torch.arange(keep.shape[0], device=keep.device)[:, None].expand_as(keep)[keep]
    positions = _positions(attention_mask)[keep]
    allowed = row[:, None] == row[None, :]
    if causal:
        allowed &= positions[None, :] <= positions[:, None]
    if model.config._attn_implementation == "eager":  # eager adds the mask to the scores; sdpa takes booleans
        mask = torch.zeros(allowed.shape, dtype=model.dtype, device=keep.device)
        mask = mask.masked_fill(~allowed, torch.finfo(model.dtype).min)
    else:
        mask = allowed
    return {
        "input_ids": input_ids[keep][None],
        "attention_mask": mask[None, None],
        "position_ids": positions[None],
        "use_cache": False,
    }


def _packed_hidden_states(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, causal: bool
) -> torch.Tensor:
    keep = attention_mask.bool()
    packed = model.base_model(**_packed_inputs(model, input_ids, attention_mask, causal)).last_hidden_state[0]
    out = packed.new_zeros(*keep.shape, packed.shape[-1])
    out[keep] = packed
    return out


def supports_packing(model: PreTrainedModel, *, causal: bool) -> bool:
    """True when a packed batch gives the same hidden states as the padded one (see :func:`hidden_states`).

    Checked per model on load, like the attention switch: only sdpa and eager attention take the packed
    mask, and a model that derives positions or masks its own way fails the comparison and keeps padding.
    """
    if model.config._attn_implementation not in ("sdpa", "eager"):
        return False
    vocab = model.config.get_text_config().vocab_size
    ids = torch.tensor([[3, 7, 11, 13, 17, 19], [5, 9, 0, 0, 0, 0], [2, 4, 6, 8, 0, 0]], device=model.device)
    mask = (torch.arange(6, device=model.device) < torch.tensor([[6], [2], [4]], device=model.device)).long()
    ids = ids % vocab
    with torch.inference_mode():
        padded = _forward(model.base_model, ids, mask, causal).last_hidden_state.float()
        try:
            packed = _packed_hidden_states(model, ids, mask, causal).float()
        except (RuntimeError, ValueError, TypeError) as err:
            log.info("%s: packing unsupported (%s); batches stay padded", type(model).__name__, err)
            return False
    keep = mask.bool()
    error = (padded[keep] - packed[keep]).abs().max() / padded[keep].abs().max()
    tolerance = 1e-4 if model.dtype == torch.float32 else 5e-2
    return bool(error <= tolerance)


def lm_logits(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    causal: bool,
    at: torch.Tensor | None = None,
    pack: bool = False,
) -> torch.Tensor:
    """Language-model logits ``(batch, seq, vocab)``, causal or bidirectional (MNTP uses the latter).

    With ``at``, a ``(batch, seq)`` boolean mask, only the logits at those positions: ``(n, vocab)`` in
    row-major order. A small decoder's LM head is a large share of its compute (SmolLM2: 49k x 576, a fifth
    of the weights) and training needs its output at a fraction of positions (MNTP: the masked ones; the
    next-token loss: not padding). ``pack`` as in :func:`hidden_states`.
    """
    if at is None:
        return _forward(model, input_ids, attention_mask, causal).logits
    packed = pack and _worth_packing(model, attention_mask)
    select = at[attention_mask.bool()][None] if packed else at  # in the layout the head's input has
    # Picking the head's input rows in a hook, rather than applying the head here, keeps each architecture's
    # own treatment of its logits (Gemma 2's soft-capping, Cohere's and Granite's scaling).
    hook = model.get_output_embeddings().register_forward_pre_hook(lambda _head, args: (args[0][select],))
    try:
        if packed:
            return model(**_packed_inputs(model, input_ids, attention_mask, causal)).logits
        return _forward(model, input_ids, attention_mask, causal).logits
    finally:
        hook.remove()


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
