"""Training losses against hand-computed values on tiny tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from dec2vec.training.objectives import (
    IGNORE,
    causal_labels,
    info_nce,
    mask_tokens,
    shifted_targets,
    similarity_distillation,
    token_loss,
)


def _nll(scores: list[float], target: int) -> float:
    return -scores[target] + math.log(sum(math.exp(s) for s in scores))


def test_info_nce_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # norms differ: cosine, not dot product
    k = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    r = 1 / math.sqrt(2)
    expected = (_nll([1.0, r], 0) + _nll([0.0, r], 1)) / 2
    assert info_nce(q, k, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
    # temperature divides the scores
    expected_t = (_nll([1 / 0.5, r / 0.5], 0) + _nll([0.0, r / 0.5], 1)) / 2
    assert info_nce(q, k, temperature=0.5).item() == pytest.approx(expected_t, rel=1e-6)


def test_info_nce_with_hard_negatives_appended():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])  # positives, then 2 hard negatives
    r = 1 / math.sqrt(2)
    expected = (_nll([1.0, 0.0, r, -1.0], 0) + _nll([0.0, 1.0, r, 0.0], 1)) / 2
    assert info_nce(q, k, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="at least one key"):
        info_nce(q, k[:1])


def test_mntp_uses_logits_one_position_earlier():
    # sequence of 3; only position 2 is masked (its original token is 1): the logits at 1 predict it
    labels = torch.tensor([[IGNORE, IGNORE, 1]])
    at, targets = shifted_targets(labels, torch.ones_like(labels))
    assert at.tolist() == [[False, True, False]] and targets.tolist() == [1]
    logits = torch.tensor([[2.0, 0.5, -1.0]])  # vocab 3, at the one chosen position
    assert token_loss(logits, targets).item() == pytest.approx(_nll([2.0, 0.5, -1.0], 1), rel=1e-6)


def test_next_token_targets_skip_padding_in_row_major_order():
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])  # right-padded
    at, targets = shifted_targets(causal_labels(ids, mask), mask)
    assert at.tolist() == [[True, True, False, False], [True, False, False, False]]
    assert targets.tolist() == [6, 7, 9]
    # left-padded, the same rows: the pad before a row's first token predicts nothing
    left_ids, left = torch.tensor([[5, 6, 7], [0, 8, 9]]), torch.tensor([[1, 1, 1], [0, 1, 1]])
    at, targets = shifted_targets(causal_labels(left_ids, left), left)
    assert at.tolist() == [[True, True, False], [False, True, False]] and targets.tolist() == [6, 7, 9]
    logits = torch.tensor([[1.0, 0.0], [0.0, 3.0], [5.0, 5.0]])  # the three positions, vocab 2
    expected = (_nll([1.0, 0.0], 0) + _nll([0.0, 3.0], 1) + _nll([5.0, 5.0], 1)) / 3
    assert token_loss(logits, torch.tensor([0, 1, 1])).item() == pytest.approx(expected, rel=1e-6)


def test_masking_respects_padding_specials_and_first_position():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (64, 40), generator=g)
    ids[:, 0] = 1  # BOS
    mask = torch.ones_like(ids)
    mask[:, 30:] = 0  # right padding
    corrupted, labels = mask_tokens(
        ids, mask, mask_token_id=3, vocab_size=100, special_ids=[0, 1, 2], probability=0.2, generator=g
    )
    chosen = labels != IGNORE
    assert not chosen[:, 0].any() and not chosen[:, 30:].any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert chosen.sum().item() / (64 * 29) == pytest.approx(0.2, abs=0.02)
    masked = (corrupted == 3) & chosen
    kept = (corrupted == ids) & chosen
    assert masked.sum() / chosen.sum() == pytest.approx(0.8, abs=0.04)
    assert kept.sum() / chosen.sum() == pytest.approx(0.1, abs=0.04)  # about 10% unchanged (+ random hits)
    assert torch.equal(corrupted[~chosen], ids[~chosen])
    all_mask, _ = mask_tokens(
        ids, mask, mask_token_id=3, vocab_size=100, special_ids=[0, 1, 2], strategy="all-mask"
    )
    assert ((all_mask == 3) == (all_mask != ids)).all()


def test_similarity_distillation_by_hand():
    # three texts; each row's distribution runs over the other two (self-pairs left out)
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    teacher = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    r = 1 / math.sqrt(2)
    s = [[0.0, r], [0.0, r], [r, r]]  # cosines to the two others, row by row
    t = [[r, 0.0], [r, 0.0], [0.0, 0.0]]

    def softmax(row):
        exps = [math.exp(x) for x in row]
        return [e / sum(exps) for e in exps]

    expected = (
        sum(
            sum(p * math.log(p / q) for p, q in zip(softmax(tr), softmax(sr), strict=True))
            for sr, tr in zip(s, t, strict=True)
        )
        / 3
    )
    assert similarity_distillation(student, teacher, temperature=1.0).item() == pytest.approx(
        expected, rel=1e-5
    )


def test_similarity_distillation_memory_adds_columns_not_rows():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 4, requires_grad=True), torch.randn(3, 5)
    kept_student, kept_teacher = torch.randn(4, 4, requires_grad=True), torch.randn(4, 5)
    got = similarity_distillation(student, teacher, 0.5, memory=(kept_student.detach(), kept_teacher))
    # by hand: each batch text's row runs over the 2 other batch texts and the 4 remembered ones
    s = F.normalize(torch.cat([student, kept_student]), dim=-1)
    t = F.normalize(torch.cat([teacher, kept_teacher]), dim=-1)
    expected = 0.0
    for i in range(3):
        others = [j for j in range(7) if j != i]
        p, log_q = F.softmax(t[i] @ t[others].T / 0.5, -1), F.log_softmax(s[i] @ s[others].T / 0.5, -1)
        expected += (p * (p.log() - log_q)).sum().item() / 3
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert got.item() != pytest.approx(similarity_distillation(student, teacher, 0.5).item(), rel=1e-2)
    mse = similarity_distillation(student, teacher, kind="mse", memory=(kept_student.detach(), kept_teacher))
    cosines = (s[:3] @ s.T - t[:3] @ t.T)[~torch.eye(3, 7, dtype=torch.bool)]
    assert mse.item() == pytest.approx((cosines**2).mean().item(), rel=1e-5)
    got.backward()
    assert student.grad.abs().sum() > 0 and kept_student.grad is None  # the memory is a constant


def test_similarity_distillation_is_zero_for_the_same_geometry_in_any_dimension():
    torch.manual_seed(0)
    teacher = torch.randn(6, 8)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8))
    student = torch.cat([teacher @ rotation * 3.0, torch.zeros(6, 4)], dim=1)  # rotated, scaled, padded
    assert similarity_distillation(student, teacher).item() == pytest.approx(0.0, abs=1e-5)
    other = torch.randn(6, 12, requires_grad=True)
    loss = similarity_distillation(other, teacher)
    loss.backward()
    assert loss.item() > 0.1 and other.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same n >= 2"):
        similarity_distillation(torch.randn(3, 4), torch.randn(2, 4))
