"""CIFAR VGGs of the KD benchmark (RepDistiller ``vgg.py``, with BN).

Five conv blocks ``block0..block4``; max-pool between blocks 0-1, 1-2, 2-3
(the 3-4 pool only for 64-px inputs, as upstream). Each stage output is
ReLU(block(x)). vgg8: one conv per block; vgg13: two.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS

from .cifar_base import CifarBackbone, arch_setting

ARCHS = {
    'vgg8': [[64], [128], [256], [512], [512]],
    'vgg11': [[64], [128], [256, 256], [512, 512], [512, 512]],
    'vgg13': [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    'vgg16': [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512],
              [512, 512, 512]],
    'vgg19': [[64, 64], [128, 128], [256, 256, 256, 256],
              [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _make_block(widths, in_channels):
    layers = []
    for v in widths:
        layers += [nn.Conv2d(in_channels, v, 3, padding=1),
                   nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
        in_channels = v
    return nn.Sequential(*layers[:-1])  # the ReLU is applied by the stage


@MODELS.register_module()
class VGGCifarKD(CifarBackbone):
    """CIFAR VGG with batch norm (``vgg8``, ``vgg11``, ``vgg13``, ...)."""

    stem = ()

    def __init__(self, arch: str = 'vgg13', out_indices=(4, ), **kwargs):
        super().__init__(out_indices=out_indices, **kwargs)
        cfg = arch_setting(ARCHS, arch, 'VGGCifarKD')
        self.arch = arch
        in_ch = 3
        self.stage_names = []
        for i, widths in enumerate(cfg):
            self.add_module(f'block{i}', _make_block(widths, in_ch))
            self.stage_names.append(f'block{i}')
            in_ch = widths[-1]
        self.out_channels = tuple(w[-1] for w in cfg)
        self._finalise()

    def forward(self, x):
        self._pool_before_block4 = x.shape[2] == 64  # upstream: `if h == 64`
        return super().forward(x)

    def run_stage(self, i, x):
        if i in (1, 2, 3) or (i == 4 and self._pool_before_block4):
            x = F.max_pool2d(x, 2, 2)
        return F.relu(super().run_stage(i, x))
