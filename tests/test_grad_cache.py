"""GradCache gives the full batch's loss and gradients while embedding one chunk at a time."""

import itertools
import json

import pytest
import torch
from conftest import SENTENCES

from dec2vec import Encoder
from dec2vec.training.grad_cache import cached_embeddings
from dec2vec.training.objectives import info_nce
from dec2vec.training.trainer import StageConfig, StageTrainer, add_residual_dropout


def _loss_and_grads(encoder, queries, keys, embed):
    encoder.model.zero_grad(set_to_none=True)
    loss = info_nce(embed(queries), embed(keys), temperature=0.05)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in encoder.model.named_parameters() if p.grad is not None}


@pytest.fixture
def encoder(make_tiny_checkpoint):
    encoder = Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional")
    encoder.model.requires_grad_(True)
    return encoder


def test_grad_cache_equals_the_full_batch(encoder):
    queries, keys = SENTENCES[:12], SENTENCES[12:24]
    full = _loss_and_grads(encoder, queries, keys, lambda t: encoder.embed_batch(encoder.collate(t)))

    def cached(texts):
        chunks = [encoder.collate(texts[i : i + 4]) for i in range(0, len(texts), 4)]
        return cached_embeddings(encoder.embed_batch, chunks, encoder.device)

    loss, grads = _loss_and_grads(encoder, queries, keys, cached)
    assert loss == pytest.approx(full[0], abs=1e-6)
    assert grads.keys() == full[1].keys() and len(grads) > 10
    for name, grad in grads.items():  # tolerance: float32 sums in another order
        assert torch.allclose(grad, full[1][name], atol=1e-6, rtol=1e-4), name


def test_grad_cache_replays_each_chunks_dropout(encoder):
    """With dropout on, the replayed chunks must see the masks of the first pass (and leave RNG as is)."""
    encoder.model.train()
    add_residual_dropout(encoder.model, 0.2)
    texts, keys = SENTENCES[:8], SENTENCES[8:16]

    def chunked(cache):
        def embed(t):
            chunks = [encoder.collate(t[i : i + 4]) for i in range(0, len(t), 4)]
            if cache:
                return cached_embeddings(encoder.embed_batch, chunks, encoder.device)
            return torch.cat([encoder.embed_batch(c) for c in chunks])  # same chunks, graph kept

        torch.manual_seed(7)
        result = _loss_and_grads(encoder, texts, keys, embed)
        return result, torch.rand(1)

    (plain, after_plain), (cached, after_cached) = chunked(False), chunked(True)
    assert cached[0] == pytest.approx(plain[0], abs=1e-6) and torch.equal(after_plain, after_cached)
    for name, grad in cached[1].items():
        assert torch.allclose(grad, plain[1][name], atol=1e-6, rtol=1e-4), name


def test_a_stage_with_grad_cache_trains_to_the_same_weights(make_tiny_checkpoint, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"query": a, "positive": b} for a, b in itertools.pairwise(SENTENCES[:40])]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    weights = []
    for chunk in (0, 3):
        encoder = Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional")
        stage = StageConfig(name="s", objective="supervised", data=[str(pairs)], steps=3, batch_size=8,
                            learning_rate=1e-2, bf16=False, grad_cache_chunk=chunk)  # fmt: skip
        StageTrainer(encoder, stage, tmp_path / f"run-{chunk}").run()
        weights.append({k: v.clone() for k, v in encoder.model.state_dict().items()})
    for name, value in weights[0].items():
        assert torch.allclose(value, weights[1][name], atol=1e-5), name
