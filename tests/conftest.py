import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import kd_plugins  # noqa: E402,F401


def run_tool(args, cwd=ROOT, timeout=900, check=True, env=None):
    """Run ``python <args>`` in the repo root; return the CompletedProcess."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1')
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f'{" ".join(args)} exited {proc.returncode}\n'
            f'--- stdout ---\n{proc.stdout[-4000:]}\n'
            f'--- stderr ---\n{proc.stderr[-6000:]}')
    return proc


@pytest.fixture(scope='session')
def root():
    return ROOT


@pytest.fixture(scope='session')
def digits_teacher(tmp_path_factory):
    """A Digits teacher trained for 8 epochs by tools/train.py.

    Returns ``(work_dir, checkpoint, stdout)``; shared by every test that
    needs a real teacher checkpoint.
    """
    wd = str(tmp_path_factory.mktemp('teacher'))
    proc = run_tool(['tools/train.py', 'configs/demo/teacher_digits.py',
                     '--work-dir', wd, '--cfg-options',
                     'train_cfg.max_epochs=8', 'train_cfg.val_interval=8'])
    ckpt = osp.join(wd, 'epoch_8.pth')
    assert osp.isfile(ckpt)
    return wd, ckpt, proc.stdout + proc.stderr


def stopped_copy(work_dir: str, dst: str, epoch: int) -> str:
    """Copy a finished work dir as if the run had stopped after ``epoch``:
    later ``epoch_*.pth`` files are removed and ``last_checkpoint`` points at
    ``epoch_<epoch>.pth``, so ``--resume`` continues from there."""
    import glob
    import re
    import shutil
    shutil.copytree(work_dir, dst)
    for path in glob.glob(osp.join(dst, 'epoch_*.pth')):
        if int(re.findall(r'epoch_(\d+)\.pth$', path)[0]) > epoch:
            os.remove(path)
    with open(osp.join(dst, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(dst, f'epoch_{epoch}.pth'))
    return dst
