"""IE-KD encoders ("Coder") and the stage-1 teacher auto-encoder, as mmrazor
connectors (Huang et al., CVPR 2021; ``docs/methods/ie_kd.md``).

Coder(C_in -> C_out):  LeakyReLU - conv3x3(C_in->C_in) - BN - LeakyReLU -
                       conv3x3(C_in->C_out) - BN - LeakyReLU -
                       conv3x3(C_out->C_out) - BN - LeakyReLU

Initialisation as the official code: conv weights N(0, sqrt(2 / (9 C_out)))
(He, fan-out), BN weight 1, bias 0.
"""
from __future__ import annotations

import math
import os.path as osp
from typing import Optional

import torch.nn as nn
from mmrazor.models.architectures.connectors.base_connector import \
    BaseConnector
from mmrazor.registry import MODELS

from ..errors import ConfigError, MissingFileError, check_feature_map
from ..utils.checkpoint import load_local_checkpoint, state_dict_diff


def init_coder(module: nn.Module) -> nn.Module:
    """Official initialisation: conv N(0, sqrt(2 / (k*k*C_out))), BN 1 / 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def coder(c_in: int, c_out: int, slope: float = 0.1) -> nn.Sequential:
    """The Coder: (N, c_in, H, W) -> (N, c_out, H, W), initialised as the
    official code."""
    return init_coder(nn.Sequential(
        nn.LeakyReLU(slope),
        nn.Conv2d(c_in, c_in, 3, 1, 1, bias=False), nn.BatchNorm2d(c_in),
        nn.LeakyReLU(slope),
        nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
        nn.LeakyReLU(slope),
        nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
        nn.LeakyReLU(slope)))


@MODELS.register_module()
class IEAutoEncoder(BaseConnector):
    """Stage 1: teacher factor auto-encoder. ``encoder`` = Coder(C_t ->
    C_t*rate), ``decoder`` = its mirror back to C_t; returns the
    reconstruction (N, C_t, H, W) (L1 against the teacher map)."""

    def __init__(self, in_channels: int, rate: float = 0.5,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.out_channels = int(in_channels * rate)
        self.encoder = coder(in_channels, self.out_channels)
        self.decoder = coder(self.out_channels, in_channels)

    def forward_train(self, feature):
        check_feature_map(feature, 'IEAutoEncoder (IE-KD stage 1)',
                          self.in_channels)
        return self.decoder(self.encoder(feature)).to(feature.dtype)


@MODELS.register_module()
class IETeacherEncoder(BaseConnector):
    """Stage 2: the frozen stage-1 teacher encoder (always in eval mode).

    Args:
        in_channels: teacher last-stage channels C_t.
        rate: factor rate of stage 1 (out channels C_t * rate).
        stage1_ckpt: the stage-1 checkpoint (required for training).
        prefix: key of the encoder in that checkpoint; found automatically
            (``...connectors.<name>.encoder.``) when None.
    """

    def __init__(self, in_channels: int, rate: float = 0.5,
                 stage1_ckpt: Optional[str] = None,
                 prefix: Optional[str] = None, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.out_channels = int(in_channels * rate)
        self.encoder = coder(in_channels, self.out_channels)
        self.stage1_ckpt = stage1_ckpt
        if stage1_ckpt is not None:
            self.load_stage1(stage1_ckpt, prefix)
        for p in self.parameters():
            p.requires_grad = False
        self.eval()

    def load_stage1(self, path: str, prefix: Optional[str] = None) -> None:
        if not osp.isfile(path):
            raise MissingFileError(
                f'IE-KD stage 2 needs the stage-1 checkpoint, but '
                f'{path!r} does not exist.\n  Fix: run stage 1 first, e.g. '
                'python tools/train.py configs/demo/ie_kd_stage1_digits.py, '
                'and pass its checkpoint with --cfg-options '
                'model.distiller.connectors.t_enc.stage1_ckpt=PATH')
        # refused unless it is a stage-1 file (an auto-encoder's encoder
        # and decoder): not stage 2's, not a teacher's
        state = load_local_checkpoint(path, map_location='cpu',
                                      role='stage1')
        state = state.get('state_dict', state)
        if prefix is None:
            prefixes = sorted({k[:k.index('encoder.') + len('encoder.')]
                               for k in state if '.encoder.' in k and
                               'connectors.' in k})
            if len(prefixes) != 1:
                raise ConfigError(
                    f'{path!r} is not an IE-KD stage-1 checkpoint: expected '
                    f'one teacher encoder (…connectors.<name>.encoder.*), '
                    f'found {prefixes or "none"}.\n  Fix: pass the '
                    'checkpoint of a run of an ie_kd_stage1 config (one '
                    'IEAutoEncoder connector), or set the encoder\'s key '
                    'prefix: model.distiller.connectors.t_enc.prefix=...')
            prefix = prefixes[0]
        enc = {k[len(prefix):]: v for k, v in state.items()
               if k.startswith(prefix)}
        missing, _, shapes = state_dict_diff(enc, self.encoder.state_dict())
        bad = missing + shapes
        if bad:
            shapes = {k: tuple(enc[k].shape) for k in bad if k in enc}
            raise ConfigError(
                f'stage-1 encoder in {path!r} was made for another teacher or'
                f' channel count: this stage 2 expects C_t={self.in_channels}'
                f' -> {self.out_channels}; mismatching keys {bad[:4]} '
                f'(found shapes {shapes}).\n  Fix: run stage 1 with the same '
                'teacher as stage 2.')
        self.encoder.load_state_dict(enc)

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: BN statistics stay fixed

    def forward_train(self, feature):
        check_feature_map(feature, 'IETeacherEncoder (IE-KD)',
                          self.in_channels)
        return self.encoder(feature).to(feature.dtype)


@MODELS.register_module()
class IEStudentEncoder(BaseConnector):
    """Stage 2 student encoder on one channel part of the student map.

    Args:
        in_channels: student last-stage channels C_s.
        out_channels: teacher factor channels (C_t * rate).
        part: ``'inherit'`` (the first ``split_ratio`` of the channels) or
            ``'explore'`` (the rest).
        split_ratio: share of channels of the inheritance part (0.5).
    """

    def __init__(self, in_channels: int, out_channels: int,
                 part: str = 'inherit', split_ratio: float = 0.5,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if part not in ('inherit', 'explore'):
            raise ConfigError(f"part must be 'inherit' or 'explore', got "
                              f'{part!r}.')
        if not 0 < split_ratio < 1:
            raise ConfigError(f'split_ratio must be in (0, 1), got '
                              f'{split_ratio}.')
        self.split = int(round(in_channels * split_ratio))
        self.part = part
        self.in_channels, self.out_channels = in_channels, out_channels
        lo, hi = (0, self.split) if part == 'inherit' else \
            (self.split, in_channels)
        self.channels = (lo, hi)
        self.encoder = coder(hi - lo, out_channels)

    def forward_train(self, feature):
        check_feature_map(feature, 'IEStudentEncoder', self.in_channels)
        lo, hi = self.channels
        return self.encoder(feature[:, lo:hi]).to(feature.dtype)
