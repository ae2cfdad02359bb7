"""The student's batch as a teacher trained with other preprocessing sees it.

A distiller normalises each batch once, with the student's data preprocessor
(mean ``m_s``, std ``s_s``, channel order). A teacher from another family
(a model-zoo ViT, a timm model) may have been trained with another mean /
std, the other channel order or another input size. Rather than load and
augment every image twice, the teacher's input is computed from the
student's, per channel::

    raw = x * s_s + m_s                   # back to pixel values (0-255)
    raw = raw[:, ::-1]                     # only if the channel order differs
    x_t = resize((raw - m_t) / s_t, size)  # the teacher's normalisation, size

The map is affine, so it commutes with the batch augments (Mixup / CutMix)
the student's preprocessor applies after normalising: the teacher sees the
same mixed images. Resizing is bilinear (``align_corners=False``,
antialiased when it shrinks).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError


def _vector(value, name: str) -> torch.Tensor:
    if value is None:
        return None
    v = torch.as_tensor(value, dtype=torch.float32).flatten()
    if v.numel() not in (1, 3):
        raise ConfigError(f'teacher_input.{name} must have 1 or 3 values '
                          f'(one per channel), got {list(v.tolist())}.')
    return v.expand(3).clone().view(1, 3, 1, 1)


class TeacherInput(nn.Module):
    """Re-normalise / reorder / resize the student's batch for a teacher.

    Args:
        student_preprocessor: the distiller's ``ClsDataPreprocessor`` (its
            ``mean``, ``std`` and channel conversion are the student's).
        mean, std: the teacher's normalisation (pixel units, its channel
            order); None keeps the student's.
        to_rgb: whether the teacher's preprocessor converts BGR to RGB; None
            keeps the student's order.
        size: the teacher's input side (int) or (H, W); None keeps the
            student's size.

    Shapes: ``forward`` (N, 3, H, W) -> (N, 3, H_t, W_t).
    """

    def __init__(self, student_preprocessor: nn.Module,
                 mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None,
                 to_rgb: Optional[bool] = None,
                 size: Union[None, int, Sequence[int]] = None) -> None:
        super().__init__()
        pre = student_preprocessor
        if getattr(pre, '_enable_normalize', False):
            m_s = pre.mean.detach().float().cpu().view(1, -1, 1, 1)
            s_s = pre.std.detach().float().cpu().view(1, -1, 1, 1)
        else:  # the student sees raw pixel values
            m_s, s_s = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
        student_rgb = bool(getattr(pre, 'to_rgb', False))
        self.flip = to_rgb is not None and bool(to_rgb) != student_rgb
        m_t = _vector(mean, 'mean')
        s_t = _vector(std, 'std')
        if self.flip:  # raw values in the teacher's channel order
            m_s, s_s = m_s.flip(1), s_s.flip(1)
        m_t = m_s if m_t is None else m_t
        s_t = s_s if s_t is None else s_t
        if (s_t <= 0).any():
            raise ConfigError(f'teacher_input.std must be > 0, got '
                              f'{s_t.flatten().tolist()}.')
        # x_t = x * scale + shift (after the optional channel flip)
        self.register_buffer('scale', s_s / s_t, persistent=False)
        self.register_buffer('shift', (m_s - m_t) / s_t, persistent=False)
        if isinstance(size, int):
            size = (size, size)
        self.size = None if size is None else tuple(int(s) for s in size)
        self.identity = (not self.flip and self.size is None
                         and torch.equal(self.scale, torch.ones_like(
                             self.scale))
                         and torch.equal(self.shift, torch.zeros_like(
                             self.shift)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity or x.dim() != 4:
            return x
        if self.flip:
            x = x.flip(1)
        x = x * self.scale.to(x.dtype) + self.shift.to(x.dtype)
        if self.size is not None and tuple(x.shape[2:]) != self.size:
            shrink = self.size[0] < x.shape[2] or self.size[1] < x.shape[3]
            x = F.interpolate(x, size=self.size, mode='bilinear',
                              align_corners=False, antialias=shrink)
        return x

    def extra_repr(self) -> str:
        return (f'flip_channels={self.flip}, size={self.size}, '
                f'scale={self.scale.flatten().tolist()}, '
                f'shift={self.shift.flatten().tolist()}')


__all__ = ['TeacherInput']
