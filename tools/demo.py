"""The kd_plugins demo: teacher, student alone and distillers on Digits.

    python tools/demo.py                 # what `make demo` runs
    python tools/demo.py --only teacher kd --epochs 2

Trains a teacher on scikit-learn's bundled Digits, then the student alone
(what the student reaches without a teacher) and each distillation method from
the same teacher, evaluates every model on the test split with tools/test.py,
and prints a table (method, top-1, train time). Results also go to
``WORK_DIR/results.md`` and ``WORK_DIR/results.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from dataclasses import dataclass

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


T = (('model.teacher_ckpt', 'teacher'), )  # the usual single teacher


@dataclass
class Step:
    """One demo row: ``needs`` maps config keys to the step(s) whose last
    checkpoint they take (a tuple of steps gives a list value)."""
    name: str
    config: str
    label: str
    needs: tuple = T
    evaluate: bool = True
    # config keys that take a KD-layer statistics file computed first from
    # the teacher with tools/kd_layer_stats.py
    stats_keys: tuple = ()

    @property
    def depends_on(self) -> set:
        deps = set()
        for _, steps in self.needs:
            deps.update((steps, ) if isinstance(steps, str) else steps)
        return deps


# One row per method; each method adds its own step here.
STEPS = [
    Step('teacher', 'configs/demo/teacher_digits.py',
         'Teacher: ResNet-18 (CIFAR stem, width 16)', needs=()),
    Step('student', 'configs/demo/student_digits.py',
         'Student alone: ResNet-10 (3 stages, width 8)', needs=()),
    Step('kd', 'configs/demo/kd_digits.py',
         'KD (mmrazor KLDivergence via FastDistill, baseline)'),
    Step('aekt', 'configs/demo/aekt_digits.py',
         'AEKT (reconstruction; AEKTLoss + AEKTHead)'),
    Step('atsc', 'configs/demo/atsc_digits.py',
         'ATSC (adapted teacher, shared classifier)',
         needs=(('model.teacher_ckpts', ('teacher', )), )),
    Step('teacher2', 'configs/demo/teacher2_digits.py',
         'Second teacher (same network, seed 1)', needs=()),
    Step('atsc2', 'configs/demo/atsc2_digits.py', 'ATSC, two teachers',
         needs=(('model.teacher_ckpts', ('teacher', 'teacher2')), )),
    Step('ie_stage1', 'configs/demo/ie_kd_stage1_digits.py',
         'IE-KD stage 1 (teacher auto-encoder; not a classifier)',
         evaluate=False),
    Step('ie_kd', 'configs/demo/ie_kd_digits.py', 'IE-KD (CE + IE)',
         needs=T + (('model.distiller.connectors.t_enc.stage1_ckpt',
                     'ie_stage1'), )),
    Step('ie_dml', 'configs/demo/ie_dml_digits.py',
         'IE-DML (two students, no teacher; student A reported)', needs=()),
    Step('kd_layer', 'configs/demo/kd_layer_digits.py',
         'KD layer (letKD-2: penultimate + intermediate)',
         stats_keys=('model.distiller.distill_losses.loss_penult.stats_file',
                     'model.distiller.distill_losses.loss_inter.stats_file')),
]


def last_checkpoint(work_dir: str) -> str:
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def run(cmd: list[str], log_path: str) -> None:
    with open(log_path, 'w') as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = ''.join(f.readlines()[-30:])
        raise SystemExit(f'demo step failed: {" ".join(cmd)}\n'
                         f'--- last lines of {log_path} ---\n{tail}')


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--only', nargs='+', metavar='STEP',
                        choices=[s.name for s in STEPS],
                        help='run only these steps (teacher is added when '
                        'a step needs it)')
    parser.add_argument('--epochs', type=int,
                        help='override max_epochs of every step (quick runs)')
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 2:
        parser.error('--epochs must be >= 2 (1 warm-up epoch + cosine decay)')

    steps = STEPS
    if args.only:
        wanted = set(args.only)
        for s in reversed(STEPS):
            if s.name in wanted:
                wanted.update(s.depends_on)
        steps = [s for s in STEPS if s.name in wanted]
    os.makedirs(args.work_dir, exist_ok=True)
    extra = ([f'train_cfg.max_epochs={args.epochs}',
              f'train_cfg.val_interval={args.epochs}']
             if args.epochs else [])
    ckpts = {}
    rows = []
    for step in steps:
        wd = osp.join(args.work_dir, step.name)
        opts = list(extra)
        for key, needed in step.needs:
            value = (ckpts[needed] if isinstance(needed, str) else
                     '[' + ','.join(ckpts[n] for n in needed) + ']')
            opts.append(f'{key}={value}')
        if step.stats_keys:
            stats = osp.join(wd, 'kd_layer_stats.npz')
            print(f'[demo] {step.name}: teacher statistics ...', flush=True)
            run([sys.executable, 'tools/kd_layer_stats.py', step.config,
                 ckpts['teacher'], stats],
                osp.join(args.work_dir, f'{step.name}_stats.log'))
            opts += [f'{key}={stats}' for key in step.stats_keys]
        print(f'[demo] {step.name}: training {step.config} ...', flush=True)
        cmd = [sys.executable, 'tools/train.py', step.config, '--work-dir', wd]
        if opts:
            cmd += ['--cfg-options', *opts]
        t0 = time.time()
        run(cmd, osp.join(args.work_dir, f'{step.name}_train.log'))
        train_s = time.time() - t0
        ckpt = last_checkpoint(wd)
        ckpts[step.name] = ckpt
        if not step.evaluate:
            rows.append(dict(step=step.name, method=step.label, top1=None,
                             train_s=round(train_s, 1), checkpoint=ckpt))
            print(f'[demo] {step.name}: done ({train_s:.0f} s)', flush=True)
            continue
        metrics_file = osp.join(wd, 'test_metrics.json')
        stats_opts = [o for o in opts if o.split('=')[0] in step.stats_keys]
        run([sys.executable, 'tools/test.py', step.config, ckpt, '--work-dir',
             wd, '--dump-metrics', metrics_file] +
            (['--cfg-options', *stats_opts] if stats_opts else []),
            osp.join(args.work_dir, f'{step.name}_test.log'))
        with open(metrics_file) as f:
            top1 = json.load(f)['accuracy/top1']
        rows.append(dict(step=step.name, method=step.label, top1=top1,
                         train_s=round(train_s, 1), checkpoint=ckpt))
        print(f'[demo] {step.name}: top-1 {top1:.2f} % '
              f'({train_s:.0f} s)', flush=True)

    table = ['| method | top-1 (%) | train time (s) |', '| --- | ---: | ---: |']
    table += [f"| {r['method']} | "
              f"{'-' if r['top1'] is None else format(r['top1'], '.2f')} | "
              f"{r['train_s']:.0f} |" for r in rows]
    text = '\n'.join(table)
    print('\nDigits test split (360 images), one CPU run:\n' + text)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write(text + '\n')
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(rows, f, indent=2)
    return rows


if __name__ == '__main__':
    main()
