"""CIFAR ShuffleNets of the KD benchmark (RepDistiller ``ShuffleNetv1.py``,
``ShuffleNetv2.py``). Stages ``layer1..3`` (16, 8, 4 px for 32-px input);
ShuffleNetV2 appends its 1x1 ``conv2`` + BN + ReLU to the last stage.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS

from ...errors import ConfigError
from .cifar_base import CifarBackbone


def channel_shuffle(x, groups: int):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(
        n, c, h, w)


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1,
             groups: int = 1) -> tuple:
    """A bias-free k x k convolution (padding k // 2) and its BatchNorm."""
    return (nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups,
                      bias=False), nn.BatchNorm2d(cout))


class V1Bottleneck(nn.Module):
    """ShuffleNetV1 unit: gconv1x1-shuffle-dw3x3-gconv1x1 (+avgpool concat)."""

    def __init__(self, in_planes, out_planes, stride, groups):
        super().__init__()
        self.stride = stride
        mid = int(out_planes / 4)
        g = 1 if in_planes == 24 else groups
        self.groups1 = g
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.groups1)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            res = F.avg_pool2d(x, 3, stride=2, padding=1)
            return F.relu(torch.cat([out, res], 1))
        return F.relu(out + x)


@MODELS.register_module()
class ShuffleNetV1CifarKD(CifarBackbone):
    """CIFAR ShuffleNetV1 (``ShuffleV1``: planes 240/480/960, groups 3)."""

    stem = ('conv1', 'bn1', 'relu')

    def __init__(self, out_planes=(240, 480, 960), num_blocks=(4, 8, 4),
                 groups: int = 3, out_indices=(2, ), **kwargs):
        super().__init__(out_indices=out_indices, **kwargs)
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU(inplace=True)
        in_planes = 24
        self.stage_names = []
        for s, (planes, n) in enumerate(zip(out_planes, num_blocks)):
            layers = []
            for i in range(n):
                cat = in_planes if i == 0 else 0
                layers.append(V1Bottleneck(in_planes, planes - cat,
                                           2 if i == 0 else 1, groups))
                in_planes = planes
            self.add_module(f'layer{s + 1}', nn.Sequential(*layers))
            self.stage_names.append(f'layer{s + 1}')
        self.out_channels = tuple(out_planes)
        self._finalise()


class V2BasicBlock(nn.Module):
    """ShuffleNetV2 unit: split, 1x1-dw3x3-1x1 on one half, concat, shuffle."""

    def __init__(self, in_channels, split_ratio=0.5):
        super().__init__()
        self.split_ratio = split_ratio
        c = int(in_channels * split_ratio)
        self.conv1, self.bn1 = _conv_bn(c, c, 1)
        self.conv2, self.bn2 = _conv_bn(c, c, 3, 1, groups=c)
        self.conv3, self.bn3 = _conv_bn(c, c, 1)

    def forward(self, x):
        c = int(x.size(1) * self.split_ratio)
        x1, x2 = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([x1, out], 1), 2)


class V2DownBlock(nn.Module):
    """ShuffleNetV2 down-sampling unit (two strided branches)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        mid = out_channels // 2
        self.conv1, self.bn1 = _conv_bn(in_channels, in_channels, 3, 2,
                                        groups=in_channels)
        self.conv2, self.bn2 = _conv_bn(in_channels, mid, 1)
        self.conv3, self.bn3 = _conv_bn(in_channels, mid, 1)
        self.conv4, self.bn4 = _conv_bn(mid, mid, 3, 2, groups=mid)
        self.conv5, self.bn5 = _conv_bn(mid, mid, 1)

    def forward(self, x):
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


V2_SIZES = {
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1.0: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2.0: ((224, 488, 976, 2048), (3, 7, 3)),
}


@MODELS.register_module()
class ShuffleNetV2CifarKD(CifarBackbone):
    """CIFAR ShuffleNetV2 (``ShuffleV2``: net_size 1.0)."""

    stem = ('conv1', 'bn1', 'relu')

    def __init__(self, net_size: float = 1.0, out_indices=(2, ), **kwargs):
        super().__init__(out_indices=out_indices, **kwargs)
        if net_size not in V2_SIZES:
            raise ConfigError(f'ShuffleNetV2CifarKD: net_size must be one of '
                              f'{sorted(V2_SIZES)}, got {net_size}.')
        out_channels, num_blocks = V2_SIZES[net_size]
        self.conv1 = nn.Conv2d(3, 24, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU(inplace=True)
        in_ch = 24
        self.stage_names = []
        for s in range(3):
            layers = [V2DownBlock(in_ch, out_channels[s])]
            layers += [V2BasicBlock(out_channels[s])
                       for _ in range(num_blocks[s])]
            self.add_module(f'layer{s + 1}', nn.Sequential(*layers))
            self.stage_names.append(f'layer{s + 1}')
            in_ch = out_channels[s]
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.out_channels = tuple(out_channels[:2]) + (out_channels[3], )
        self._finalise()

    def _frozen_modules(self):
        mods = super()._frozen_modules()
        if self.frozen_stages >= 3:
            mods += [self.conv2, self.bn2]
        return mods

    def run_stage(self, i, x):
        x = super().run_stage(i, x)
        return F.relu(self.bn2(self.conv2(x))) if i == 2 else x
