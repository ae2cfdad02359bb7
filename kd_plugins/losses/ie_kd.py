"""IE-KD losses — Inheritance and Exploration (Huang et al., CVPR 2021,
arXiv 2107.00181), on (N, C, H, W) factors produced by the IE encoders.

    n(x)   = x / ||x.flatten(1)||_2                      (per sample)
    L_inh  =  loss_weight * mean |n(F_inh) - n(F_T)|     (inherit: pull closer)
    L_exp  = -loss_weight * mean |n(F_exp) - n(F_T)|     (explore: push away)

the means run over all N*C*H*W elements (L1, as Factor Transfer with p = 1).
When the spatial sizes differ, the larger factor is average-pooled to the
smaller one; channel counts must match.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmrazor.registry import MODELS

from ..errors import ConfigError
from ..utils.precision import at_least_float32


def normalize_factor(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-sample L2 normalisation over (C, H, W)."""
    flat = x.flatten(1)
    return (flat / flat.norm(dim=1, keepdim=True).clamp_min(eps)).view_as(x)


def factor_l1(preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
    """mean |n(S) - n(T)| over all elements, in float32 (float64 for float64
    factors)."""
    if preds_S.dim() != 4 or preds_T.dim() != 4 or \
            preds_S.shape[:2] != preds_T.shape[:2]:
        raise ConfigError(
            f'IE-KD factors must be (N, C, H, W) with equal N and C; got '
            f'student {tuple(preds_S.shape)}, teacher {tuple(preds_T.shape)}.'
            ' Fix the student encoders\' out_channels (= teacher channels x '
            'rate).')
    s, t = at_least_float32(preds_S), at_least_float32(preds_T)
    if s.shape[2:] != t.shape[2:]:
        size = (min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3]))
        s = F.adaptive_avg_pool2d(s, size) if s.shape[2:] != size else s
        t = F.adaptive_avg_pool2d(t, size) if t.shape[2:] != size else t
    return (normalize_factor(s) - normalize_factor(t)).abs().mean()


@MODELS.register_module()
class IEInheritLoss(nn.Module):
    """``loss_weight * mean |n(S) - n(T)|`` (paper: lambda_inh = 50)."""

    def __init__(self, loss_weight: float = 50.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, preds_S, preds_T):
        return self.loss_weight * factor_l1(preds_S, preds_T.detach())


@MODELS.register_module()
class IEExploreLoss(IEInheritLoss):
    """``-loss_weight * mean |n(S) - n(T)|`` (paper: lambda_exp = 50): the
    inheritance term with the opposite sign (pushes the factors apart)."""

    def forward(self, preds_S, preds_T):
        return -super().forward(preds_S, preds_T)
