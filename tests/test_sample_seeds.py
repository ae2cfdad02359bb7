"""Per-sample random draws (kd_plugins/datasets/sample_seeds.py) and the
resume they allow: the sampler skips the trained part of an epoch, nothing
is loaded again, and the resumed run equals the uninterrupted one bit for
bit with loader workers, persistent or not."""
import copy
import os
import os.path as osp
import random
import signal

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmpretrain.registry import DATASETS, HOOKS
from mmpretrain.structures import DataSample
from torch.utils.data import DataLoader

from kd_plugins.datasets.sample_seeds import (SampleSeededDataset,
                                              SampleSeededSampler, sample_seed,
                                              seed_loader)
from kd_plugins.engine.preemption import TrainingPreempted
from tests.test_utils import TINY


@DATASETS.register_module(force=True)
class DrawsDataset:
    """``n`` random images whose every sample draws from python, numpy and
    torch (a random shift and a random sign, as augmentations do); each
    ``__getitem__`` appends its index to ``log`` (one short O_APPEND write:
    whole lines from every worker)."""

    def __init__(self, n=24, size=8, log=None):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 255, (n, 3, size, size),
                                    dtype=torch.uint8, generator=g)
        self.log = log
        self.metainfo = dict(classes=('a', 'b', 'c'))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, idx):
        if self.log:
            with open(self.log, 'a') as f:
                f.write(f'{idx}\n')
        shift = random.randint(0, 3) + int(np.random.randint(0, 3))
        img = torch.roll(self.images[idx], shift, dims=2)
        if torch.rand(1).item() < 0.5:
            img = 255 - img
        return dict(inputs=img, data_samples=DataSample().set_gt_label(
            idx % 3))


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_sample_seed_is_a_function_of_its_key_only():
    assert sample_seed(0, 1, 2) == sample_seed(0, 1, 2)
    keys = {(s, e, i) for s in (0, 1) for e in range(3) for i in range(50)}
    assert len({sample_seed(*k) for k in keys}) == len(keys)


def test_a_samples_draws_depend_on_its_key_not_on_the_stream():
    ds = SampleSeededDataset(DrawsDataset(), seed=7)
    first = ds[(3, 5)]['inputs']
    torch.manual_seed(123), np.random.seed(4), random.seed(5)
    ds[(0, 1)], ds[(2, 9)]  # other samples in between
    assert torch.equal(ds[(3, 5)]['inputs'], first)
    # epochs draw anew (over many samples, some differ)
    assert any(not torch.equal(ds[(3, i)]['inputs'], ds[(4, i)]['inputs'])
               for i in range(24))
    # the caller's random stream is untouched by loading
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    expected = _draws()
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    ds[(1, 1)]
    assert _draws() == expected


def _loader(ds_cfg, workers, persistent, epoch, seed=3, skip=0):
    from mmengine.dataset import pseudo_collate
    cfg = seed_loader(dict(dataset=ds_cfg,
                           sampler=dict(type='DefaultSampler', shuffle=True)),
                      seed)
    ds = DATASETS.build(cfg['dataset'])
    sampler = SampleSeededSampler(ds, cfg['sampler']['sampler'], seed=seed)
    sampler.set_epoch(epoch)
    sampler.skip(skip)
    return DataLoader(ds, batch_size=4, sampler=sampler,
                      num_workers=workers, persistent_workers=persistent,
                      collate_fn=pseudo_collate)


def _epoch(loader):
    return [torch.stack(b['inputs']) for b in loader]


def test_batches_do_not_depend_on_workers_and_a_skip_loads_nothing(
        tmp_path):
    log = str(tmp_path / 'loaded.txt')
    ds_cfg = dict(type='DrawsDataset', log=log)
    ref = _epoch(_loader(ds_cfg, 0, False, epoch=2))
    for workers, persistent in ((2, False), (2, True)):
        got = _epoch(_loader(ds_cfg, workers, persistent, epoch=2))
        assert all(torch.equal(a, b) for a, b in zip(ref, got))
    assert not all(torch.equal(a, b) for a, b in zip(
        ref, _epoch(_loader(ds_cfg, 0, False, epoch=3))))
    os.remove(log)
    # resume at batch 4 of 6: the sampler starts 16 samples in; only the
    # 8 samples of batches 5 and 6 are loaded, and they are the same
    got = _epoch(_loader(ds_cfg, 2, True, epoch=2, skip=16))
    assert len(got) == 2
    assert all(torch.equal(a, b) for a, b in zip(ref[4:], got))
    with open(log) as f:
        assert len(f.read().split()) == 8


@HOOKS.register_module(force=True)
class SignalAtHook(Hook):
    """Send SIGTERM to this process after iteration ``at`` (1-based)."""

    priority = 'NORMAL'  # before PreemptionHook (LOW) looks for it

    def __init__(self, at):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


def _runner(work_dir, workers, persistent, log, resume=None, stop_at=None):
    hooks = [dict(type='EpochSeedHook', priority='VERY_HIGH'),
             dict(type='PreemptionHook')]
    if stop_at:
        hooks.append(dict(type='SignalAtHook', at=stop_at))
    model = copy.deepcopy(TINY)
    model['backbone']['drop_path_rate'] = 0.3  # the step draws too
    model['data_preprocessor'] = dict(type='mmpretrain.ClsDataPreprocessor')
    return Runner(
        model=model, work_dir=str(work_dir),
        train_dataloader=dict(
            batch_size=4, num_workers=workers,
            persistent_workers=persistent,
            dataset=dict(type='DrawsDataset', log=log),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        train_cfg=dict(type='ResumableEpochBasedTrainLoop', max_epochs=3),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01,
                                          momentum=0.9)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=hooks, randomness=dict(seed=5),
        default_scope='mmpretrain', resume=resume is not None,
        load_from=resume, experiment_name=osp.basename(str(work_dir)))


@pytest.mark.e2e  # three short trainings a case (~15 s): the full tier
@pytest.mark.parametrize('workers,persistent', [(0, False), (2, True)])
def test_resume_skips_in_the_sampler_and_equals_the_full_run(
        tmp_path, workers, persistent):
    """6 batches an epoch, 3 epochs. SIGTERM after batch 3 of epoch 2
    (iteration 9): the resumed run loads the 3 remaining batches of epoch 2
    (12 samples) and epoch 3 (24), nothing more, and ends with
    the uninterrupted run's weights bit for bit (stochastic depth in the
    step: the checkpoint's RNG states are restored too)."""
    log = str(tmp_path / 'loaded.txt')
    full = _runner(tmp_path / 'full', workers, persistent, None)
    full.train()
    with pytest.raises(TrainingPreempted) as stop:
        _runner(tmp_path / 'part', workers, persistent, None,
                stop_at=9).train()
    assert stop.value.code == 143
    ckpt = str(tmp_path / 'part' / 'preempt_iter_9.pth')
    assert osp.isfile(ckpt)
    resumed = _runner(tmp_path / 'part', workers, persistent, log,
                      resume=ckpt)
    resumed.train()
    with open(log) as f:
        assert len(f.read().split()) == 12 + 24
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
