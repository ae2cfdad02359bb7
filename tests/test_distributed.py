"""Distributed training: torchrun (gloo on CPU) and a real slurm.

For each method family a 2-process run through ``tools/dist_train.sh`` must
keep the replicas identical (``ReplicaCheckHook`` hashes every tensor on every
rank) and reach the weights of a 1-process run with the same global batch.
Batch-norm layers are frozen (``tests/dist_helpers.FreezeAllNormsHook``) for
that comparison: each rank would otherwise normalise with its own half-batch
statistics.
"""
import glob
import os
import os.path as osp
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, SMALL_TRAIN, run_tool
from tests.tolerance import DEPTH, rounding_tol

GLOBAL_BATCH = 32
STEPS = 10  # 320 Digits images: 10 steps of 32 (2 x 16)


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def _env(**extra):
    # one thread per process: two ranks share the CI machine's two cores
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable,
               PYTHONUNBUFFERED='1')
    env.update(extra)
    return env


def _run(cmd, env, timeout=900):
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{" ".join(cmd)}\n{out[-6000:]}'
    return out


def _config(tmp_path, base, model_override, name, float64=True):
    """A copy of ``base`` made deterministic: no augmentation, constant lr,
    one epoch of STEPS steps, every BN frozen, replicas checked every 5
    steps; in float64 (``float64``: tests/dist_helpers.py's Float64Hook for
    one process, a float64 DDP wrapper for two), so that one and two
    processes differ by float64 rounding only (:func:`_assert_same`)."""
    from mmengine.config import Config
    wrapper = ''
    if float64:
        cfg = Config.fromfile(osp.join(ROOT, base))
        unused = bool(cfg.get('find_unused_parameters', False))
        wrapper = ("model_wrapper_cfg = dict(type='Float64KDModelWrapper')"
                   if cfg.get('model_wrapper_cfg') else
                   "model_wrapper_cfg = dict(\n"
                   "    type='Float64MMDistributedDataParallel', "
                   "broadcast_buffers=False,\n"
                   f"    find_unused_parameters={unused})")
    path = tmp_path / f'{name}.py'
    path.write_text(f"""_base_ = '{osp.join(ROOT, base)}'
train_dataloader = dict(dataset=dict(pipeline=[dict(type='PackInputs')],
                                     indices={STEPS * GLOBAL_BATCH}))
param_scheduler = []
optim_wrapper = dict(optimizer=dict(lr=0.01))
train_cfg = dict(max_epochs=1, val_interval=1)
custom_imports = dict(imports=['kd_plugins', 'tests.dist_helpers'],
                      allow_failed_imports=False)
custom_hooks = [
    dict(type='FreezeAllNormsHook'),
    dict(type='EpochSeedHook', priority='VERY_HIGH'),
    dict(type='NonFiniteLossHook', priority='ABOVE_NORMAL'),
    dict(type='ReplicaCheckHook', interval=5),
    dict(type='PreemptionHook'),
{"    dict(type='Float64Hook')," if float64 else ''}
]
{wrapper}
{model_override}
""")
    return str(path)


def _one_and_two_processes(cfg, tmp_path, opts=()):
    """Train ``cfg`` on 1 process (batch 32) and on 2 (batch 16 each);
    return both final state dicts and the 2-process log."""
    one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
    run_tool(['tools/train.py', cfg, '--work-dir', one, '--cfg-options',
              f'train_dataloader.batch_size={GLOBAL_BATCH}', *opts],
             env={'OMP_NUM_THREADS': '1'})
    log = _run(['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir', two,
                '--cfg-options',
                f'train_dataloader.batch_size={GLOBAL_BATCH // 2}', *opts],
               _env(PORT=_free_port()))
    a = torch.load(osp.join(one, 'epoch_1.pth'), weights_only=True)
    b = torch.load(osp.join(two, 'epoch_1.pth'), weights_only=True)
    return a['state_dict'], b['state_dict'], log


# float64 rounding of one batch of 32 against two of 16 (summed over ranks):
# the widest reduction is a convolution's weight gradient over the batch's
# 32 x 32 positions, composed over the network's depth and the STEPS steps
F64_TOL = rounding_tol(torch.float64, terms=GLOBAL_BATCH * 32 * 32,
                       layers=DEPTH * STEPS)


def _assert_same(a, b, skip=(), tol=F64_TOL):
    """Each tensor of ``b`` equals ``a``'s within ``tol`` relative to the
    tensor's largest value (float64 runs: ~7e-10)."""
    assert a.keys() == b.keys()
    for k in a:
        if any(s in k for s in skip) or not a[k].is_floating_point():
            continue
        scale = float(a[k].abs().max())
        torch.testing.assert_close(b[k].double(), a[k].double(), rtol=tol,
                                   atol=tol * scale,
                                   msg=lambda m, k=k: f'{k}: {m}')


def _assert_replicas_checked(log, iters):
    for it in range(5, iters + 1, 5):
        assert f'[ReplicaCheckHook] iteration {it}: ' in log, log[-4000:]
    assert 'identical on 2 ranks (rank 0@' in log and ', rank 1@' in log


def test_kd_frozen_teacher_two_processes_equal_one(digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    cfg = _config(tmp_path, 'configs/demo/kd_digits.py', '', 'kd')
    a, b, log = _one_and_two_processes(
        cfg, tmp_path, [f'model.teacher_ckpt={teacher}'])
    _assert_replicas_checked(log, STEPS)
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    _assert_same(a, b)
    # the teacher is frozen: not one of its tensors moved on any rank
    t = torch.load(teacher, weights_only=True)['state_dict']
    for k, v in t.items():
        assert torch.equal(b['teacher.' + k], v), k


@pytest.mark.parametrize('name, cfg_file', [
    ('ie_kd', 'configs/demo/ie_kd_digits.py'),
    ('kd_layer', 'configs/demo/kd_layer_digits.py')])
def test_frozen_teacher_methods_train_under_ddp_without_unused_search(
        name, cfg_file, digits_teacher, tmp_path):
    """These configs no longer set find_unused_parameters (only IE-KD
    stage 1 needs it): every trainable parameter gets a gradient on every
    rank, or DDP would stop with 'Expected to have finished reduction'.
    (AEKT's config trains under DDP as it is in
    test_one_rank_signalled_stops_both_and_resumes_bit_exact.)"""
    from mmengine.config import Config

    from kd_plugins.kd_layer_stats import synthetic_stats
    _, teacher, _ = digits_teacher
    cfg = _config(tmp_path, cfg_file, '', name)
    assert not Config.fromfile(cfg).get('find_unused_parameters', False)
    opts = [f'model.teacher_ckpt={teacher}']
    if name == 'ie_kd':  # mechanics only: a random frozen teacher encoder
        opts.append('model.distiller.connectors.t_enc.stage1_ckpt=None')
    if name == 'kd_layer':
        stats = str(tmp_path / 'stats.npz')
        synthetic_stats(Config.fromfile(cfg), stats)
        opts += [f'model.distiller.distill_losses.{k}.stats_file={stats}'
                 for k in ('loss_penult', 'loss_inter')]
    log = _run(['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir',
                str(tmp_path / 'two'), '--cfg-options',
                f'train_dataloader.batch_size={GLOBAL_BATCH // 2}', *opts],
               _env(PORT=_free_port()))
    _assert_replicas_checked(log, STEPS)


def test_multi_teacher_two_processes_equal_one(digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    cfg = _config(tmp_path, 'configs/demo/mt_kd_digits.py',
                  "model = dict(combine='confidence')", 'mt')
    a, b, log = _one_and_two_processes(
        cfg, tmp_path, [f'model.teacher_ckpts=[{teacher},{teacher}]'])
    _assert_replicas_checked(log, STEPS)
    _assert_same(a, b)
    t = torch.load(teacher, weights_only=True)['state_dict']
    for k, v in t.items():  # both teachers frozen on every rank
        for i in (0, 1):
            assert torch.equal(b[f'teacher.teachers.{i}.' + k], v), k


def test_atsc_trained_teacher_two_processes_equal_one(digits_teacher,
                                                      tmp_path):
    _, teacher, _ = digits_teacher
    cfg = _config(tmp_path, 'configs/demo/atsc_digits.py', '', 'atsc')
    a, b, log = _one_and_two_processes(
        cfg, tmp_path, [f'model.teacher_ckpts=[{teacher}]'])
    _assert_replicas_checked(log, STEPS)
    _assert_same(a, b)
    # the teacher trained (ATSC adapts it) and its anchor copy did not
    t = torch.load(teacher, weights_only=True)['state_dict']
    assert not torch.equal(b['teachers.0.backbone.conv1.weight'],
                           t['backbone.conv1.weight'])
    assert not torch.equal(b['teachers.0.head.fc.bias'], t['head.fc.bias'])
    assert torch.equal(b['anchors.0.p0'], t['backbone.conv1.weight'])


def test_ie_dml_two_processes_equal_one(tmp_path):
    """IE-DML (two optimizers, KDModelWrapper), anti-collapse hinge active
    (student B's spread starts below min_spread): in float64 the 2-process
    run reaches the 1-process weights up to float64 rounding (in float32
    the hinge's renormalisation of nearly collapsed factors amplified
    summation-order differences to 1.1e-3 in 10 steps on a CI machine)."""
    cfg = _config(tmp_path, 'configs/demo/ie_dml_digits.py', '', 'dml')
    a, b, log = _one_and_two_processes(cfg, tmp_path)
    _assert_replicas_checked(log, STEPS)
    _assert_same(a, b)


# --------------------------------------------------- preemption under DDP
PREEMPT_CFG = """_base_ = '{base}'
# 5 steps of 2 x 16 an epoch, 2 epochs; the base's augmentation (random
# crop), one loader worker per rank; stochastic depth in the student, so
# that every rank's step draws from its own RNG stream (EpochSeedHook seeds
# (seed, epoch, rank)) and a resume must restore each rank's state
train_dataloader = dict(batch_size=16, num_workers=1,
                        persistent_workers=True, dataset=dict(indices=160))
train_cfg = dict(max_epochs=2, val_interval=2)
val_dataloader = None
val_cfg = None
val_evaluator = None
default_hooks = dict(logger=dict(interval=1))
{override}
"""
MID_EPOCH_2 = r'Epoch\(train\)\s+\[2\]\[\s*2/5\]'


def _descendants(pid: int) -> list:
    """Every process under ``pid`` (from /proc)."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _rank_pid(pid: int, rank: int) -> int:
    """The process of ``rank`` among torchrun's workers under ``pid``."""
    for child in _descendants(pid):
        try:
            with open(f'/proc/{child}/environ', 'rb') as f:
                env = f.read().split(b'\0')
        except OSError:
            continue
        if f'RANK={rank}'.encode() in env and b'LOCAL_RANK=' + str(
                rank).encode() in env:
            return child
    raise AssertionError(f'no rank {rank} under process {pid}')


def _signal_one_rank(cmd, env, pattern, rank, sig):
    """Run ``cmd`` (a 2-process launch); when a line matches ``pattern``,
    send ``sig`` to the process of ``rank`` alone. Returns (code, log)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines, sent = [], False
    try:
        for line in proc.stdout:
            lines.append(line)
            if not sent and re.search(pattern, line):
                os.kill(_rank_pid(proc.pid, rank), sig)
                sent = True
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sent, ''.join(lines)[-4000:]
    return proc.returncode, ''.join(lines)


@pytest.mark.parametrize('name, base, override', [
    ('kd', 'configs/demo/kd_digits.py',
     'model = dict(architecture=dict(backbone=dict(drop_path_rate=0.3)))'),
    ('aekt', 'configs/demo/aekt_digits.py',
     'model = dict(architecture=dict(backbone=dict(drop_path_rate=0.3)))'),
    ('ie_dml', 'configs/demo/ie_dml_digits.py',
     'model = dict(architecture=dict(backbone=dict(drop_path_rate=0.3)),\n'
     '             peer=dict(backbone=dict(drop_path_rate=0.3)))'),
])
def test_one_rank_signalled_stops_both_and_resumes_bit_exact(
        name, base, override, digits_teacher, tmp_path):
    """2 processes, augmentation, stochastic depth: SIGTERM to rank 1 alone
    in epoch 2 stops both ranks after the same iteration (one all-reduce),
    with one checkpoint holding each rank's RNG state; --resume on 2
    processes ends with the uninterrupted 2-process run's weights bit for
    bit. KD and AEKT run under mmengine's DDP wrapper, IE-DML (the hinge
    active) under KDModelWrapper."""
    _, teacher, _ = digits_teacher
    cfg = tmp_path / f'{name}.py'
    cfg.write_text(PREEMPT_CFG.format(base=osp.join(ROOT, base),
                                      override=override))
    opts = [] if name == 'ie_dml' else [f'model.teacher_ckpt={teacher}']
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')

    def cmd(work_dir, *extra):
        line = ['bash', 'tools/dist_train.sh', str(cfg), '2', '--work-dir',
                work_dir, *extra]
        return line + (['--cfg-options', *opts] if opts else [])
    _run(cmd(full), _env(PORT=_free_port()))
    code, out = _signal_one_rank(cmd(part), _env(PORT=_free_port()),
                                 MID_EPOCH_2, 1, signal.SIGTERM)
    assert code != 0, out[-4000:]
    assert 'SIGTERM received (rank 1)' in out, out[-4000:]
    assert 'SIGTERM received (rank 0)' not in out, out[-4000:]
    stopped = re.findall(r'kd_plugins: training stopped by SIGTERM after '
                         r'iteration (\d+) ', out)
    assert len(stopped) == 1, out[-4000:]  # rank 0 speaks for both
    n = int(stopped[0])
    assert 5 + 2 <= n < 10, out[-3000:]
    ckpt = torch.load(osp.join(part, f'preempt_iter_{n}.pth'),
                      weights_only=True)
    states = ckpt['meta']['kd_rng']
    assert len(states) == 2  # each rank's own RNG state
    assert not torch.equal(states[0]['torch'], states[1]['torch'])
    log = _run(cmd(part, '--resume'), _env(PORT=_free_port()))
    assert f'resuming epoch 2 at batch {n - 5 + 1} of 5: the sampler skips' \
        in log, log[-4000:]
    a = torch.load(osp.join(full, 'epoch_2.pth'), weights_only=True)
    b = torch.load(osp.join(part, 'epoch_2.pth'), weights_only=True)
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k, v in a['state_dict'].items():
        assert torch.equal(v, b['state_dict'][k]), k


def test_multi_update_method_without_its_wrapper_is_refused(digits_teacher,
                                                            tmp_path):
    _, teacher, _ = digits_teacher
    cfg = _config(tmp_path, 'configs/demo/atsc_digits.py',
                  'model_wrapper_cfg = None', 'atsc_ddp')
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir',
         str(tmp_path / 'wd'), '--cfg-options',
         f'model.teacher_ckpts=[{teacher}]'], cwd=ROOT,
        env=_env(PORT=_free_port()), capture_output=True, text=True,
        timeout=600)
    assert proc.returncode != 0
    assert "add model_wrapper_cfg = dict(type='KDModelWrapper')" in \
        proc.stdout + proc.stderr


def test_kd_layer_statistics_gathered_from_both_ranks(digits_teacher,
                                                      tmp_path):
    _, teacher, _ = digits_teacher
    cfg = 'configs/demo/kd_layer_digits.py'
    one, two = str(tmp_path / 'one.npz'), str(tmp_path / 'two.npz')
    # a budget above the data set's size: every location is kept
    opts = ['--max-locations', '10000000']
    run_tool(['tools/kd_layer_stats.py', cfg, teacher, one, *opts])
    _run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node',
          '2', '--master_port', _free_port(), 'tools/kd_layer_stats.py', cfg,
          teacher, two, *opts, '--launcher', 'pytorch'], _env())
    import json
    metas, arrays = [], []
    for path in (one, two):
        with np.load(path, allow_pickle=False) as f:
            metas.append(json.loads(str(f['meta'])))
            arrays.append({k: f[k] for k in f.files if k != 'meta'})
    assert metas[0]['world_size'] == 1 and metas[1]['world_size'] == 2
    # both shards arrived, placed by image index (the sampler's padding
    # duplicate lands on its own row): the same locations as one process
    assert metas[1]['num_locations'] == metas[0]['num_locations']
    assert metas[0]['num_locations']['penultimate'] == 1437 * 16
    np.testing.assert_allclose(arrays[1]['inter_mean'],
                               arrays[0]['inter_mean'], rtol=1e-5)
    # only rank 0 wrote: one file, no per-rank leftovers
    assert sorted(os.listdir(tmp_path)) == ['one.npz', 'two.npz']


# ---------------------------------------------------------------- slurm
def _slurm_ready():
    if not shutil.which('srun') or not shutil.which('sinfo'):
        return 'slurm is not installed here; `bash .ci/slurm_up.sh` (root) ' \
            'installs and starts a one-node cluster'
    out = subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True,
                         text=True)
    if out.returncode != 0 or not any(
            s in out.stdout for s in ('idle', 'mix', 'alloc')):
        return f'slurm is installed but no node is up: {out.stderr.strip()}'
    return None


def _need_slurm() -> None:
    """Skip where slurm is not running, except in CI (.ci/run sets
    KD_REQUIRE_SLURM=1), where a missing slurm fails the test."""
    why = _slurm_ready()
    if why is not None:
        if os.environ.get('KD_REQUIRE_SLURM') == '1':
            pytest.fail(f'KD_REQUIRE_SLURM=1 but {why}')
        pytest.skip(why)


def test_slurm_train_and_test_two_tasks(digits_teacher, tmp_path):
    """Skipped where slurm is not running, except in CI (.ci/run sets
    KD_REQUIRE_SLURM=1), where a missing slurm fails the test."""
    _need_slurm()
    _, teacher, _ = digits_teacher
    wd = str(tmp_path / 'wd')
    env = _env(GPUS='2', GPUS_PER_NODE='2', CPUS_PER_TASK='1', GRES='none',
               MASTER_PORT=_free_port())
    partition = os.environ.get('KD_SLURM_PARTITION', 'debug')
    log = _run(['bash', 'tools/slurm_train.sh', partition, 'kd_plugins_ci',
                'configs/demo/kd_digits.py', wd, '--cfg-options',
                f'model.teacher_ckpt={teacher}', 'train_cfg.max_epochs=2',
                'train_cfg.val_interval=2', 'train_dataloader.batch_size=32',
                *SMALL_TRAIN],
               env)
    # both slurm tasks trained (the replica check gathers from every rank)
    assert 'identical on 2 ranks (rank 0@' in log and ', rank 1@' in log
    assert 'Distributed launcher: slurm' in log
    assert osp.isfile(osp.join(wd, 'epoch_2.pth'))
    assert glob.glob(osp.join(wd, '*', 'vis_data', 'scalars.json'))
    out = _run(['bash', 'tools/slurm_test.sh', partition, 'kd_plugins_ci',
                'configs/demo/kd_digits.py', osp.join(wd, 'epoch_2.pth'),
                '--work-dir', str(tmp_path / 'test')], env)
    assert 'accuracy/top1' in out


def _spread_grad_worker(rank, world, port, x, out):
    import torch.distributed as dist

    from kd_plugins.algorithms.ie_dml import factor_spread
    from kd_plugins.engine.dist import all_reduce_grads
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=port)
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        part = x.chunk(world)[rank].clone().requires_grad_()
        w = torch.nn.Parameter(torch.zeros(4, 2, 2))
        spread = factor_spread(part + w, detach=False)
        (0.3 - spread).relu().backward()
        all_reduce_grads([w])
        out[rank] = torch.cat([spread.detach()[None], w.grad.flatten()])
    finally:
        dist.destroy_process_group()


def test_factor_spread_is_a_global_batch_statistic():
    """IE-DML's spread (a batch statistic, not a mean of per-sample terms)
    has the same value and, after gradient averaging, the same gradient on
    2 ranks x 3 samples as on 1 rank x 6 samples (3 + 3 uneven split too
    would differ without the global mean: 1 - ||mean||^2 depends on N)."""
    import torch.multiprocessing as mp

    from kd_plugins.algorithms.ie_dml import factor_spread
    torch.manual_seed(0)
    x = torch.randn(6, 4, 2, 2) * 0.5 + 1  # a shared part: spread < 0.3
    w = torch.nn.Parameter(torch.zeros(4, 2, 2))  # a shared shift
    spread = factor_spread(x + w, detach=False)
    assert spread.item() < 0.3  # the hinge is active
    (0.3 - spread).relu().backward()
    assert w.grad.abs().max() > 1e-3
    ref = torch.cat([spread.detach()[None], w.grad.flatten()])
    # on each half alone the statistic is different (what was wrong)
    assert abs(factor_spread(x[:3]).item() - spread.item()) > 1e-3
    out = mp.Manager().dict()
    mp.spawn(_spread_grad_worker, args=(2, _free_port(), x, out), nprocs=2)
    for rank in range(2):
        torch.testing.assert_close(out[rank], ref, rtol=1e-5, atol=1e-7)


def _wait_for(predicate, timeout, what, details=lambda: ''):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(
        f'timed out after {timeout} s waiting for {what}\n{details()}')


def test_slurm_requeued_job_resumes_bit_exact(digits_teacher, tmp_path):
    """REQUEUE=1 slurm_train.sh: a requeueable batch job. SIGUSR1 (what
    --signal=USR1@120 sends before the time limit) mid-epoch 2: the job
    saves preempt_iter_N.pth, requeues itself, and its restart resumes from
    that batch to the uninterrupted run's weights, bit for bit."""
    _need_slurm()
    _, teacher, _ = digits_teacher
    opts = ['--cfg-options', f'model.teacher_ckpt={teacher}',
            'model.architecture.backbone.drop_path_rate=0.3',
            'train_cfg.max_epochs=3', 'train_cfg.val_interval=3',
            *SMALL_TRAIN]
    full, wd = str(tmp_path / 'full'), str(tmp_path / 'wd')
    run_tool(['tools/train.py', 'configs/demo/kd_digits.py', '--work-dir',
              full, *opts], env={'OMP_NUM_THREADS': '1'})
    env = _env(GPUS='1', GPUS_PER_NODE='1', CPUS_PER_TASK='1', GRES='none',
               MASTER_PORT=_free_port(), REQUEUE='1')
    partition = os.environ.get('KD_SLURM_PARTITION', 'debug')
    job = _run(['bash', 'tools/slurm_train.sh', partition, 'kd_requeue',
                'configs/demo/kd_digits.py', wd, *opts], env).strip()
    assert job.isdigit(), job
    log = osp.join(wd, f'slurm-{job}.out')

    def read():
        return open(log).read() if osp.isfile(log) else ''

    def state():
        return subprocess.run(['squeue', '-h', '-j', job, '-o', '%T'],
                              capture_output=True, text=True).stdout.strip()
    try:
        _wait_for(lambda: re.search(r'Epoch\(train\)\s+\[2\]\[', read()),
                  300, 'epoch 2 in the job log')
        subprocess.run(['scancel', '--signal=USR1', job], check=True)
        _wait_for(lambda: 'was requeued' in read(), 120, 'the requeue')
        # slurm holds a requeued job for a while (BeginTime); release it
        # once it is pending (unless it has started again already), but
        # not within the second slurmd revoked the old credential: a
        # launch credential from that same second is refused ("Job
        # credential revoked") and the job ends without its restart
        _wait_for(lambda: 'slurm restart 1 of job' in read()
                  or state() == 'PENDING', 120, 'the pending restart')
        if state() == 'PENDING':
            time.sleep(3)
            subprocess.run(['scontrol', 'update', f'JobId={job}',
                            'StartTime=now'])
        _wait_for(lambda: 'slurm restart 1 of job' in read(), 300,
                  'the restart', lambda: subprocess.run(
                      ['scontrol', 'show', 'job', job], capture_output=True,
                      text=True).stdout + read()[-2000:])
        _wait_for(lambda: state() == '', 600, 'the end of the restart')
    finally:
        subprocess.run(['scancel', job])
    out = read()
    assert 'stopped by SIGUSR1 after iteration' in out, out[-4000:]
    assert 'slurm restart 1 of job' in out, out[-4000:]
    assert 'resuming epoch 2 at batch' in out, out[-4000:]
    a = torch.load(osp.join(full, 'epoch_3.pth'), weights_only=True)
    b = torch.load(osp.join(wd, 'epoch_3.pth'), weights_only=True)
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k


def test_skip_policy_keeps_ranks_in_step(tmp_path):
    """data_errors policy 'skip' under torchrun: each rank replaces its
    unreadable samples by the next readable ones, the batches keep their
    size (no rank waits for another), the run ends, and the skipped files
    are listed once in WORK_DIR/skipped_samples.txt."""
    from kd_plugins.datasets.image_folder import write_digits_image_folder
    root = write_digits_image_folder(str(tmp_path / 'digits'), split='test',
                                     per_class=4)
    bad = sorted(glob.glob(osp.join(root, '*', '*.png')))[::13][:3]
    for path in bad:
        with open(path, 'wb') as f:
            f.write(os.urandom(300))
    cfg = tmp_path / 'skip.py'
    base = osp.join(ROOT, 'configs/demo/teacher_digits.py')
    cfg.write_text(f"""_base_ = '{base}'
train_dataloader = dict(num_workers=1, batch_size=8, dataset=dict(
    _delete_=True, type='CustomDataset', data_root='{root}',
    pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
train_cfg = dict(max_epochs=2, val_interval=2)
data_errors = dict(policy='skip', max_skipped=5)
""")
    wd = tmp_path / 'wd'
    log = _run(['bash', 'tools/dist_train.sh', str(cfg), '2', '--work-dir',
                str(wd)], _env(PORT=_free_port()), timeout=600)
    assert (wd / 'epoch_2.pth').is_file(), log[-4000:]
    assert 'kd_plugins: skipped ' in log
    listed = (wd / 'skipped_samples.txt').read_text().splitlines()
    assert sorted(listed) == sorted(bad), listed  # each once, 2 epochs
