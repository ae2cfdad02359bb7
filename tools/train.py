"""Train a model or a distiller from a config (mmpretrain's CLI).

The config is the whole run: mmpretrain's own tools/train.py (and ``mim
train mmpretrain``, dist_train.sh, slurm_train.sh) runs a kd_plugins config
exactly as this script does. This one adds command-line conveniences only
(docs/training.md lists them): --distill, --amp, --auto-resume (and the
resume of a restarted slurm job), and checks of the config, the files it
names and the data before the runner starts, each failure one line.

    python tools/train.py configs/demo/kd_digits.py
    python tools/train.py CONFIG --resume            # auto: latest in work_dir
    python tools/train.py CONFIG --auto-resume       # resume if there is one
    python tools/train.py CONFIG --amp bf16 \
        --cfg-options model.teacher_ckpt=T.pth
    # distil into any mmpretrain classifier config (the student) in one step:
    # the config tools/distill_config.py writes, in the work dir, trained
    python tools/train.py STUDENT_CONFIG --distill kd \
        --teacher resnet50_8xb32_in1k [--teacher-ckpt PATH]
"""
from __future__ import annotations

import argparse
import os
import os.path as osp

from _common import (Config, add_common_args, build_runner, close_dist,
                     default_dataloader_cfgs, load_config, need_file, out_dir,
                     run_main, set_local_rank, set_work_dir)
from kd_plugins.engine import preflight
from kd_plugins.engine.preflight import check_resume
from kd_plugins.errors import PreflightError

# methods that train in one run (kd_layer needs its statistics first, IE-KD
# its stage 1: tools/distill_config.py writes their configs and steps)
ONE_STEP = ('kd', 'aekt', 'atsc', 'mt_kd')


def distill_config(args) -> str:
    """--distill: the config tools/distill_config.py would write, at
    WORK_DIR/distill/<student>_<method>.py (default work dir:
    work_dirs/<that name>, as for any config; the runner dumps the full
    config beside it as usual). An existing file must be the same (a
    resumed run), not one the user edited."""
    from kd_plugins.distill_config import Request, write
    from kd_plugins.errors import ArgumentError
    if not args.teacher:
        raise ArgumentError('--distill needs --teacher NAME_OR_CONFIG.')
    name = (f'{osp.splitext(osp.basename(args.config))[0]}_'
            f'{args.distill}')
    work_dir = args.work_dir or osp.join('work_dirs', name)
    out = osp.join(work_dir, 'distill', f'{name}.py')
    req = Request(student=args.config, method=args.distill,
                  teachers=args.teacher, out=out,
                  teacher_ckpts=args.teacher_ckpt,
                  command='python tools/distill_config.py ' + ' '.join(
                      [args.config, '--method', args.distill] +
                      [f'--teacher {t}' for t in args.teacher] +
                      [f'--teacher-ckpt {c}' for c in args.teacher_ckpt] +
                      ['-o', out]))
    write(req, keep_same=True)
    print(f'kd_plugins: --distill {args.distill}: training {out} (the '
          'config tools/distill_config.py writes; its header says what was '
          'found)', flush=True)
    args.work_dir = work_dir
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model / distiller')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or without a value (or "auto") '
        'from the latest checkpoint in the work directory')
    parser.add_argument(
        '--auto-resume', action='store_true',
        help='resume from the newest checkpoint of the work directory when '
        'there is one, else start (for jobs that are requeued; a restarted '
        'slurm job, SLURM_RESTART_COUNT > 0, does it without the flag)')
    parser.add_argument(
        '--amp', nargs='?', const='fp16', choices=['fp16', 'bf16'],
        help='automatic mixed precision (default fp16; bf16 recommended on '
        'Ampere and newer GPUs)')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate checkpoints during training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by actual / base batch size')
    parser.add_argument('--no-pin-memory', action='store_true')
    parser.add_argument('--no-persistent-workers', action='store_true')
    parser.add_argument(
        '--distill', choices=ONE_STEP,
        help='CONFIG is the student: write the distillation config as '
        'tools/distill_config.py does (into the work dir) and train it')
    parser.add_argument('--teacher', action='append', default=[],
                        help='with --distill: a model-zoo name or config '
                        '(repeat for mt_kd / atsc)')
    parser.add_argument('--teacher-ckpt', action='append', default=[],
                        help='with --distill: checkpoint per --teacher')
    add_common_args(parser)
    args = parser.parse_args(argv)
    set_local_rank(args)
    restarts = int(os.environ.get('SLURM_RESTART_COUNT', '0') or 0)
    if args.resume is None and (args.auto_resume or restarts > 0):
        args.resume = 'auto'
        if restarts:
            print(f'kd_plugins: slurm restart {restarts} of job '
                  f'{os.environ.get("SLURM_JOB_ID")}: resuming from the '
                  'newest checkpoint of the work dir', flush=True)
    return args


def merge_args(cfg: Config, args) -> Config:
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    cfg.launcher = args.launcher
    set_work_dir(cfg, args)
    if args.amp:
        import torch
        if not torch.cuda.is_available():
            raise PreflightError(
                f'--amp {args.amp} was requested but no CUDA device is '
                'available; mixed precision needs a GPU here.\n'
                '  Fix: drop --amp to train in fp32 on this machine.')
        if args.amp == 'bf16' and not torch.cuda.is_bf16_supported():
            raise PreflightError(
                '--amp bf16 was requested but this GPU has no bf16 support.'
                '\n  Fix: use --amp fp16.')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        if args.amp == 'bf16':
            cfg.optim_wrapper.dtype = 'bfloat16'
        else:
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    default_dataloader_cfgs(cfg)
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(field, None) is None:
            continue
        if args.no_pin_memory:
            cfg[field].pin_memory = False
        if args.no_persistent_workers:
            cfg[field].persistent_workers = False
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
        default_dataloader_cfgs(cfg)  # e.g. num_workers=0: no persistent
    return cfg


def main(argv=None):
    args = parse_args(argv)
    if args.resume not in (None, 'auto'):
        need_file(args.resume, '--resume checkpoint',
                  'pass a checkpoint of this run (work_dirs/<config>/'
                  'epoch_N.pth), or --resume alone for the latest one')
    if args.distill:
        args.config = distill_config(args)
    elif args.teacher or args.teacher_ckpt:
        from kd_plugins.errors import ArgumentError
        raise ArgumentError('--teacher / --teacher-ckpt go with --distill '
                            'METHOD (CONFIG is then the student).')
    cfg = merge_args(load_config(args.config), args)
    out_dir(cfg.work_dir, '--work-dir')
    preflight(cfg, mode='train')
    if args.resume not in (None, 'auto'):
        check_resume(cfg, args.resume)
    runner = build_runner(cfg)
    # a SIGTERM / SIGUSR1 stop ends inside (PreemptionHook: checkpoint, one
    # line, exit 128 + signal), as under mmpretrain's own tools/train.py
    runner.train()
    close_dist()


if __name__ == '__main__':
    run_main(main)  # a problem the user can fix: one line, no traceback
