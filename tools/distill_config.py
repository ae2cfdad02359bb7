"""Write a distillation config for any mmpretrain classifier config.

    python tools/distill_config.py STUDENT_CONFIG --method METHOD \\
        --teacher NAME_OR_CONFIG [--teacher NAME_OR_CONFIG ...] \\
        [--teacher-ckpt PATH|none ...] -o OUT.py

METHOD: kd, aekt, kd_layer, ie_kd (also writes OUT_stage1.py), atsc, mt_kd.
STUDENT_CONFIG: a config file, mmpretrain::resnet/resnet18_8xb32_in1k.py or
a model-zoo name. A teacher is a model-zoo name (weights: the zoo's
checkpoint URL unless --teacher-ckpt) or a config file (--teacher-ckpt
required; "none": random weights, for smoke tests). The written config
inherits STUDENT_CONFIG and runs as it is with tools/train.py, mmpretrain's
tools/train.py and mim train mmpretrain; its header says what was detected
and the commands to run (docs/training.md).
"""
from __future__ import annotations

import argparse
import os.path as osp
import shlex
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import kd_plugins  # noqa: E402,F401
from _common import run_main  # noqa: E402
from kd_plugins.distill_config import METHODS, Request, write  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(f'  {k:9s} {v}' for k, v in METHODS.items()))
    p.add_argument('student', help='student classifier config (file, '
                   'mmpretrain::path or model-zoo name)')
    p.add_argument('--method', required=True, choices=sorted(METHODS))
    p.add_argument('--teacher', action='append', default=[],
                   required=True, help='model-zoo name or config file; '
                   'repeat for several teachers (mt_kd, atsc)')
    p.add_argument('--teacher-ckpt', action='append', default=[],
                   help='checkpoint per --teacher, in order (a path, a URL '
                   'or "none")')
    p.add_argument('-o', '--out', required=True, help='the config to write')
    p.add_argument('--student-logits', metavar='MODULE',
                   help='the student\'s classifier layer (when ambiguous)')
    p.add_argument('--teacher-logits', metavar='MODULE')
    p.add_argument('--student-feature', metavar='MODULE',
                   help='the student\'s last feature map (feature methods)')
    p.add_argument('--teacher-feature', metavar='MODULE')
    p.add_argument('--num-templates', type=int, metavar='K',
                   help='kd_layer templates (4096; 64 below 100 classes)')
    p.add_argument('--stage1-epochs', type=int, default=10,
                   help='ie_kd stage-1 epochs (10, as the paper configs)')
    p.add_argument('--no-batch-augments', action='store_true',
                   help='drop the student config\'s Mixup / CutMix (aekt '
                   'and atsc read the hard labels)')
    p.add_argument('--force', action='store_true',
                   help='overwrite OUT if it exists')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from kd_plugins.errors import ArgumentError
    if osp.exists(args.out) and not args.force:
        raise ArgumentError(f'{args.out} exists.\n  Fix: another -o, or '
                            '--force to overwrite it.')
    if not args.out.endswith('.py'):
        raise ArgumentError(f'-o {args.out}: a config file name ending in '
                            '.py.')
    command = 'python tools/distill_config.py ' + ' '.join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    req = Request(
        student=args.student, method=args.method, teachers=args.teacher,
        out=args.out, teacher_ckpts=args.teacher_ckpt,
        student_logits=args.student_logits,
        teacher_logits=args.teacher_logits,
        student_feature=args.student_feature,
        teacher_feature=args.teacher_feature,
        num_templates=args.num_templates, stage1_epochs=args.stage1_epochs,
        no_batch_augments=args.no_batch_augments, command=command)
    for path in write(req):
        print(f'wrote {path}')
    with open(args.out) as f:  # the header: what was found, what to run
        for line in f:
            if not line.startswith('#'):
                break
            print(line.rstrip())
    return args.out


if __name__ == '__main__':
    run_main(main)
