"""AEKT loss — Adaptive Explicit Knowledge Transfer (Park & Lee 2024,
arXiv 2409.01679).

RECONSTRUCTION: the paper's full text and code were not available; this loss
follows ``docs/methods/aekt.md``, built from the abstract and DKD's gradient
analysis (Zhao et al., CVPR 2022). Every part is switchable so that a user
with the paper can change it.

With p = softmax(z / tau), target t and hat-p the distribution over the C-1
non-target classes (renormalised):

    b     = [p_t, 1 - p_t]                                   binary target/rest
    L_exp = r * KL(b^T || b^S),   r = min(p^T_t / p^S_t, ratio_max), no grad
    L_imp = KL(hat-p^T || hat-p^S)
    loss  = loss_weight * w(iter) * tau^2
            * mean_n(alpha * L_exp + beta * L_imp)

``r`` makes the explicit (target-confidence) term adaptive: an
under-confident student (p^S_t < p^T_t) learns the teacher's confidence faster,
an over-confident one is held back. With ``adaptive=False`` (r = 1) the loss is
DKD's (TCKD + NCKD). ``w(iter) = min(1, (iter + 1) / warmup_iters)`` is a
linear
warm-up read from mmengine's MessageHub (so it resumes with the run).

All math is float32 in log space (finite for C = 2, one-hot teachers and huge
logits, also under fp16/bf16 autocast).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MessageHub
from mmrazor.registry import MODELS

from ..errors import ConfigError
from ..utils.precision import at_least_float32

_NEG = -1e9  # "minus infinity" that keeps 0 * (a - b) finite


def binary_log_probs(logits: torch.Tensor, target_mask: torch.Tensor):
    """log p_t and log(1 - p_t) of softmax(logits), stably.

    Args:
        logits: (N, C) float32, already divided by tau.
        target_mask: (N, C) bool, True at the target class.

    Returns:
        (N, 2) tensor ``[log p_t, log(1 - p_t)]``.
    """
    lse_all = torch.logsumexp(logits, dim=1)
    log_pt = (logits * target_mask).sum(1) - lse_all
    log_rest = torch.logsumexp(logits.masked_fill(target_mask, _NEG),
                               dim=1) - lse_all
    return torch.stack([log_pt, log_rest], dim=1)


def kl_from_log_probs(log_p: torch.Tensor, log_q: torch.Tensor):
    """KL(p || q) summed over dim 1, from log-probabilities. (N, K) -> (N,)."""
    return (log_p.exp() * (log_p - log_q)).sum(1)


@MODELS.register_module()
class AEKTLoss(nn.Module):
    """Adaptive explicit + implicit knowledge transfer (reconstruction).

    Args:
        tau: temperature.
        alpha: weight of the explicit (binary target) term ``L_exp``.
        beta: weight of the implicit (non-target) term ``L_imp``.
        ratio_max: upper clamp of the adaptive ratio ``r``.
        loss_weight: overall weight.
        warmup_iters: linear warm-up length in iterations (0: none).
        adaptive: use ``r = p^T_t / p^S_t``; False gives DKD (r = 1).
    """

    def __init__(self, tau: float = 1.0, alpha: float = 1.0,
                 beta: float = 1.0, ratio_max: float = 10.0,
                 loss_weight: float = 1.0, warmup_iters: int = 0,
                 adaptive: bool = True) -> None:
        super().__init__()
        if tau <= 0 or ratio_max <= 0 or warmup_iters < 0:
            raise ConfigError('AEKTLoss needs tau > 0, ratio_max > 0 and '
                              f'warmup_iters >= 0; got tau={tau}, ratio_max='
                              f'{ratio_max}, warmup_iters={warmup_iters}.')
        self.tau = tau
        self.alpha = alpha
        self.beta = beta
        self.ratio_max = ratio_max
        self.loss_weight = loss_weight
        self.warmup_iters = warmup_iters
        self.adaptive = adaptive

    def warmup_factor(self) -> float:
        """min(1, (iter + 1) / warmup_iters); iter from mmengine's
        MessageHub."""
        if self.warmup_iters <= 0:
            return 1.0
        cur = MessageHub.get_current_instance().get_info('iter', 0)
        return min(1.0, (int(cur) + 1) / self.warmup_iters)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                gt_labels: torch.Tensor) -> torch.Tensor:
        """preds_S, preds_T: (N, C) logits; gt_labels: (N,) class indices."""
        if preds_S.shape != preds_T.shape or preds_S.dim() != 2:
            raise ConfigError(
                f'AEKTLoss: student logits {tuple(preds_S.shape)} and teacher '
                f'logits {tuple(preds_T.shape)} must both be (N, C) with the '
                'same number of classes.')
        zs = at_least_float32(preds_S) / self.tau
        zt = at_least_float32(preds_T) / self.tau
        mask = F.one_hot(gt_labels.reshape(-1).long(), zs.size(1)).bool()

        # explicit knowledge: binary [target, rest] distributions
        bs = binary_log_probs(zs, mask)  # (N, 2) log b^S
        bt = binary_log_probs(zt, mask)  # (N, 2) log b^T
        l_exp = kl_from_log_probs(bt, bs)
        if self.adaptive:
            r = (bt[:, 0] - bs[:, 0]).exp().clamp(max=self.ratio_max)
            l_exp = r.detach() * l_exp

        # implicit knowledge: non-target distributions (target masked out)
        log_hs = F.log_softmax(zs.masked_fill(mask, _NEG), dim=1)
        log_ht = F.log_softmax(zt.masked_fill(mask, _NEG), dim=1)
        l_imp = kl_from_log_probs(log_ht, log_hs)

        per_sample = self.alpha * l_exp + self.beta * l_imp
        loss = per_sample.mean() * self.tau**2
        return self.loss_weight * self.warmup_factor() * loss
