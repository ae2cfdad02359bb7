"""Deploy-time parts of ATSC (Adaptive Teaching with Shared Classifier,
Jang et al. 2024, arXiv 2406.08528) kept by the exported student.

The deployed student is: student backbone -> projector P_k -> GAP -> the
adapted teacher classifier fc_Tk, averaged over teachers k.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS


def shared_classifier_logits(maps: Sequence[torch.Tensor],
                             classifiers: Sequence[nn.Linear]
                             ) -> torch.Tensor:
    """z_s = mean_k fc_k(GAP(P_k(f_s))): the projected maps (N, C_k, H, W),
    one per teacher, through their teachers' classifiers; (N, classes)."""
    return torch.stack([fc(F.adaptive_avg_pool2d(m, 1).flatten(1))
                        for m, fc in zip(maps, classifiers)]).mean(0)


class SimKDProjector(nn.Module):
    """SimKD-style projector, no conv bias (ATSC spec):
    conv1x1(C_s -> C_t/f)-BN-ReLU-conv3x3(C_t/f -> C_t/f)-BN-ReLU-
    conv1x1(C_t/f -> C_t)-BN-ReLU.

    ``target_hw`` (a buffer, saved with the weights) is the teacher map size
    seen in training: a larger student map is adaptive-average-pooled to it
    first. (0, 0) means "no pooling". ``forward`` reads a plain-int copy of
    it (kept in step by :meth:`set_target` and by loading a state dict), never
    the tensor: a data-dependent size would stop ``torch.export`` and break
    ``torch.compile`` graphs.

    Shapes: (N, C_s, H_s, W_s) -> (N, C_t, H_t, W_t).
    """

    def __init__(self, in_channels: int, out_channels: int,
                 factor: int = 2) -> None:
        super().__init__()
        mid = out_channels // factor
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
        self.register_buffer('target_hw', torch.zeros(2, dtype=torch.long))
        self._target = (0, 0)

    @property
    def target(self) -> tuple:
        """The teacher map size in use, (0, 0) for none (plain ints)."""
        return self._target

    def set_target(self, hw: Sequence[int]) -> None:
        """Record the teacher map size (buffer and its int copy)."""
        self._target = tuple(int(v) for v in hw)
        self.target_hw.copy_(torch.tensor(self._target, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        saved = state_dict.get(prefix + 'target_hw')
        if saved is not None:
            self._target = tuple(int(v) for v in saved.tolist())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        th, tw = self._target
        if th > 0 and (x.shape[2] > th or x.shape[3] > tw):
            x = F.adaptive_avg_pool2d(x, (th, tw))
        return self.layers(x)


@MODELS.register_module()
class ATSCSharedHead(ClsHead):
    """Projector(s) + adapted teacher classifier(s); logits averaged.

    Args:
        in_channels: student last-stage channels C_s.
        teacher_channels: C_t of each teacher.
        num_classes: number of classes.
        factor: projector bottleneck factor.

    Input: the backbone's tuple of maps, the last one (N, C_s, H, W) is used.
    Output: (N, num_classes) logits, mean over teachers.
    """

    def __init__(self, in_channels: int, teacher_channels: Sequence[int],
                 num_classes: int, factor: int = 2,
                 init_cfg: Optional[dict] = None, **kwargs) -> None:
        super().__init__(init_cfg=init_cfg, **kwargs)
        self.projectors = nn.ModuleList(
            SimKDProjector(in_channels, c, factor) for c in teacher_channels)
        self.classifiers = nn.ModuleList(
            nn.Linear(c, num_classes) for c in teacher_channels)

    def forward(self, feats) -> torch.Tensor:
        x = feats[-1] if isinstance(feats, (list, tuple)) else feats
        return shared_classifier_logits([proj(x) for proj in self.projectors],
                                        self.classifiers)
