"""MultiTeacherDistill: several frozen teachers, one student, any logit loss.

mmrazor's distillers take exactly one teacher (its multi-teacher request,
mmrazor issue #597, is open). This distiller runs K frozen teachers with the
FastDistill fast path (eval mode, ``no_grad``, ``mode='tensor'``, optional
bf16/fp16 weights, channels_last, compile), each once per step; their
recorded outputs reach the losses through mmrazor's recorders (one record per
teacher, in teacher order). How they combine (``combine``), with z_k the
(N, C) logits of teacher k, y the labels:

* ``'mean_logits'`` (default):  z = (1/K) sum_k z_k
* ``'mean_probs'``:             z = tau * log((1/K) sum_k softmax(z_k / tau))
  (set ``tau`` to the loss's temperature: softmax(z / tau) is then exactly
  the mean of the teachers' tempered distributions)
* ``'confidence'``:             z_n = sum_k w_{k,n} z_{k,n},
  w_{k,n} = softmax_k(-CE(z_{k,n}, y_n))  (= p_k(y_n) / sum_j p_j(y_n)),
  a per-sample weighting by each teacher's confidence in the ground truth,
  after CA-MKD (Zhang, Chen, Wang, "Confidence-Aware Multi-Teacher Knowledge
  Distillation", ICASSP 2022, arXiv 2201.00007, Eq. 3, which uses
  w_k = (1 - softmax_k(CE_k)) / (K - 1); we use the softmax of -CE so that a
  teacher wrong on a sample gets a weight near 0 for any K);
* ``'per_teacher'``: no ensemble output; every distillation loss is computed
  once per teacher (``<loss>_t<k>``), times ``teacher_weights[k]`` (default
  1/K each), and they are summed.

The first three feed ONE ensemble output (per teacher recorder) to the
configured losses (mmrazor ``KLDivergence``, ``DKDLoss``, our ``AEKTLoss``
...), so a single-teacher config becomes multi-teacher by changing
``teacher``/``teacher_ckpt`` to ``teachers``/``teacher_ckpts``. With one
teacher every rule gives FastDistill's losses exactly (tested).

Combination applies to every teacher recorder: records must have the same
shape across teachers ((N, C) logits for ``mean_probs`` and ``confidence``);
feature-based parts with teachers of different widths need ``per_teacher``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmrazor.registry import MODELS

from ..errors import ConfigError
from ..utils.precision import at_least_float32
from ..utils.teacher import build_teacher, teachers_and_ckpts
from .fast_distill import FastDistill, check_fast_path_options

COMBINE = ('mean_logits', 'mean_probs', 'confidence', 'per_teacher')


def mean_logits(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """(1/K) sum_k z_k."""
    return torch.stack([at_least_float32(z) for z in logits]).mean(0)


def mean_probs(logits: Sequence[torch.Tensor], tau: float) -> torch.Tensor:
    """tau * log((1/K) sum_k softmax(z_k / tau)): logits whose tempered
    softmax is the mean of the teachers' tempered distributions (one
    teacher: its logits unchanged, which have the same softmax)."""
    if len(logits) == 1:
        return at_least_float32(logits[0])
    logp = torch.stack([F.log_softmax(at_least_float32(z) / tau, dim=1)
                        for z in logits])
    return tau * (torch.logsumexp(logp, dim=0) - torch.log(
        torch.tensor(float(len(logits)), device=logp.device)))


def confidence_weights(logits: Sequence[torch.Tensor],
                       labels: torch.Tensor) -> torch.Tensor:
    """(K, N) weights softmax_k(-CE(z_k, y)) per sample."""
    ce = torch.stack([F.cross_entropy(at_least_float32(z), labels,
                                      reduction='none')
                      for z in logits])
    return F.softmax(-ce, dim=0)


def confidence_logits(logits: Sequence[torch.Tensor],
                      labels: torch.Tensor) -> torch.Tensor:
    """sum_k w_{k,n} z_{k,n} with the confidence weights."""
    w = confidence_weights(logits, labels)
    stacked = torch.stack([at_least_float32(z) for z in logits])
    return (w[:, :, None] * stacked).sum(0)


class TeacherEnsemble(nn.Module):
    """K teachers run one after the other on the same inputs; keys
    ``teachers.<k>.*`` (so checkpoints hold ``teacher.teachers.<k>.*``)."""

    def __init__(self, teachers: Sequence[BaseModel]) -> None:
        super().__init__()
        self.teachers = nn.ModuleList(teachers)

    def __len__(self) -> int:
        return len(self.teachers)

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        return [t(inputs, data_samples, mode=mode) for t in self.teachers]


@MODELS.register_module()
class MultiTeacherDistill(FastDistill):
    """Distillation from several frozen teachers (module docstring).

    Args:
        teachers: teacher configs (or mmpretrain model-zoo names), >= 1.
        teacher_ckpts: one checkpoint path (or None) per teacher.
        combine: one of ``'mean_logits'``, ``'mean_probs'``,
            ``'confidence'``, ``'per_teacher'``.
        tau: temperature of ``'mean_probs'`` (use the loss's).
        teacher_weights: per-teacher weights of ``'per_teacher'``
            (default 1/K each).
        channels_last, teacher_dtype, teacher_mode, compile: the fast path,
            as :class:`FastDistill`.
        teacher_input: as :class:`FastDistill` (one for all teachers).
        teacher_cache: a cache of all K teachers (tools/cache_teacher.py
            on this config), or a list of K caches, one per teacher in
            teacher order (each built from a single-teacher config with the
            same --views and --seed): none is built; the combine rules apply
            to the stored logits.
        distiller, architecture, data_preprocessor, ...: as mmrazor's
            ``SingleTeacherDistill`` (``student_trainable``,
            ``calculate_student_loss``).
    """

    def __init__(self,
                 distiller: dict,
                 teachers: Sequence[Union[dict, str, BaseModel]],
                 teacher_ckpts: Optional[Sequence[Optional[str]]] = None,
                 combine: str = 'mean_logits',
                 tau: float = 1.0,
                 teacher_weights: Optional[Sequence[float]] = None,
                 channels_last: Optional[bool] = None,
                 teacher_dtype: Optional[str] = None,
                 teacher_mode: str = 'tensor',
                 compile: Union[bool, dict] = False,
                 teacher_input: Optional[dict] = None,
                 teacher_cache: Union[str, Sequence[str], None] = None,
                 student_trainable: bool = True,
                 calculate_student_loss: bool = True,
                 teacher_module_inplace: bool = False,
                 **kwargs) -> None:
        check_fast_path_options(teacher_dtype, teacher_mode)
        teachers, teacher_ckpts = teachers_and_ckpts(
            teachers, teacher_ckpts, 'MultiTeacherDistill')
        if combine not in COMBINE:
            raise ConfigError(f'MultiTeacherDistill combine must be one of '
                              f'{COMBINE}, got {combine!r}.')
        if tau <= 0:
            raise ConfigError(f'MultiTeacherDistill tau must be > 0, got '
                              f'{tau}.')
        k = len(teachers)
        if teacher_weights is None:
            teacher_weights = [1.0 / k] * k
        if len(teacher_weights) != k:
            raise ConfigError(f'teacher_weights has {len(teacher_weights)} '
                              f'values for {k} teachers.')
        if teacher_cache:
            built = self._cached_teachers(
                teacher_cache, distiller, list(zip(teachers, teacher_ckpts)),
                kwargs, teacher_dtype, teacher_input, teacher_mode)
            teacher_dtype = teacher_input = None  # applied when it was built
        else:
            built = [build_teacher(t, c)
                     for t, c in zip(teachers, teacher_ckpts)]
        # teacher 0 goes through the parents' set-up (FastDistill, then
        # mmrazor's SingleTeacherDistill: in-place ops off, recorders)
        super().__init__(
            distiller=distiller, teacher=built[0], channels_last=channels_last,
            teacher_dtype=teacher_dtype, teacher_mode=teacher_mode,
            compile=compile, teacher_input=teacher_input,
            student_trainable=student_trainable,
            calculate_student_loss=calculate_student_loss,
            teacher_module_inplace=teacher_module_inplace, **kwargs)
        # ... and the others the same set-up, each with its own recorder
        # hooks (one record per teacher, in teacher order)
        self.teacher = TeacherEnsemble(built)
        if not teacher_module_inplace:
            self.set_module_inplace_false(self.teacher, 'self.teacher')
        for t in built[1:]:
            self.distiller.prepare_from_teacher(t)
        self.teacher_cache = teacher_cache
        self.combine, self.tau = combine, float(tau)
        self.teacher_weights = [float(w) for w in teacher_weights]
        # the fast path again, now over every teacher (idempotent for
        # teacher 0: same memory format, dtype, compile options)
        self._setup_fast_path(channels_last, teacher_dtype, teacher_mode,
                              compile)

    @property
    def teachers(self) -> nn.ModuleList:
        return self.teacher.teachers

    # ------------------------------------------------------------------
    def _teacher_forward(self, batch_inputs, data_samples) -> None:
        super()._teacher_forward(batch_inputs, data_samples)
        k = len(self.teachers)
        for name, rec in self.distiller.teacher_recorders.recorders.items():
            if len(rec.data_buffer) != k:
                raise ConfigError(
                    f'teacher recorder {name!r} recorded '
                    f'{len(rec.data_buffer)} outputs for {k} teachers; '
                    'MultiTeacherDistill needs one record per teacher.')
        if self.combine == 'per_teacher':
            return
        labels = None
        if self.combine == 'confidence':
            labels = torch.cat([ds.gt_label for ds in data_samples]).to(
                batch_inputs.device)
        for name, rec in self.distiller.teacher_recorders.recorders.items():
            rec.data_buffer[:] = [self.combine_outputs(
                list(rec.data_buffer), labels, name).to(batch_inputs.dtype)]

    def combine_outputs(self, outs: List[torch.Tensor],
                        labels: Optional[torch.Tensor] = None,
                        name: str = '') -> torch.Tensor:
        """One ensemble output from the K teachers' outputs."""
        shapes = {tuple(o.shape) for o in outs}
        if len(shapes) != 1:
            raise ConfigError(
                f'teacher recorder {name!r}: the teachers\' outputs have '
                f'different shapes {sorted(shapes)}; combine={self.combine!r}'
                " needs equal shapes. Fix: combine='per_teacher'.")
        if self.combine == 'mean_logits':
            return mean_logits(outs)
        if outs[0].dim() != 2:
            raise ConfigError(
                f"combine={self.combine!r} works on (N, C) logits, but "
                f'teacher recorder {name!r} holds {tuple(outs[0].shape)}. '
                "Fix: record the teachers' logits (head.fc) or use "
                "'mean_logits' / 'per_teacher'.")
        if self.combine == 'mean_probs':
            return mean_probs(outs, self.tau)
        return confidence_logits(outs, labels)

    def _distill_losses(self, data_samples) -> dict:
        if self.combine != 'per_teacher':
            return super()._distill_losses(data_samples)
        d = self.distiller
        losses = {}
        for k, w in enumerate(self.teacher_weights):
            for loss_name, mapping in d.loss_forward_mappings.items():
                kwargs = {}
                for key, record in mapping.items():
                    record = dict(record)
                    if not record.get('from_student', True):
                        record['record_idx'] = k
                    kwargs[key] = d.get_record(**record)
                losses[f'{loss_name}_t{k}'] = w * d.distill_losses[
                    loss_name](**kwargs)
        return losses
