"""CIFAR MobileNetV2 of the KD benchmark (RepDistiller ``mobilenetv2.py``).

``mobile_half``: expansion 6, width 0.5, stem stride 2, 1280-channel head conv.
Stages 0..6 are the inverted-residual groups ``blocks.0..6``; stage 7 is the
1x1 ``conv2`` (the classifier's input, 2x2 for 32-px images).
"""
from __future__ import annotations

import torch.nn as nn
from mmpretrain.registry import MODELS

from .cifar_base import CifarBackbone


def _conv_bn(inp, oup, k, stride):
    return nn.Sequential(nn.Conv2d(inp, oup, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    """pw (expand) - dw 3x3 - pw-linear, residual when shapes allow."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden,
                      bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup))

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_res_connect else out


@MODELS.register_module()
class MobileNetV2CifarKD(CifarBackbone):
    """CIFAR MobileNetV2 (default: ``mobile_half``, width 0.5, T=6)."""

    stem = ('conv1', )

    def __init__(self, expand_ratio: int = 6, widen_factor: float = 0.5,
                 out_indices=(7, ), **kwargs):
        super().__init__(out_indices=out_indices, **kwargs)
        t = expand_ratio
        setting = [[1, 16, 1, 1], [t, 24, 2, 1], [t, 32, 3, 2],
                   [t, 64, 4, 2], [t, 96, 3, 1], [t, 160, 3, 2],
                   [t, 320, 1, 1]]
        in_ch = int(32 * widen_factor)
        self.conv1 = _conv_bn(3, in_ch, 3, 2)
        self.blocks = nn.ModuleList()
        out_channels = []
        for exp, c, n, s in setting:
            out_ch = int(c * widen_factor)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(in_ch, out_ch, stride, exp))
                in_ch = out_ch
            self.blocks.append(nn.Sequential(*layers))
            out_channels.append(out_ch)
        self.last_channel = 1280
        self.conv2 = _conv_bn(in_ch, self.last_channel, 1, 1)
        self.stage_names = [f'blocks.{i}' for i in range(7)] + ['conv2']
        self.out_channels = tuple(out_channels) + (self.last_channel, )
        self._finalise()

    def _frozen_modules(self):
        if self.frozen_stages < 0:
            return []
        mods = [self.conv1] + list(self.blocks[:self.frozen_stages])
        if self.frozen_stages >= 8:
            mods.append(self.conv2)
        return mods

    def run_stage(self, i, x):
        return self.blocks[i](x) if i < 7 else self.conv2(x)
