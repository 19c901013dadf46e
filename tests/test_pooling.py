"""Pooling against hand-computed references, both padding sides, prompts excluded."""

import numpy as np
import pytest
import torch

from dec2vec import Encoder
from dec2vec.pooling import POOLING_METHODS, POOLINGS, LatentAttention, pool

# Two sequences: row 0 has 4 real tokens of which the first 2 are prompt; row 1 has 3 real, 1 prompt.
LENGTHS, PROMPTS, WIDTH = [4, 3], [2, 1], 5


def _masks(side: str) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    attention = torch.zeros(2, WIDTH, dtype=torch.long)
    pooled = torch.zeros(2, WIDTH, dtype=torch.long)
    positions = []  # indices of each row's real tokens, in order
    for i, (n, p) in enumerate(zip(LENGTHS, PROMPTS, strict=True)):
        start = WIDTH - n if side == "left" else 0
        attention[i, start : start + n] = 1
        pooled[i, start + p : start + n] = 1
        positions.append(list(range(start, start + n)))
    return attention, pooled, positions


def _reference(hidden: np.ndarray, method: str, positions: list[list[int]], prompts: list[int]) -> np.ndarray:
    """Pool by plain indexing: ``positions[i]`` are row i's real tokens, the first ``prompts[i]`` a prompt."""
    out = []
    for i, pos in enumerate(positions):
        text = pos[prompts[i] :]
        if method == "mean":
            out.append(hidden[i, text].mean(0))
        elif method == "first":
            out.append(hidden[i, text[0]])
        elif method == "last":
            out.append(hidden[i, text[-1]])
        elif method == "weighted_mean":
            weights = np.array([pos.index(t) + 1 for t in text], dtype=np.float64)  # 1-based over real tokens
            out.append((hidden[i, text] * weights[:, None]).sum(0) / weights.sum())
    return np.stack(out)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("method", ["mean", "first", "last", "weighted_mean"])
def test_pooling_matches_hand_computation(method, side):
    torch.manual_seed(0)
    hidden = torch.randn(2, WIDTH, 3)
    attention, pooled, positions = _masks(side)
    got = pool(hidden, attention, pooled, method).numpy()
    np.testing.assert_allclose(
        got, _reference(hidden.numpy(), method, positions, PROMPTS), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("side", ["right", "left"])
def test_latent_attention_ignores_padding_and_prompt(side):
    torch.manual_seed(0)
    latent = LatentAttention(dim=8, num_latents=4, num_heads=2).eval()
    hidden = torch.randn(2, WIDTH, 8)
    attention, pooled, _ = _masks(side)
    got = pool(hidden, attention, pooled, "latent_attention", latent)
    noisy = hidden.clone()
    noisy[pooled == 0] = 100.0  # garbage at every padded or prompt position
    assert torch.allclose(got, pool(noisy, attention, pooled, "latent_attention", latent), atol=1e-5)


def test_an_empty_pool_mask_is_the_zero_vector_except_for_first():
    hidden = torch.arange(1, 7, dtype=torch.float).view(1, 3, 2)
    attention = torch.tensor([[1, 1, 0]])
    for method in ("mean", "weighted_mean", "last"):
        assert not pool(hidden, attention, torch.zeros_like(attention), method).any()  # type: ignore[arg-type]
    assert torch.equal(pool(hidden, attention, torch.zeros_like(attention), "first"), hidden[:, 0])


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("method", ["mean", "first", "last", "weighted_mean"])
def test_prompt_is_attended_but_not_pooled(method, side, make_tiny_checkpoint):
    """Encoder output equals pooling the hidden states of the text tokens only, computed independently."""
    encoder = Encoder.load(make_tiny_checkpoint("llama", side), attention="bidirectional", pooling=method)
    prompt, texts = "Query:\n", ["what is the capital of France?", "a cat", "the quick brown fox jumps"]
    got = encoder.encode(texts, prompt=prompt, normalize=False)
    tok = encoder.tokenizer
    for text, vector in zip(texts, got, strict=True):
        ids = tok(prompt + text)["input_ids"]
        n_prompt = len(tok(prompt)["input_ids"])  # "Query:\n" never merges with the text's first token
        with torch.inference_mode():
            hidden = encoder.model.base_model(
                input_ids=torch.tensor([ids]), is_causal=False
            ).last_hidden_state
        expected = _reference(hidden.numpy(), method, [list(range(len(ids)))], [n_prompt])[0]
        np.testing.assert_allclose(vector, expected, rtol=1e-4, atol=1e-5)
    # The prompt changed the vectors (it is attended to) ...
    assert not np.allclose(got, encoder.encode(texts, normalize=False), atol=1e-4)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("attention", ["bidirectional", "causal", "echo"])
def test_batch_invariance_with_mixed_prompt_lengths(attention, side, make_tiny_checkpoint):
    """Echo gives every example a different prefix length; batched output equals one-at-a-time output."""
    encoder = Encoder.load(make_tiny_checkpoint("qwen2", side), attention=attention, pooling="mean")
    texts = ["a cat", "the stock market fell sharply today after the announcement", "", "paris"]
    batched = encoder.encode(texts, prompt="Represent this sentence:\n", batch_size=4)
    single = np.stack([encoder.encode([t], prompt="Represent this sentence:\n")[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_every_named_pooling_has_an_entry_in_the_registry():
    assert set(POOLINGS) == set(POOLING_METHODS)
