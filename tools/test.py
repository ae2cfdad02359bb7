"""Evaluate a checkpoint on the test split (mmpretrain's CLI).

    python tools/test.py CONFIG CHECKPOINT [--out results.pkl] [--work-dir D]
"""
from __future__ import annotations

import argparse

from _common import (add_common_args, build_runner, close_dist,
                     default_dataloader_cfgs, load_config, need_file, out_dir,
                     out_file, run_main, set_local_rank, set_work_dir)
from kd_plugins.engine import preflight
from kd_plugins.utils.checkpoint import load_local_checkpoint
from kd_plugins.utils.config import iter_nodes
from kd_plugins.utils.teacher import clear_teacher_ckpts


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a checkpoint')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump predictions to this pickle file')
    parser.add_argument('--dump-metrics', metavar='JSON',
                        help='also write the metrics to this JSON file')
    parser.add_argument('--amp', action='store_true',
                        help='test with automatic mixed precision')
    add_common_args(parser)
    args = parser.parse_args(argv)
    set_local_rank(args)
    return args


def _clear_key(obj, key: str) -> None:
    """Set every ``key`` anywhere in ``obj`` to None."""
    for _, node in list(iter_nodes(obj)):
        if isinstance(node, dict) and key in node:
            node[key] = None


def check_checkpoint_fits(cfg, checkpoint: str) -> None:
    """The checkpoint is of the kind the config tests: a distillation
    config its run's checkpoint (student ``architecture.*``), a classifier
    config a classifier's weights. mmengine loads ``load_from`` with
    ``strict=False``, so another kind would test an untrained model."""
    model = cfg.get('model')
    distiller = isinstance(model, dict) and 'architecture' in model
    load_local_checkpoint(checkpoint, map_location='cpu', role=(
        'test_distiller' if distiller else 'test_classifier'))


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config)
    cfg.launcher = args.launcher
    set_work_dir(cfg, args)
    need_file(args.checkpoint, 'checkpoint', 'pass the .pth written by '
              'tools/train.py (e.g. work_dirs/<config>/epoch_N.pth)')
    out_dir(cfg.work_dir, '--work-dir')
    for flag, path in (('--out', args.out),
                       ('--dump-metrics', args.dump_metrics)):
        if path:
            out_file(path, flag)
    cfg.load_from = args.checkpoint
    if args.amp:
        cfg.test_cfg = dict(cfg.get('test_cfg') or {}, fp16=True)
    default_dataloader_cfgs(cfg)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
        default_dataloader_cfgs(cfg)  # e.g. num_workers=0: no persistent
    if args.out:
        cfg.test_evaluator = list(cfg.test_evaluator) if isinstance(
            cfg.test_evaluator, (list, tuple)) else [cfg.test_evaluator]
        cfg.test_evaluator.append(dict(type='DumpResults',
                                       out_file_path=args.out))
    # A distiller's teacher is not needed to test: its student is evaluated
    # and the weights come from the checkpoint (so do IE-KD's stage-1
    # encoder weights: the stage-1 file is not needed either).
    _clear_key(cfg.get('model'), 'stage1_ckpt')
    if isinstance(cfg.get('model'), dict):
        clear_teacher_ckpts(cfg.model)
    preflight(cfg, mode='test')
    check_checkpoint_fits(cfg, args.checkpoint)
    runner = build_runner(cfg)
    metrics = runner.test()
    from mmengine.dist import is_main_process
    if args.dump_metrics and is_main_process():  # metrics are all-reduced
        import json
        with open(args.dump_metrics, 'w') as f:
            json.dump({k: float(v) for k, v in metrics.items()}, f, indent=2)
    close_dist()
    return metrics


if __name__ == '__main__':
    run_main(main)  # a problem the user can fix: one line, no traceback
