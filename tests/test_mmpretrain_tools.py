"""kd_plugins through mmpretrain's own tools, each run in a fresh interpreter.

mmpretrain's ``tools/train.py``, ``tools/test.py``, ``dist_train.sh`` and
``slurm_train.sh`` (the copies installed in ``mmpretrain/.mim/tools``) know
nothing of kd_plugins: the config's ``custom_imports`` brings it in. So these
runs never fork from the test zygote (tests/zygote.py, where kd_plugins is
imported already): :func:`mmpretrain_tool` starts ``python SCRIPT`` anew, and
the first test shows that such a run fails without ``custom_imports``.
"""
import glob
import os
import os.path as osp
import re
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tests.conftest import MIM_TOOLS, ROOT, mmpretrain_tool, run_tool, tool_env

pytestmark = pytest.mark.e2e

# Digits, shrunk: 10 training images a class (2 batches of 64), 2 epochs (the
# warm-up scheduler needs more than one), logged every batch; validation and
# test on 64 of the 360 test images
TRAIN = ['train_dataloader.dataset.num_per_class=10', 'train_cfg.max_epochs=2',
         'train_cfg.val_interval=2', 'default_hooks.logger.interval=1']
TEST = ['test_dataloader.dataset.indices=64']
TINY = TRAIN + ['val_dataloader.dataset.indices=64'] + TEST


@pytest.fixture(scope='module')
def workspace(digits_teacher, tmp_path_factory):
    """A folder laid out as after ``make demo`` (the demo configs name
    ``work_dirs/demo/...``): the Digits teacher (also as the second
    teacher), KD-layer statistics of the configs' shapes, and an IE-KD
    stage-1 checkpoint (one short stage-1 run); ``configs`` links to the
    checkout's."""
    from mmengine.config import Config

    from kd_plugins.kd_layer_stats import synthetic_stats
    _, teacher, _ = digits_teacher
    ws = tmp_path_factory.mktemp('mmpretrain_ws')
    demo = ws / 'work_dirs' / 'demo'
    demo.mkdir(parents=True)
    os.symlink(osp.join(ROOT, 'configs'), ws / 'configs')
    for name in ('teacher.pth', 'teacher2.pth'):
        shutil.copy(teacher, demo / name)
    synthetic_stats(Config.fromfile(osp.join(
        ROOT, 'configs/demo/kd_layer_digits.py')),
        str(demo / 'kd_layer_stats.npz'))
    stage1 = str(ws / 'stage1')
    run_tool(['tools/train.py', 'configs/demo/ie_kd_stage1_digits.py',
              '--work-dir', stage1, '--cfg-options',
              f'model.teacher_ckpt={teacher}', *TRAIN])
    shutil.copy(osp.join(stage1, 'epoch_2.pth'), demo / 'ie_stage1.pth')
    return ws


METHOD_CONFIGS = sorted(
    osp.relpath(p, ROOT) for p in glob.glob(
        osp.join(ROOT, 'configs/demo/*_digits.py'))
    if not re.search(r'/(teacher2?|student|ie_kd_stage1)_digits\.py$', p))


def test_without_custom_imports_mmpretrains_tool_knows_no_kd_plugins(
        workspace):
    """The proof that these runs are fresh interpreters: the KD config
    without its ``custom_imports`` line does not build (mmrazor 1.0.0 does
    not even import on this torch without kd_plugins.compat's fixes; in the
    zygote, where kd_plugins is imported already, it would train)."""
    cfg = workspace / 'kd_no_imports.py'
    cfg.write_text(f"_base_ = '{osp.join(ROOT, 'configs/demo/kd_digits.py')}'"
                   '\ncustom_imports = None\n')
    proc = mmpretrain_tool('train.py', [str(cfg), '--work-dir',
                                        str(workspace / 'no_imports'),
                                        '--cfg-options', *TINY],
                           cwd=workspace, check=False)
    assert proc.returncode != 0
    assert '`torch>=1.13` is not installed properly' in proc.stderr or \
        re.search(r"(FastDistill|ResumableEpochBasedTrainLoop|EpochSeedHook)"
                  r".* is not in the", proc.stderr), proc.stderr[-3000:]


def _train_and_test(workspace, config):
    """mmpretrain's train.py then test.py on one config; the test top-1."""
    name = osp.splitext(osp.basename(config))[0]
    wd = str(workspace / 'runs' / name)
    mmpretrain_tool('train.py', [config, '--work-dir', wd,
                                 '--cfg-options', *TINY], cwd=workspace)
    proc = mmpretrain_tool('test.py', [config, osp.join(wd, 'epoch_2.pth'),
                                       '--work-dir', wd + '_test',
                                       '--cfg-options', *TEST],
                           cwd=workspace)
    found = re.findall(r'accuracy/top1: ([\d.]+)', proc.stdout + proc.stderr)
    assert found, (proc.stdout + proc.stderr)[-3000:]
    return float(found[-1])


def test_every_method_config_trains_and_tests_with_mmpretrains_tools(
        workspace):
    """Every Digits method config trains 2 short epochs with mmpretrain's
    tools/train.py and its checkpoint tests with mmpretrain's tools/test.py
    (two runs at a time; each a fresh interpreter)."""
    assert len(METHOD_CONFIGS) >= 11, METHOD_CONFIGS
    with ThreadPoolExecutor(2) as pool:
        futures = {c: pool.submit(_train_and_test, workspace, c)
                   for c in METHOD_CONFIGS}
    failed, top1 = [], {}
    for config, future in futures.items():
        try:
            top1[config] = future.result()
        except AssertionError as err:
            failed.append(f'{config}: {str(err)[-2500:]}')
    assert not failed, '\n\n'.join(failed)
    # tested: a number came out for every method, within [0, 100]
    assert all(0.0 <= v <= 100.0 for v in top1.values()), top1


# ------------------------------------------------- file-based data, workers
FILE_CFG = """_base_ = '{root}/configs/demo/kd_digits.py'
# the Digits training images as PNG files (an ImageFolder tree), decoded and
# augmented (random resized crop, flip) in 2 loader workers
train_dataloader = dict(
    batch_size=32, num_workers=2, persistent_workers=True,
    dataset=dict(_delete_=True, type='CustomDataset', data_prefix='{data}',
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='RandomResizedCrop', scale=32,
                                crop_ratio_range=(0.5, 1.0)),
                           dict(type='RandomFlip', prob=0.5,
                                direction='horizontal'),
                           dict(type='PackInputs')]))
val_dataloader = dict(dataset=dict(indices=64))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=3, val_interval=3)
default_hooks = dict(logger=dict(interval=1))
"""
EPOCH2_BATCH3 = r'Epoch\(train\)\s+\[2\]\[\s*3/5\]'


@pytest.fixture(scope='module')
def file_config(digits_teacher, tmp_path_factory):
    """A KD config on a file-based training set (160 PNG files: 5 batches
    of 32 an epoch, 2 workers) and the teacher checkpoint."""
    from kd_plugins.datasets import write_digits_image_folder
    _, teacher, _ = digits_teacher
    root = tmp_path_factory.mktemp('file_data')
    data = write_digits_image_folder(str(root / 'train'), per_class=16)
    cfg = root / 'kd_files.py'
    cfg.write_text(FILE_CFG.format(root=ROOT, data=data))
    return str(cfg), teacher, root


def _interrupted(args, cwd, pattern, sig):
    """mmpretrain's train.py in a new process, sent ``sig`` when a line of
    its output matches ``pattern``; returns (returncode, output)."""
    proc = subprocess.Popen([sys.executable, osp.join(MIM_TOOLS, 'train.py'),
                             *args], cwd=cwd, env=tool_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines, sent = [], False
    try:
        for line in proc.stdout:
            lines.append(line)
            if not sent and re.search(pattern, line):
                os.kill(proc.pid, sig)
                sent = True
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sent, ''.join(lines)[-4000:]
    return proc.returncode, ''.join(lines)


def _weights(path):
    return torch.load(path, map_location='cpu',
                      weights_only=True)['state_dict']


def _assert_bit_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f'{k} differs'


def test_sigterm_then_resume_equals_the_uninterrupted_run(file_config,
                                                          tmp_path):
    """With mmpretrain's tools/train.py on files with 2 workers: SIGTERM in
    epoch 2 saves a checkpoint at that batch and ends the process with one
    line and exit 143 (no traceback); --resume (non-persistent workers this
    time) skips the trained batches in the sampler and ends with the
    uninterrupted run's weights bit for bit."""
    cfg, teacher, _ = file_config
    opts = ['--cfg-options', f'model.teacher_ckpt={teacher}']
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    mmpretrain_tool('train.py', [cfg, '--work-dir', full, *opts], cwd=tmp_path)
    code, out = _interrupted([cfg, '--work-dir', part, *opts], tmp_path,
                             EPOCH2_BATCH3, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, out[-4000:]
    assert 'Traceback' not in out, out[-4000:]
    stopped = [ln for ln in out.splitlines()
               if ln.startswith('kd_plugins: training stopped by SIGTERM')]
    assert len(stopped) == 1, out[-4000:]
    n = int(re.findall(r'preempt_iter_(\d+)\.pth', stopped[0])[0])
    assert 5 + 3 <= n < 10, stopped  # in epoch 2, at or after batch 3
    proc = mmpretrain_tool('train.py', [
        cfg, '--work-dir', part, '--resume', *opts,
        'train_dataloader.persistent_workers=False'], cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert (f'resuming epoch 2 at batch {n - 5 + 1} of 5: the sampler skips '
            f'the {n - 5} batches') in log, log[-4000:]
    _assert_bit_equal(_weights(osp.join(full, 'epoch_3.pth')),
                      _weights(osp.join(part, 'epoch_3.pth')))


def test_cached_run_killed_and_resumed_with_workers(file_config, tmp_path):
    """``model.teacher_cache`` is all mmpretrain's train.py needs: the run
    trains from the cache (no teacher weights in its checkpoints), on files
    with 2 workers, and a SIGKILL in epoch 2 then --resume ends with the
    uninterrupted cached run's weights bit for bit."""
    cfg, teacher, _ = file_config
    cache = str(tmp_path / 'cache')
    run_tool(['tools/cache_teacher.py', cfg, cache, '--views', '4',
              '--cfg-options', f'model.teacher_ckpt={teacher}'])
    opts = ['--cfg-options', f'model.teacher_ckpt={teacher}',
            f'model.teacher_cache={cache}']
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    mmpretrain_tool('train.py', [cfg, '--work-dir', full, *opts], cwd=tmp_path)
    assert not any(k.startswith('teacher.') for k in
                   _weights(osp.join(full, 'epoch_3.pth')))
    code, out = _interrupted([cfg, '--work-dir', part, *opts], tmp_path,
                             EPOCH2_BATCH3, signal.SIGKILL)
    assert code == -signal.SIGKILL, out[-3000:]
    mmpretrain_tool('train.py', [cfg, '--work-dir', part, '--resume', *opts],
                    cwd=tmp_path)
    _assert_bit_equal(_weights(osp.join(full, 'epoch_3.pth')),
                      _weights(osp.join(part, 'epoch_3.pth')))


def test_skip_policy_skips_a_corrupt_file(file_config, tmp_path):
    """``data_errors.policy=skip`` from the command line of mmpretrain's
    tool: the corrupt file is skipped (listed in skipped_samples.txt, a
    warning names it) and training goes on."""
    cfg, teacher, root = file_config
    data = tmp_path / 'data'
    shutil.copytree(root / 'train', data)
    bad = sorted(glob.glob(str(data / '3' / '*.png')))[0]
    with open(bad, 'wb') as f:
        f.write(b'not a png')
    wd = str(tmp_path / 'wd')
    proc = mmpretrain_tool('train.py', [
        cfg, '--work-dir', wd, '--cfg-options',
        f'model.teacher_ckpt={teacher}', 'data_errors.policy=skip',
        f'train_dataloader.dataset.data_prefix={data}',
        'train_cfg.max_epochs=2', 'train_cfg.val_interval=2'], cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert f'kd_plugins: skipped {bad}' in log, log[-4000:]
    with open(osp.join(wd, 'skipped_samples.txt')) as f:
        assert f.read().split() == [bad]  # skipped in both epochs, once
    assert osp.isfile(osp.join(wd, 'epoch_2.pth'))


# ---------------------------------------------------- mmpretrain's launchers
def test_mmpretrain_dist_train_sh_trains_two_processes(digits_teacher,
                                                       tmp_path):
    """mmpretrain's dist_train.sh (torch.distributed.launch, 2 processes,
    gloo on the CPU) trains KD from the config alone."""
    from tests.test_distributed import _free_port
    _, teacher, _ = digits_teacher
    wd = str(tmp_path / 'wd')
    path = osp.dirname(sys.executable) + os.pathsep + os.environ['PATH']
    env = tool_env(dict(PORT=_free_port(), PATH=path))
    proc = subprocess.run(
        ['bash', osp.join(MIM_TOOLS, 'dist_train.sh'),
         osp.join(ROOT, 'configs/demo/kd_digits.py'), '2', '--work-dir', wd,
         '--cfg-options', f'model.teacher_ckpt={teacher}', *TINY],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    assert osp.isfile(osp.join(wd, 'epoch_2.pth'))


def test_mmpretrain_slurm_train_sh_trains_on_a_real_slurm(digits_teacher,
                                                          tmp_path):
    """mmpretrain's slurm_train.sh on the one-node slurm of .ci/slurm_up.sh
    (2 tasks; its --gres=gpu:2 gets the stand-in gpus; gloo on the CPU)
    trains KD from the config alone. Skipped where slurm is not running,
    except in CI (KD_REQUIRE_SLURM=1)."""
    from tests.test_distributed import _free_port, _need_slurm
    _need_slurm()
    _, teacher, _ = digits_teacher
    wd = str(tmp_path / 'wd')
    path = osp.dirname(sys.executable) + os.pathsep + os.environ['PATH']
    env = tool_env(dict(GPUS='2', GPUS_PER_NODE='2', CPUS_PER_TASK='1',
                        MASTER_PORT=_free_port(), PATH=path))
    # the script runs `python -u tools/train.py`: from mmpretrain's folder
    proc = subprocess.run(
        ['bash', osp.join(MIM_TOOLS, 'slurm_train.sh'), 'debug',
         'kd_mmpretrain', osp.join(ROOT, 'configs/demo/kd_digits.py'), wd,
         '--cfg-options', f'model.teacher_ckpt={teacher}', *TINY],
        cwd=osp.dirname(MIM_TOOLS), env=env, capture_output=True, text=True,
        timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert 'Distributed launcher: slurm' in log and 'GPU number: 2' in log
    assert osp.isfile(osp.join(wd, 'epoch_2.pth'))
