"""Replay transforms: the random transforms of a train pipeline that record
the parameters they draw, or apply given ones.

A teacher cache stores, for every training image, the parameters of a few
augmented *views* (crop box, flip) and the teacher's logits on each. Training
from it must give the student exactly the view the teacher saw, so the three
random transforms of mmpretrain's classification pipelines are replaced by
subclasses that draw with the parent's own RNG calls (same distribution,
same ``np.random`` stream) and either record what they drew or apply stored
parameters. ``results[VIEW_KEY]`` (a :class:`ViewParams`) selects the mode;
without it they are the parents.

Per view the parameters are one int vector, in pipeline order:

* ``RandomCrop`` / ``RandomResizedCrop``: offset_h, offset_w, target_h,
  target_w (the parents' ``rand_crop_params``; RandomCrop's are in the padded
  image);
* ``RandomFlip``: the index of the direction in ``[*directions, None]``
  (``None``: not flipped; mmcv's ``_choose_direction``).
"""
from __future__ import annotations

import itertools
from typing import List, Optional, Sequence

import numpy as np
from mmcv.transforms import RandomFlip
from mmpretrain.datasets.transforms import RandomCrop, RandomResizedCrop
from mmpretrain.registry import TRANSFORMS

from ..errors import ConfigError

VIEW_KEY = 'kd_view'

# parent type -> replay type
REPLAY = {'RandomCrop': 'KDReplayRandomCrop',
          'RandomResizedCrop': 'KDReplayRandomResizedCrop',
          'RandomFlip': 'KDReplayRandomFlip'}
# transforms that draw nothing at random (mmpretrain / mmcv registered
# names): kept as they are. Not Equalize / Invert: they apply with prob 0.5
DETERMINISTIC = {
    'LoadImageFromFile', 'PackInputs', 'PackMultiTaskInputs', 'ResizeEdge',
    'Resize', 'CenterCrop', 'Normalize', 'ToNumpy', 'ToPIL', 'ImageToTensor',
    'Transpose', 'Collect', 'ToTensor', 'Pad'}


class ViewParams:
    """One view's parameters; ``mode`` is 'record' (draw, append), 'apply'
    (consume the given ones) or 'probe' (record each random transform's
    input shape and use its first option, for :func:`enumerate_views`)."""

    def __init__(self, mode: str, params: Sequence[int] = ()) -> None:
        self.mode = mode
        self.params: List[int] = [int(p) for p in params]
        self.pos = 0
        self.options: List[list] = []  # probe: per transform, its options

    def take(self, n: int) -> List[int]:
        if self.pos + n > len(self.params):
            raise ConfigError(
                'the stored view has fewer parameters than the pipeline\'s '
                'random transforms need: the cache was built for another '
                'pipeline.\n  Fix: rebuild it with tools/cache_teacher.py.')
        out = self.params[self.pos:self.pos + n]
        self.pos += n
        return out

    def put(self, values) -> None:
        self.params.extend(int(v) for v in values)


def _crop_options(img, crop_size) -> list:
    """Every (offset_h, offset_w, target_h, target_w) RandomCrop can draw."""
    h, w = img.shape[:2]
    th, tw = crop_size
    if w == tw and h == th:
        return [(0, 0, h, w)]
    th, tw = min(h, th), min(w, tw)
    return [(oh, ow, th, tw) for oh in range(h - th + 1)
            for ow in range(w - tw + 1)]


class _Replay:
    """``transform`` with ``results[VIEW_KEY]`` at hand (``self._view``) for
    the parent's draw method, which the replay transforms override."""
    _view: Optional[ViewParams] = None

    def transform(self, results: dict) -> dict:
        self._view = results.get(VIEW_KEY)
        try:
            return super().transform(results)
        finally:
            self._view = None


class _CropReplay(_Replay):
    """The shared ``rand_crop_params`` override of the two crops."""

    def _options(self, img) -> Optional[list]:
        return None  # an infinite space

    def rand_crop_params(self, img):
        view = self._view
        if view is None:
            return super().rand_crop_params(img)
        if view.mode == 'apply':
            return tuple(view.take(4))
        if view.mode == 'probe':
            opts = self._options(img)
            if opts is None:
                raise ConfigError(
                    f'{type(self).__name__[8:]} draws from a continuous '
                    'range: --views all needs a finite augmentation space '
                    '(RandomCrop, RandomFlip).\n  Fix: give a view count, '
                    'e.g. --views 100.')
            view.options.append(opts)
            view.put(opts[0])
            return opts[0]
        params = super().rand_crop_params(img)
        view.put(params)
        return params


@TRANSFORMS.register_module()
class KDReplayRandomCrop(_CropReplay, RandomCrop):
    """mmpretrain's RandomCrop that records / applies its offset."""

    def _options(self, img) -> list:
        return _crop_options(img, self.crop_size)


@TRANSFORMS.register_module()
class KDReplayRandomResizedCrop(_CropReplay, RandomResizedCrop):
    """mmpretrain's RandomResizedCrop that records / applies its box."""


@TRANSFORMS.register_module()
class KDReplayRandomFlip(_Replay, RandomFlip):
    """mmcv's RandomFlip that records / applies its direction."""

    def _directions(self) -> list:
        d = self.direction
        return ([d] if isinstance(d, str) else list(d)) + [None]

    def _probs(self) -> list:
        dirs = self._directions()
        if isinstance(self.prob, list):
            return list(self.prob) + [1 - sum(self.prob)]
        return [self.prob / (len(dirs) - 1)] * (len(dirs) - 1) + [
            1 - self.prob]

    def _choose_direction(self):
        view = self._view
        if view is None:
            return super()._choose_direction()
        dirs = self._directions()
        if view.mode == 'apply':
            return dirs[view.take(1)[0]]
        if view.mode == 'probe':
            opts = [(i, ) for i, p in enumerate(self._probs()) if p > 0]
            view.options.append(opts)
            view.put(opts[0])
            return dirs[opts[0][0]]
        d = super()._choose_direction()
        view.put([dirs.index(d)])
        return d


def replay_pipeline(pipeline: Sequence[dict], where: str = 'the train '
                    'pipeline') -> list:
    """``pipeline`` with its random transforms replaced by the replay ones;
    a random transform that cannot be replayed (RandAugment, ColorJitter,
    RandomErasing, ...) or a type not known to be deterministic is refused,
    by name, before any work."""
    out = []
    for i, t in enumerate(pipeline):
        name = str(t.get('type', '')) if isinstance(t, dict) else \
            type(t).__name__
        short = name.split('.')[-1]
        if short in REPLAY.values():
            out.append(dict(t))
        elif short in REPLAY:
            out.append(dict(t, type=REPLAY[short]))
        elif short in DETERMINISTIC:
            out.append(dict(t) if isinstance(t, dict) else t)
        else:
            raise ConfigError(
                f'{where}[{i}] is {name}: a teacher cache can replay only '
                f'{", ".join(sorted(REPLAY))} (and keeps the deterministic '
                f'transforms {", ".join(sorted(DETERMINISTIC))}); {name} may '
                'draw at random, so the student would not see the view the '
                'teacher saw.\n  Fix: remove it from the train pipeline for '
                'a cached run, or train with the live teacher (no '
                'teacher_cache).')
    return out


def param_count(pipeline: Sequence[dict]) -> int:
    """Ints per view of a replay pipeline."""
    n = 0
    for t in pipeline:
        short = str(t.get('type', '')).split('.')[-1]
        n += 4 if 'Crop' in short and short in REPLAY.values() else 0
        n += 1 if short == 'KDReplayRandomFlip' else 0
    return n


def enumerate_views(pipeline, info: dict) -> np.ndarray:
    """(V, P) every view of a finite augmentation space for one image:
    the product of each random transform's options, in pipeline order."""
    import copy
    view = ViewParams('probe')
    pipeline(dict(copy.deepcopy(info), **{VIEW_KEY: view}))
    if not view.options:
        return np.zeros((1, 0), np.int32)
    rows = [sum((list(o) for o in combo), [])
            for combo in itertools.product(*view.options)]
    return np.asarray(rows, np.int32)
