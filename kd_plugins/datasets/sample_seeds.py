"""Random draws that belong to the sample, not to the loader.

A training sample's random draws (its augmentation, a teacher cache's view)
come from a seed of (run seed, epoch, sample index) only, whichever loader
worker or rank produces it and whatever that worker drew before:

* :class:`SampleSeededSampler` wraps the config's sampler (e.g. mmengine's
  ``DefaultSampler``: the same order) and yields ``(epoch, index)`` keys
  instead of indices. It can skip the first samples of an epoch without
  loading them (a mid-epoch resume);
* :class:`SampleSeededDataset` (the outermost wrapper of the training set)
  seeds python's ``random``, numpy's and torch's global generators from
  ``sample_seed(seed, epoch, index)`` around each sample's
  ``__getitem__`` and restores them afterwards, so the main process's
  random stream (dropout, batch augments) is untouched by data loading.

Then the batches of an epoch are the same with ``num_workers`` 0 or N,
persistent workers or not, one process or several, and a resumed run; and
the draws differ between epochs. kd_plugins' training loops apply both
(``kd_plugins.engine.preemption.train_loader``).
"""
from __future__ import annotations

import random
from typing import Iterator, Tuple

import numpy as np
import torch
from mmpretrain.registry import DATA_SAMPLERS, DATASETS


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed of (run seed, epoch, sample index): numpy's SeedSequence
    hash, so nearby keys give unrelated streams."""
    seq = np.random.SeedSequence([int(seed) % 2**63, int(epoch), int(index)])
    return int(seq.generate_state(1)[0])


class _ForkedRng:
    """Seed python/numpy/torch for one sample; restore them on exit."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        self.saved = (random.getstate(), np.random.get_state(),
                      torch.get_rng_state())
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)

    def __exit__(self, *exc) -> None:
        py, npy, pt = self.saved
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(pt)


@DATASETS.register_module()
class SampleSeededDataset:
    """A data set whose ``__getitem__((epoch, index))`` draws from
    ``sample_seed(seed, epoch, index)`` (a plain ``index`` is epoch 0).

    Args:
        dataset: the data set (or its config).
        seed: the run's seed (``randomness.seed``; None: 0).
    """

    def __init__(self, dataset, seed: int | None = None) -> None:
        self.dataset = (DATASETS.build(dataset) if isinstance(dataset, dict)
                        else dataset)
        self.seed = 0 if seed is None else int(seed)

    @property
    def metainfo(self) -> dict:
        return self.dataset.metainfo

    def full_init(self) -> None:
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()

    def get_data_info(self, idx: int) -> dict:
        return self.dataset.get_data_info(idx)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):
        if name == 'dataset':  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key):
        epoch, idx = key if isinstance(key, tuple) else (0, key)
        with _ForkedRng(sample_seed(self.seed, epoch, idx)):
            return self.dataset[idx]


@DATA_SAMPLERS.register_module()
class SampleSeededSampler:
    """The config's sampler, yielding ``(epoch, index)`` keys.

    Args:
        dataset: the data set (passed by mmengine's ``build_dataloader``).
        sampler: the sampler config it wraps (e.g.
            ``dict(type='DefaultSampler', shuffle=True)``), built with the
            same ``dataset`` and ``seed``.
        seed: the sampler seed mmengine passes.

    ``epoch`` is the one ``set_epoch`` gave (mmengine's
    ``DistSamplerSeedHook`` calls it before every epoch) plus one for every
    full pass over the wrapped sampler's length within one iteration (an
    infinite sampler's later passes draw anew too). :meth:`skip` drops the
    next ``n`` keys of the following iteration without any sample being
    loaded.
    """

    def __init__(self, dataset, sampler: dict, seed: int | None = None):
        self.sampler = DATA_SAMPLERS.build(
            sampler, default_args=dict(dataset=dataset, seed=seed))
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)

    def skip(self, n: int) -> None:
        """The next iteration starts ``n`` keys in (a resumed epoch)."""
        self._skip = int(n)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        skip, self._skip = self._skip, 0
        size = max(len(self.sampler), 1)
        for pos, idx in enumerate(self.sampler):
            if pos >= skip:
                yield self.epoch + pos // size, int(idx)

    def __len__(self) -> int:
        return len(self.sampler)


def seed_loader(loader_cfg: dict, seed: int | None) -> dict:
    """A training loader config whose data set and sampler draw per sample
    (:class:`SampleSeededDataset` outermost, :class:`SampleSeededSampler`
    around the config's sampler); one already seeded is returned as is."""
    loader = dict(loader_cfg)
    dataset = loader['dataset']
    if isinstance(dataset, dict) and str(dataset.get('type')).split(
            '.')[-1] == 'SampleSeededDataset':
        return loader
    loader['dataset'] = dict(type='SampleSeededDataset', dataset=dataset,
                             seed=seed)
    sampler = loader.get('sampler') or dict(type='DefaultSampler',
                                            shuffle=True)
    loader['sampler'] = dict(type='SampleSeededSampler', sampler=sampler)
    return loader
