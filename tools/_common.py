"""Shared command-line plumbing of the tools: arguments, file checks that
end in one ``kd_plugins:`` line (no traceback), runner helpers."""
from __future__ import annotations

import os
import os.path as osp
import sys
from copy import deepcopy

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)

try:  # first: its version check names a missing/unsupported stack
    import kd_plugins  # noqa: E402,F401  (compat fixes before anything else)
except Exception as err:  # noqa: BLE001 - only the version check's error
    if type(err).__name__ != 'UnsupportedVersionError':
        raise
    raise SystemExit(f'kd_plugins: {err}')
from mmengine.config import Config, ConfigDict  # noqa: E402


def run_main(main, argv=None):
    """Run a tool's ``main``; a problem the user can fix (a missing file, a
    config that does not fit) ends as one ``kd_plugins: ...`` line."""
    from kd_plugins.errors import KDPluginsError
    try:
        return main(argv)
    except KDPluginsError as err:
        code = getattr(err, 'exit_code', None)  # e.g. a preempted run: 143
        message = str(err)
        if 'Original Traceback' in message:  # raised in a data-loader worker
            message = message.rsplit(f'{type(err).__name__}: ', 1)[-1]
        if code is None:
            raise SystemExit(f'kd_plugins: {message}')
        print(f'kd_plugins: {message}', file=sys.stderr, flush=True)
        raise SystemExit(code)


def need_file(path: str, what: str, fix: str) -> str:
    """``path`` must be an existing, readable file."""
    from kd_plugins.errors import ArgumentError
    if osp.isdir(path):
        raise ArgumentError(f'{what} {path!r} is a directory, not a file.\n'
                            f'  Fix: {fix}')
    if not osp.isfile(path):
        raise ArgumentError(f'{what} {path!r} does not exist.\n  Fix: {fix}')
    if not os.access(path, os.R_OK):
        raise ArgumentError(f'{what} {path!r} is not readable (permissions).'
                            f'\n  Fix: {fix}')
    return path


def load_config(path: str) -> Config:
    """The config file, or one clear line when it is missing or broken."""
    from kd_plugins.errors import ArgumentError
    need_file(path, 'config', 'pass a config file, e.g. '
              'configs/demo/kd_digits.py (see configs/)')
    try:
        return Config.fromfile(path)
    except Exception as err:  # noqa: BLE001 - syntax errors, bad _base_
        raise ArgumentError(
            f'config {path!r} could not be read: {type(err).__name__}: '
            f'{err}\n  Fix: correct the file (Python syntax, _base_ paths).')


def out_dir(path: str, what: str) -> str:
    """``path`` is (or can be made) a writable folder."""
    from kd_plugins.errors import ArgumentError
    if osp.exists(path) and not osp.isdir(path):
        raise ArgumentError(f'{what} {path!r} exists and is not a folder.\n'
                            '  Fix: pass a folder path.')
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise ArgumentError(f'{what} {path!r} cannot be created: '
                            f'{err.strerror}.\n  Fix: pass a writable '
                            'location.')
    if not os.access(path, os.W_OK):
        raise ArgumentError(f'{what} {path!r} is not writable.\n  Fix: pass '
                            'a writable location.')
    return path


def out_file(path: str, what: str) -> str:
    """The folder of ``path`` is (or can be made) writable."""
    from kd_plugins.errors import ArgumentError
    if osp.isdir(path):
        raise ArgumentError(f'{what} {path!r} is a folder; a file name is '
                            'needed.\n  Fix: e.g. ' + osp.join(path, 'out'))
    out_dir(osp.dirname(path) or '.', f'the folder of {what}')
    return path


def add_cfg_options(parser) -> None:
    """mmpretrain's ``--cfg-options key=value ...`` (every tool has it)."""
    from mmengine.config import DictAction
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, key=value pairs, e.g. '
        'model.teacher_ckpt=teacher.pth train_cfg.max_epochs=10')


def load_config_with_options(path: str, options) -> Config:
    """:func:`load_config`, then ``--cfg-options`` merged in."""
    cfg = load_config(path)
    if options:
        cfg.merge_from_dict(options)
    return cfg


def add_common_args(parser) -> None:
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    add_cfg_options(parser)
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def set_local_rank(args) -> None:
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)


def set_work_dir(cfg: Config, args) -> None:
    """CLI > config > ./work_dirs/<config name> (as mmpretrain)."""
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join(
            './work_dirs', osp.splitext(osp.basename(args.config))[0])


def default_dataloader_cfgs(cfg: Config, fields=('train_dataloader',
                                                 'val_dataloader',
                                                 'test_dataloader')) -> None:
    """mmpretrain's dataloader defaults; persistent workers need workers."""
    for field in fields:
        if cfg.get(field, None) is None:
            continue
        loader = ConfigDict(pin_memory=True, persistent_workers=True,
                            collate_fn=dict(type='default_collate'))
        loader.update(deepcopy(cfg[field]))
        if not loader.get('num_workers', 0):
            loader.persistent_workers = False
        cfg[field] = loader


def build_runner(cfg: Config):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


def close_dist() -> None:
    """Shut the process group down before the interpreter exits.

    mmengine leaves it open; a gloo group whose threads are still alive when
    a rank exits can abort that rank ("terminate called without an active
    exception", exit -6) after a finished run.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
