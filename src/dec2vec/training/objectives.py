"""Training objectives: MNTP, InfoNCE (SimCSE, supervised, GRIT's representation half), next-token loss.

Pure functions of tensors, so each is tested against hand-computed values on tiny inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dec2vec.training import distributed

IGNORE = -100  # label value that cross-entropy skips


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_ids: list[int],
    probability: float = 0.2,
    strategy: str = "80/10/10",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose ``probability`` of the real, non-special tokens (never position 0, which MNTP cannot predict).

    Returns the corrupted ids and labels (the original id at chosen positions, IGNORE elsewhere).
    ``strategy`` "80/10/10" (BERT: mask / random token / keep) or "all-mask".
    """
    if strategy not in ("80/10/10", "all-mask"):
        raise ValueError(f"masking strategy must be '80/10/10' or 'all-mask', got {strategy!r}")
    candidates = attention_mask.bool() & ~torch.isin(
        input_ids, torch.tensor(special_ids, device=input_ids.device)
    )
    candidates[:, 0] = False
    draw = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    chosen = candidates & (draw < probability)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
    corrupted = input_ids.clone()
    if strategy == "all-mask":
        corrupted[chosen] = mask_token_id
        return corrupted, labels
    kind = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    corrupted[chosen & (kind < 0.8)] = mask_token_id
    random_positions = chosen & (kind >= 0.8) & (kind < 0.9)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, device=input_ids.device)
    corrupted[random_positions] = random_ids[random_positions]
    return corrupted, labels


def shifted_targets(labels: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the LM head is needed and what it must predict: the logits at position i predict ``labels``
    at i+1, for MNTP as for the causal loss (MNTP keeps the decoder's own output alignment, as LLM2Vec).

    Returns ``at``, a ``(batch, seq)`` mask of the positions to compute logits at, and their targets
    ``(n,)`` in row-major order: the shape :func:`dec2vec.attention.lm_logits` returns with ``at``.
    Only real tokens predict: with left padding (Gemma's tokenizer) the pad before a row's first token
    would otherwise be asked for it, and packing, which drops padding, would lose that row's target.
    """
    at = torch.zeros_like(labels, dtype=torch.bool)
    at[:, :-1] = (labels[:, 1:] != IGNORE) & attention_mask[:, :-1].bool()
    return at, labels[:, 1:][at[:, :-1]]


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` ``(n, vocab)`` at the positions :func:`shifted_targets` chose."""
    return F.cross_entropy(logits.float(), targets)


def info_nce(
    queries: torch.Tensor, keys: torch.Tensor, temperature: float = 0.05, *, global_negatives: bool = False
) -> torch.Tensor:
    """InfoNCE over cosine similarities: query i's positive is key i; every other key is a negative.

    ``keys`` may hold more rows than ``queries`` (hard negatives appended after the positives). With
    ``global_negatives`` in a distributed run, the keys of every process are negatives too.
    """
    if keys.shape[0] < queries.shape[0]:
        raise ValueError("need at least one key (the positive) per query")
    labels = torch.arange(queries.shape[0], device=queries.device)
    if global_negatives and distributed.world_size() > 1:
        labels = labels + distributed.rank() * keys.shape[0]  # this process's keys sit at its rank's block
        keys = distributed.gather_with_grad(keys)
    scores = F.normalize(queries.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T / temperature
    return F.cross_entropy(scores, labels)


def causal_labels(input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Labels of the next-token loss: each token where ``loss_mask`` is 1, IGNORE elsewhere (padding)."""
    return torch.where(loss_mask.bool(), input_ids, torch.full_like(input_ids, IGNORE))


def similarity_distillation(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float = 0.05,
    *,
    kind: str = "kl",
    memory: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The student learns the teacher's in-batch similarity structure, whatever the two dimensions are.

    ``kind="kl"``: KL(teacher || student) between each text's softmaxed cosine similarities (at
    ``temperature``) to the other texts of the batch, as in "Distilling Dense Representations for Ranking"
    (Lin et al. 2020) and DistilCSE: only the order and spacing within a row count. ``kind="mse"``: the
    mean squared difference of the cosines themselves, off the diagonal (``temperature`` unused): absolute
    levels count too, which is what STS scores across pairs. No projection is trained or shipped.
    ``memory``: the student's (detached) and the teacher's vectors of earlier batches' texts, ``(m, d_s)``
    and ``(m, d_t)``, as more columns of every row (cross-batch memory, Wang et al. 2020): a row then ranks
    hundreds of texts, not one batch's few. ``student`` ``(n, d_s)``, ``teacher`` ``(n, d_t)``.
    """
    if student.shape[0] != teacher.shape[0] or student.shape[0] < 2:
        raise ValueError("distillation needs the same n >= 2 texts from the student and the teacher")
    s, t = F.normalize(student.float(), dim=-1), F.normalize(teacher.float().to(student.device), dim=-1)
    s_cols, t_cols = s, t  # (n + m, d): the batch's texts, then the memory's
    if memory is not None:
        s_cols = torch.cat([s, F.normalize(memory[0].float().to(s.device), dim=-1)])
        t_cols = torch.cat([t, F.normalize(memory[1].float().to(s.device), dim=-1)])
    n = s.shape[0]
    eye = torch.zeros(n, s_cols.shape[0], dtype=torch.bool, device=s.device)
    eye[:, :n] = torch.eye(n, dtype=torch.bool, device=s.device)  # (n, n + m): each text against itself
    if kind == "mse":
        return ((s @ s_cols.T - t @ t_cols.T)[~eye] ** 2).mean()
    if kind != "kl":
        raise ValueError(f"distillation kind must be 'kl' or 'mse', got {kind!r}")
    student_logits = (s @ s_cols.T / temperature).masked_fill(eye, float("-inf"))
    teacher_logits = (t @ t_cols.T / temperature).masked_fill(eye, float("-inf"))
    log_p_student = F.log_softmax(student_logits, dim=-1).masked_fill(eye, 0.0)
    log_p_teacher = F.log_softmax(teacher_logits, dim=-1).masked_fill(eye, 0.0)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean()
