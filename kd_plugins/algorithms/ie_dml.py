"""IE-DML — IE-KD applied to deep mutual learning (Huang et al., CVPR 2021,
Sec. "IE-DML"; spec ``shared/specs/ie_kd.md``).

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
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.optim import OptimWrapperDict
from mmrazor.models.algorithms.base import BaseAlgorithm
from mmrazor.registry import MODELS

BRANCHES = ('student_a', 'student_b')


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
    """

    def __init__(self, architecture, peer, encoders_a: dict, encoders_b: dict,
                 inherit_loss: Optional[dict] = None,
                 explore_loss: Optional[dict] = None,
                 dml_weight: float = 1.0, dml_tau: float = 1.0,
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
                raise ValueError(f'IEDML encoders of {name} must be '
                                 "dict(inherit=..., explore=...).")
        self.inherit_loss = MODELS.build(
            inherit_loss or dict(type='IEInheritLoss'))
        self.explore_loss = MODELS.build(
            explore_loss or dict(type='IEExploreLoss'))
        self.dml_weight, self.dml_tau = dml_weight, dml_tau

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
        return {
            'loss_ce': F.cross_entropy(logits.float(), labels),
            'loss_dml': self.dml_weight * tau**2 * F.kl_div(
                F.log_softmax(logits.float() / tau, 1),
                F.softmax(peer_logits.float() / tau, 1),
                reduction='batchmean'),
            'loss_inh': self.inherit_loss(f_inh, peer_inh),
            'loss_exp': self.explore_loss(f_exp, peer_inh),
        }

    def train_step(self, data, optim_wrapper: OptimWrapperDict):
        if not isinstance(optim_wrapper, OptimWrapperDict) or \
                set(optim_wrapper.optim_wrappers) != set(BRANCHES):
            raise TypeError("IEDML needs optim_wrapper=dict(constructor="
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
