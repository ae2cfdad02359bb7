"""Shared behaviour of the CIFAR KD-benchmark backbones.

Each backbone names a ``stem`` (a list of module names run first) and its
``stages`` (module names, one per output index). ``frozen_stages`` freezes the
stem and the first stages; ``norm_eval`` keeps BN statistics fixed in train
mode. Module names follow RepDistiller / mdistiller so that their checkpoints
map 1:1 (see ``tools/convert_repdistiller_ckpt.py``) and mmrazor recorders
reach each stage as ``backbone.<name>``.
"""
from __future__ import annotations

from typing import Sequence

from mmpretrain.models.backbones.base_backbone import BaseBackbone
from torch.nn.modules.batchnorm import _BatchNorm

from ...errors import ConfigError


def arch_setting(archs: dict, arch: str, owner: str):
    """``archs[arch]``, or a ConfigError that lists the valid names."""
    if arch not in archs:
        raise ConfigError(f'{owner}: unknown arch {arch!r}; choose from '
                          f'{sorted(archs)}.')
    return archs[arch]


class CifarBackbone(BaseBackbone):
    """Base class: ``out_indices``, ``frozen_stages``, ``norm_eval``.

    Args:
        out_indices: which stage outputs ``forward`` returns (negative
            indices count from the end).
        frozen_stages: freeze the stem and stages ``[0, frozen_stages)``;
            -1 freezes nothing.
        norm_eval: keep BatchNorm layers in eval mode during training.
        init_cfg: mmengine initialisation config.
    """

    stem: Sequence[str] = ()

    def __init__(self, out_indices=(-1, ), frozen_stages: int = -1,
                 norm_eval: bool = False, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self._out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

    # subclasses fill self.stage_names (and self.stem) in __init__
    def _finalise(self) -> None:
        n = len(self.stage_names)
        indices = []
        for i in ((self._out_indices, ) if isinstance(self._out_indices, int)
                  else self._out_indices):
            j = i + n if i < 0 else i
            if not 0 <= j < n:
                raise ConfigError(
                    f'{type(self).__name__}: out_indices {self._out_indices}'
                    f' out of range; it has {n} stages '
                    f'({", ".join(self.stage_names)}).')
            indices.append(j)
        self.out_indices = tuple(indices)
        if not -1 <= self.frozen_stages <= n:
            raise ConfigError(f'frozen_stages must be in [-1, {n}], got '
                              f'{self.frozen_stages}.')
        self._freeze_stages()

    def _frozen_modules(self):
        if self.frozen_stages < 0:
            return []
        names = list(self.stem) + list(self.stage_names[:self.frozen_stages])
        return [getattr(self, n) for n in names]

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def run_stem(self, x):
        for name in self.stem:
            x = getattr(self, name)(x)
        return x

    def run_stage(self, i: int, x):
        return getattr(self, self.stage_names[i])(x)

    def forward(self, x):
        """x: (N, 3, H, W) -> tuple of the selected stage maps
        (N, C_i, H_i, W_i)."""
        x = self.run_stem(x)
        outs = []
        for i in range(len(self.stage_names)):
            x = self.run_stage(i, x)
            if i in self.out_indices:
                outs.append(x)
            if i >= max(self.out_indices):
                break
        return tuple(outs)

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
