"""ATSC projector as an mmrazor connector (training-time view of
:class:`kd_plugins.models.heads.atsc_head.SimKDProjector`)."""
from __future__ import annotations

import torch
from mmrazor.models.architectures.connectors.base_connector import \
    BaseConnector
from mmrazor.registry import MODELS

from ..errors import ConfigError, check_feature_map
from ..models.heads.atsc_head import SimKDProjector


@MODELS.register_module()
class ATSCProjector(BaseConnector):
    """Maps the student's last map to the teacher's: (N, C_s, H, W) ->
    (N, C_t, H_t, W_t). Casts its output to the input dtype (AMP-safe).

    Args:
        in_channels: C_s. out_channels: C_t. factor: bottleneck factor (2).
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int = 2,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.factor = factor
        self.proj = SimKDProjector(in_channels, out_channels, factor)

    def forward_train(self, feature: torch.Tensor) -> torch.Tensor:
        check_feature_map(feature, 'ATSCProjector (student map)')
        if feature.shape[1] != self.in_channels:
            raise ConfigError(
                f'ATSCProjector expects {self.in_channels} student channels '
                f'but got a map of shape {tuple(feature.shape)}; set the '
                "projector's in_channels to the student's last-stage width.")
        return self.proj(feature).to(feature.dtype)
