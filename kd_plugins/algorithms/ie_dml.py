"""IE-DML — IE-KD applied to deep mutual learning (Huang et al., CVPR 2021,
Sec. "IE-DML"; ``docs/methods/ie_kd.md``).

Two students A and B train together with alternating updates. Each student
splits its last map into inheritance / exploration parts with its own two
encoders (``IEStudentEncoder``). The other student plays the teacher: its
"compact knowledge" is its inheritance factor E_inh(F_inh), detached (our
choice: the spec names no peer encoder). For student X with peer Y:

    L_X = CE(z_X, y) + dml_weight * KL(softmax(z_Y) || softmax(z_X))
          + IEInheritLoss(E_inh^X, E_inh^Y) + IEExploreLoss(E_exp^X, E_inh^Y)

Step A updates A with B's outputs fixed; step B then re-runs A (updated,
without gradient) and updates B, as in DML's alternating scheme.
Validation/test/export use student A (``architecture``).

The IE terms here are OUR design (the paper's IE-DML code is not public):
both encoders are trainable, so the two students can agree on a trivial
factor shared by every image. ``inh_spread_a`` / ``inh_spread_b`` are logged
every iteration to show whether they do:

    spread = 1 - || mean_over_batch n(E_inh(F)) ||^2,   n(x) = x / ||x||_2

the share of the normalised factor that varies across the images of a batch
(1: mean zero, 0: the same factor for every image, i.e. collapse). Measured
on the Digits demo (12 epochs): the teacher factor of IE-KD (the frozen
stage-1 auto-encoder) has a spread of 0.46; IE-DML's unanchored factors
start at 0.41 / 0.27 (A / B) and fall to 0.02 / 0.01 after 1.5 epochs and
0.0005 at the end: they collapse. A reconstruction anchor (a decoder must
rebuild the student's inheritance features from the factor, as stage 1
does for the teacher) did not stop it (weight 1: 0.0005 at the end; 10:
0.01; 50: 0.03-0.2): the decoder reads the small per-image part while the
normalised factor is dominated by a part shared by every image. What the
IE terms compare is the normalised factor, so the anchor acts on it: a
hinge keeps its spread at or above ``min_spread``,

    L_spread = spread_weight * max(0, min_spread - spread(E_inh(F)))

(default min_spread 0.3, below the healthy teacher factor's 0.46; weight
10). With it, on the same demo run, the spreads stay at 0.33-0.42 while the
inheritance loss still falls (2.4 -> 0.08: the students agree on an
informative factor); student A's top-1 46.4 % without, 71.4 % with (one
seed, 12 epochs, lr 0.05). ``spread_weight=0`` restores the unanchored
variant.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.optim import OptimWrapperDict
from mmrazor.models.algorithms.base import BaseAlgorithm
from mmrazor.registry import MODELS

from ..errors import ConfigError
from ..losses.tempered_kl import tempered_kl
from ..utils.dist import global_batch_mean
from ..utils.precision import at_least_float32

BRANCHES = ('student_a', 'student_b')


def factor_spread(factor: torch.Tensor, detach: bool = True) -> torch.Tensor:
    """1 - ||mean_n n(f_n)||^2 over a batch of (N, C, H, W) factors, where
    n(x) = x / ||x||_2 per sample: 0 when all samples share one factor.

    Under data parallelism the mean runs over the global batch (all ranks),
    so the value and the update equal a one-process run's."""
    if detach:
        factor = factor.detach()
    n = F.normalize(at_least_float32(factor).flatten(1), dim=1)
    return 1.0 - global_batch_mean(n).pow(2).sum()


@MODELS.register_module()
class IEDML(BaseAlgorithm):
    """Args:
        architecture: student A (mmpretrain ImageClassifier).
        peer: student B.
        encoders_a / encoders_b: ``dict(inherit=..., explore=...)``
            ``IEStudentEncoder`` configs of each student; the factor channels
            of A and B must match.
        inherit_loss / explore_loss: loss configs (IEInheritLoss /
            IEExploreLoss, weight 50 by default).
        dml_weight: weight of the mutual KL term; dml_tau its temperature.
        min_spread / spread_weight: the anti-collapse hinge on each
            inheritance factor (our design, see above; weight 0 disables
            it).
    """

    def __init__(self, architecture, peer, encoders_a: dict, encoders_b: dict,
                 inherit_loss: Optional[dict] = None,
                 explore_loss: Optional[dict] = None,
                 dml_weight: float = 1.0, dml_tau: float = 1.0,
                 min_spread: float = 0.3, spread_weight: float = 10.0,
                 data_preprocessor=None, init_cfg=None) -> None:
        super().__init__(architecture, data_preprocessor, init_cfg,
                         module_inplace=True)
        self.peer = MODELS.build(peer) if isinstance(peer, dict) else peer
        self.encoders = nn.ModuleDict({
            'student_a': nn.ModuleDict({k: MODELS.build(v)
                                        for k, v in encoders_a.items()}),
            'student_b': nn.ModuleDict({k: MODELS.build(v)
                                        for k, v in encoders_b.items()})})
        for name in BRANCHES:
            if set(self.encoders[name]) != {'inherit', 'explore'}:
                raise ConfigError(f'IEDML encoders of {name} must be '
                                  "dict(inherit=..., explore=...).")
        self.inherit_loss = MODELS.build(
            inherit_loss or dict(type='IEInheritLoss'))
        self.explore_loss = MODELS.build(
            explore_loss or dict(type='IEExploreLoss'))
        self.dml_weight, self.dml_tau = dml_weight, dml_tau
        self.min_spread, self.spread_weight = min_spread, spread_weight

    def _net(self, name: str) -> nn.Module:
        return self.architecture if name == 'student_a' else self.peer

    def optim_param_groups(self) -> Dict[str, List[nn.Parameter]]:
        """One optimizer per student (network + its encoders)."""
        return {name: [p for p in list(self._net(name).parameters()) +
                       list(self.encoders[name].parameters())
                       if p.requires_grad] for name in BRANCHES}

    def _outputs(self, name: str, inputs):
        """(logits (N, C), inheritance factor, exploration factor)."""
        net, enc = self._net(name), self.encoders[name]
        feat = net.extract_feat(inputs, stage='backbone')
        logits = net.head(net.neck(feat) if net.with_neck else feat)
        return logits, enc['inherit'](feat[-1]), enc['explore'](feat[-1])

    def branch_losses(self, name: str, inputs, labels,
                      peer_out) -> Dict[str, torch.Tensor]:
        """Losses of student ``name`` against the (detached) peer outputs."""
        logits, f_inh, f_exp = self._outputs(name, inputs)
        peer_logits, peer_inh = peer_out[0].detach(), peer_out[1].detach()
        tau = self.dml_tau
        losses = {
            'loss_ce': F.cross_entropy(at_least_float32(logits), labels),
            'loss_dml': self.dml_weight * tempered_kl(logits, peer_logits,
                                                      tau),
            'loss_inh': self.inherit_loss(f_inh, peer_inh),
            'loss_exp': self.explore_loss(f_exp, peer_inh),
        }
        spread = factor_spread(f_inh, detach=False)
        losses['inh_spread'] = spread.detach()  # logged, not a loss
        if self.spread_weight:
            losses['loss_spread'] = self.spread_weight * F.relu(
                self.min_spread - spread)
        return losses

    def train_step(self, data, optim_wrapper: OptimWrapperDict):
        if not isinstance(optim_wrapper, OptimWrapperDict) or \
                set(optim_wrapper.optim_wrappers) != set(BRANCHES):
            raise ConfigError("IEDML needs optim_wrapper=dict(constructor="
                              "'KDMultiOptimWrapperConstructor', ...).")
        data = self.data_preprocessor(data, True)
        inputs = data['inputs']
        labels = torch.cat([ds.gt_label for ds in data['data_samples']])
        log_vars = {}
        for name, other in (BRANCHES, BRANCHES[::-1]):
            with torch.no_grad():
                peer_out = self._outputs(other, inputs)
            wrapper = optim_wrapper[name]
            with wrapper.optim_context(self):
                losses = self.branch_losses(name, inputs, labels, peer_out)
            parsed, branch_log = self.parse_losses(losses)
            wrapper.update_params(parsed)
            tag = name[-1]
            log_vars.update({f'{k}_{tag}': v for k, v in branch_log.items()})
        return log_vars

    def loss(self, inputs, data_samples):
        """Both students' losses (no update; for inspection)."""
        labels = torch.cat([ds.gt_label for ds in data_samples])
        out = {}
        for name, other in (BRANCHES, BRANCHES[::-1]):
            with torch.no_grad():
                peer_out = self._outputs(other, inputs)
            for k, v in self.branch_losses(name, inputs, labels,
                                           peer_out).items():
                out[f'{k}_{name[-1]}'] = v
        return out

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        return self.architecture(inputs, data_samples, mode=mode)
