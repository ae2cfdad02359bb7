"""Shared command-line plumbing of tools/train.py and tools/test.py."""
from __future__ import annotations

import os
import os.path as osp
import sys
from copy import deepcopy

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)

import kd_plugins  # noqa: E402,F401  (compat fixes before anything else)
from mmengine.config import Config, ConfigDict  # noqa: E402


def add_common_args(parser) -> None:
    from mmengine.config import DictAction
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, key=value pairs, e.g. '
        'model.teacher_ckpt=teacher.pth train_cfg.max_epochs=10')
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
