"""CIFAR ResNets of the KD benchmark (CRD / RepDistiller ``resnet.py``).

resnet8/14/20/32/44/56/110 use widths (16, 16, 32, 64); resnet8x4 and
resnet32x4 use (32, 64, 128, 256). Depth = 6n + 2 with n basic blocks per
stage. Stages: ``layer1`` (32x32), ``layer2`` (16x16), ``layer3`` (8x8).
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS

from .cifar_base import CifarBackbone, arch_setting

ARCHS = {
    'resnet8': (8, (16, 16, 32, 64)),
    'resnet14': (14, (16, 16, 32, 64)),
    'resnet20': (20, (16, 16, 32, 64)),
    'resnet32': (32, (16, 16, 32, 64)),
    'resnet44': (44, (16, 16, 32, 64)),
    'resnet56': (56, (16, 16, 32, 64)),
    'resnet110': (110, (16, 16, 32, 64)),
    'resnet8x4': (8, (32, 64, 128, 256)),
    'resnet32x4': (32, (32, 64, 128, 256)),
}


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN (+ shortcut) - ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


@MODELS.register_module()
class ResNetCifarKD(CifarBackbone):
    """CIFAR ResNet of the KD benchmark.

    Args:
        arch: one of ``resnet8 ... resnet110, resnet8x4, resnet32x4``.
        out_indices: stage outputs to return; default the last
            (N, C_last, H/4, W/4).
    """

    stem = ('conv1', 'bn1', 'relu')

    def __init__(self, arch: str = 'resnet56', out_indices=(2, ), **kwargs):
        super().__init__(out_indices=out_indices, **kwargs)
        depth, filters = arch_setting(ARCHS, arch, 'ResNetCifarKD')
        n = (depth - 2) // 6
        self.arch = arch
        self.conv1 = nn.Conv2d(3, filters[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters[0])
        self.relu = nn.ReLU(inplace=True)
        inplanes = filters[0]
        self.stage_names = []
        for i, (planes, stride) in enumerate(zip(filters[1:], (1, 2, 2))):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(inplanes, planes,
                                         stride if j == 0 else 1))
                inplanes = planes
            self.add_module(f'layer{i + 1}', nn.Sequential(*blocks))
            self.stage_names.append(f'layer{i + 1}')
        self.out_channels = tuple(filters[1:])
        self._finalise()
