import os
import os.path as osp
import re
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# torch 2.14.1's inductor keys its on-disk kernel cache by the machine, not
# by ATEN_CPU_CAPABILITY: kernels compiled under avx2 and loaded under
# avx512 abort the process (seen here). One cache per capability.
if 'TORCHINDUCTOR_CACHE_DIR' not in os.environ:
    import tempfile

    import torch  # noqa: E402
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = osp.join(
        tempfile.gettempdir(), 'torchinductor_kd_plugins_'
        + torch.backends.cpu.get_cpu_capability().lower())

import mmpretrain  # noqa: E402

import kd_plugins  # noqa: E402,F401

# the first log line of epoch 3: the run has saved epoch_2.pth and is in the
# middle of epoch 3 (Digits: 23 iterations per epoch, logged every 10)
MID_EPOCH_3 = r'Epoch\(train\)\s+\[3\]\[\s*\d+/'
MID_EPOCH_2 = r'Epoch\(train\)\s+\[2\]\[\s*\d+/'
# The kill / resume / export tests train 3 short epochs: 40 images per class
# (400: 7 iterations of 64), logged every 2 iterations so that epoch 3 has
# a line to be killed at. What they check (bit-equal resume, export equal to
# the distiller) does not depend on the data's size.
SMALL_TRAIN = ['train_dataloader.dataset.num_per_class=40',
               'default_hooks.logger.interval=2']


def _run_and_kill(cmd, cwd, env, timeout, kill_at, sig=None):
    """Run ``cmd``; SIGKILL it when a line of its output matches ``kill_at``.

    Returns a CompletedProcess (returncode -9 when it was killed). A run that
    outlives ``timeout`` seconds (printing or not) is killed by a watchdog
    and raises ``TimeoutError``, so it never passes for the intended kill.
    With ``sig`` (e.g. SIGTERM) that signal is sent instead, and the run is
    left to end by itself (its whole output is returned).
    """
    import re
    import signal
    import threading
    sig = signal.SIGKILL if sig is None else sig
    from tests.zygote import ZYGOTE
    if ZYGOTE.compatible(cmd[1:], env) and ZYGOTE.start():
        proc = ZYGOTE.popen(cmd[1:], cwd, env, merge_stderr=True)
    else:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    timed_out = threading.Event()

    def watchdog():
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, watchdog)
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if kill_at is not None and re.search(kill_at, line):
                os.kill(proc.pid, sig)  # SIGKILL: a real kill, no clean-up
                if sig == signal.SIGKILL:
                    break
                kill_at = None  # read on until it exits
    finally:
        timer.cancel()
        proc.stdout.close()
        proc.wait()
    if timed_out.is_set():
        raise TimeoutError(
            f'{" ".join(cmd)} ran past {timeout} s without printing a line '
            f'matching {kill_at!r}\n{"".join(lines)[-4000:]}')
    return subprocess.CompletedProcess(cmd, proc.returncode, ''.join(lines),
                                       '')


def run_tool(args, cwd=ROOT, timeout=900, check=True, env=None,
             kill_at=None, term_at=None):
    """Run ``python <args>`` in the repo root; return the CompletedProcess.

    A script run forks from the session's zygote (tests/zygote.py: the
    imports paid once, ~4 s a run saved) unless its environment changes
    what is read at import; ``KD_PLUGINS_NO_ZYGOTE=1``: fresh interpreters.

    With ``kill_at`` (a regex), the process is killed with SIGKILL as soon as
    a line of its output matches; it must have been killed (returncode -9).
    With ``term_at``, it gets SIGTERM there instead (a preemption) and must
    stop by itself with a checkpoint (returncode 143, kd_plugins'
    preempted exit).
    """
    full_env = dict(os.environ, PYTHONUNBUFFERED='1')
    full_env.update(env or {})
    if term_at is not None:
        import signal
        proc = _run_and_kill([sys.executable, *args], cwd, full_env, timeout,
                             term_at, sig=signal.SIGTERM)
        if proc.returncode != 143 or 'stopped by SIGTERM' not in proc.stdout:
            raise AssertionError(
                f'{" ".join(args)} was to stop on SIGTERM at {term_at!r} '
                f'(exit 143) but exited {proc.returncode}\n'
                f'{proc.stdout[-6000:]}')
        return proc
    if kill_at is not None:
        proc = _run_and_kill([sys.executable, *args], cwd, full_env, timeout,
                             kill_at)
        if proc.returncode != -9:
            raise AssertionError(
                f'{" ".join(args)} was to be killed at {kill_at!r} but exited'
                f' {proc.returncode}\n{proc.stdout[-6000:]}')
        return proc
    from tests.zygote import ZYGOTE
    if ZYGOTE.compatible(args, full_env) and ZYGOTE.start():
        # a fork of a process that has imported everything (tests/zygote.py)
        proc = ZYGOTE.run(args, cwd, full_env, timeout)
    else:
        proc = subprocess.run([sys.executable, *args], cwd=cwd, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f'{" ".join(args)} exited {proc.returncode}\n'
            f'--- stdout ---\n{proc.stdout[-4000:]}\n'
            f'--- stderr ---\n{proc.stderr[-6000:]}')
    return proc


# The fast tier (`make test-fast`): tests that run in this process. A test
# is end-to-end (marker ``e2e``, kept out of the fast tier) when it starts
# other processes -- the project's tools (run_tool), torchrun/slurm, spawned
# ranks -- or needs the trained Digits teacher.
E2E_CALLS = ('run_tool(', '_run(', 'subprocess.', 'mp.spawn(',
             '_one_and_two_processes(', 'shipped_test_top1(',
             'mmpretrain_tool(')


def pytest_sessionfinish(session, exitstatus):
    from tests.zygote import ZYGOTE
    ZYGOTE.close()


def pytest_collection_modifyitems(config, items):
    import inspect
    for item in items:
        fn = getattr(item, 'function', None)
        try:
            src = inspect.getsource(fn) if fn is not None else ''
        except (OSError, TypeError):
            src = ''
        if 'digits_teacher' in getattr(item, 'fixturenames', ()) or any(
                c in src for c in E2E_CALLS):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _seeded_rngs():
    """Every test starts from the same python / numpy / torch RNG state,
    whichever tests ran before it (or were deselected): a test that draws
    random weights or inputs gets the same ones in CI as on a laptop."""
    import random

    import numpy as np
    import torch
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


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


def raw_batch(n: int = 4, seed: int = 0, classes: int = 10) -> dict:
    """What the data loader gives: n stacked uint8 CPU images 3x32x32 and
    their labels (i % classes)."""
    import torch
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(seed)
    return dict(inputs=torch.randint(0, 256, (n, 3, 32, 32), generator=g,
                                     dtype=torch.uint8),
                data_samples=[DataSample().set_gt_label(i % classes)
                              for i in range(n)])


DEMO_ARGS = ['--epochs', '2', '--only', 'kd', 'aekt', '--seeds', '2',
             '--progress-every', '5']


LAYOUT = ('configs', 'tools', 'kd_plugins', 'docs', 'benchmarks')


@pytest.fixture(scope='session')
def _demo_run(tmp_path_factory):
    """One short demo (2 epochs; teacher, student, KD, AEKT; 2 seeds) run
    as `make demo` runs it, in a scratch copy of the project layout
    (symlinks). Its folder is never changed afterwards: tests work on
    copies (:func:`demo_scratch`)."""
    root = tmp_path_factory.mktemp('demo_run')
    for name in LAYOUT:
        os.symlink(osp.join(ROOT, name), root / name)
    env = dict(os.environ, PYTHONUNBUFFERED='1',
               PATH=osp.dirname(sys.executable) + os.pathsep +
               os.environ.get('PATH', ''))
    proc = subprocess.run([sys.executable, 'tools/demo.py', *DEMO_ARGS],
                          cwd=root, env=env, capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, env, proc.stdout


@pytest.fixture
def demo_scratch(_demo_run, tmp_path):
    """A test's own copy of the short demo's folder (its ``work_dirs``
    copied, the code linked), so that no test sees what another one wrote
    there, whatever their order. Returns ``(scratch_root, env, stdout)``;
    used by the demo report test (tests/test_tools.py) and the "After make
    demo" commands (tests/test_docs.py)."""
    import shutil
    origin, env, stdout = _demo_run
    root = tmp_path / 'demo_scratch'
    root.mkdir()
    for name in LAYOUT:
        os.symlink(osp.join(ROOT, name), root / name)
    shutil.copytree(origin / 'work_dirs', root / 'work_dirs', symlinks=True)
    return root, env, stdout


def load_tool(name: str):
    """``tools/<name>.py`` as a module (registered in sys.modules, which
    dataclasses need), for tests of a tool's functions; tools/ is on
    sys.path, as when the tool runs as a script (``from _common import``)."""
    import importlib.util
    tools = osp.join(ROOT, 'tools')
    if tools not in sys.path:
        sys.path.insert(0, tools)
    spec = importlib.util.spec_from_file_location(
        f'kd_tool_{name}', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def assert_preempted(work_dir: str, epoch: int) -> int:
    """A run stopped by SIGTERM in epoch ``epoch`` left
    ``preempt_iter_N.pth`` (and its student copy, for a distiller that
    trains its student), which ``last_checkpoint`` names, written after
    ``epoch_<epoch - 1>.pth`` and before the epoch's end. Returns N."""
    import glob
    import re
    found = glob.glob(osp.join(work_dir, 'preempt_iter_*.pth'))
    assert len(found) == 1, found
    n = int(re.findall(r'preempt_iter_(\d+)\.pth$', found[0])[0])
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip() == found[0]
    assert not osp.exists(osp.join(work_dir, f'epoch_{epoch}.pth'))
    if epoch > 1:
        assert osp.isfile(osp.join(work_dir, f'epoch_{epoch - 1}.pth'))
    if osp.isfile(osp.join(work_dir, 'student.py')):
        assert osp.isfile(osp.join(work_dir, f'student_preempt_iter_{n}.pth'))
    return n


def assert_killed_after(work_dir: str, epoch: int) -> None:
    """A run killed mid-epoch ``epoch + 1`` left ``epoch_<epoch>.pth`` as the
    latest, complete checkpoint and nothing later."""
    import glob
    import re
    saved = sorted(int(re.findall(r'epoch_(\d+)\.pth$', p)[0])
                   for p in glob.glob(osp.join(work_dir, 'epoch_*.pth')))
    assert saved and saved[-1] == epoch, saved
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip().endswith(f'epoch_{epoch}.pth')


# mmpretrain's own tools, as installed (its package's .mim/tools)
MIM_TOOLS = osp.join(osp.dirname(osp.abspath(mmpretrain.__file__)), '.mim',
                     'tools')


def tool_env(extra=None):
    """A fresh interpreter's environment: this checkout first on the path
    (so the kd_plugins the config imports is the one under test), one
    thread per process (runs go two at a time on two cores)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (ROOT, os.environ.get('PYTHONPATH')) if p)
    env.update(extra or {})
    return env


def mmpretrain_tool(script, args, cwd, env=None, timeout=900, check=True):
    """``python <mmpretrain>/.mim/tools/<script> ARGS`` in a new process
    (never the zygote). Returns the CompletedProcess; ``check``: it must
    exit 0."""
    proc = subprocess.run([sys.executable, osp.join(MIM_TOOLS, script),
                           *args], cwd=cwd, env=tool_env(env),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError(
            f'mmpretrain {script} {" ".join(args)} exited '
            f'{proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc


def shipped_test_top1(config: str, checkpoint: str, work_dir: str) -> float:
    """top-1 of ``checkpoint`` by mmpretrain's own shipped tools/test.py, in
    a fresh interpreter (never the zygote, where kd_plugins is imported:
    only the config's custom_imports may bring it in)."""
    import re
    proc = mmpretrain_tool('test.py', [config, checkpoint, '--work-dir',
                                       work_dir], cwd=ROOT)
    found = re.findall(r'accuracy/top1: ([\d.]+)', proc.stdout + proc.stderr)
    assert found, (proc.stdout + proc.stderr)[-3000:]
    return float(found[-1])


def last_val_top1(log: str) -> float:
    """The last validation top-1 a training log printed (Digits: the
    validation split is the test split, so it is what tools/test.py gives
    for the last checkpoint; tests/test_tools.py checks that)."""
    vals = re.findall(r'Epoch\(val\) \[\d+\]\[\d+/\d+\]\s+accuracy/top1: '
                      r'([0-9.]+)', log)
    assert vals, 'no validation line in the log'
    return float(vals[-1])
