"""The GPU check: CUDA tests and the throughput table, in one command.

    make gpu-check [OUT=work_dirs/gpu_check/NAME]   # on the GPU machine
    make gpu-check DRY_RUN=1                        # plumbing, on any CPU

1. ``pytest -m gpu`` (tests/test_gpu.py: every method on CUDA with bf16/fp16
   AMP, resume on the GPU, load on the CPU, export CPU == GPU, FastDistill
   CUDA == CPU, inductor == eager), JUnit XML + log;
2. ``tools/benchmark.py`` side by side with mmrazor's KD for ImageNet
   ResNet-34 -> ResNet-18 (KD, AEKT, IE-KD stage 2, KD layer; bf16, batch
   256, 224 px; with and without ``compile``; KD and AEKT also from a teacher
   cache, ``--synthetic-cache``) and ATSC ResNet-50 -> ResNet-18
   against mmrazor's KD with a trainable teacher (KD-layer statistics and the
   IE-KD stage-1 encoder are synthetic, said in the tables);
3. ``summary.md`` (tables, targets met / missed, test counts, GPU, torch,
   date) and ``summary.json`` (everything, the benchmark rows included) in
   OUT, beside ``gpu_tests.log``, ``gpu_tests.xml`` and ``bench.log``: five
   files (the device tool brings back at most eight).

The whole check is bounded (``--budget-s``, default 480 s = 8 min): the
tests get at most half, and compile rows that would start after the rest is
spent are skipped and named. ``--dry-run`` (no GPU needed): no install, the
GPU tests only collected, the benchmarks on the CPU at tiny sizes without
compile.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

BENCH = [  # (name, config, compile row, teacher-cache row)
    ('kd', 'configs/kd_r34_r18_in1k.py', True, True),
    ('aekt', 'configs/aekt_r34_r18_in1k.py', True, True),
    ('ie_kd', 'configs/ie_kd_r34_r18_in1k.py', True, False),
    ('kd_layer', 'configs/kd_layer_r34_r18_in1k.py', True, False),
    ('atsc', 'configs/atsc_r50_r18_in1k.py', False, False),
]


def _run(cmd, log_path, timeout, env=None) -> int:
    """Run ``cmd`` in the repo root, output to the console and (appended
    to) a log."""
    print('[gpu-check] ' + ' '.join(cmd), flush=True)
    with open(log_path, 'a') as log:
        log.write('[gpu-check] ' + ' '.join(cmd) + '\n')
        try:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            deadline = time.time() + timeout
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
                if time.time() > deadline:
                    proc.kill()
                    log.write(f'\n[gpu-check] killed after {timeout:.0f} s\n')
                    break
            return proc.wait()
        except OSError as err:
            log.write(f'[gpu-check] could not run: {err}\n')
            return 127


def _junit(path) -> dict:
    if not osp.isfile(path):
        return {}
    root = ET.parse(path).getroot()
    suite = root if root.tag == 'testsuite' else root.find('testsuite')
    keys = ('tests', 'failures', 'errors', 'skipped')
    counts = {k: int(suite.get(k, 0)) for k in keys}
    counts['failed_tests'] = [
        f"{c.get('classname')}::{c.get('name')}" for c in suite.iter(
            'testcase') if c.find('failure') is not None
        or c.find('error') is not None]
    return counts


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default=osp.join(
        'work_dirs', 'gpu_check', time.strftime('%Y%m%d_%H%M%S')))
    p.add_argument('--dry-run', action='store_true')
    p.add_argument('--budget-s', type=float, default=480)
    p.add_argument('--batch', type=int, default=256)
    p.add_argument('--only', nargs='+', choices=[b[0] for b in BENCH],
                   help='benchmark only these configs')
    args = p.parse_args(argv)
    t0 = time.time()
    out = osp.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    env['PYTHONPATH'] = os.pathsep.join(
        [x for x in (env.get('PYTHONPATH'), ROOT) if x])
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() \
        else None
    if not args.dry_run and gpu is None:
        raise SystemExit('kd_plugins: make gpu-check needs a CUDA device '
                         '(none found). Fix: run it on the GPU machine, or '
                         'check the plumbing with make gpu-check DRY_RUN=1.')
    summary = dict(date=time.strftime('%Y-%m-%d %H:%M'), gpu=gpu or 'none',
                   torch=torch.__version__, dry_run=args.dry_run,
                   python=sys.version.split()[0])

    # 1) the GPU tests
    junit = osp.join(out, 'gpu_tests.xml')
    cmd = [sys.executable, '-m', 'pytest', '-m', 'gpu', 'tests/test_gpu.py',
           '-p', 'no:cacheprovider', '-rfEs', f'--junitxml={junit}']
    if args.dry_run:
        cmd.append('--collect-only')
    else:
        try:  # several test processes share the GPU (tiny models)
            import xdist  # noqa: F401
            cmd += ['-n', '4']
        except ImportError:
            pass
    log = osp.join(out, 'gpu_tests.log')
    rc = _run(cmd, log, args.budget_s / 2, env)
    summary['tests'] = dict(returncode=rc, **_junit(junit))
    with open(log) as f:
        found = re.findall(r'(\d+)(?:/\d+)? tests? collected', f.read())
    summary['tests']['collected'] = int(found[-1]) if found else None

    # 2) the benchmarks, within what is left of the budget
    rows, tmp = [], tempfile.mkdtemp(prefix='gpu_check_')
    bench = [b for b in BENCH if not args.only or b[0] in args.only]
    bench_log = osp.join(out, 'bench.log')
    for i, (name, cfg, with_compile, with_cache) in enumerate(bench):
        left = args.budget_s - (time.time() - t0)
        js = osp.join(tmp, f'bench_{name}.json')
        cmd = [sys.executable, 'tools/benchmark.py', cfg, '--json', js]
        if with_cache:  # the step from a teacher cache (random logits)
            cmd.append('--synthetic-cache')
        if args.dry_run:
            cmd += ['--device', 'cpu', '--batch', '2', '--size', '64',
                    '--iters', '1', '--warmup', '1']
        else:
            cmd += ['--amp', 'bf16', '--batch', str(args.batch),
                    '--iters', '20', '--warmup', '5',
                    '--budget-s', str(max(0.0, left / (len(bench) - i)
                                          - 30))]
            if with_compile:
                cmd.append('--compile')
        if left <= 0:
            rows.append(dict(name=name, config=cfg, skipped='time budget '
                             'spent'))
            continue
        rc = _run(cmd, bench_log, max(left, 60), env)
        if rc == 0 and osp.isfile(js):
            with open(js) as f:
                rows.append(dict(name=name, config=cfg, **json.load(f)))
        else:
            rows.append(dict(name=name, config=cfg,
                             failed=f'exit {rc}, see bench.log'))
    summary['benchmarks'] = rows
    summary['seconds'] = round(time.time() - t0)
    with open(osp.join(out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    md = render(summary)
    with open(osp.join(out, 'summary.md'), 'w') as f:
        f.write(md)
    print('\n' + md)
    print(f'[gpu-check] wrote {out}/summary.md, summary.json, '
          f'gpu_tests.log, gpu_tests.xml, bench.log ({summary["seconds"]} s)')
    tests = summary['tests']
    failed = tests.get('failures', 0) + tests.get('errors', 0)
    if tests.get('returncode') not in (0, None) or failed or any(
            'failed' in r for r in rows):
        raise SystemExit(1)
    return summary


def render(s: dict) -> str:
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    from benchmark import table
    t = s['tests']
    lines = [f"# GPU check, {s['date']}", '',
             f"GPU: {s['gpu']}; torch {s['torch']}; python {s['python']}; "
             f"{s['seconds']} s" + ('; DRY RUN (CPU plumbing)'
                                    if s['dry_run'] else ''), '',
             f"## Tests (`pytest -m gpu`): {t.get('tests', '?')} run "
             f"({t.get('collected')} collected), "
             f"{t.get('failures', '?')} failures, {t.get('errors', '?')} "
             f"errors, {t.get('skipped', '?')} skipped (exit "
             f"{t.get('returncode')})"]
    lines += [f'- FAILED {n}' for n in t.get('failed_tests', [])]
    lines += ['', '## Throughput (tools/benchmark.py, side by side with '
              "mmrazor's KD in one process)", '']
    for r in s['benchmarks']:
        if 'rows' not in r:
            why = r.get('failed') or r.get('skipped')
            lines += [f"- {r['config']}: {why}",
                      '']
            continue
        lines += [table(r['rows'], r['meta']), '']
        for tg in r.get('targets', []):
            lines.append(f"- {tg['row']}: {tg['target']}: {tg['value']} "
                         f"{'met' if tg['ok'] else 'MISSED'}")
        lines.append('')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    main()
