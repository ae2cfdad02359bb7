"""Build a teacher cache: the teacher(s) of a distillation config, run once
over views of every training image (guide: docs/methods/teacher_cache.md).

    python tools/cache_teacher.py CONFIG OUT_DIR [--views N | --views all] \
        [--topk K] [--batch-size B] [--seed S] [--workers W] \
        [--device cpu|cuda] \
        [--cfg-options model.teacher_ckpt=T.pth ...]
    # several processes (each writes its own shard; rank 0 finishes):
    python -m torch.distributed.run --nproc_per_node 8 \
        tools/cache_teacher.py CONFIG OUT_DIR --launcher pytorch
    srun -n 8 python tools/cache_teacher.py CONFIG OUT_DIR --launcher slurm

Then train from it: ``python tools/train.py CONFIG --cfg-options
model.teacher_cache=OUT_DIR``. The same command again resumes an interrupted
build (a finished one is left as it is).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import kd_plugins  # noqa: E402,F401
from _common import (add_cfg_options, load_config_with_options,  # noqa: E402
                     need_file, out_dir, run_main)
from kd_plugins.engine.preflight import check_data  # noqa: E402


def views_arg(text: str):
    if text == 'all':
        return 'all'
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(
            f"--views takes a count >= 1 or 'all', not {text!r}")
    return n


def rank_and_world(launcher: str) -> tuple[int, int]:
    """This process's rank and the number of building processes (from
    torchrun's or slurm's environment: a build needs no process group)."""
    env = os.environ
    if launcher == 'pytorch':
        return int(env.get('RANK', 0)), int(env.get('WORLD_SIZE', 1))
    if launcher == 'slurm':
        return int(env.get('SLURM_PROCID', 0)), int(env.get('SLURM_NTASKS',
                                                            1))
    return 0, 1


def local_rank(launcher: str) -> int:
    env = os.environ
    key = 'SLURM_LOCALID' if launcher == 'slurm' else 'LOCAL_RANK'
    return int(env.get(key, 0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='the distillation config (FastDistill '
                        'or MultiTeacherDistill, logit losses)')
    parser.add_argument('out_dir', help='the cache directory')
    parser.add_argument('--views', type=views_arg, default=100,
                        help="views per image (default 100), or 'all' for "
                        'every view of a finite augmentation space')
    parser.add_argument('--topk', type=int, default=None,
                        help='store the top K log-probabilities and the '
                        "rest's mass (FKD's marginal smoothing; an "
                        'approximation) instead of all logits')
    parser.add_argument('--batch-size', type=int, default=256,
                        help='views per teacher forward')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the views (with each image index)')
    parser.add_argument('--workers', type=int, default=None,
                        help='data loader processes for the views (default: '
                        "the config's train_dataloader.num_workers)")
    parser.add_argument('--device', default=None,
                        help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm'],
                        help='several processes: rank r builds shard r')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_cfg_options(parser)
    args = parser.parse_args(argv)
    import torch
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope

    from kd_plugins.cache_teacher import CacheBuilder
    from kd_plugins.utils.teacher import teacher_entries
    cfg = load_config_with_options(args.config, args.cfg_options)
    out_dir(args.out_dir, 'OUT_DIR')
    check_data(cfg, ('train_dataloader', ))
    for _, key, _, ckpt in teacher_entries(dict(cfg.model)):
        if ckpt and '://' not in str(ckpt):
            need_file(ckpt, key, 'train the teacher first, or pass its '
                      f'checkpoint: --cfg-options {key.split("[")[0]}=T.pth')
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    MMLogger.get_instance('kd_plugins', log_level='INFO')
    rank, world = rank_and_world(args.launcher)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cuda':
        device = f'cuda:{local_rank(args.launcher)}'
    CacheBuilder(cfg, args.out_dir, views=args.views, topk=args.topk,
                 batch_size=args.batch_size, seed=args.seed, rank=rank,
                 world=world, device=device, workers=args.workers).run()


if __name__ == '__main__':
    run_main(main)
