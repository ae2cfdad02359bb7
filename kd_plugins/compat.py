"""The only place where kd_plugins patches third-party code.

Every patch names the versions it is written for and why it is needed, and
is covered by ``tests/test_compat.py``. ``kd_plugins/__init__.py`` imports
this module first, so that every later import of mmrazor sees the fixes.

Patches
-------
1. ``torch.ao.quantization.fuser_method_mappings`` (torch >= 2.1) renamed
   ``reverse2``, ``reverse3`` and ``reverse_sequential_wrapper2`` to
   ``_reverse2``, ``_reverse3`` and ``_sequential_wrapper2``. mmrazor 1.0.0
   imports the old names, and then builds quantization backend configs at
   import time (``mmrazor/structures/quantization/backend_config/mapping.py``),
   which fails. We alias the names and pre-register a stub ``mapping`` module
   (``BackendConfigs = {}``): quantization is out of scope, distillation works.
2. mmrazor 1.0.0 was written for mmcls (mmpretrain's predecessor). Where
   ``import mmcls`` fails it silently installs placeholders, which breaks e.g.
   ``KDSoftCELoss`` and ``DeiTClsHead`` (mmrazor issue #546). A
   ``sys.meta_path`` finder resolves ``mmcls`` and ``mmcls.*`` to
   ``mmpretrain`` and ``mmpretrain.*``.
3. torch >= 2.6 loads checkpoints with ``weights_only=True``; mmengine 0.10.7
   checkpoints hold a ``HistoryBuffer`` (message hub) and numpy arrays/scalars,
   so ``--resume`` fails. We allow-list exactly those classes with
   ``torch.serialization.add_safe_globals`` (never ``weights_only=False``).
   ``HistoryBuffer`` pickles its statistics methods as
   ``getattr(HistoryBuffer, 'min')``; a general ``getattr`` would let a
   checkpoint reach anything, so ``builtins.getattr`` is mapped to
   :func:`history_buffer_getattr`, which only returns functions of
   ``HistoryBuffer`` itself and refuses every other lookup.
4. mmengine 0.10.7 ``init_dist`` calls ``torch.cuda.set_device`` for the
   ``pytorch`` and ``slurm`` launchers and defaults to ``nccl``; without a GPU
   that fails. We wrap it: with CUDA the original (``nccl``) path runs, without
   CUDA the process group is initialised with ``gloo`` from the same
   environment variables (slurm: ``SLURM_PROCID``/``SLURM_NTASKS``/node list).
   mmengine never destroys the group; a gloo group whose threads are still
   alive when the interpreter exits can abort that rank ("terminate called
   without an active exception", exit 134: seen under mmpretrain's own
   slurm_train.sh), so the group is destroyed at exit (``atexit``).
5. mmcv-lite 2.1.0 warns at every import that ``MultiScaleDeformableAttention``
   needs the full mmcv. No kd_plugins code path uses it, so that one warning
   (matched by its text) is filtered; every other warning stays.
6. mmengine 0.10.7 writes checkpoints in place (``LocalBackend.put`` opens the
   final path with ``'wb'``), so a kill during a save leaves a truncated
   ``epoch_N.pth`` that ``last_checkpoint`` may already point at, and
   ``find_latest_checkpoint`` returns whatever ``last_checkpoint`` says, even
   an empty string or a deleted file. ``LocalBackend.put``/``put_text`` now
   write a temporary file in the same directory, ``fsync`` it and
   ``os.replace`` it onto the final name (atomic on POSIX), and
   ``find_latest_checkpoint`` falls back to the newest readable
   ``epoch_*.pth``/``iter_*.pth`` when ``last_checkpoint`` is empty or names a
   missing file.
7. mmengine 0.10.7 ``load_from_local`` lets ``torch.load`` errors through as
   they are ("PytorchStreamReader failed reading zip archive..."), without the
   file name. The local loader is wrapped: a truncated/corrupt file raises
   :class:`kd_plugins.errors.CheckpointError` naming the file and the fix, and
   a checkpoint holding objects outside the allow-list (item 3) is refused
   with a message that says so.
8. mmengine 0.10.7 ``Runner.wrap_model`` always passes
   ``device_ids=[LOCAL_RANK]`` to ``MMDistributedDataParallel``; PyTorch
   refuses ``device_ids`` for a CPU module, so DDP training without a GPU
   (gloo) fails. The wrapper's ``__init__`` drops ``device_ids`` /
   ``output_device`` when the module's parameters are all on the CPU; GPU
   modules are wrapped exactly as before.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import shutil
import subprocess
import sys
import types

import torch

from .utils.checkpoint import atomic_write, load_local_checkpoint

PATCHES: dict[str, bool] = {}

# ---------------------------------------------------------------------------
# 1. torch >= 2.1 fuser-method renames + mmrazor quantization mapping stub
# ---------------------------------------------------------------------------
_FUSER_ALIASES = {
    'reverse2': '_reverse2',
    'reverse3': '_reverse3',
    'reverse_sequential_wrapper2': '_sequential_wrapper2',
}
_MAPPING_MODULE = 'mmrazor.structures.quantization.backend_config.mapping'


def _patch_torch_fuser_names() -> None:
    """For torch >= 2.1 with mmrazor 1.0.0 (see module docstring, item 1)."""
    try:
        import torch.ao.quantization.fuser_method_mappings as fmm
    except ImportError:  # pragma: no cover - very old / stripped torch
        return
    for old, new in _FUSER_ALIASES.items():
        if not hasattr(fmm, old) and hasattr(fmm, new):
            setattr(fmm, old, getattr(fmm, new))
    if _MAPPING_MODULE not in sys.modules:
        stub = types.ModuleType(_MAPPING_MODULE)
        stub.__doc__ = ('Stub installed by kd_plugins.compat: mmrazor 1.0.0 '
                        'builds quantization backends at import time, which '
                        'fails on torch >= 2.1. Quantization is unsupported.')
        stub.BackendConfigs = {}
        sys.modules[_MAPPING_MODULE] = stub
    PATCHES['torch_fuser_names'] = True


# ---------------------------------------------------------------------------
# 2. mmcls -> mmpretrain import alias
# ---------------------------------------------------------------------------
class MmclsAliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolve ``mmcls[.x]`` to the already existing ``mmpretrain[.x]``.

    For mmrazor 1.0.0 on mmpretrain 1.x (see module docstring, item 2). The
    real module object is shared, so ``mmcls.models.ImageClassifier is
    mmpretrain.models.ImageClassifier``. Names that mmpretrain renamed (e.g.
    ``ClsDataSample``) still raise ``ImportError``, which mmrazor handles.
    """

    OLD, NEW = 'mmcls', 'mmpretrain'

    def _target(self, fullname: str) -> str | None:
        if fullname == self.OLD or fullname.startswith(self.OLD + '.'):
            return self.NEW + fullname[len(self.OLD):]
        return None

    def find_spec(self, fullname, path=None, target=None):
        real = self._target(fullname)
        if real is None:
            return None
        try:
            if importlib.util.find_spec(real) is None:
                return None
        except (ImportError, ValueError):
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=True)

    def create_module(self, spec):
        module = importlib.import_module(self._target(spec.name))
        # the import system overwrites __spec__; keep the real one to restore.
        self._real_spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self._real_spec


def _install_mmcls_alias() -> None:
    try:
        import mmcls  # noqa: F401  a real mmcls is installed: leave it.
        return
    except ImportError:
        pass
    if not any(isinstance(f, MmclsAliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MmclsAliasFinder())
    PATCHES['mmcls_alias'] = True


# ---------------------------------------------------------------------------
# 3. weights_only=True checkpoint loading: explicit allow-list
# ---------------------------------------------------------------------------
def safe_globals() -> list:
    """Classes that mmengine 0.10.7 checkpoints need to unpickle.

    Nothing else is allowed: a checkpoint carrying any other object is refused
    by ``torch.load(..., weights_only=True)``.
    """
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    allowed = [HistoryBuffer, np.ndarray, np.dtype]
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    allowed += [_reconstruct, scalar]
    # dtype classes (numpy >= 1.25 pickles e.g. numpy.dtypes.Float64DType)
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        allowed += [
            getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')
        ]
    return allowed


def history_buffer_getattr(obj, name: str):
    """The only ``getattr`` a checkpoint may call: HistoryBuffer methods."""
    import inspect
    import pickle

    from mmengine.logging.history_buffer import HistoryBuffer
    if (obj is HistoryBuffer and not name.startswith('_')
            and inspect.isfunction(getattr(HistoryBuffer, name, None))):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'kd_plugins refused getattr({obj!r}, {name!r}) in a checkpoint: only '
        'methods of mmengine HistoryBuffer may be looked up while loading.')


def _patch_safe_globals() -> None:
    """For torch >= 2.6 with mmengine 0.10.7 (module docstring, item 3)."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4: nothing to do
        return
    add(safe_globals() + [(history_buffer_getattr, 'builtins.getattr')])
    PATCHES['safe_globals'] = True


# ---------------------------------------------------------------------------
# 4. init_dist without a GPU (gloo) and with one (nccl)
# ---------------------------------------------------------------------------
def _first_slurm_host(node_list: str) -> str:
    """First host of a slurm node list (``node[01-04],gpu7`` -> ``node01``)."""
    if shutil.which('scontrol'):
        out = subprocess.run(['scontrol', 'show', 'hostnames', node_list],
                             capture_output=True, text=True)
        hosts = out.stdout.split()
        if out.returncode == 0 and hosts:
            return hosts[0]
    first = node_list.split(',')[0]
    if '[' in first:  # expand the first range without scontrol
        prefix, rng = first.split('[', 1)
        start = rng.rstrip(']').split(',')[0].split('-')[0]
        first = prefix + start
    return first or '127.0.0.1'


def _slurm_env() -> None:
    """Export torch.distributed env variables from slurm's (as mmengine)."""
    proc_id = int(os.environ['SLURM_PROCID'])
    ntasks = int(os.environ['SLURM_NTASKS'])
    node_list = os.environ['SLURM_NODELIST']
    if 'MASTER_ADDR' not in os.environ:
        os.environ['MASTER_ADDR'] = _first_slurm_host(node_list)
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['WORLD_SIZE'] = str(ntasks)
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    os.environ['RANK'] = str(proc_id)


def destroy_process_group_at_exit() -> None:
    """Destroy the default process group if it is still up (every rank is
    past its last collective when its interpreter exits)."""
    import torch.distributed as torch_dist
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def _make_init_dist(original):

    def init_dist(launcher, backend='nccl', init_backend='torch', **kwargs):
        """mmengine ``init_dist`` that also works without CUDA (gloo), and
        destroys its process group at exit."""
        import atexit
        atexit.register(destroy_process_group_at_exit)
        if torch.cuda.is_available() or launcher not in ('pytorch', 'slurm'):
            return original(launcher, backend=backend,
                            init_backend=init_backend, **kwargs)
        import datetime

        import torch.distributed as torch_dist
        timeout = kwargs.pop('timeout', None)
        if timeout is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=timeout)
        port = kwargs.pop('port', None)
        if launcher == 'slurm':
            if port is not None:
                os.environ['MASTER_PORT'] = str(port)
            _slurm_env()
        torch_dist.init_process_group(
            backend='gloo',
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']),
            **kwargs)

    init_dist._kd_plugins_original = original
    return init_dist


def _patch_init_dist() -> None:
    """For mmengine 0.10.7 (module docstring, item 4)."""
    import mmengine.dist
    import mmengine.dist.utils as dist_utils
    import mmengine.runner.runner as runner_mod
    if getattr(dist_utils.init_dist, '_kd_plugins_original', None):
        return
    patched = _make_init_dist(dist_utils.init_dist)
    for mod in (dist_utils, mmengine.dist, runner_mod):
        if hasattr(mod, 'init_dist'):
            mod.init_dist = patched
    PATCHES['init_dist'] = True


def _silence_mmcv_lite_warning() -> None:
    """For mmcv-lite 2.1.0 (module docstring, item 5)."""
    import warnings
    warnings.filterwarnings(
        'ignore', message='Fail to import ``MultiScaleDeformableAttention``')
    PATCHES['mmcv_lite_warning'] = True


# ---------------------------------------------------------------------------
# 6. atomic checkpoint writes; find_latest_checkpoint that checks its answer
# ---------------------------------------------------------------------------
def _newest_checkpoint(path: str):
    import glob
    import re
    found = []
    for f in glob.glob(os.path.join(path, '*.pth')):
        m = re.fullmatch(r'(epoch|iter)_(\d+)\.pth', os.path.basename(f))
        if m:
            found.append((int(m.group(2)), f))
    return max(found)[1] if found else None


def _make_find_latest(original):

    def find_latest_checkpoint(path: str):
        """mmengine's, plus a check that the named file exists."""
        last = original(path)
        if last is not None and last and (
                '://' in last or os.path.isfile(last)):
            return last
        fallback = _newest_checkpoint(path)
        if last is not None or fallback is not None:
            from mmengine.logging import print_log
            print_log(
                f'kd_plugins: {os.path.join(path, "last_checkpoint")} names '
                f'{last!r}, which does not exist; resuming from the newest '
                f'checkpoint on disk instead: {fallback}', logger='current',
                level=30)
        return fallback

    find_latest_checkpoint._kd_plugins_original = original
    return find_latest_checkpoint


def _patch_atomic_checkpoints() -> None:
    """For mmengine 0.10.7 (module docstring, item 6)."""
    import mmengine.runner
    import mmengine.runner.checkpoint as ckpt_mod
    import mmengine.runner.runner as runner_mod
    from mmengine.fileio.backends.local_backend import LocalBackend
    if getattr(LocalBackend.put, '_kd_plugins_atomic', False):
        return

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(obj, filepath, 'wb')

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(obj, filepath, 'w', encoding=encoding)

    put._kd_plugins_atomic = put_text._kd_plugins_atomic = True
    put.__doc__ = LocalBackend.put.__doc__
    put_text.__doc__ = LocalBackend.put_text.__doc__
    LocalBackend.put, LocalBackend.put_text = put, put_text
    patched = _make_find_latest(ckpt_mod.find_latest_checkpoint)
    for mod in (ckpt_mod, runner_mod, mmengine.runner):
        mod.find_latest_checkpoint = patched
    try:
        import mmengine.runner._flexible_runner as flex
        flex.find_latest_checkpoint = patched
    except ImportError:  # pragma: no cover
        pass
    PATCHES['atomic_checkpoints'] = True


# ---------------------------------------------------------------------------
# 7. checkpoint load errors that name the file (kd_plugins.utils.checkpoint)
# ---------------------------------------------------------------------------
def _patch_checkpoint_loader() -> None:
    """For mmengine 0.10.7 (module docstring, item 7)."""
    import mmengine.runner.checkpoint as ckpt_mod
    loader = ckpt_mod.CheckpointLoader
    if getattr(loader._schemes.get(''), '_kd_plugins', False):
        return
    load_local_checkpoint._kd_plugins = True
    loader.register_scheme(prefixes='', loader=load_local_checkpoint,
                           force=True)
    ckpt_mod.load_from_local = load_local_checkpoint
    PATCHES['checkpoint_errors'] = True


# ---------------------------------------------------------------------------
# 8. DDP of a CPU module (gloo) without device_ids
# ---------------------------------------------------------------------------
def _patch_cpu_ddp() -> None:
    """For mmengine 0.10.7 (module docstring, item 8)."""
    from mmengine.model.wrappers.distributed import MMDistributedDataParallel
    original = MMDistributedDataParallel.__init__
    if getattr(original, '_kd_plugins_original', None):
        return

    def __init__(self, module, detect_anomalous_params: bool = False,
                 **kwargs):
        devices = {p.device.type for p in module.parameters()}
        if devices <= {'cpu'}:
            kwargs.pop('device_ids', None)
            kwargs.pop('output_device', None)
        original(self, module=module,
                 detect_anomalous_params=detect_anomalous_params, **kwargs)

    __init__._kd_plugins_original = original
    MMDistributedDataParallel.__init__ = __init__
    PATCHES['cpu_ddp'] = True


def apply() -> None:
    """Apply every patch (idempotent). Called by ``import kd_plugins``."""
    _silence_mmcv_lite_warning()
    _patch_torch_fuser_names()
    _install_mmcls_alias()
    _patch_safe_globals()
    _patch_init_dist()
    _patch_atomic_checkpoints()
    _patch_checkpoint_loader()
    _patch_cpu_ddp()


apply()
