"""KD-layer supervision (letKD, Gorgun et al., BMVC 2023; spec
``docs/methods/kd_layer.md``): the teacher's decisions as targets for the
student's template scores.

    penultimate:  p_T(i) = softmax_k(-tau * ||f_T,i - rho_k||^2)
                                                  (k-means centres)
    intermediate: z_i = LDA(f_T,i); k* = nearest centre among the 8 subclasses
                  of the ground-truth class; p_T(i) = s_T[k*]
                                                  (decision matrix)
    loss = loss_weight * KL(p_T || softmax(scores_S))   batchmean over all
           B*H*W locations (no T^2 factor)

The offline statistics come from ``tools/kd_layer_stats.py``; this loss checks
at construction that the file exists and matches (kind, K, classes).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmrazor.registry import MODELS

from ..errors import ConfigError
from ..utils.precision import at_least_float32
from ..utils.stats_file import LAYOUT, load_stats

KINDS = tuple(LAYOUT)  # ('penultimate', 'intermediate')


def penultimate_targets(feat_t: torch.Tensor, centers: torch.Tensor,
                        tau: float) -> torch.Tensor:
    """(B, C, H, W) teacher map, (K, C) centres -> (B*H*W, K) targets.

    The squared distances as the official ``VectorQuantizerEMA`` computes
    them (same expansion, same order, not clamped at 0)."""
    f = at_least_float32(feat_t.permute(0, 2, 3, 1).reshape(-1,
                                                            feat_t.shape[1]))
    d2 = (torch.sum(f**2, dim=1, keepdim=True) + torch.sum(centers**2, dim=1)
          - 2 * torch.matmul(f, centers.t()))
    return F.softmax(-tau * d2, dim=1)


def intermediate_targets(feat_t: torch.Tensor, labels: torch.Tensor,
                         mean: torch.Tensor, proj: torch.Tensor,
                         centers: torch.Tensor, s_t: torch.Tensor,
                         per_class: int) -> torch.Tensor:
    """Rows of s_T picked by the nearest ground-truth-class subclass."""
    b, c, h, w = feat_t.shape
    f = at_least_float32(feat_t.permute(0, 2, 3, 1).reshape(-1, c))
    z = (f - mean) @ proj  # LDA projection, (B*H*W, d)
    y = labels.reshape(-1).long().repeat_interleave(h * w)
    idx = y[:, None] * per_class + torch.arange(per_class,
                                                device=f.device)[None]
    cand = centers[idx]  # (B*H*W, per_class, d)
    k_local = (z[:, None] - cand).pow(2).sum(-1).argmin(1)
    k_star = idx.gather(1, k_local[:, None]).squeeze(1)
    return s_t[k_star]


@MODELS.register_module()
class KDLayerLoss(nn.Module):
    """KL(p_T || p_S) for one KD layer.

    Args:
        stats_file: ``.npz`` written by ``tools/kd_layer_stats.py``.
        kind: ``'penultimate'`` or ``'intermediate'``.
        num_templates: K of the student's KD layer (checked).
        num_classes: classes of the run (checked for 'intermediate').
        tau: temperature of the penultimate targets (1.0).
        loss_weight: weight (1.0).
    """

    def __init__(self, stats_file: str, kind: str = 'penultimate',
                 num_templates: Optional[int] = None,
                 num_classes: Optional[int] = None, tau: float = 1.0,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ConfigError(f'KDLayerLoss kind must be one of {KINDS}, got '
                              f'{kind!r}.')
        arrays, meta = load_stats(stats_file)
        self.kind, self.tau, self.loss_weight = kind, tau, loss_weight
        self.meta = meta
        if kind not in meta.get('kinds', []):
            raise ConfigError(f'{stats_file!r} has no {kind} statistics '
                              f'(it has {meta.get("kinds")}); recompute it.')
        if kind == 'penultimate':
            centers, = (torch.from_numpy(arrays[k]).float()
                        for k in LAYOUT['penultimate'])
            k = centers.shape[0]
            self.register_buffer('centers', centers, persistent=False)
        else:
            for name, key in zip(('mean', 'proj', 'centers', 's_t'),
                                 LAYOUT['intermediate']):
                self.register_buffer(name, torch.from_numpy(
                    arrays[key]).float(), persistent=False)
            self.per_class = int(meta['subclasses'])
            k = self.s_t.shape[0]
            if num_classes is not None and \
                    num_classes != meta['num_classes']:
                raise ConfigError(
                    f'{stats_file!r} was built for {meta["num_classes"]} '
                    f'classes, this run has {num_classes}; recompute it '
                    'with tools/kd_layer_stats.py for this data set.')
        if num_templates is not None and num_templates != k:
            raise ConfigError(
                f'{stats_file!r} holds {k} {kind} templates but the student '
                f'KD layer has num_templates={num_templates}; they must match.'
                '\n  Fix: recompute the statistics for this KD layer '
                '(python tools/kd_layer_stats.py CONFIG TEACHER_CKPT OUT.npz)'
                ' or set the KD layer\'s num_templates to match the file.')
        self.num_templates = k

    def _check_pooling(self, t_hw: tuple, s_hw: tuple) -> None:
        """The statistics must have seen the teacher map at the size it is
        compared at here (pooled to the student's size when larger)."""
        pooled = self.meta.get('pooled_to')
        if pooled is None:  # a file from before the pooling was recorded
            return
        want = tuple(pooled.get(self.kind) or ()) or None
        larger = t_hw[0] > s_hw[0] or t_hw[1] > s_hw[1]
        if want != (s_hw if larger else None):
            seen = f'pooled to {want}' if want else 'at their own size'
            raise ConfigError(
                f'KD-layer {self.kind} statistics were computed on teacher '
                f'maps {seen}, but here the teacher map {t_hw} is compared '
                f'with a student map {s_hw}: recompute the statistics with '
                'this config (python tools/kd_layer_stats.py CONFIG '
                'TEACHER_CKPT OUT.npz).')

    def targets(self, feat_t, gt_labels=None) -> torch.Tensor:
        if self.kind == 'penultimate':
            return penultimate_targets(feat_t, self.centers, self.tau)
        return intermediate_targets(feat_t, gt_labels, self.mean, self.proj,
                                    self.centers, self.s_t, self.per_class)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                gt_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """preds_S: (B, K, H, W) scores; preds_T: (B, C_t, H_t, W_t)."""
        if preds_S.shape[1] != self.num_templates:
            raise ConfigError(f'student scores have {preds_S.shape[1]} '
                              f'templates, statistics {self.num_templates}.')
        feat_t = preds_T.detach()
        want_c = (self.centers.shape[1] if self.kind == 'penultimate'
                  else self.mean.shape[0])
        if feat_t.shape[1] != want_c:
            raise ConfigError(
                f'KD-layer {self.kind} statistics were computed on '
                f'{want_c}-channel teacher features (teacher '
                f'{self.meta.get("teacher_type")}, layer '
                f'{self.meta.get("layers", {}).get(self.kind)}), but this '
                f'teacher map has {feat_t.shape[1]} channels: recompute the '
                'statistics for this teacher with tools/kd_layer_stats.py.')
        self._check_pooling(tuple(feat_t.shape[2:]), tuple(preds_S.shape[2:]))
        if feat_t.shape[2:] != preds_S.shape[2:]:
            feat_t = F.adaptive_avg_pool2d(feat_t, preds_S.shape[2:])
        with torch.no_grad():
            p_t = self.targets(feat_t, gt_labels)
        log_p_s = F.log_softmax(
            at_least_float32(preds_S).permute(0, 2, 3, 1).reshape(
                -1, preds_S.shape[1]), 1)
        return self.loss_weight * F.kl_div(log_p_s, p_t,
                                           reduction='batchmean')
