"""Training hooks of kd_plugins (registered in mmpretrain's HOOKS)."""
from __future__ import annotations

import random

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 32-bit seed that differs per (seed, epoch, rank)."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2**32)


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Re-seed python, numpy and torch at the start of every epoch.

    mmengine seeds the RNGs once, at start-up, so a run resumed at epoch k
    draws different augmentations (and dropout masks) than the uninterrupted
    run did. Seeding from ``(seed, epoch, rank)`` makes every epoch's random
    stream independent of what happened before it, hence ``--resume``
    reproduces the uninterrupted run exactly (CPU, deterministic kernels,
    ``num_workers=0`` or workers seeded by mmengine's ``worker_init_fn``).
    """

    priority = 'VERY_HIGH'

    def before_train_epoch(self, runner) -> None:
        base = runner.seed if runner.seed is not None else 0
        seed = epoch_seed(int(base), runner.epoch, get_rank())
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
