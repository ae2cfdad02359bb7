"""Each fix in kd_plugins/compat.py, tested."""
import os
import pickle
import socket
import subprocess
import sys

import pytest
import torch

import kd_plugins  # noqa: F401
from kd_plugins import compat
from tests.conftest import ROOT


def test_mmrazor_imports_and_registers_kd_parts():
    from mmrazor.registry import MODELS
    for name in ('SingleTeacherDistill', 'ConfigurableDistiller',
                 'KLDivergence', 'DKDLoss', 'FTLoss'):
        assert MODELS.get(name) is not None, name


def test_fuser_aliases_point_to_renamed_functions():
    import torch.ao.quantization.fuser_method_mappings as fmm
    assert fmm.reverse2 is fmm._reverse2
    assert fmm.reverse3 is fmm._reverse3
    assert fmm.reverse_sequential_wrapper2 is fmm._sequential_wrapper2
    mapping = sys.modules[compat._MAPPING_MODULE]
    assert mapping.BackendConfigs == {}


def test_mmrazor_import_fails_without_the_shim():
    """Proves the shim is needed (so the fix is not dead code)."""
    code = 'import mmrazor.models'
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, cwd='/')
    assert proc.returncode != 0
    assert 'torch>=1.13' in proc.stderr


def test_mmcls_alias_resolves_to_mmpretrain():
    import mmcls.models
    import mmpretrain
    import mmpretrain.models
    assert mmcls.models.ImageClassifier is mmpretrain.models.ImageClassifier
    # the real module keeps its own spec
    assert mmpretrain.__spec__.name == 'mmpretrain'


def test_kd_soft_ce_loss_works_through_the_alias():
    from mmrazor.models.losses import KDSoftCELoss
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    tau = 2.0
    loss = KDSoftCELoss(tau=tau)(s, t)
    pt = torch.softmax(t / tau, 1)
    expected = (-(pt * torch.log_softmax(s / tau, 1)).sum(1)).mean() * tau**2
    torch.testing.assert_close(loss, expected)


def test_deit_head_subclasses_mmpretrain_head():
    from mmpretrain.models.heads import VisionTransformerClsHead
    from mmrazor.registry import MODELS
    assert issubclass(MODELS.get('DeiTClsHead'), VisionTransformerClsHead)


def _save_runner_like_checkpoint(path):
    """What mmengine writes for --resume: message hub with HistoryBuffers."""
    import numpy as np
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('kd_plugins_test_hub')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/loss', np.float64(0.5))
    hub.update_info('iter', 3)
    torch.save({'state_dict': {'w': torch.ones(2)},
                'message_hub': hub.state_dict(),
                'meta': {'epoch': np.int64(1), 'seed': 0}}, path)


def test_resume_checkpoint_loads_with_weights_only(tmp_path):
    path = tmp_path / 'ckpt.pth'
    _save_runner_like_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    buf = ckpt['message_hub']['log_scalars']['train/loss']
    assert buf.mean() == pytest.approx(1.0)
    assert buf.statistics('max') == pytest.approx(1.5)


def test_allow_list_is_explicit_and_small():
    names = {getattr(g, '__qualname__', str(g)) for g in compat.safe_globals()}
    assert 'HistoryBuffer' in names
    assert 'getattr' not in names and 'eval' not in names


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f'touch {self.target}', ))


def test_malicious_pickle_is_refused(tmp_path):
    target = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': _Evil(str(target))}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not target.exists()


class _SneakyGetattr:
    """getattr(HistoryBuffer, '__init__') -> must be refused."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer
        return (getattr, (HistoryBuffer, '__init__'))


def test_getattr_is_limited_to_history_buffer_methods(tmp_path):
    path = tmp_path / 'sneaky.pth'
    torch.save({'x': _SneakyGetattr()}, path)
    with pytest.raises(pickle.UnpicklingError, match='refused getattr'):
        torch.load(path, weights_only=True)


def _rank_lines(folder):
    return sorted(p.read_text() for p in folder.glob('rank*.txt'))


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


_DIST_SNIPPET = """
import sys
root, launcher, out = sys.argv[1:4]
sys.path.insert(0, root)
import kd_plugins
import torch, torch.distributed as dist
from mmengine.dist import init_dist
init_dist(launcher)
t = torch.ones(1) * (dist.get_rank() + 1)
dist.all_reduce(t)
msg = (f'BACKEND {dist.get_backend()} WORLD {dist.get_world_size()} '
       f'RANK {dist.get_rank()} SUM {int(t.item())}')
with open(f'{out}/rank{dist.get_rank()}.txt', 'w') as f:
    f.write(msg)
dist.destroy_process_group()
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason='tests the CPU path')
def test_pytorch_launcher_without_gpu_uses_gloo(tmp_path):
    script = tmp_path / 'd.py'
    script.write_text(_DIST_SNIPPET)
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         f'--master_port={_free_port()}', str(script), ROOT, 'pytorch',
         str(tmp_path)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _rank_lines(tmp_path) == ['BACKEND gloo WORLD 2 RANK 0 SUM 3',
                                     'BACKEND gloo WORLD 2 RANK 1 SUM 3']


@pytest.mark.skipif(torch.cuda.is_available(), reason='tests the CPU path')
def test_slurm_launcher_without_gpu_uses_gloo(tmp_path):
    script = tmp_path / 'd.py'
    script.write_text(_DIST_SNIPPET)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('SLURM_', 'MASTER_'))}
    env.update(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0',
               SLURM_NODELIST='localhost', MASTER_PORT=str(_free_port()))
    proc = subprocess.run([sys.executable, str(script), ROOT, 'slurm',
                           str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _rank_lines(tmp_path) == ['BACKEND gloo WORLD 1 RANK 0 SUM 1']


def test_gpu_path_keeps_mmengine_nccl(monkeypatch):
    """With CUDA the original mmengine init_dist (nccl) runs unchanged."""
    calls = []
    patched = compat._make_init_dist(
        lambda launcher, **kw: calls.append((launcher, kw)))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    patched('slurm', backend='nccl', port=29511)
    assert calls == [('slurm', {'backend': 'nccl', 'init_backend': 'torch',
                                'port': 29511})]


def test_first_slurm_host_expands_ranges(monkeypatch):
    monkeypatch.setattr(compat.shutil, 'which', lambda _: None)
    assert compat._first_slurm_host('node[01-04,07],gpu7') == 'node01'
    assert compat._first_slurm_host('gpu7,gpu8') == 'gpu7'


def test_init_dist_is_patched_everywhere_runner_looks():
    import mmengine.dist
    import mmengine.runner.runner as runner_mod
    assert runner_mod.init_dist is mmengine.dist.init_dist
    assert hasattr(runner_mod.init_dist, '_kd_plugins_original')


def test_mmcv_lite_warning_is_filtered_and_others_are_not():
    code = ('import warnings, sys; sys.path.insert(0, %r); import kd_plugins; '
            'warnings.warn("another warning")' % ROOT)
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert 'MultiScaleDeformableAttention' not in proc.stderr
    assert 'another warning' in proc.stderr


# ---------------------------------------------------------------- patch 6
_KILL_DURING_SAVE = r'''
import os, signal, sys
sys.path.insert(0, {root!r})
import kd_plugins, torch
from mmengine.runner.checkpoint import save_checkpoint
path = {path!r}
save_checkpoint({{'w': torch.zeros(1000)}}, path)       # the good version
real_fsync = os.fsync
def fsync_then_die(fd):   # the new bytes are written, not yet renamed
    real_fsync(fd)
    os.kill(os.getpid(), signal.SIGKILL)
os.fsync = fsync_then_die
save_checkpoint({{'w': torch.ones(1000)}}, path)        # killed mid-save
'''


def test_kill_during_checkpoint_save_keeps_the_previous_file(tmp_path):
    path = str(tmp_path / 'epoch_1.pth')
    code = _KILL_DURING_SAVE.format(root=ROOT, path=path)
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    # in place (mmengine's own put) the file would already hold ones, or be
    # truncated; with the patch it is the complete previous version
    w = torch.load(path, weights_only=True)['w']
    assert torch.equal(w, torch.zeros(1000))


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    from mmengine.fileio import get_file_backend
    path = str(tmp_path / 'sub' / 'f.txt')
    backend = get_file_backend(path)
    backend.put_text('one', path)
    backend.put_text('two', path)
    assert open(path).read() == 'two'
    assert os.listdir(tmp_path / 'sub') == ['f.txt']  # no temporary files


def test_find_latest_checkpoint_falls_back_to_the_newest_file(tmp_path):
    from mmengine.runner import find_latest_checkpoint
    for n in (2, 10):
        torch.save({}, tmp_path / f'epoch_{n}.pth')
    torch.save({}, tmp_path / 'best_accuracy_top1_epoch_3.pth')
    (tmp_path / 'last_checkpoint').write_text('')  # killed while writing
    assert find_latest_checkpoint(str(tmp_path)) == str(
        tmp_path / 'epoch_10.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'gone.pth'))
    assert find_latest_checkpoint(str(tmp_path)) == str(
        tmp_path / 'epoch_10.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_2.pth'))
    assert find_latest_checkpoint(str(tmp_path)) == str(
        tmp_path / 'epoch_2.pth')


# ---------------------------------------------------------------- patch 7
def test_corrupt_checkpoint_error_names_the_file(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint

    from kd_plugins.errors import CheckpointError
    good, bad = str(tmp_path / 'epoch_1.pth'), str(tmp_path / 'epoch_2.pth')
    torch.save({'state_dict': {'w': torch.ones(100)}}, good)
    with open(good, 'rb') as f:
        data = f.read()
    with open(bad, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        _load_checkpoint(bad, map_location='cpu')
    msg = str(err.value)
    assert f"checkpoint '{bad}' is unreadable" in msg
    assert f'--resume {good}' in msg
    assert _load_checkpoint(good)['state_dict']['w'].sum() == 100


# ---------------------------------------------------------------- patch 8
_CPU_DDP = r'''
import os, sys
sys.path.insert(0, {root!r})
import kd_plugins, torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel
os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT={port!r})
dist.init_process_group('gloo', rank=0, world_size=1)
# what mmengine's Runner.wrap_model passes on every machine
ddp = MMDistributedDataParallel(module=torch.nn.Linear(2, 2),
                                device_ids=[0], broadcast_buffers=False)
print('wrapped', ddp.device_ids)
'''


def test_mmengine_ddp_wraps_a_cpu_module(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = str(s.getsockname()[1])
    proc = subprocess.run(
        [sys.executable, '-c', _CPU_DDP.format(root=ROOT, port=port)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'wrapped None' in proc.stdout
