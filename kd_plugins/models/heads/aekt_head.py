"""AEKT student head: classification and distillation as two tasks.

RECONSTRUCTION (see ``kd_plugins/losses/aekt.py``): a C x C "serialization"
linear layer, initialised to the identity, models inter-class relations
between the classification logits and the distilled logits.

- ``order='classify_first'``: x -> fc -> z_cls (CE); z_cls -> serialization
  -> z_kd (AEKT loss). Inference uses z_cls; export drops the serialization.
- ``order='distill_first'``: x -> fc -> z_kd (AEKT loss); z_kd ->
  serialization -> z_cls (CE). Inference uses z_cls; export keeps both.

z_kd goes through ``self.kd_out`` (an identity), so a distiller reaches it in
either order with one recorder: ``ModuleOutputs(source='head.kd_out')``.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import MODELS

ORDERS = ('classify_first', 'distill_first')


@MODELS.register_module()
class AEKTHead(LinearClsHead):
    """Linear classifier + serialization layer.

    Args:
        num_classes: C.
        in_channels: feature channels.
        order: ``'classify_first'`` (default) or ``'distill_first'``.
        **kwargs: as :class:`mmpretrain.models.heads.LinearClsHead`.
    """

    def __init__(self, num_classes: int, in_channels: int,
                 order: str = 'classify_first', **kwargs) -> None:
        super().__init__(num_classes, in_channels, **kwargs)
        if order not in ORDERS:
            raise ValueError(f"AEKTHead order must be one of {ORDERS}, got "
                             f'{order!r}.')
        self.order = order
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

    def logits(self, feats) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return (z_cls, z_kd), both (N, C)."""
        z = self.fc(self.pre_logits(feats))
        if self.order == 'classify_first':
            return z, self.serialization(z)
        return self.serialization(z), z

    def forward(self, feats) -> torch.Tensor:
        """Inference logits z_cls (N, C)."""
        z = self.fc(self.pre_logits(feats))
        return z if self.order == 'classify_first' else self.serialization(z)

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
        cfg = {k: v for k, v in head_cfg.items() if k != 'order'}
        cfg['type'] = 'mmpretrain.LinearClsHead'
        drop = prefix + 'serialization.'
        return cfg, {k: v for k, v in state.items() if not k.startswith(drop)}
