"""Reproduce the papers' tables: every method config of a suite, with the
steps it depends on, then one table of best / last / test top-1 beside the
published numbers.

    python tools/reproduce.py --suite cifar100 [--methods aekt kd_layer ...]
        [--launcher none|pytorch|slurm] [--gpus 8] [--partition gpu]
        [--repdistiller DIR] [--work-root work_dirs] [--dry-run]
        [--cfg-options key=value ...]

For each top-level ``configs/*_<suite>.py`` (``--methods`` keeps those whose
name starts with one of the words), in dependency order:

1. **teachers**: a local ``teacher_ckpt`` that does not exist yet is made,
   by converting the published RepDistiller checkpoint
   (``--repdistiller DIR``: ``DIR/<arch>_vanilla/ckpt_epoch_240.pth``,
   ``tools/convert_repdistiller_ckpt.py``) or by training
   ``configs/teachers/<name>.py`` and copying its last checkpoint there.
   A zoo URL (the ImageNet configs) is downloaded by mmengine at first use.
2. **KD-layer statistics** (``stats_file``, ``tools/kd_layer_stats.py``) and
   **IE-KD stage 1** (``stage1_ckpt``, ``configs/ie_kd/<stage1>.py``).
3. **each method**: ``tools/train.py --auto-resume`` (an interrupted run
   resumes, mid-epoch included), then ``tools/test.py`` and
   ``tools/export_student.py`` on its last checkpoint.

A step whose output exists is skipped, so running the command again after
an interruption goes on where it stopped. Relative paths of the configs
(``data/...``, ``work_dirs/...``) are read from the working directory, as
``tools/train.py`` reads them: run it from the checkout's root.
``--cfg-options`` is given to every step (e.g. a data root). ``--dry-run``
prints the commands only.
The table (``WORK_ROOT/reproduce_<suite>.md`` and ``.json``) has each run's
best and last validation top-1 (papers report one or the other), its test
top-1, and the number the config cites (``paper_top1``), with the
difference.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

from _common import ROOT, add_cfg_options, load_config_with_options, run_main
from kd_plugins.errors import ArgumentError
from kd_plugins.utils.config import find_key
from kd_plugins.utils.teacher import teacher_entries

SUITES = {'cifar100': '_cifar100.py', 'imagenet': '_in1k.py'}


@dataclass
class Step:
    """One command of the plan; ``done`` exists once it has finished."""
    name: str
    cmd: list
    done: str
    after: callable | None = None  # run after the command (e.g. a copy)
    note: str = ''

    def shell(self) -> str:
        return ' '.join(shlex.quote(str(c)) for c in self.cmd)


@dataclass
class Run:
    """A method config, its work dir and the files its table row reads."""
    config: str
    name: str
    work_dir: str
    paper: dict = field(default_factory=dict)


def _here(path: str) -> str:
    """``path`` relative to the working directory when it is below it (the
    printed commands stay short), else absolute."""
    rel = osp.relpath(path)
    return path if rel.startswith('..') else rel


def _tool(name: str) -> str:
    return _here(osp.join(ROOT, 'tools', name))


def _python(tool: str, *args) -> list:
    return [sys.executable, _tool(tool), *args]


def _options(args) -> list:
    if not args.cfg_options:
        return []
    return ['--cfg-options'] + [f'{k}={_value(v)}'
                                for k, v in args.cfg_options.items()]


def _value(v) -> str:
    if isinstance(v, (list, tuple)):
        return '[' + ','.join(_value(x) for x in v) + ']'
    return str(v)


def _train_cmd(args, config: str, work_dir: str, job: str) -> list:
    opts = _options(args)
    if args.launcher == 'pytorch':
        return ['bash', _tool('dist_train.sh'), config, str(args.gpus),
                '--work-dir', work_dir, '--auto-resume', *opts]
    if args.launcher == 'slurm':
        return ['bash', _tool('slurm_train.sh'), args.partition, job, config,
                work_dir, '--auto-resume', *opts]
    return _python('train.py', config, '--work-dir', work_dir,
                   '--auto-resume', *opts)


def _final_checkpoint(cfg, work_dir: str) -> str:
    train = cfg.get('train_cfg') or {}
    if train.get('by_epoch', 'max_epochs' in train):
        return osp.join(work_dir, f'epoch_{train["max_epochs"]}.pth')
    return osp.join(work_dir, f'iter_{train["max_iters"]}.pth')


def _install(src_glob: str, dst: str, what: str = 'the teacher'):
    """A step's ``after``: copy the newest of ``src_glob`` to ``dst``."""
    def copy():
        found = sorted(glob.glob(src_glob), key=osp.getmtime)
        if not found:
            raise ArgumentError(f'no checkpoint matches {src_glob} after '
                                f'{what} was trained.\n  Fix: look at its '
                                'log, then run this command again.')
        os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
        shutil.copyfile(found[-1], dst)
    return copy


def _teacher_steps(args, path: str, steps: dict) -> None:
    """Make the teacher checkpoint ``path`` (local, missing)."""
    stem = osp.splitext(osp.basename(path))[0]
    if path in steps:
        return
    arch = stem.replace('_cifar100', '')
    src = (osp.join(args.repdistiller, f'{arch}_vanilla',
                    'ckpt_epoch_240.pth') if args.repdistiller else None)
    if src and osp.isfile(src):
        steps[path] = Step(f'teacher {stem} (RepDistiller)', _python(
            'convert_repdistiller_ckpt.py', src, path, '--arch', arch), path)
        return
    config = _here(osp.join(ROOT, 'configs', 'teachers', f'{stem}.py'))
    if not osp.isfile(config):
        raise ArgumentError(
            f'teacher checkpoint {path!r} does not exist and there is no '
            f'{config} to train it.\n  Fix: put the checkpoint there, or '
            '--cfg-options model.teacher_ckpt=PATH.')
    cfg = load_config_with_options(config, args.cfg_options)
    wd = osp.join(args.work_root, 'teachers', stem)
    final = _final_checkpoint(cfg, wd)
    steps[path] = Step(f'teacher {stem}', _train_cmd(args, config, wd, stem),
                       path, after=_install(final, path),
                       note=f'then copy {final} to {path}')


def plan(args) -> tuple[list, list]:
    """The steps (dependencies first, each once) and the runs."""
    suffix = SUITES[args.suite]
    configs = sorted(glob.glob(osp.join(ROOT, 'configs', f'*{suffix}')))
    if args.methods:
        configs = [c for c in configs
                   if any(osp.basename(c).startswith(m)
                          for m in args.methods)]
        if not configs:
            raise ArgumentError(
                f'no {args.suite} config matches --methods '
                f'{" ".join(args.methods)}.\n  Fix: use the start of a name '
                f'in configs/*{suffix} (e.g. aekt, kd_layer, atsc).')
    deps, steps, runs = {}, [], []
    for path in configs:
        rel = _here(path)
        name = osp.splitext(osp.basename(path))[0]
        cfg = load_config_with_options(path, args.cfg_options)
        tree = cfg.to_dict()
        model = cfg.get('model') or {}
        ckpts = [c for *_, c in teacher_entries(model) if c]
        for ckpt in ckpts:
            if '://' not in ckpt and not osp.isfile(ckpt):
                _teacher_steps(args, ckpt, deps)
        for _, stats in find_key(tree, 'stats_file'):
            if stats and stats not in deps and ckpts:
                deps[stats] = Step(f'KD-layer stats {osp.basename(stats)}',
                                   _python('kd_layer_stats.py', rel, ckpts[0],
                                           stats, *_options(args)), stats)
        for _, s1 in find_key(tree, 'stage1_ckpt'):
            if s1 and s1 not in deps:
                s1_name = osp.basename(osp.dirname(s1))
                s1_cfg = _here(osp.join(ROOT, 'configs', 'ie_kd',
                                        f'{s1_name}.py'))
                s1_full = load_config_with_options(s1_cfg, args.cfg_options)
                for *_, c in teacher_entries(s1_full.get('model') or {}):
                    if c and '://' not in c and not osp.isfile(c):
                        _teacher_steps(args, c, deps)
                # a changed schedule (--cfg-options train_cfg.max_epochs)
                # ends elsewhere: copied to the file stage 2 loads
                final = _final_checkpoint(s1_full, osp.dirname(s1))
                moved = osp.normpath(final) != osp.normpath(s1)
                deps[s1] = Step(
                    f'IE-KD stage 1 {s1_name}', _train_cmd(
                        args, s1_cfg, osp.dirname(s1), s1_name), s1,
                    after=(_install(final, s1, 'IE-KD stage 1') if moved
                           else None),
                    note=f'then copy {final} to {s1}' if moved else '')
        wd = osp.join(args.work_root, name)
        final = _final_checkpoint(cfg, wd)
        runs.append(Run(rel, name, wd, dict(cfg.get('paper_top1') or {})))
        steps += [
            Step(f'train {name}', _train_cmd(args, rel, wd, name), final),
            Step(f'test {name}', _python(
                'test.py', rel, final, '--work-dir', osp.join(wd, 'test'),
                '--dump-metrics', osp.join(wd, 'test_metrics.json'),
                *_options(args)), osp.join(wd, 'test_metrics.json')),
            Step(f'export {name}', _python(
                'export_student.py', rel, final, osp.join(wd, 'export'),
                *_options(args)), osp.join(wd, 'export', 'student.pth')),
        ]
    return list(deps.values()) + steps, runs


def _val_top1(work_dir: str) -> list:
    """Every validation top-1 of a run, in order (its restarts included)."""
    values = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                          'scalars.json'))):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if 'accuracy/top1' in row:
                    values.append(float(row['accuracy/top1']))
    return values


def table(runs: list) -> tuple[str, list]:
    rows = []
    for run in runs:
        vals = _val_top1(run.work_dir)
        test = osp.join(run.work_dir, 'test_metrics.json')
        row = dict(method=run.name, config=run.config,
                   best=max(vals) if vals else None,
                   last=vals[-1] if vals else None,
                   test=(json.load(open(test)).get('accuracy/top1')
                         if osp.isfile(test) else None),
                   paper=run.paper.get('top1'),
                   source=run.paper.get('source', ''))
        row['diff'] = (row['last'] - row['paper'] if row['last'] is not None
                       and row['paper'] is not None else None)
        rows.append(row)

    def f(v, sign=False):
        return '—' if v is None else (f'{v:+.2f}' if sign else f'{v:.2f}')
    lines = ['| method | best val top-1 | last val top-1 | test top-1 | '
             'paper | last − paper | paper source |',
             '| --- | --- | --- | --- | --- | --- | --- |']
    for r in rows:
        lines.append(f"| {r['method']} | {f(r['best'])} | {f(r['last'])} | "
                     f"{f(r['test'])} | {f(r['paper'])} | "
                     f"{f(r['diff'], True)} | {r['source']} |")
    return '\n'.join(lines) + '\n', rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--suite', required=True, choices=sorted(SUITES))
    p.add_argument('--methods', nargs='+',
                   help='keep the configs whose name starts with one of '
                   'these words (aekt, kd_layer, mt_kd, ...)')
    p.add_argument('--launcher', default='none',
                   choices=['none', 'pytorch', 'slurm'])
    p.add_argument('--gpus', type=int, default=8,
                   help='processes per training run (pytorch launcher)')
    p.add_argument('--partition', default='gpu', help='slurm partition')
    p.add_argument('--repdistiller', help='RepDistiller save/models folder '
                   '(the published CIFAR teachers) to convert from')
    p.add_argument('--work-root', default='work_dirs/reproduce')
    p.add_argument('--dry-run', action='store_true',
                   help='print the commands; run nothing')
    add_cfg_options(p)
    args = p.parse_args(argv)
    # the configs' relative paths (data/..., work_dirs/...) are read from
    # the working directory, as tools/train.py reads them
    steps, runs = plan(args)
    todo = [s for s in steps if not osp.exists(s.done)]
    print(f'[reproduce] {args.suite}: {len(runs)} configs, {len(steps)} '
          f'steps, {len(steps) - len(todo)} done already', flush=True)
    start = time.time()
    for k, step in enumerate(steps, 1):
        state = 'done' if osp.exists(step.done) else 'run'
        print(f'[reproduce] {k}/{len(steps)} {step.name} ({state}): '
              f'{step.shell()}' + (f'; {step.note}' if step.note else ''),
              flush=True)
        if args.dry_run or state == 'done':
            continue
        proc = subprocess.run(step.cmd)
        if proc.returncode:
            raise ArgumentError(
                f'step {k}/{len(steps)} ({step.name}) exited '
                f'{proc.returncode}.\n  Fix: read its output above; run '
                'this command again to go on from there.')
        if step.after:
            step.after()
        print(f'[reproduce] {k}/{len(steps)} {step.name} finished '
              f'({time.time() - start:.0f} s elapsed)', flush=True)
    if args.dry_run:
        return 0
    text, rows = table(runs)
    out = osp.join(args.work_root, f'reproduce_{args.suite}')
    with open(out + '.md', 'w') as f:
        f.write(text)
    with open(out + '.json', 'w') as f:
        json.dump(rows, f, indent=1)
    print(text + f'[reproduce] table: {out}.md, {out}.json', flush=True)
    return 0


if __name__ == '__main__':
    run_main(main)
