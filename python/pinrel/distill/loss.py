"""The distillation objective: KL to the teacher's tempered soft labels plus cross-entropy on human grades."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks import check_number


def distill_loss(
    logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 2.0,
    label_weight: float = 0.5,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(loss, kl, ce)`: T² · KL(teacher_T || student_T) + label_weight · CE on human labels.

    `labels` are 0-based grade indices with -1 for pairs without a human label (excluded).  The T²
    factor keeps the soft-label gradients on the same scale whatever T is (Hinton et al., 2015).
    `weights` (per row, the records' `weight`) scale each human grade's CE; the teacher's soft labels
    stay unweighted, since the weight says how far the raters agreed, not the teacher.
    """
    if logits.ndim != 2 or teacher_probs.shape != logits.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and teacher_probs {tuple(teacher_probs.shape)} differ"
        )
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels: expected shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    if weights is not None and weights.shape != labels.shape:
        raise ValueError(f"weights: expected shape ({logits.shape[0]},), got {tuple(weights.shape)}")
    t = check_number(temperature, "temperature", 0.0, lo_open=True)
    w = check_number(label_weight, "label_weight", 0.0)
    log_q = F.log_softmax(logits / t, dim=1)
    # Soft labels are probabilities, so the teacher's tempered distribution is softmax(log p / T).
    log_p = F.log_softmax(torch.log(teacher_probs.clamp_min(1e-8)) / t, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean() * (t * t)
    has_label = labels >= 0
    ce_rows = F.cross_entropy(logits, labels.clamp_min(0), reduction="none")
    if weights is not None:
        ce_rows = ce_rows * weights
    # Sum over labelled rows / their count: a batch without labels contributes 0, never NaN.
    ce = (ce_rows * has_label).sum() / has_label.sum().clamp_min(1)
    return kl + w * ce, kl.detach(), ce.detach()
