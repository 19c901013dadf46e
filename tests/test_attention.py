"""The attention switch: bidirectional really is bidirectional, per architecture, padded either side."""

import numpy as np
import pytest
import torch
from conftest import NOT_SWITCHABLE, SWITCHABLE
from transformers import AutoModelForCausalLM, AutoTokenizer

from dec2vec import AttentionSwitchError, Encoder, check_switch, hidden_states
from dec2vec.attention import lm_logits, supports_packing

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


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("arch", list(SWITCHABLE))
def test_packed_batch_equals_padded(arch, side, make_tiny_checkpoint, monkeypatch):
    """Rows packed end to end (no padding) give each real token the state the padded batch gives it."""
    path = make_tiny_checkpoint(arch)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    check_switch(model)
    enc = _batch(path, side)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    real = mask.bool()
    for causal in (True, False):
        assert supports_packing(model, causal=causal)
        calls = []
        monkeypatch.setattr(model.base_model, "forward", _recording(model.base_model.forward, calls))
        with torch.inference_mode():
            padded = hidden_states(model, ids, mask, causal=causal)
            packed = hidden_states(model, ids, mask, causal=causal, pack=True)
        monkeypatch.undo()
        assert calls == [tuple(ids.shape), (1, int(mask.sum()))]  # the second pass really ran unpadded
        assert torch.allclose(packed[real], padded[real], atol=1e-4)


def _recording(forward, calls):
    def wrapped(*args, **kwargs):
        calls.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize("arch", list(SWITCHABLE))
def test_logits_at_chosen_positions_equal_full_logits(arch, make_tiny_checkpoint):
    """The LM head run only where asked (padded or packed) gives the full forward's logits there, with each
    architecture's own soft-capping or scaling (Gemma 2, Cohere, Granite) still applied."""
    path = make_tiny_checkpoint(arch)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    check_switch(model)
    enc = _batch(path, "right")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    at = mask.bool() & (torch.arange(ids.shape[1]) % 2 == 1)  # every other real token
    for causal in (True, False):
        with torch.inference_mode():
            full = lm_logits(model, ids, mask, causal=causal)
            for pack in (False, True):
                chosen = lm_logits(model, ids, mask, causal=causal, at=at, pack=pack)
                assert chosen.shape == (int(at.sum()), full.shape[-1])
                assert torch.allclose(chosen, full[at], atol=1e-4), (causal, pack)


def test_packing_refused_where_it_would_differ(make_tiny_checkpoint):
    """Bloom derives ALiBi positions from the 2D mask: the load-time check finds packing wrong there."""
    model = AutoModelForCausalLM.from_pretrained(make_tiny_checkpoint("bloom")).eval()
    assert not supports_packing(model, causal=True)
    encoder = Encoder.load(make_tiny_checkpoint("bloom"), attention="causal")
    assert not encoder.packing
    assert encoder.encode(TEXTS).shape == (3, 32)


def test_encoder_packs_mixed_lengths_to_the_same_vectors(make_tiny_checkpoint):
    encoder = Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional")
    assert encoder.packing
    texts = [*TEXTS, "one", "a much longer sentence about the cat and the dog and the mat in the house"]
    packed = encoder.encode(texts, batch_size=8)
    encoder.packing = False
    assert np.allclose(packed, encoder.encode(texts, batch_size=8), atol=1e-5)


def test_no_packing_past_a_sliding_window(make_tiny_checkpoint):
    """A block mask cannot slide: batches wider than the model's window keep the model's own masks."""
    path = make_tiny_checkpoint("mistral")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    enc = _batch(path, "right")
    model.config.sliding_window = enc["input_ids"].shape[1] - 1
    calls = []
    model.base_model.forward = _recording(model.base_model.forward, calls)
    with torch.inference_mode():
        hidden_states(model, enc["input_ids"], enc["attention_mask"], causal=True, pack=True)
    assert calls == [tuple(enc["input_ids"].shape)]
