"""Preemption: SIGTERM / SIGUSR1 stop with a checkpoint at the iteration,
mid-epoch resume, RNG states that load with weights_only=True."""
import os.path as osp
import random
import re
import signal
import types

import numpy as np
import pytest
import torch
from mmengine.runner import EpochBasedTrainLoop

from kd_plugins.engine.preemption import (PreemptionHook,
                                          ResumableEpochBasedTrainLoop,
                                          get_rng_state, resumable_train_cfg,
                                          set_rng_state)
from kd_plugins.errors import ConfigError
from tests.conftest import ROOT, SMALL_TRAIN, run_tool


def _draws():
    return (random.random(), float(np.random.rand()),
            float(torch.rand(1)))


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = get_rng_state()
    path = tmp_path / 'rng.pth'
    torch.save(dict(meta=dict(kd_rng=[state])), path)
    loaded = torch.load(path, weights_only=True)['meta']['kd_rng'][0]
    expected = _draws()
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    assert _draws() != expected
    set_rng_state(loaded)
    assert _draws() == expected


def test_validation_does_not_shift_the_training_random_stream():
    hook = PreemptionHook()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    expected = _draws()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    hook.before_val(None)
    _draws()  # what validation draws (data loader seeds, ...)
    hook.after_val(None)
    assert _draws() == expected


def test_train_cfg_gets_the_resumable_loops():
    assert resumable_train_cfg(dict(max_epochs=3))['type'] == \
        'ResumableEpochBasedTrainLoop'
    iters = resumable_train_cfg(dict(by_epoch=False, max_iters=9))
    assert iters == dict(type='ResumableIterBasedTrainLoop', max_iters=9)
    assert resumable_train_cfg(dict(type='IterBasedTrainLoop', max_iters=9))[
        'type'] == 'ResumableIterBasedTrainLoop'
    own = dict(type='MyLoop', max_epochs=3)
    assert resumable_train_cfg(own) == own  # a loop of the user's own


def test_unknown_signal_name_is_refused():
    with pytest.raises(ConfigError, match="unknown signal 'SIGTREM'"):
        PreemptionHook(signals=('SIGTREM', ))


def test_mid_epoch_checkpoint_with_mmengines_loop_is_refused():
    """mmengine's EpochBasedTrainLoop would restart the epoch from its first
    batch and train the first batches twice: refused with the fix."""
    loop = EpochBasedTrainLoop.__new__(EpochBasedTrainLoop)
    loop.dataloader = list(range(7))
    runner = types.SimpleNamespace(_train_loop=loop, _resume=True)
    ckpt = dict(meta=dict(epoch=1, iter=10))  # batch 3 of epoch 2
    with pytest.raises(ConfigError, match=r'(?s)epoch 2, after batch 3.*'
                       'ResumableEpochBasedTrainLoop'):
        PreemptionHook().after_load_checkpoint(runner, ckpt)
    ckpt['meta']['iter'] = 7  # an epoch-end checkpoint: nothing to refuse
    PreemptionHook().after_load_checkpoint(runner, ckpt)
    runner._resume = False  # load_from / test: weights only
    ckpt['meta']['iter'] = 10
    PreemptionHook().after_load_checkpoint(runner, ckpt)


def test_handler_only_records_the_first_signal():
    hook = PreemptionHook()
    hook._handler(signal.SIGUSR1, None)
    hook._handler(signal.SIGTERM, None)
    assert hook._got == signal.SIGUSR1


def test_loops_refuse_the_other_schedule_kind():
    with pytest.raises(ConfigError, match='ResumableIterBasedTrainLoop'):
        ResumableEpochBasedTrainLoop(None, None, 3, by_epoch=False)


ITER_CFG = """_base_ = '{root}/configs/demo/kd_digits.py'
# iteration-based: 21 iterations (3 x 7), a checkpoint and validation every 7
train_cfg = dict(_delete_=True, type='ResumableIterBasedTrainLoop',
                 max_iters=21, val_interval=7)
param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=False, T_max=21)]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=7))
log_processor = dict(by_epoch=False)
"""


def test_iteration_based_run_preempted_and_resumed_bit_exact(digits_teacher,
                                                             tmp_path):
    _, teacher, _ = digits_teacher
    cfg = tmp_path / 'kd_iters.py'
    cfg.write_text(ITER_CFG.format(root=ROOT))
    opts = ['--cfg-options', f'model.teacher_ckpt={teacher}',
            'model.architecture.backbone.drop_path_rate=0.3', *SMALL_TRAIN]
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    run_tool(['tools/train.py', str(cfg), '--work-dir', full, *opts])
    # SIGTERM after the checkpoint and validation of iteration 7
    proc = run_tool(['tools/train.py', str(cfg), '--work-dir', part, *opts],
                    term_at=r'Iter\(train\)\s+\[\s*10/21\]')
    # the signal reaches it while it logs iteration 10: it stops after 10
    # or 11 (the iteration in progress finishes)
    n = int(re.findall(r'stopped by SIGTERM after iteration (\d+);',
                       proc.stdout)[0])
    assert n in (10, 11), proc.stdout[-3000:]
    proc = run_tool(['tools/train.py', str(cfg), '--work-dir', part,
                     '--resume', *opts])
    assert f'kd_plugins: resuming at iteration {n + 1}: the sampler skips ' \
        f'the {n} batches' in proc.stdout, proc.stdout[-3000:]
    a = torch.load(osp.join(full, 'iter_21.pth'), weights_only=True)
    b = torch.load(osp.join(part, 'iter_21.pth'), weights_only=True)
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k


def _mmpretrain_tool(name):
    """mmpretrain's own ``tools/<name>.py`` (its installed copy) as a
    module, for its argument handling."""
    import importlib.util

    import mmpretrain
    path = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools',
                    f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'mmpretrain_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('config', ['configs/demo/kd_digits.py',
                                    'configs/kd_r34_r18_in1k.py'])
def test_train_tool_gives_the_run_mmpretrains_tool_gives(config, tmp_path,
                                                         monkeypatch):
    """The config is the whole run: for the same arguments, kd_plugins'
    tools/train.py hands the runner the config mmpretrain's own
    tools/train.py hands it (no loop, hook or data set wrapper added at run
    time), with a teacher cache and the skip policy set from the command
    line; the loop and the preemption hook are the config's own."""
    from mmengine.config import Config

    from tests.conftest import load_tool
    ours, theirs = load_tool('train'), _mmpretrain_tool('train')
    argv = [osp.join(ROOT, config), '--work-dir', str(tmp_path),
            '--cfg-options', 'model.teacher_cache=/some/cache',
            'data_errors.policy=skip', 'train_cfg.max_epochs=2']
    a = ours.merge_args(ours.load_config(argv[0]), ours.parse_args(argv))
    monkeypatch.setattr('sys.argv', ['train.py', *argv])
    b = theirs.merge_args(Config.fromfile(argv[0]), theirs.parse_args())
    assert a.to_dict() == b.to_dict()
    assert a.train_cfg == dict(type='ResumableEpochBasedTrainLoop',
                               max_epochs=2, val_interval=a.train_cfg[
                                   'val_interval'])
    assert [h['type'] for h in a.custom_hooks].count('PreemptionHook') == 1
    assert a.train_dataloader.dataset.type != 'KDCachedViews'  # the loop's


def test_every_config_declares_the_resumable_loop_and_the_hooks():
    """Every shipped training config (top level, demo, few-labels, IE-KD
    stage 1, teachers) names kd_plugins' loop and PreemptionHook itself, so
    any entry point (mmpretrain's tools/train.py, mim train, slurm_train.sh)
    resumes mid-epoch and stops cleanly on SIGTERM."""
    import glob

    from mmengine.config import Config

    from kd_plugins.distill_config import RUN_HOOKS
    paths = sorted(p for pattern in ('configs/*.py', 'configs/*/*.py',
                                     'configs/demo/few_labels/*.py')
                   for p in glob.glob(osp.join(ROOT, pattern))
                   if '_base_' not in p)
    assert len(paths) > 40, paths
    runtime = Config.fromfile(osp.join(
        ROOT, 'configs/_base_/default_runtime.py'))
    assert [dict(h) for h in runtime.custom_hooks] == RUN_HOOKS
    for path in paths:
        cfg = Config.fromfile(path)
        assert cfg.train_cfg.get('type') in (
            'ResumableEpochBasedTrainLoop',
            'ResumableIterBasedTrainLoop'), path
        assert 'by_epoch' not in cfg.train_cfg, path
        types = [h['type'] for h in cfg.custom_hooks]
        assert types.count('PreemptionHook') == 1, path
