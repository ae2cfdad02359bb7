"""KD layer (letKD) — "Knowledge Distillation Layer that Lets the Student
Decide" (Gorgun, Gurbuz, Alatan, BMVC 2023, arXiv 2309.02843); spec
``docs/methods/kd_layer.md``. The layer is kept in the deployed student.

    scores = s1 * cos(x_i, w_k)        match: 1x1 cosine conv C -> K (s1 = 3)
    a      = ReLU(BN_K(scores))            soft assignment
    v      = s2 * cosconv_{K -> C}(a)  value: 1x1 cosine conv K -> C (s2 = 1)
    x_hat  = x + alpha * v

``KDLayerBackbone`` places KD layers after named modules of any mmpretrain
backbone with forward hooks (no copy of backbone code, keys of the wrapped
backbone unchanged under ``backbone.``); distillers record the template scores
at ``backbone.kd_layers.<name>.match``.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS

from ..errors import ConfigError, check_feature_map


class CosineConv1x1(nn.Module):
    """1x1 convolution of L2-normalised inputs (over channels, per location)
    with L2-normalised kernels, times a learnable scale; no bias.

    Shapes: (N, C_in, H, W) -> (N, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int,
                 scale: float = 1.0, eps: float = 1e-12) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1,
                                               1))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.scale = nn.Parameter(torch.tensor([float(scale)]))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, dim=1, eps=self.eps)
        w = F.normalize(self.weight.flatten(1), dim=1,
                        eps=self.eps).view_as(self.weight)
        return self.scale * F.conv2d(x, w.to(x.dtype))


@MODELS.register_module()
class KDLayer(BaseModule):
    """The letKD layer: ``x + alpha * value(relu(bn(match(x))))``.

    Args:
        in_channels: C of the feature map it follows.
        num_templates: K (penultimate: 4096; intermediate: 8 x classes).
        alpha: residual weight (0 makes the layer the identity).
        match_scale: initial s1 (3.0). value_scale: initial s2 (1.0).
    """

    def __init__(self, in_channels: int, num_templates: int,
                 alpha: float = 1.0, match_scale: float = 3.0,
                 value_scale: float = 1.0, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels, self.num_templates = in_channels, num_templates
        self.alpha = alpha
        self.match = CosineConv1x1(in_channels, num_templates, match_scale)
        self.bn = nn.BatchNorm2d(num_templates)
        self.value = CosineConv1x1(num_templates, in_channels, value_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, 'KDLayer')
        if x.shape[1] != self.in_channels:
            raise ConfigError(f'KDLayer expects {self.in_channels} channels, '
                              f'got a map of shape {tuple(x.shape)}.')
        if self.alpha == 0:
            self.match(x)  # scores are still produced for the loss
            return x
        return x + self.alpha * self.value(F.relu(self.bn(self.match(x))))


def _key(name: str) -> str:
    return name.replace('.', '_')


@MODELS.register_module()
class KDLayerBackbone(BaseModule):
    """Any mmpretrain backbone with KD layers after named modules.

    Args:
        backbone: the backbone config (e.g. ``dict(type='ResNet', ...)``).
        kd_layers: ``[dict(after='layer4.0', in_channels=512,
            num_templates=8000, alpha=1.0), ...]``; ``after`` is a module
            path inside the backbone.
    """

    def __init__(self, backbone: dict, kd_layers: Sequence[dict],
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        modules = dict(self.backbone.named_modules())
        self.kd_layers = nn.ModuleDict()
        self.positions: List[str] = []
        for spec in kd_layers:
            spec = dict(spec)
            after = spec.pop('after')
            if after not in modules or after == '':
                near = [n for n in modules if n and (
                    n.split('.')[0] == after.split('.')[0]
                    or after.split('.')[-1] in n)][:8]
                raise ConfigError(
                    f'KDLayerBackbone: no module {after!r} in '
                    f'{type(self.backbone).__name__}; nearest valid names: '
                    f'{near or [n for n in modules if n][:8]}')
            spec.setdefault('type', 'mmpretrain.KDLayer')
            layer = MODELS.build(spec)
            self.kd_layers[_key(after)] = layer
            self.positions.append(after)
            modules[after].register_forward_hook(self._hook(_key(after)))

    def _hook(self, key: str):

        def hook(module, inputs, output):
            return self.kd_layers[key](output)

        return hook

    def forward(self, x):
        """Same outputs as the wrapped backbone, KD layers applied."""
        return self.backbone(x)
