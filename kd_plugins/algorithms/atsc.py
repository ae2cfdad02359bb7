"""ATSC — Adaptive Teaching with Shared Classifier (Jang, Kim, Lim, Lee 2024,
arXiv 2406.08528), single- and multi-teacher: the training step of the
official code (``helper/loops.py`` ``train_distill``), see
``docs/methods/atsc.md``.

Per iteration:

    step 1:  L = c * CE(z_own, y) + d * tau^2 KL(z_t/tau || z_own/tau)
               + b * sum_k MSE(P_k(f_s), f_tk)              (feature match)
               + w * sum_k sum_{p in A_k} ||theta_p - theta0_p||^2   (anchor)
             updates everything trainable: the student (its own classifier
             included), the projectors P_k and the teachers (trainable, train
             mode), their classifier biases included;
    step 2:  sum_k CE(fc_Tk(GAP(f_tk')), y) updates only the teachers'
             classifier biases (a second optimizer, same settings), where
             f_tk' comes from a second teacher forward after step 1 (train
             mode, updated weights; BN running statistics move again).
             ``reuse_teacher_features=True`` uses step 1's f_tk instead and
             saves that forward.

As in the official code, CE and KD (weights c and d, 0 by default) act on
the student's OWN classifier, z_own = head(neck(backbone outputs)), against
the mean teacher logits z_t = mean_k fc_Tk(GAP(f_tk)) (not detached: with
d > 0 the KD term also moves the teachers). Both terms are always computed:
at weight 0 they give the student's own classifier and the teachers'
classifier biases a zero gradient, so step 1's SGD still decays them by
weight decay and moves their momentum, as the official ``loss = cls *
loss_cls + div * loss_div + ...`` does. The teachers' classifier biases are
in both optimizers, as in the official ``optimizer`` (every trainable
module) and ``optimizer_last``.

z_s = mean_k fc_Tk(GAP(P_k(f_s))) is the student's prediction with the
teachers' *live* classifiers (shared classifier): validation, test and export
use it. (The official ``validate_distill`` evaluates the student's own
classifier, which ATSC does not train by default: a deliberate difference.)
theta0 is a frozen copy of each teacher taken right after its checkpoint is
loaded; it is a persistent buffer, so a resumed run restores the original
theta0 and never re-captures it from the adapted teacher. A_k: every teacher
parameter with ndim > 1, the shared classifier's weight included (the
official ``helper/util.py::extract_weights_except_last`` takes all parameters
but the last one, ``fc.bias``, and keeps those with ndim > 1). With
``anchor_norm=True`` (a deviation from the official code, off by default) the
ndim-1 parameters (BN scales/shifts) are anchored too, all but the classifier
bias that step 2 trains.

Feature maps of different sizes: the larger one is adaptive-average-pooled to
the smaller one's size (official ``models/util.py::SimKD.forward``). A larger
student map is pooled inside the projector (so the deployed student does the
same); a larger teacher map is pooled before the MSE.

Unlike the official code, checkpoints hold projectors and adapted
classifiers, and ``deploy_student`` exports a plain mmpretrain classifier.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapperDict
from mmrazor.models.algorithms.base import BaseAlgorithm
from mmrazor.registry import MODELS

from ..errors import ConfigError
from ..losses.tempered_kl import tempered_kl
from ..models.heads.atsc_head import shared_classifier_logits
from ..utils.precision import at_least_float32
from ..utils.teacher import as_list, build_teacher, teachers_and_ckpts

TEACHER_BIAS_OPTIM = 'teacher_bias'
MAIN_OPTIM = 'main'


def _anchor_names(teacher: nn.Module, anchor_norm: bool = False
                  ) -> List[str]:
    """Names of the anchored teacher parameters.

    Official: every parameter with ndim > 1 (conv and linear weights,
    ``head.fc.weight`` included). ``anchor_norm=True`` adds the ndim-1
    parameters (BN scales/shifts) except ``head.fc.bias``, which step 2
    trains on the teacher's CE.
    """
    return [n for n, p in teacher.named_parameters()
            if p.ndim > 1 or (anchor_norm and n != 'head.fc.bias')]


@MODELS.register_module()
class ATSC(BaseAlgorithm):
    """Adaptive teaching with shared classifier.

    Args:
        architecture: the student (an mmpretrain ImageClassifier; its
            backbone feeds the projectors, its own head gives the logits of
            the CE / KD terms and is not deployed).
        teachers: one teacher config/model or a list (multi-teacher).
        projectors: one ``ATSCProjector`` config per teacher.
        teacher_ckpts: checkpoint path (or None) per teacher.
        mse_weight: b. anchor_weight: w (1 on CIFAR, 10 on ImageNet).
        ce_weight: c, CE of the student's own classifier (default 0).
        kd_weight: d, KD between the student's own classifier and the
            mean teacher logits (default 0).
        kd_tau: temperature of the optional KD term.
        anchor_norm: also anchor the teacher's ndim-1 parameters (BN
            scales/shifts). Off by default (official behaviour); a
            documented deviation that keeps the teacher accurate on short
            runs (Digits: teacher 96 -> 66 % without, 94 % with).
        reuse_teacher_features: step 2 reuses step 1's teacher features
            instead of running the teachers again (official). Saves one
            teacher forward per step (``tools/benchmark.py`` row
            ``ATSC (reuse_teacher_features)``); not step-equivalent to the
            official code.
        data_preprocessor: the run's preprocessor.
    """

    def __init__(self,
                 architecture: Union[BaseModel, Dict],
                 teachers: Union[Dict, Sequence[Dict]],
                 projectors: Union[Dict, Sequence[Dict]],
                 teacher_ckpts: Union[None, str,
                                      Sequence[Optional[str]]] = None,
                 mse_weight: float = 1.0,
                 anchor_weight: float = 1.0,
                 ce_weight: float = 0.0,
                 kd_weight: float = 0.0,
                 kd_tau: float = 4.0,
                 anchor_norm: bool = False,
                 reuse_teacher_features: bool = False,
                 data_preprocessor: Optional[Dict] = None,
                 init_cfg: Optional[Dict] = None) -> None:
        super().__init__(architecture, data_preprocessor, init_cfg,
                         module_inplace=True)
        teachers, teacher_ckpts = teachers_and_ckpts(teachers, teacher_ckpts,
                                                     'ATSC')
        projectors = as_list(projectors)
        if len(projectors) != len(teachers):
            raise ConfigError(
                f'ATSC needs one projector per teacher: got {len(teachers)} '
                f'teachers, {len(projectors)} projectors.')
        # trained by ATSC: built and loaded by the one builder, not frozen
        self.teachers = nn.ModuleList(
            build_teacher(t, c, trainable=True)
            for t, c in zip(teachers, teacher_ckpts))
        self.connectors = nn.ModuleList(MODELS.build(p) for p in projectors)
        self.mse_weight, self.anchor_weight = mse_weight, anchor_weight
        self.ce_weight, self.kd_weight, self.kd_tau = (ce_weight, kd_weight,
                                                       kd_tau)
        self.anchor_norm = anchor_norm
        self.reuse_teacher_features = reuse_teacher_features
        self._check_classifiers()
        # theta0: frozen copies, persistent (saved, restored on resume)
        self.anchors = nn.ModuleList()
        self._anchor_names = []
        for teacher in self.teachers:
            names = _anchor_names(teacher, anchor_norm)
            holder = nn.Module()
            params = dict(teacher.named_parameters())
            for i, name in enumerate(names):
                holder.register_buffer(f'p{i}', params[name].detach().clone())
            self.anchors.append(holder)
            self._anchor_names.append(names)

    # ------------------------------------------------------------------
    def _check_classifiers(self) -> None:
        num_classes = set()
        for k, teacher in enumerate(self.teachers):
            fc = getattr(getattr(teacher, 'head', None), 'fc', None)
            if not isinstance(fc, nn.Linear):
                raise ConfigError(
                    f'ATSC teacher {k} ({type(teacher).__name__}) has no '
                    'linear classifier at head.fc; ATSC shares the teacher '
                    'classifier with the student. Fix: use a teacher with '
                    'an mmpretrain LinearClsHead.')
            num_classes.add(fc.out_features)
            proj = self.connectors[k]
            if proj.out_channels != fc.in_features:
                raise ConfigError(
                    f'ATSC projector {k} outputs {proj.out_channels} channels '
                    f'but teacher {k} classifier takes {fc.in_features}; set '
                    f'out_channels={fc.in_features}.')
        if len(num_classes) > 1:
            raise ConfigError(f'ATSC teachers disagree on the number of '
                              f'classes: {sorted(num_classes)}.')
        if not getattr(self.architecture, 'with_head', False):
            raise ConfigError(
                'ATSC computes its CE / KD terms (weights ce_weight, '
                "kd_weight) on the student's own classifier, as the official "
                'code, but this student has no head.\n  Fix: give the '
                'student an mmpretrain classification head (e.g. '
                'LinearClsHead) with the teachers\' classes.')
        s_fc = getattr(self.architecture.head, 'fc', None)
        if isinstance(s_fc, nn.Linear) and s_fc.out_features not in \
                num_classes:
            raise ConfigError(
                f'student head has {s_fc.out_features} classes, teachers '
                f'{num_classes.pop()}: teacher and student must be trained '
                'on the same classes.')

    @property
    def student(self) -> nn.Module:
        return self.architecture

    def teacher_bias_params(self) -> List[nn.Parameter]:
        """Parameters of the second step (teacher classifier biases)."""
        return [t.head.fc.bias for t in self.teachers]

    def optim_param_groups(self) -> Dict[str, List[nn.Parameter]]:
        """Step 1: every trainable parameter (the official ``optimizer``
        over student, projectors and teachers); step 2: the teachers'
        classifier biases (the official ``optimizer_last``). The biases are
        in both, as in the official code: one optimizer each, same
        settings."""
        main = [p for p in self.parameters() if p.requires_grad]
        return {MAIN_OPTIM: main,
                TEACHER_BIAS_OPTIM: self.teacher_bias_params()}

    # ------------------------------------------------------------------
    def _student_feats(self, inputs) -> tuple:
        """The student backbone's outputs (a tuple of maps)."""
        return self.student.extract_feat(inputs, stage='backbone')

    def _student_map(self, inputs):
        return self._student_feats(inputs)[-1]

    def student_own_logits(self, feats: tuple) -> torch.Tensor:
        """The student's own classifier on its backbone outputs ``feats``:
        head(neck(feats)), (N, num_classes); the official ``logit_s`` of
        ``model_s(images, is_feat=True)``."""
        student = self.student
        x = student.neck(feats) if student.with_neck else feats
        return student.head(x)

    def _teacher_map(self, k, inputs):
        return self.teachers[k].extract_feat(inputs, stage='backbone')[-1]

    def deployed_logits(self, f_s, projected=None) -> torch.Tensor:
        """z_s = mean_k fc_Tk(GAP(P_k(f_s))): (N, num_classes)."""
        if projected is None:
            projected = [proj(f_s) for proj in self.connectors]
        return shared_classifier_logits(
            projected, [t.head.fc for t in self.teachers])

    def _record_teacher_size(self, k: int, f_t: torch.Tensor) -> None:
        """Store the teacher map size in projector k (saved with it, used
        to pool larger student maps); written only when it changes, so the
        hot path does no host-to-device copy."""
        hw = tuple(f_t.shape[2:])
        proj = self.connectors[k].proj
        if proj.target != hw:
            proj.set_target(hw)

    def anchor_loss(self) -> torch.Tensor:
        """sum_k sum_{p in A_k} ||theta_p - theta0_p||^2 (not normalised)."""
        total = 0.
        for teacher, holder, names in zip(self.teachers, self.anchors,
                                          self._anchor_names):
            params = dict(teacher.named_parameters())
            for i, name in enumerate(names):
                total = total + (params[name] -
                                 getattr(holder, f'p{i}')).pow(2).sum()
        return total

    def loss(self, inputs, data_samples) -> Dict[str, torch.Tensor]:
        """Step-1 losses; also keeps what step 2 needs: the inputs (the
        teachers run again) or, with ``reuse_teacher_features``, the pooled
        step-1 teacher features."""
        feats = self._student_feats(inputs)
        f_s = feats[-1]
        z_own = self.student_own_logits(feats)  # official logit_s
        labels = torch.cat([ds.gt_label for ds in data_samples])
        losses, t_feats, t_logits = {}, [], []
        for k, teacher in enumerate(self.teachers):
            f_t = self._teacher_map(k, inputs)
            self._record_teacher_size(k, f_t)
            p = self.connectors[k](f_s)
            target = f_t
            if target.shape[2:] != p.shape[2:]:  # larger teacher map
                target = F.adaptive_avg_pool2d(target, p.shape[2:])
            losses[f'loss_mse{k}'] = self.mse_weight * F.mse_loss(
                at_least_float32(p), at_least_float32(target))
            pooled = F.adaptive_avg_pool2d(f_t, 1).flatten(1)
            t_feats.append(pooled.detach())
            t_logits.append(teacher.head.fc(pooled))  # official logit_t
        losses['loss_anchor'] = self.anchor_weight * self.anchor_loss()
        # always computed, also at weight 0 (see the module docstring): the
        # zero gradients they give make SGD decay the student's own
        # classifier and the teachers' classifier biases, as the official
        z_own = at_least_float32(z_own)
        losses['loss_ce'] = self.ce_weight * F.cross_entropy(z_own, labels)
        z_t = at_least_float32(torch.stack(t_logits).mean(0))
        losses['loss_kd'] = self.kd_weight * tempered_kl(z_own, z_t,
                                                         self.kd_tau)
        self._step2 = (t_feats if self.reuse_teacher_features else inputs,
                       labels)
        return losses

    def teacher_bias_loss(self) -> torch.Tensor:
        """Step 2: sum_k CE(fc_Tk(GAP(f_tk)), y), gradient to fc biases only.

        f_tk from a second forward of the updated teachers in train mode
        (official), or step 1's with ``reuse_teacher_features``."""
        t_feats, labels = self._step2
        if not self.reuse_teacher_features:
            with torch.no_grad():  # only the biases train; BN stats move
                t_feats = [
                    F.adaptive_avg_pool2d(self._teacher_map(k, t_feats),
                                          1).flatten(1)
                    for k in range(len(self.teachers))]
        total = 0.
        for teacher, feat in zip(self.teachers, t_feats):
            fc = teacher.head.fc
            logits = F.linear(feat, fc.weight.detach(), fc.bias)
            total = total + F.cross_entropy(at_least_float32(logits),
                                            labels)
        return total

    def train_step(self, data, optim_wrapper: OptimWrapperDict):
        if not isinstance(optim_wrapper, OptimWrapperDict) or \
                TEACHER_BIAS_OPTIM not in optim_wrapper.optim_wrappers:
            raise ConfigError(
                "ATSC needs optim_wrapper=dict(constructor="
                "'KDMultiOptimWrapperConstructor', optimizer=...) so that the "
                'teacher classifier biases get their own optimizer.')
        main = optim_wrapper[MAIN_OPTIM]
        bias = optim_wrapper[TEACHER_BIAS_OPTIM]
        with main.optim_context(self):
            data = self.data_preprocessor(data, True)
            losses = self._run_forward(data, mode='loss')
        parsed, log_vars = self.parse_losses(losses)
        main.update_params(parsed)
        bias.zero_grad()  # drop step-1 gradients (c, d terms) on the biases
        with bias.optim_context(self):
            ce = self.teacher_bias_loss()
        bias.update_params(ce)
        log_vars['teacher_ce'] = ce.detach()
        self._step2 = None
        return log_vars

    # ------------------------------------------------------------------
    def _predict_logits(self, inputs):
        return self.deployed_logits(self._student_map(inputs))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        logits = self._predict_logits(inputs)
        if mode == 'tensor':
            return logits
        if mode == 'predict':
            from mmpretrain.structures import DataSample
            scores = F.softmax(logits.float(), dim=1)
            labels = scores.argmax(dim=1, keepdim=True).detach()
            if data_samples is None:
                data_samples = [DataSample() for _ in range(len(logits))]
            for ds, s, lb in zip(data_samples, scores, labels):
                ds.set_pred_score(s).set_pred_label(lb)
            return data_samples
        raise ValueError(f'Invalid mode {mode!r}.')

    # ------------------------------------------------------------------
    @staticmethod
    def deploy_student(model_cfg: dict, state: dict):
        """Student config + weights: backbone -> ATSCSharedHead."""
        student = copy.deepcopy(model_cfg['architecture'])
        projs = model_cfg['projectors']
        projs = as_list(projs)
        # the classes of the shared classifier: its weight (num_classes, C);
        # a teacher may be a model-zoo name, not a dict with its head
        num_classes = int(state['teachers.0.head.fc.weight'].shape[0])
        student.pop('neck', None)
        student['neck'] = None
        student['head'] = dict(
            type='mmpretrain.ATSCSharedHead',
            in_channels=projs[0]['in_channels'],
            teacher_channels=[p['out_channels'] for p in projs],
            num_classes=num_classes,
            factor=projs[0].get('factor', 2))
        sd = {}
        for key, value in state.items():
            if key.startswith('architecture.backbone.'):
                sd[key[len('architecture.'):]] = value
            elif key.startswith('connectors.'):
                k, rest = key[len('connectors.'):].split('.', 1)
                sd[f'head.projectors.{k}.{rest[len("proj."):]}'] = value
            elif key.startswith('teachers.') and '.head.fc.' in key:
                k = key.split('.')[1]
                sd[f'head.classifiers.{k}.{key.split(".head.fc.")[1]}'] = \
                    value
        return student, sd
