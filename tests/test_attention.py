"""The attention switch: bidirectional really is bidirectional, per architecture, padded either side."""

import pytest
import torch
from conftest import NOT_SWITCHABLE, SWITCHABLE
from transformers import AutoModelForCausalLM, AutoTokenizer

from dec2vec import AttentionSwitchError, Encoder, check_switch, hidden_states

TEXTS = ["The cat sat on the mat today", "The cat sat on the mat", "A dog"]


def _batch(path, side):
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = side
    return tok(TEXTS, padding=True, return_tensors="pt")


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("arch", list(SWITCHABLE))
def test_bidirectional_proof(arch, side, make_tiny_checkpoint):
    """A later token changes an earlier token's state only in bidirectional mode; padding changes nothing."""
    path = make_tiny_checkpoint(arch)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    check_switch(model)
    enc = _batch(path, side)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    first = mask.argmax(dim=1)  # first real token of each row, whatever the padding side
    with torch.inference_mode():
        causal = hidden_states(model, ids, mask, causal=True)
        bidir = hidden_states(model, ids, mask, causal=False)
        # Row 1 is row 0 without its last word: its first-token state differs only if attention looks ahead.
        assert torch.allclose(causal[0, first[0]], causal[1, first[1]], atol=1e-5)
        assert (bidir[0, first[0]] - bidir[1, first[1]]).abs().max() > 1e-4
        # Each row padded in the batch equals the same row run alone.
        for row in range(len(TEXTS)):
            real = mask[row].bool()
            alone = hidden_states(model, ids[row : row + 1, real], mask[row : row + 1, real], causal=False)
            assert torch.allclose(bidir[row, real], alone[0], atol=1e-4)


def test_same_weights_switch_back_and_forth(make_tiny_checkpoint):
    """A bidirectional call leaves the model causal afterwards (the config flag is restored)."""
    model = AutoModelForCausalLM.from_pretrained(make_tiny_checkpoint("llama")).eval()
    ids = torch.tensor([[1, 5, 6, 7]])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        before = hidden_states(model, ids, mask, causal=True)
        hidden_states(model, ids, mask, causal=False)
        after = hidden_states(model, ids, mask, causal=True)
        logits_causal = model(input_ids=ids).logits
        logits_bidir = model(input_ids=ids, is_causal=False).logits
    assert torch.equal(before, after)
    assert not torch.allclose(logits_causal[0, 0], logits_bidir[0, 0])


@pytest.mark.parametrize("arch", list(NOT_SWITCHABLE))
def test_unswitchable_architecture_raises(arch, make_tiny_checkpoint):
    path = make_tiny_checkpoint(arch)
    with pytest.raises(AttentionSwitchError, match="ignores is_causal=False"):
        Encoder.load(path, attention="bidirectional")
    # The same model still works causally.
    assert Encoder.load(path, attention="causal").encode(["hello"]).shape == (1, 32)


def test_kernel_that_ignores_flag_moves_to_eager(make_tiny_checkpoint, caplog):
    """StableLM's sdpa path ignores is_causal; dec2vec switches to eager attention and says so."""
    encoder = Encoder.load(make_tiny_checkpoint("stablelm"), attention="bidirectional")
    assert encoder.model.config._attn_implementation == "eager"
    assert "using eager attention instead" in caplog.text
