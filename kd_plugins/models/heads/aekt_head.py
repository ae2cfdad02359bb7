"""AEKT student head: classification and distillation as two tasks.

RECONSTRUCTION (see ``docs/methods/aekt.md``): a C x C "serialization"
linear layer, initialised to the identity, models inter-class relations
between the classification logits and the distilled logits.

- ``order='classify_first'``: x -> fc -> z_cls (CE); z_cls -> serialization
  -> z_kd (AEKT loss). Inference uses z_cls; export drops the serialization.
- ``order='distill_first'``: x -> fc -> z_kd (AEKT loss); z_kd ->
  serialization -> z_cls (CE). Inference uses z_cls; export keeps both.

z_kd goes through ``self.kd_out`` (an identity), so a distiller reaches it in
either order with one recorder: ``ModuleOutputs(source='head.kd_out')``.

Stability: the serialization layer takes the logits as input, so its gradient
grows with them (dL/dS = delta z^T) and it feeds back into them (S^T delta):
a linear-after-linear product whose curvature grows with |z|^2. Measured on
the Digits demo at SGD lr 0.2 (teacher 98.9 %): |z_cls| grows 0.07 -> 3 in 18
iterations, then the gradient norm of S jumps to 245 (fc 95) at iteration 19
and the run is non-finite at iteration 25, while the same loss on a plain
linear head (no S) trains to 99.2 %. Scaling the gradient that reaches S by
``serialization_grad_scale`` (0.01: S learns 100x slower than the rest, as an
lr multiplier of 0.01 would, but with any optimizer config) keeps it stable:
97.5 % after 12 epochs at lr 0.2 (scale 0.1 still diverged, at iteration 38).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import MODELS

from ...errors import ConfigError

ORDERS = ('classify_first', 'distill_first')


@MODELS.register_module()
class AEKTHead(LinearClsHead):
    """Linear classifier + serialization layer.

    Args:
        num_classes: C.
        in_channels: feature channels.
        order: ``'classify_first'`` (default) or ``'distill_first'``.
        serialization_grad_scale: factor on the gradient that reaches the
            serialization layer (forward unchanged); 1.0 = plain training.
        **kwargs: as :class:`mmpretrain.models.heads.LinearClsHead`.
    """

    def __init__(self, num_classes: int, in_channels: int,
                 order: str = 'classify_first',
                 serialization_grad_scale: float = 0.01, **kwargs) -> None:
        super().__init__(num_classes, in_channels, **kwargs)
        if order not in ORDERS:
            raise ConfigError(f"AEKTHead order must be one of {ORDERS}, got "
                              f'{order!r}.')
        if not 0 < serialization_grad_scale <= 1:
            raise ConfigError('AEKTHead serialization_grad_scale must be in '
                              f'(0, 1], got {serialization_grad_scale}.')
        self.order = order
        self.grad_scale = float(serialization_grad_scale)
        self.serialization = nn.Linear(num_classes, num_classes)
        self.kd_out = nn.Identity()
        self.reset_serialization()

    def reset_serialization(self) -> None:
        """Identity weight, zero bias."""
        with torch.no_grad():
            nn.init.eye_(self.serialization.weight)
            nn.init.zeros_(self.serialization.bias)

    def init_weights(self) -> None:
        super().init_weights()  # the Linear init_cfg would hit serialization
        self.reset_serialization()

    def serialize(self, z: torch.Tensor) -> torch.Tensor:
        """S z + b, with the gradient to S and b scaled (forward exact)."""
        s = self.grad_scale
        w, b = self.serialization.weight, self.serialization.bias
        if s != 1.0 and torch.is_grad_enabled():
            w = w * s + (w * (1.0 - s)).detach()
            b = b * s + (b * (1.0 - s)).detach()
        return F.linear(z, w, b)

    def logits(self, feats) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return (z_cls, z_kd), both (N, C)."""
        z = self.fc(self.pre_logits(feats))
        if self.order == 'classify_first':
            return z, self.serialize(z)
        return self.serialize(z), z

    def forward(self, feats) -> torch.Tensor:
        """Inference logits z_cls (N, C)."""
        z = self.fc(self.pre_logits(feats))
        return z if self.order == 'classify_first' else self.serialize(z)

    def loss(self, feats, data_samples, **kwargs) -> dict:
        z_cls, z_kd = self.logits(feats)
        self.kd_out(z_kd)  # recorded by the distiller (ModuleOutputs)
        return self._get_loss(z_cls, data_samples, **kwargs)

    @staticmethod
    def deploy(head_cfg: dict, state: dict, prefix: str = 'head.'):
        """Head config + weights of the deployed student.

        ``classify_first`` becomes a plain ``LinearClsHead`` (serialization
        dropped); ``distill_first`` keeps this head with both layers.
        """
        order = head_cfg.get('order', 'classify_first')
        if order == 'distill_first':
            return dict(head_cfg), dict(state)
        cfg = {k: v for k, v in head_cfg.items()
               if k not in ('order', 'serialization_grad_scale')}
        cfg['type'] = 'mmpretrain.LinearClsHead'
        drop = prefix + 'serialization.'
        return cfg, {k: v for k, v in state.items() if not k.startswith(drop)}
