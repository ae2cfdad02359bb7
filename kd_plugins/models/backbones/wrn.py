"""Wide ResNets of the KD benchmark (RepDistiller ``wrn.py``).

wrn_{depth}_{width}: depth = 6n + 4, widths (16, 16w, 32w, 64w); pre-activation
blocks; the last stage ends with the final BN + ReLU (``bn1``), as the
classifier sees it. Stages: ``block1`` (32x32), ``block2`` (16), ``block3``
(8).
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS

from .cifar_base import CifarBackbone, arch_setting

ARCHS = {'wrn_16_1': (16, 1), 'wrn_16_2': (16, 2), 'wrn_40_1': (40, 1),
         'wrn_40_2': (40, 2)}


class WRNBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3."""

    def __init__(self, in_planes, out_planes, stride, drop_rate=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(
            in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x):
        pre = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(pre)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.equal_in_out else self.convShortcut(pre)
        return shortcut + out


class NetworkBlock(nn.Module):
    """A stage: ``layer`` holds its blocks (RepDistiller's key names)."""

    def __init__(self, n, in_planes, out_planes, stride, drop_rate):
        super().__init__()
        self.layer = nn.Sequential(*[
            WRNBlock(in_planes if i == 0 else out_planes, out_planes,
                     stride if i == 0 else 1, drop_rate) for i in range(n)
        ])

    def forward(self, x):
        return self.layer(x)


@MODELS.register_module()
class WideResNetCifarKD(CifarBackbone):
    """CIFAR Wide ResNet (``wrn_16_2``, ``wrn_40_1``, ``wrn_40_2``, ...)."""

    stem = ('conv1', )

    def __init__(self, arch: str = 'wrn_40_2', drop_rate: float = 0.0,
                 out_indices=(2, ), **kwargs):
        super().__init__(out_indices=out_indices, **kwargs)
        depth, width = arch_setting(ARCHS, arch, 'WideResNetCifarKD')
        n = (depth - 4) // 6
        ch = [16, 16 * width, 32 * width, 64 * width]
        self.arch = arch
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.stage_names = ['block1', 'block2', 'block3']
        self.out_channels = tuple(ch[1:])
        self._finalise()

    def _frozen_modules(self):
        mods = super()._frozen_modules()
        if self.frozen_stages >= 3:
            mods.append(self.bn1)
        return mods

    def run_stage(self, i, x):
        x = super().run_stage(i, x)
        return self.relu(self.bn1(x)) if i == 2 else x
