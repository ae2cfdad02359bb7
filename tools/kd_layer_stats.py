"""Compute the KD layer's offline statistics from a teacher.

    python tools/kd_layer_stats.py CONFIG TEACHER_CKPT OUT.npz \
        [--max-locations N] \
        [--cfg-options train_dataloader.dataset.data_root=/data/c100 ...]
    # several processes: each extracts its shard, rank 0 gathers and writes
    python -m torch.distributed.run --nproc_per_node 8 \
        tools/kd_layer_stats.py \
        CONFIG TEACHER_CKPT OUT.npz --launcher pytorch

CONFIG is the KD-layer distillation config (its ``kd_layer_stats`` section
names the teacher layers, K, LDA size and subclasses; its train dataloader is
used). The file records the teacher, layers, K and classes; the distillation
checks them at start.
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
from _common import (add_cfg_options, close_dist,  # noqa: E402
                     load_config_with_options, need_file, out_file, run_main)
from kd_plugins.engine.preflight import check_data  # noqa: E402
from kd_plugins.kd_layer_stats import compute_kd_layer_stats  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('teacher_ckpt')
    parser.add_argument('out')
    parser.add_argument('--max-locations', type=int,
                        help='cap on sampled feature vectors per layer')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm'],
                        help='extract features on several processes (each '
                        'reads its shard; rank 0 fits and writes OUT)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_cfg_options(parser)
    args = parser.parse_args(argv)
    from mmengine.registry import init_default_scope
    cfg = load_config_with_options(args.config, args.cfg_options)
    if '://' not in args.teacher_ckpt:  # a URL: mmengine downloads it
        need_file(args.teacher_ckpt, 'teacher checkpoint', 'pass the '
                  'teacher\'s .pth (the one the distillation config uses as '
                  'teacher_ckpt), or its URL')
    out_file(args.out, 'OUT.npz')
    check_data(cfg, ('train_dataloader', ))
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    if args.launcher != 'none':
        from mmengine.dist import init_dist
        os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
        init_dist(args.launcher,
                  **cfg.get('env_cfg', {}).get('dist_cfg', {}))
    compute_kd_layer_stats(cfg, args.teacher_ckpt, args.out,
                           args.max_locations)
    close_dist()


if __name__ == '__main__':
    run_main(main)
