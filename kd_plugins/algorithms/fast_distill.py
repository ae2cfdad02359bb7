"""FastDistill: mmrazor's ``SingleTeacherDistill`` with a throughput fast path.

Same config fields and checkpoint layout as ``SingleTeacherDistill`` (a config
switches with ``type='FastDistill'``; checkpoints load either way), plus:

* the frozen teacher runs in eval mode (dropout / drop-path off, BN frozen),
  under ``torch.no_grad``, in ``mode='tensor'``: no teacher loss, no label
  processing, no autograd graph (mmrazor runs ``mode='loss'`` with only BN in
  eval);
* ``channels_last``: student, teacher and inputs in NHWC (faster convolutions
  on tensor-core GPUs); numerically the same model. ``None`` (default): on
  when a GPU is present. On the CPU, torch 2.14's multi-threaded NHWC
  training aborted with "double free or corruption" (AEKT demo, 2 threads),
  so CPU runs stay NCHW unless asked;
* ``teacher_dtype='bf16'|'fp16'``: the teacher's weights are kept in that
  dtype (half the memory and bandwidth); its recorded outputs are cast back to
  the student's dtype before the losses, so every loss sees matching dtypes
  (mmrazor issue #190);
* non-blocking host-to-device copies of the (pinned) batches;
* ``compile``: ``torch.compile`` the student and teacher modules in place
  (``True`` or a dict of ``torch.compile`` options); state-dict keys do not
  change, so checkpoints stay compatible;
* ``teacher_input=dict(mean=..., std=..., to_rgb=..., size=...)``: a teacher
  trained with another normalisation or input size gets the student's batch
  re-normalised and resized (:mod:`.teacher_input`); the images are loaded
  and augmented once;
* ``teacher_cache='DIR'``: no teacher at all. The teacher's logits come from
  a cache built by ``tools/cache_teacher.py`` (per training image, the views
  it ran on); the train set is wrapped in ``KDCachedViews`` (tools/train.py
  does it) so the student sees the stored views, and a weightless
  ``CachedTeacher`` emits the stored logits where the teacher recorders
  listen (:mod:`kd_plugins.teacher_cache`). Logit recorders only.

Under ``--amp`` the whole step (teacher included) runs in mmengine's autocast
context. The teacher is never recomputed: one forward per step, its outputs
reach the losses through mmrazor's recorders.
"""
from __future__ import annotations

from typing import List, Optional, Union

import torch
from mmengine.structures import BaseDataElement
from mmrazor.models.algorithms import SingleTeacherDistill
from mmrazor.models.utils import add_prefix
from mmrazor.registry import MODELS

from ..errors import ConfigError
from ..teacher_cache import CachedTeacher, cached_teachers, teacher_options
from ..utils.teacher import build_teacher
from .teacher_input import TeacherInput

DTYPES = {None: None, 'fp32': None, 'bf16': torch.bfloat16,
          'bfloat16': torch.bfloat16, 'fp16': torch.float16,
          'float16': torch.float16}


def _cast(obj, dtype):
    if torch.is_tensor(obj):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cast(o, dtype) for o in obj)
    return obj


def check_fast_path_options(teacher_dtype, teacher_mode) -> None:
    if teacher_dtype not in DTYPES:
        raise ConfigError(f'teacher_dtype must be one of '
                          f'{sorted(k for k in DTYPES if k)} or None, got '
                          f'{teacher_dtype!r}.')
    if teacher_mode not in ('tensor', 'loss'):
        raise ConfigError(f"teacher_mode must be 'tensor' or 'loss', got "
                          f'{teacher_mode!r}.')


def student_classes(arch) -> Optional[int]:
    """The student config's ``head.num_classes`` (None if not given)."""
    head = arch.get('head') if isinstance(arch, dict) else None
    n = head.get('num_classes') if isinstance(head, dict) else None
    return n if isinstance(n, int) else None


@MODELS.register_module()
class FastDistill(SingleTeacherDistill):
    """Frozen-teacher distillation with the fast path (module docstring).

    Args:
        channels_last: NHWC memory format for models and inputs; None:
            when CUDA is available.
        teacher_dtype: None (the run's dtype), 'bf16' or 'fp16' teacher
            weights.
        teacher_mode: the teacher's forward mode; 'tensor' (default) runs
            backbone, neck and head without the loss. Use 'loss' only if a
            teacher recorder needs the loss module's inputs.
        compile: ``torch.compile`` student and teacher (bool or options).
        teacher_input: the teacher's own preprocessing when it differs from
            the student's: ``dict(mean, std, to_rgb, size)`` (each optional;
            :class:`~kd_plugins.algorithms.teacher_input.TeacherInput`).
        teacher_cache: a teacher cache directory (tools/cache_teacher.py):
            the teacher is not built; ``teacher`` / ``teacher_ckpt`` (and
            the options above that change its logits) are checked against
            the cache's.
        **kwargs: ``SingleTeacherDistill`` arguments (architecture, teacher,
            teacher_ckpt, distiller, ...). ``teacher`` may also be the name of
            an mmpretrain model-zoo model (``'resnet34_8xb32_in1k'``, as in
            ``mmpretrain.get_model``); ``teacher_ckpt`` then gives its weights
            (a local file, or the zoo's checkpoint URL).
            ``teacher_trainable`` must stay False: a trained teacher needs
            its own loss (use ATSC or mmrazor's SingleTeacherDistill).
    """

    def __init__(self, channels_last: Optional[bool] = None,
                 teacher_dtype: Optional[str] = None,
                 teacher_mode: str = 'tensor',
                 compile: Union[bool, dict] = False,
                 teacher_input: Optional[dict] = None,
                 teacher_cache: Optional[str] = None, **kwargs) -> None:
        if kwargs.get('teacher_trainable', False):
            raise ConfigError(
                'FastDistill runs a frozen teacher; teacher_trainable=True '
                'needs the teacher loss. Fix: use '
                "type='SingleTeacherDistill' (mmrazor) for a trainable "
                'teacher, or ATSC.')
        check_fast_path_options(teacher_dtype, teacher_mode)
        if teacher_cache:
            kwargs['teacher'] = self._cached_teachers(
                teacher_cache, kwargs.get('distiller'),
                [(kwargs.get('teacher'), kwargs.pop('teacher_ckpt', None))],
                kwargs, teacher_dtype, teacher_input, teacher_mode)[0]
            teacher_dtype = teacher_input = None  # applied when it was built
        else:
            # built, loaded and frozen by the one teacher builder; mmrazor's
            # set-up (recorders, in-place ops off) then takes the module
            kwargs['teacher'] = build_teacher(
                kwargs.get('teacher'), kwargs.pop('teacher_ckpt', None))
        super().__init__(**kwargs)
        self.teacher_cache = teacher_cache
        self._setup_teacher_input(teacher_input)
        self._setup_fast_path(channels_last, teacher_dtype, teacher_mode,
                              compile)

    @staticmethod
    def _cached_teachers(teacher_cache, distiller: dict, entries: list,
                         kwargs: dict, teacher_dtype, teacher_input,
                         teacher_mode) -> list:
        """The cache's stand-ins for ``entries`` ((spec, ckpt) each),
        checked against the run: its data preprocessor and fast-path
        options (``kwargs``: the algorithm's others) and the student's
        classes."""
        return cached_teachers(
            teacher_cache, distiller, entries,
            teacher_options(kwargs.get('data_preprocessor'), teacher_dtype,
                            teacher_input, teacher_mode),
            student_classes(kwargs.get('architecture')))

    def _setup_teacher_input(self, teacher_input: Optional[dict]) -> None:
        if teacher_input is not None and not isinstance(teacher_input, dict):
            raise ConfigError('teacher_input must be a dict(mean=..., '
                              'std=..., to_rgb=..., size=...), got '
                              f'{teacher_input!r}.')
        unknown = set(teacher_input or {}) - {'mean', 'std', 'to_rgb', 'size'}
        if unknown:
            raise ConfigError(f'teacher_input takes mean, std, to_rgb and '
                              f'size; got {sorted(unknown)}.')
        self.teacher_input = (TeacherInput(self.data_preprocessor,
                                           **teacher_input)
                              if teacher_input else None)

    def _setup_fast_path(self, channels_last, teacher_dtype, teacher_mode,
                         compile) -> None:
        """Memory format, teacher dtype, non-blocking copies, compile."""
        if channels_last is None:
            channels_last = torch.cuda.is_available()
        self.channels_last = channels_last
        self.teacher_dtype = DTYPES[teacher_dtype]
        self.teacher_mode = teacher_mode
        if channels_last:
            self.to(memory_format=torch.channels_last)
        if self.teacher_dtype is not None:
            self.teacher.to(self.teacher_dtype)
        # pinned batches reach the GPU asynchronously (mmpretrain's
        # ClsDataPreprocessor has no option for it; mmengine reads this flag)
        if hasattr(self.data_preprocessor, '_non_blocking'):
            self.data_preprocessor._non_blocking = True
        if compile:
            opts = compile if isinstance(compile, dict) else {}
            self.student.compile(**opts)
            if not self.uses_cache:
                self.teacher.compile(**opts)
        self.teacher.eval()

    @property
    def uses_cache(self) -> bool:
        """The teacher is a cache's stand-in (no weights, no forward)."""
        return any(isinstance(m, CachedTeacher)
                   for m in self.teacher.modules())

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: deterministic, no BN/dropout updates
        return self

    def _teacher_forward(self, batch_inputs: torch.Tensor,
                         data_samples) -> None:
        inputs = batch_inputs
        if self.teacher_input is not None:
            inputs = self.teacher_input(inputs)
        if self.teacher_dtype is not None:
            inputs = inputs.to(self.teacher_dtype)
        with self.distiller.teacher_recorders, self.distiller.deliveries, \
                torch.no_grad():
            self.teacher(inputs, data_samples, mode=self.teacher_mode)
        if self.teacher_dtype is not None:  # losses see the student's dtype
            for rec in self.distiller.teacher_recorders.recorders.values():
                buf = rec.data_buffer
                buf[:] = [_cast(x, batch_inputs.dtype) for x in buf]

    def _distill_losses(self, data_samples) -> dict:
        """The distiller's losses from the recorded outputs."""
        return self.distiller.compute_distill_losses()

    def loss(self, batch_inputs: torch.Tensor,
             data_samples: Optional[List[BaseDataElement]] = None) -> dict:
        """One teacher forward (no grad), one student forward, the losses.

        Args:
            batch_inputs: (N, C, H, W) preprocessed images.
            data_samples: N samples with ``gt_label``.
        """
        if self.channels_last and batch_inputs.dim() == 4:
            batch_inputs = batch_inputs.contiguous(
                memory_format=torch.channels_last)
        losses = dict()
        self.distiller.set_deliveries_override(False)
        self._teacher_forward(batch_inputs, data_samples)
        self.distiller.set_deliveries_override(True)
        with self.distiller.student_recorders, self.distiller.deliveries:
            if self.calculate_student_loss:
                losses.update(add_prefix(
                    self.student(batch_inputs, data_samples, mode='loss'),
                    'student'))
            else:
                with torch.set_grad_enabled(self.student_trainable):
                    self.student(batch_inputs, data_samples, mode='loss')
        if not self.distillation_stopped:
            losses.update(add_prefix(self._distill_losses(data_samples),
                                     'distill'))
        return losses
