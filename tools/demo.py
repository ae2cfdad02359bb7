"""The kd_plugins demo and Digits benchmark.

    python tools/demo.py                                    # make demo
    python tools/demo.py --regime both --seeds 3 --tune     # the benchmark
    python tools/demo.py --only kd aekt --regime full --seeds 2

Trains the teachers on scikit-learn's bundled Digits, then the student alone
and the student with each method, on the chosen regime(s): ``full`` (the
whole train split) and ``few-labels`` (15 labelled images per class; the
teachers still saw the whole train split). Protocol in
``benchmarks/digits.py``: with ``--tune`` every row's learning rate (and the
student alone's epochs, then used by every row) is chosen on a validation split
carved out of the train split, with the same grid for all rows; without it
every row trains with its config's own schedule (``configs/demo/*.py`` for the
full regime, ``configs/demo/few_labels/*.py``), which holds the choices of the
committed tuned run (``docs/results/digits_benchmark.json``; a tuned run says
where its choices differ from the configs). Each row then trains with
``--seeds`` seeds and is evaluated once, at the end, on the test split. Writes
``WORK_DIR/results.json``, ``results.md`` (one table per regime: mean ± std
over seeds, Welch verdicts against the student alone and against KD) and
``results.png`` (bar chart with error bars).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import json
import os
import os.path as osp
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, List, Optional, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.digits import (BY_NAME, DEFAULT_LR, LR_GRID,  # noqa: E402
                               REGIMES, TEACHER_EPOCHS, Row, chart,
                               data_options, markdown, select, summarize,
                               summary_table, verdict)

PROGRESS_EVERY = 30  # seconds between two progress lines of a stage
DEMO_BUDGET = 600  # seconds: what make demo may take on a 2-core machine
VAL = ['val_dataloader.dataset.split=val',
       'val_dataloader.dataset.val_per_class=28']


# ------------------------------------------------------------------ runs
def parse_log(text: str) -> dict:
    """Last validation top-1, train-loss tail and last logged terms."""
    val = re.findall(r'Epoch\(val\) \[\d+\]\[\d+/\d+\]\s+accuracy/top1: '
                     r'([0-9.]+)', text)
    train = [line for line in text.splitlines() if 'Epoch(train)' in line]
    losses = [float(m) for m in re.findall(r'\sloss: ([0-9.eE+-]+|nan|inf)',
                                           '\n'.join(train))]
    terms = {}
    if train:
        for k, v in re.findall(r'\s([\w.]+): ([-0-9.eE+]+|nan|inf)',
                               train[-1]):
            if k not in ('lr', 'eta', 'time', 'data_time', 'memory'):
                terms[k] = float(v)
    tail = None
    if len(losses) >= 10:
        n = max(1, len(losses) // 10)
        tail = dict(prev=sum(losses[-2 * n:-n]) / n,
                    last=sum(losses[-n:]) / n)
    return dict(top1=float(val[-1]) if val else None, loss_tail=tail,
                last_terms=terms)


def log_position(path: str):
    """(epoch, iteration in epoch, iterations per epoch) of the last
    ``Epoch(train) [e][i/n]`` line of a training log, or None."""
    try:
        with open(path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 20000))
            tail = f.read().decode('utf-8', 'replace')
    except OSError:
        return None
    found = re.findall(r'Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/(\d+)\]',
                       tail)
    return tuple(map(int, found[-1])) if found else None


def schedule_of(config: str) -> dict:
    """The learning rate and epochs a config trains with as it is."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, config))
    return dict(lr=cfg.optim_wrapper.optimizer.lr,
                epochs=cfg.train_cfg.max_epochs)


def log_seconds(text: str):
    """Seconds between the first and the last timestamp of an mmengine log
    (``MM/DD HH:MM:SS``; None without two of them)."""
    stamps = re.findall(r'^(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d) - ', text,
                        re.M)
    if len(stamps) < 2:
        return None
    import datetime as dt

    def t(m):
        return dt.datetime(2000, *map(int, m))
    return round((t(stamps[-1]) - t(stamps[0])).total_seconds(), 1)


def finished_run(job: 'Job'):
    """The log text of a finished run in ``job.work_dir`` trained with
    exactly ``job``'s config and options, else None (``--reuse``).

    Finished: ``last_checkpoint`` names an existing file. Same run: the
    config mmengine dumped there has ``job``'s learning rate and epochs and
    every ``--cfg-options`` value of ``job`` (parsed as tools/train.py
    parses it)."""
    from mmengine.config import Config, DictAction
    wd = job.work_dir
    last, log = osp.join(wd, 'last_checkpoint'), osp.join(wd, 'train.log')
    dumped = osp.join(wd, osp.basename(job.config))
    if not all(osp.isfile(f) for f in (last, log, dumped)):
        return None
    with open(last) as f:
        if not osp.isfile(f.read().strip()):
            return None
    cfg = Config.fromfile(dumped).to_dict()
    if job.lr is not None and \
            cfg.get('optim_wrapper', {}).get('optimizer', {}).get('lr') \
            != job.lr:
        return None  # the config's own schedule changed since
    if job.epochs is not None and \
            cfg.get('train_cfg', {}).get('max_epochs') != job.epochs:
        return None
    for opt in job.options:
        key, value = opt.split('=', 1)
        node = cfg
        for part in key.split('.'):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        want = DictAction._parse_iterable(value)
        if isinstance(node, (list, tuple)):
            node = list(node)
        if node != want and str(node) != str(want):
            return None
    with open(log) as f:
        return f.read()


@dataclass
class Job:
    """One tools/train.py run of the demo (or, with ``cmd``, another
    command: the KD-layer statistics)."""
    tag: str           # what the log line calls it
    config: str
    row: str           # benchmarks.digits ROWS name
    regime: str        # 'teacher', 'full' or 'few-labels'
    work_dir: str
    lr: Optional[float]     # what it trains with (its config's or an option)
    epochs: Optional[int]
    options: List[str]  # --cfg-options key=value
    seed: int = 0
    # the jobs (tags) of the same stage whose files it needs: it starts
    # when they have ended, and ``late`` then gives the options naming
    # those files; ``done`` gets the job's result before its dependents
    # start (what they read: checkpoints, the statistics file)
    after: Tuple[str, ...] = ()
    late: Optional[Callable[[], List[str]]] = None
    done: Optional[Callable[[dict], None]] = None
    cmd: Optional[List[str]] = None
    reusable: Optional[Callable[[], bool]] = None  # for a ``cmd`` job


# Job fields that are not results (callables, the command)
CONTROL = ('after', 'late', 'done', 'cmd', 'reusable')


class JobRunner:
    """Runs :class:`Job` s through tools/train.py, ``jobs`` at a time (one
    thread group each), and says how far it is. With ``reuse``, a job whose
    work dir holds a finished run with the same config and options is read
    from its log instead of trained again. Results are dicts (the job's
    fields, then ``ok``, ``top1``, ``seconds``, ``log``, ``checkpoint``...):
    they go into results.json as they are."""

    def __init__(self, work_dir: str, jobs: int, reuse: bool = False,
                 progress_every: float = PROGRESS_EVERY) -> None:
        self.work_dir, self.jobs = work_dir, max(1, jobs)
        self.progress_every = progress_every
        self.running = {}  # work dir -> (job, start time)
        self.durations = []  # seconds of the runs trained in this stage
        self.reuse, self.reused = reuse, set()  # work dirs read from logs
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        self.env = dict(os.environ, PYTHONUNBUFFERED='1',
                        OMP_NUM_THREADS=str(threads),
                        MKL_NUM_THREADS=str(threads))
        self.t0 = time.time()
        self._lock = threading.Lock()
        self._done = self._total = 0
        self._ended, self._results = {}, {}  # tag -> Event, result

    def train(self, job: Job) -> dict:
        res = None
        try:
            for tag in job.after:  # its inputs first
                self._ended[tag].wait()
                if not self._results[tag]['ok']:
                    res = dict(self._fields(job), ok=False, seconds=None,
                               log=self._results[tag]['log'], top1=None,
                               error=f'needs {tag}, which failed')
                    print(f'[demo] {job.tag}: not run: it needs {tag}, '
                          'which failed' + self._progress(), flush=True)
                    return res
            if job.late:
                job = replace(job, options=job.options + job.late())
            res = self._run(job)
            if res['ok'] and job.done:
                job.done(res)
            return res
        finally:
            with self._lock:
                self._results[job.tag] = res or dict(ok=False, log=None)
            if job.tag in self._ended:
                self._ended[job.tag].set()

    @staticmethod
    def _fields(job: Job) -> dict:
        return {k: v for k, v in asdict(job).items() if k not in CONTROL}

    def _run(self, job: Job) -> dict:
        wd = job.work_dir
        os.makedirs(wd, exist_ok=True)
        log_path = osp.join(wd, 'train.log')
        if job.cmd:
            reused = self.reuse and job.reusable is not None and \
                job.reusable()
            text = '' if reused else None
        else:
            text = finished_run(job) if self.reuse else None
            reused = text is not None
        if reused:
            ok, seconds = True, log_seconds(text)
            self.reused.add(wd)
        else:
            cmd = job.cmd or [sys.executable, 'tools/train.py', job.config,
                              '--work-dir', wd, '--cfg-options',
                              *job.options]
            t0 = time.time()
            with self._lock:
                self.running[wd] = (job, t0)
            try:
                with open(log_path, 'w') as log:
                    proc = subprocess.run(cmd, cwd=ROOT, stdout=log,
                                          stderr=subprocess.STDOUT,
                                          env=self.env)
            finally:
                with self._lock:
                    self.running.pop(wd, None)
            with open(log_path) as f:
                text = f.read()
            ok, seconds = proc.returncode == 0, round(time.time() - t0, 1)
            with self._lock:
                self.durations.append(seconds)
        res = dict(self._fields(job), seconds=seconds, log=log_path, ok=ok,
                   **parse_log(text))
        if reused:
            res['reused'] = True
        if ok and not job.cmd:
            with open(osp.join(wd, 'last_checkpoint')) as f:
                res['checkpoint'] = f.read().strip()
        else:
            tail = '\n'.join(text.splitlines()[-3:]) or \
                f'exit status {proc.returncode}, no output'
            res['error'] = tail
        status = (f"top-1 {res['top1']:.2f}" if res.get('top1') is not None
                  else ('FAILED: ' + tail.splitlines()[-1][:160]
                        if not ok else 'done'))
        took = f'{seconds:.0f} s' if seconds is not None else '? s'
        print(f'[demo] {job.tag}: ' + (
            f'reused {status} ({took} when it ran)' if reused else
            f'{status} ({took})') + self._progress(), flush=True)
        return res

    def _progress(self) -> str:
        """'; run k of n of this stage, elapsed, about ... left'."""
        with self._lock:
            self._done += 1
            done, total = self._done, self._total
        elapsed = time.time() - self.t0
        left = (self._stage_elapsed() / done) * (total - done)
        return (f'; run {done} of {total} of this stage, {elapsed:.0f} s '
                f'elapsed, about {left:.0f} s left in the stage')

    def _stage_elapsed(self) -> float:
        return time.time() - self._stage_t0

    def progress_line(self) -> str:
        """What the stage is doing now: each running job's epoch and
        elapsed time, and an estimate of what is left in the stage (from the
        running jobs' pace, or the finished runs' mean duration)."""
        now = time.time()
        with self._lock:
            running = list(self.running.values())
            done, total = self._done, self._total
            durations = list(self.durations)
        parts, left, projected = [], 0.0, []
        for job, t0 in running:
            pos = log_position(osp.join(job.work_dir, 'train.log'))
            took = now - t0
            if pos and job.epochs:
                e, i, n = pos
                frac = min(1.0, ((e - 1) * n + i) / (job.epochs * n))
                parts.append(f'{job.tag} epoch {e}/{job.epochs} '
                             f'({took:.0f} s)')
                if frac > 0:
                    projected.append(took / frac)
                    left += took / frac - took
            else:
                parts.append(f'{job.tag} starting ({took:.0f} s)')
        queued = total - done - len(running)
        per_run = (sum(durations) / len(durations) if durations else
                   sum(projected) / len(projected) if projected else None)
        eta = ''
        if per_run is not None:
            left = (left + queued * per_run) / self.jobs
            eta = f', about {left:.0f} s left in the stage'
        return (f'[demo] running: {"; ".join(parts) or "-"} | {done} of '
                f'{total} done, {queued} queued, {now - self.t0:.0f} s '
                f'elapsed{eta}')

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(self.progress_every):
            print(self.progress_line(), flush=True)

    def run_all(self, jobs: List[Job]) -> List[dict]:
        if not jobs:
            return []
        seen = set()
        for j in jobs:  # inputs first: a waiting job never blocks them
            missing = [t for t in j.after if t not in seen]
            if missing:
                raise ValueError(f'{j.tag} needs {missing}, which are not '
                                 'before it in this stage')
            seen.add(j.tag)
        with self._lock:
            self._done, self._total = 0, len(jobs)
            self.durations = []
            self._ended = {j.tag: threading.Event() for j in jobs}
            self._results = {}
        self._stage_t0 = time.time()
        print(f'[demo] starting {len(jobs)} run(s), {self.jobs} at a time: '
              + ', '.join(j.tag for j in jobs), flush=True)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(stop, ),
                                daemon=True)
        if self.progress_every > 0:
            beat.start()
        try:
            with cf.ThreadPoolExecutor(self.jobs) as pool:
                return list(pool.map(self.train, jobs))
        finally:
            stop.set()


def evaluate_adapted_teacher(config: str, checkpoint: str, k: int) -> float:
    """Test top-1 of ATSC's adapted teacher ``k`` (from its checkpoint)."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner as MMRunner
    from mmrazor.registry import MODELS

    import kd_plugins  # noqa: F401
    from kd_plugins.utils.checkpoint import load_local_checkpoint
    cfg = Config.fromfile(osp.join(ROOT, config))
    init_default_scope('mmpretrain')
    teacher = MODELS.build(cfg.model.teachers[k])
    state = load_local_checkpoint(checkpoint, map_location='cpu')
    sd = state['state_dict']
    pre = f'teachers.{k}.'
    teacher.load_state_dict({n[len(pre):]: v for n, v in sd.items()
                             if n.startswith(pre)})
    teacher.eval()
    preprocess = MODELS.build(cfg.model.data_preprocessor)  # the run's norm
    loader = MMRunner.build_dataloader(cfg.test_dataloader)
    correct = total = 0
    with torch.no_grad():
        for data in loader:
            data = preprocess(data, False)
            pred = teacher(data['inputs'], mode='tensor').argmax(1)
            y = torch.cat([d.gt_label for d in data['data_samples']])
            correct += int((pred == y).sum())
            total += len(y)
    return 100.0 * correct / total


# --------------------------------------------------------------- planning
def needs_options(row: Row, ckpts: dict) -> list:
    opts = []
    for key, needed in row.needs:
        value = (ckpts[needed] if isinstance(needed, str) else
                 '[' + ','.join(ckpts[n] for n in needed) + ']')
        opts.append(f'{key}={value}')
    return opts


def common(lr: Optional[float], epochs: int, seed: int,
           set_epochs: bool = True) -> list:
    """Options of every run: validation and checkpoint at the end only, the
    seed; the learning rate when ``lr`` is given (tuning: otherwise the
    config's own) and the epochs with ``set_epochs``."""
    return ([f'optim_wrapper.optimizer.lr={lr}'] if lr is not None else []) \
        + ([f'train_cfg.max_epochs={epochs}'] if set_epochs else []) + [
            f'train_cfg.val_interval={epochs}',
            f'default_hooks.checkpoint.interval={epochs}',
            f'randomness.seed={seed}']


@dataclass
class Plan:
    """What the stages share: the options, the rows, the learning-rate /
    epoch choices (tuned here or read), and the files the teachers left."""
    args: argparse.Namespace
    rows: List[Row]
    choices: dict  # regime -> row -> lr, epochs: what the runs use
    config_choices: dict  # the same, as the rows' configs have it
    ckpts: dict = field(default_factory=dict)  # row name -> checkpoint
    stats_file: Optional[str] = None
    tune_log: List[dict] = field(default_factory=list)

    def choice(self, regime: str, name: str, key: str, default):
        return (self.choices.get(regime, {}).get(name, {}).get(key)
                or default)

    def epochs(self, default: int) -> int:
        return self.args.epochs or default

    def schedule(self, regime: str, row: Row, seed: int) -> tuple:
        """(lr, epochs, options) of a final run of ``row``: its config's
        own schedule (only ``--epochs`` overrides it), or, after ``--tune``,
        the choices of this run as options."""
        if self.args.tune:
            c = self.choices[regime][row.name]
            return c['lr'], c['epochs'], common(c['lr'], c['epochs'], seed)
        own = self.config_choices[regime][row.name]
        epochs = self.epochs(own['epochs'])
        return own['lr'], epochs, common(None, epochs, seed,
                                         set_epochs=bool(self.args.epochs))

    def rows_of(self, kind: str) -> List[Row]:
        return [r for r in self.rows if r.kind == kind]

    def row_options(self, row: Row) -> list:
        opts = needs_options(row, self.ckpts) + list(row.options)
        return opts + [f'{k}={self.stats_file}' for k in row.stats_keys]

    def work_dir(self, *parts: str) -> str:
        return osp.join(self.args.work_dir, *parts)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--regime', default='few-labels',
                   choices=['full', 'few-labels', 'both'])
    p.add_argument('--seeds', type=int, default=1)
    p.add_argument('--tune', action='store_true',
                   help='choose lr (and the student\'s epochs) on the '
                   'validation split first')
    p.add_argument('--lr-grid', type=float, nargs='+', default=LR_GRID)
    p.add_argument('--only', nargs='+', metavar='ROW',
                   choices=list(BY_NAME),
                   help='run only these rows (and what they need)')
    p.add_argument('--all-rows', action='store_true',
                   help='also the variant rows (atsc_anchor_norm, ie_kd_kd, '
                   'mt_aekt), left out of the default run to keep make demo '
                   'under 10 minutes; --tune implies it')
    p.add_argument('--epochs', type=int,
                   help='override every epoch count (quick runs)')
    p.add_argument('--jobs', type=int, default=min(2, os.cpu_count() or 1),
                   help='trainings at a time (each gets cpus / jobs threads)')
    p.add_argument('--work-dir', default='work_dirs/demo')
    p.add_argument('--results-dir',
                   help='also copy results.{json,md,png} here (as '
                   'digits_benchmark.*)')
    p.add_argument('--reuse', action='store_true',
                   help='read runs already finished in --work-dir with the '
                   'same config and options from their logs (an interrupted '
                   'benchmark goes on where it stopped)')
    p.add_argument('--progress-every', type=float, default=PROGRESS_EVERY,
                   metavar='SECONDS', help='print what is running, its epoch '
                   'and the time left this often (0: only when a run ends)')
    p.add_argument('--report-from', metavar='RESULTS_JSON',
                   help='only write the table and chart again from a '
                   'results.json (no training)')
    args = p.parse_args(argv)
    if args.epochs is not None and args.epochs < 2:
        p.error('--epochs must be >= 2 (1 warm-up epoch + cosine decay)')
    return args


def config_choices(rows: List[Row]) -> dict:
    """regime -> row -> the lr and epochs of the row's config for that
    regime (the teachers under 'teacher')."""
    out = {}
    for regime in ('teacher', 'full', 'few-labels'):
        for r in rows:
            if (r.kind == 'teacher') == (regime == 'teacher') and \
                    r.kind != 'prep':
                out.setdefault(regime, {})[r.name] = schedule_of(
                    r.config_for(regime))
    return out


def load_choices(args, rows: List[Row]) -> tuple[dict, dict, str]:
    """(choices the runs use, the configs' choices, where the former come
    from): tuned in this run, or the configs' own schedules."""
    own = config_choices(rows)
    if args.tune:
        return {}, own, 'tuned in this run'
    return own, own, ('the configs\' own schedules (configs/demo/, '
                      'configs/demo/few_labels/: the committed benchmark\'s '
                      'choices)')


def config_disagreements(plan: Plan) -> List[str]:
    """Where the choices tuned in this run differ from the configs'."""
    out = []
    for regime, rows in plan.choices.items():
        for name, c in rows.items():
            own = plan.config_choices.get(regime, {}).get(name)
            if own and (own['lr'] != c['lr'] or own['epochs'] != c['epochs']):
                row = next(r for r in plan.rows if r.name == name)
                out.append(f"{row.config_for(regime)}: tuned lr {c['lr']} / "
                           f"{c['epochs']} epochs, the config has "
                           f"{own['lr']} / {own['epochs']}")
    return out


def train_teachers(plan: Plan, runner: JobRunner) -> List[dict]:
    """Stage 1: the teachers on the whole train split (lr tuned on the
    validation split with --tune), evaluated on the test split."""
    teachers = plan.rows_of('teacher')
    epochs = plan.epochs(plan.config_choices['teacher']['teacher']['epochs']
                         if 'teacher' in plan.config_choices else
                         TEACHER_EPOCHS)
    if plan.args.tune and teachers:
        res = runner.run_all([Job(
            tag=f'tune teacher lr {lr}', config=teachers[0].config,
            row='teacher', regime='teacher',
            work_dir=plan.work_dir('tune', 'teacher', f'lr{lr}'), lr=lr,
            epochs=epochs, options=common(lr, epochs, 0) + data_options(
                {'val_per_class': 28}) + VAL) for lr in plan.args.lr_grid])
        plan.tune_log += res
        best = max((r for r in res if r['top1'] is not None),
                   key=lambda r: r['top1'])
        plan.choices.setdefault('teacher', {})['teacher'] = dict(
            lr=best['lr'], epochs=epochs)
    tuned = plan.args.tune
    lr = plan.choice('teacher', 'teacher', 'lr', DEFAULT_LR)
    res = runner.run_all([Job(
        tag=r.name, config=r.config, row=r.name, regime='teacher',
        work_dir=plan.work_dir(r.name), lr=lr, epochs=epochs,
        seed=0 if r.name == 'teacher' else 1,
        options=common(lr if tuned else None, epochs,
                       0 if r.name == 'teacher' else 1,
                       set_epochs=tuned or bool(plan.args.epochs)))
        for r in teachers])
    if any(not r['ok'] for r in res):
        raise SystemExit('demo: a teacher failed to train: ' + '; '.join(
            r['log'] for r in res if not r['ok']))
    plan.ckpts.update({r['row']: r['checkpoint'] for r in res})
    for r in res:  # the stable names the demo configs read
        shutil.copy(r['checkpoint'], plan.work_dir(f"{r['row']}.pth"))
    return res


STATS = 'kd_layer_stats'  # the tag of the statistics job


def prep_jobs(plan: Plan) -> List[Job]:
    """Stage 2: what the methods read from the teachers (IE-KD stage 1, the
    KD-layer statistics). Without --tune they run in the final stage's
    pool, first, beside the rows that do not need them; each, when done,
    puts its file where the rows' options and the demo configs look
    (``WORK_DIR/<name>.pth``, ``WORK_DIR/kd_layer_stats.npz``)."""
    jobs = []
    for r in plan.rows_of('prep'):
        own = schedule_of(r.config)

        def done(res, name=r.name):
            plan.ckpts[name] = res['checkpoint']
            shutil.copy(res['checkpoint'], plan.work_dir(f'{name}.pth'))
        jobs.append(Job(
            tag=r.name, config=r.config, row=r.name, regime='teacher',
            work_dir=plan.work_dir(r.name), lr=own['lr'],
            epochs=plan.epochs(own['epochs']),
            options=needs_options(r, plan.ckpts) + (
                [f'train_cfg.max_epochs={plan.args.epochs}']
                if plan.args.epochs else []), done=done))
    if any(r.stats_keys for r in plan.rows):
        out = plan.work_dir('kd_layer_stats.npz')
        config = next(r.config for r in plan.rows if r.stats_keys)
        teacher = plan.ckpts['teacher']

        def stats_done(res):
            plan.stats_file = out
        jobs.append(Job(
            tag=STATS, config=config, row=STATS, regime='teacher',
            work_dir=plan.work_dir(STATS), lr=None, epochs=None, options=[],
            cmd=[sys.executable, 'tools/kd_layer_stats.py', config, teacher,
                 out],
            reusable=lambda: osp.isfile(out) and osp.getmtime(out) >
            osp.getmtime(teacher), done=stats_done))
    return jobs


def cache_jobs(plan: Plan, regime: str, stage: str, rows: List[Row],
               data: List[str]) -> Tuple[List[Job], dict]:
    """The teacher caches the cache rows among ``rows`` train from in this
    stage ('tune' or 'final'), one per view count (KD and AEKT share it:
    same teacher, data and pipeline), built by tools/cache_teacher.py from
    the regime's KD config and ``data`` options. Returns the jobs and, per
    row, (the job's tag, the cache's options)."""
    jobs, of = {}, {}
    teacher = plan.ckpts['teacher']
    for r in rows:
        if not r.cache_views:
            continue
        v = r.cache_views
        tag = f'{regime} {stage} teacher cache ({v} views)'
        out = plan.work_dir(regime, stage, f'teacher_cache_{v}')
        if tag not in jobs:
            config = BY_NAME['kd'].config_for(regime)
            jobs[tag] = Job(
                tag=tag, config=config, row=tag, regime=regime,
                work_dir=out + '_build', lr=None, epochs=None, options=[],
                cmd=[sys.executable, 'tools/cache_teacher.py', config, out,
                     '--views', v, '--cfg-options',
                     f'model.teacher_ckpt={teacher}', *data],
                reusable=lambda out=out: _complete_cache(out, teacher))
        of[r.name] = (tag, [f'model.teacher_cache={out}'])
    return list(jobs.values()), of


def _complete_cache(out: str, teacher: str) -> bool:
    """A finished cache newer than the teacher checkpoint (--reuse)."""
    from kd_plugins.errors import KDPluginsError
    from kd_plugins.teacher_cache.store import INDEX, read_complete_index
    try:
        read_complete_index(out)
        return osp.getmtime(osp.join(out, INDEX)) > osp.getmtime(teacher)
    except (KDPluginsError, OSError, ValueError):
        return False


def run_prep(plan: Plan, runner: JobRunner, jobs: List[Job]) -> None:
    """The prep jobs as a stage of their own (--tune: the tuning runs need
    their files)."""
    res = runner.run_all(jobs)
    if any(not r['ok'] for r in res):
        raise SystemExit('demo: a teacher file failed: ' + '; '.join(
            r['log'] for r in res if not r['ok']))


def row_inputs(row: Row) -> Tuple[str, ...]:
    """The steps (tags) a row reads the files of: teachers, prep jobs."""
    steps = []
    for _, needed in row.needs:
        steps += [needed] if isinstance(needed, str) else list(needed)
    return tuple(steps) + ((STATS, ) if row.stats_keys else ())


@functools.lru_cache(maxsize=None)
def committed_seconds() -> dict:
    """(regime, row) -> mean duration of its runs in the committed
    benchmark (read once)."""
    path = osp.join(ROOT, 'docs', 'results', 'digits_benchmark.json')
    try:  # not read_report: only the start order depends on it, and the
        # orchestrator does not import kd_plugins for it (seconds)
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(report, dict) or report_problems(report) or \
            report.get('kd_plugins_kind', 'digits_benchmark') != \
            'digits_benchmark' or report.get('format_version', 1) != 1:
        return {}  # another kind of file, or a newer format
    results = report['results']
    out = {}
    for regime, rows in results.items():
        for r in rows:
            seconds = [x['seconds'] for x in r.get('runs', [])
                       if isinstance(x, dict) and x.get('seconds')]
            if seconds:
                out[regime, r['name']] = sum(seconds) / len(seconds)
    return out


def expected_seconds(regime: str, row: str) -> float:
    """A run's duration in the committed benchmark (the longest start
    first: the pool ends sooner); 60 s when it is not there."""
    return committed_seconds().get((regime, row), 60.0)


def tune_regime(plan: Plan, runner: JobRunner, regime: str) -> int:
    """Stage 3 (--tune): on the validation split, one seed, the student
    alone's lr and epochs, then every other row's lr at those epochs.
    Returns the epochs every row then trains for."""
    spec = REGIMES[regime]
    students = plan.rows_of('student')
    e0 = plan.epochs(spec['epochs'])
    grid = [(lr, e) for lr in plan.args.lr_grid for e in (e0, 2 * e0)]
    student = next(r for r in students if r.name == 'student')
    res = runner.run_all([Job(
        tag=f'{regime} tune student lr {lr} epochs {e}',
        config=student.config_for(regime), row='student', regime=regime,
        work_dir=plan.work_dir(regime, 'tune', f'student_lr{lr}_e{e}'),
        lr=lr, epochs=e, options=plan.row_options(student) + common(lr, e, 0)
        + data_options(spec['tune']) + VAL) for lr, e in grid])
    plan.tune_log += res
    ok = [r for r in res if r['top1'] is not None]
    best = max(ok, key=lambda r: (r['top1'], -r['epochs']))
    epochs = best['epochs']
    plan.choices.setdefault(regime, {})['student'] = dict(lr=best['lr'],
                                                          epochs=epochs)
    others = [r for r in students if r.name != 'student']
    caches, cache_of = cache_jobs(plan, regime, 'tune', others,
                                  data_options(spec['tune']))
    res = runner.run_all(caches + [Job(
        tag=f'{regime} tune {r.name} lr {lr}', config=r.config_for(regime),
        row=r.name,
        regime=regime, work_dir=plan.work_dir(regime, 'tune',
                                              f'{r.name}_lr{lr}'),
        lr=lr, epochs=epochs, options=plan.row_options(r) + common(
            lr, epochs, 0) + data_options(spec['tune']) + VAL
        + cache_of.get(r.name, (None, []))[1],
        after=cache_of[r.name][:1] if r.name in cache_of else ())
        for r in others for lr in plan.args.lr_grid])[len(caches):]
    plan.tune_log += res
    for r in others:
        ok = [x for x in res if x['row'] == r.name and x['top1'] is not None]
        lr = max(ok, key=lambda x: x['top1'])['lr'] if ok else \
            min(plan.args.lr_grid)
        plan.choices[regime][r.name] = dict(lr=lr, epochs=epochs)
    return epochs


def final_runs(plan: Plan, runner: JobRunner, regime: str,
               prep: List[Job] = ()) -> List[dict]:
    """Stage 4: every row with --seeds seeds, the test split at the end; the
    regime's data and (without --tune) the schedule come from its config.
    ``prep`` jobs run first in the same pool; a row that reads their files
    starts when they have ended. The longest runs start first."""
    jobs = []
    caches, cache_of = cache_jobs(plan, regime, 'final',
                                  plan.rows_of('student'), [])
    prep = list(prep) + caches
    tags = {j.tag for j in prep}
    for r in plan.rows_of('student'):
        after = tuple(t for t in row_inputs(r) if t in tags)
        tag, cache_opts = cache_of.get(r.name, (None, []))
        after += (tag, ) if tag else ()
        for seed in range(plan.args.seeds):
            lr, epochs, opts = plan.schedule(regime, r, seed)
            jobs.append(Job(
                tag=f'{regime} {r.name} seed {seed}',
                config=r.config_for(regime), row=r.name, regime=regime,
                lr=lr, epochs=epochs, seed=seed,
                work_dir=plan.work_dir(regime, r.name, f'seed{seed}'),
                options=opts + cache_opts, after=after,
                late=lambda r=r: plan.row_options(r)))
    order = {j.tag: i for i, j in enumerate(jobs)}  # rows, then seeds
    jobs.sort(key=lambda j: -expected_seconds(regime, j.row))
    res = runner.run_all(list(prep) + jobs)
    for r in res[:len(prep)]:
        if not r['ok']:
            print(f"[demo] {r['tag']} failed: see {r['log']}", flush=True)
    return sorted(res[len(prep):], key=lambda r: order[r['tag']])


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.report_from:
        from _common import run_main  # a bad file: one kd_plugins: line

        def report_again(_) -> dict:
            report = read_report(args.report_from, '--report-from')
            write_report(report, args.work_dir, args.results_dir)
            return report
        return run_main(report_again)
    t_start = time.time()
    rows = select(args.only, variants=args.tune or args.all_rows)
    choices, own, source = load_choices(args, rows)
    print(f'[demo] learning rates / epochs: {source}', flush=True)
    plan = Plan(args, rows, choices, own)
    runner = JobRunner(args.work_dir, args.jobs, args.reuse,
                       args.progress_every)
    os.makedirs(args.work_dir, exist_ok=True)
    teacher_results = train_teachers(plan, runner)
    prep = prep_jobs(plan)
    if args.tune:  # the tuning runs read the prep files
        run_prep(plan, runner, prep)
        prep = []
    results = {}
    for regime in (['full', 'few-labels'] if args.regime == 'both' else
                   [args.regime]):
        if args.tune:
            tune_regime(plan, runner, regime)
        results[regime] = summarize_regime(
            plan.rows, final_runs(plan, runner, regime, prep),
            teacher_results)
        prep = []  # the first regime's pool made the files
    disagree = config_disagreements(plan) if args.tune else []
    for line in disagree:
        print('[demo] the tuned choice differs from the config (write it '
              'there: make demo trains the configs as they are): ' + line,
              flush=True)
    report = dict(
        date=time.strftime('%Y-%m-%d'),
        command='python tools/demo.py ' + ' '.join(
            argv if argv is not None else sys.argv[1:]),
        machine=f'{platform.machine()}, {os.cpu_count()} cpus, '
        f'{platform.python_version()}',
        seconds=round(time.time() - t_start), jobs=args.jobs,
        reused_runs=len(runner.reused),
        choices_source=source, choices=plan.choices,
        configs_disagree=disagree,
        lr_grid=list(args.lr_grid), results=results,
        tuning=[{k: t.get(k) for k in ('row', 'regime', 'lr', 'epochs',
                                       'top1', 'seconds', 'loss_tail')}
                for t in plan.tune_log])
    write_report(report, args.work_dir, args.results_dir)
    took = report['seconds']
    print(f'[demo] done in {took // 60} min {took % 60} s'
          + (f' ({len(runner.reused)} runs reused)' if runner.reused else ''),
          flush=True)
    if took > DEMO_BUDGET and not (args.tune or args.all_rows or args.reuse):
        print(f'[demo] that is over the {DEMO_BUDGET // 60} minutes README '
              'gives for make demo on 2 cores: fewer cores, or other work '
              f'on them? (--jobs {args.jobs}, {os.cpu_count()} cpus)',
              flush=True)
    return report


def summarize_regime(rows, res, teacher_results) -> list:
    """Per row: test top-1 over seeds, verdicts, logged evidence."""
    by_row = {}
    for r in res:
        by_row.setdefault(r['row'], []).append(r)
    out = []
    for t in teacher_results:
        out.append(dict(name=t['row'], label=next(
            x.label for x in rows if x.name == t['row']), lr=t['lr'],
            epochs=t['epochs'], test=summarize([t['top1']]),
            runs=[_evidence(t)]))
    base = [x['top1'] for x in by_row.get('student', []) if x['ok']]
    kd = [x['top1'] for x in by_row.get('kd', []) if x['ok']]
    for row in rows:
        if row.name not in by_row:
            continue
        runs = by_row[row.name]
        ok = [x['top1'] for x in runs if x['ok'] and x['top1'] is not None]
        entry = dict(name=row.name, label=row.label, lr=runs[0]['lr'],
                     epochs=runs[0]['epochs'],
                     test=summarize(ok) if ok else summarize([0.0]),
                     failed=sum(not x['ok'] for x in runs),
                     runs=[_evidence(x) for x in runs])
        if row.name != 'student' and base and ok:
            entry['vs_student'] = verdict(ok, base)
        if row.name not in ('student', 'kd') and kd and ok:
            entry['vs_kd'] = verdict(ok, kd)
        if row.adapted_teachers:
            entry['adapted_teacher_top1'] = [
                evaluate_adapted_teacher(row.config, x['checkpoint'], k)
                for x in runs if x['ok'] for k in range(row.adapted_teachers)]
        out.append(entry)
    return out


def _evidence(run: dict) -> dict:
    return {k: run.get(k) for k in ('seed', 'top1', 'seconds', 'loss_tail',
                                    'last_terms', 'checkpoint', 'error',
                                    'reused')}


# the marker results.json carries: kd_plugins.utils.file_kinds.marker(
# 'digits_benchmark'), spelled out so that the demo's own process does not
# import kd_plugins to write it (tests/test_file_kinds.py checks they agree)
REPORT_MARK = {'kd_plugins_kind': 'digits_benchmark', 'format_version': 1}
# what write_report reads: the report's keys, a row's, a row's test summary
REPORT_KEYS = ('date', 'command', 'machine', 'seconds', 'jobs',
               'choices_source', 'results')
ROW_KEYS = ('name', 'label', 'lr', 'epochs', 'test')
TEST_KEYS = ('mean', 'std', 'n')


def report_problems(report: dict) -> List[str]:
    """What ``report`` lacks of the layout write_report reads (empty: a
    Digits benchmark results file, with or without the kd_plugins_kind
    marker)."""
    out = [f'no {k!r}' for k in REPORT_KEYS if k not in report]
    results = report.get('results')
    if 'results' in report and not isinstance(results, dict):
        return out + ["'results' is not a table per regime"]
    for regime, rows in (results or {}).items():
        if not isinstance(rows, list) or not all(isinstance(r, dict)
                                                 for r in rows):
            out.append(f'results[{regime!r}] is not a list of rows')
            continue
        for i, r in enumerate(rows):
            test = r.get('test')
            lack = [k for k in ROW_KEYS if k not in r] + (
                [f'test.{k}' for k in TEST_KEYS if k not in test]
                if isinstance(test, dict) else [])
            if lack:
                out.append(f'results[{regime!r}][{i}] has no {lack}')
    return out


def read_report(path: str, who: str) -> dict:
    """A results.json that tools/demo.py wrote, recognised before use: a
    file of another kind, a newer format version, cut off or missing parts
    ends in one ArgumentError (kd_plugins.utils.file_kinds)."""
    from kd_plugins.errors import ArgumentError
    from kd_plugins.utils.file_kinds import load_json
    fix = ('pass a results.json that tools/demo.py wrote (WORK_DIR/'
           'results.json, or docs/results/digits_benchmark.json)')
    report = load_json(path, 'digits_benchmark', who, fix, ArgumentError,
                       legacy=lambda obj: not report_problems(obj))
    problems = report_problems(report)
    if problems:
        raise ArgumentError(
            f'{who} {path!r} is a Digits benchmark results file without '
            f'parts the report needs: {"; ".join(problems[:4])}.\n  Fix: '
            f'{fix}.')
    return report


def write_report(report: dict, work_dir: str, results_dir=None) -> None:
    # marked (kind, format version) for --report-from and other readers
    report = {**REPORT_MARK, **report}
    text = [f"Digits benchmark, {report['date']}: `{report['command']}` "
            f"({report['machine']}, {report['seconds'] / 60:.0f} min, "
            f"{report['jobs']} jobs"
            + (f"; {report['reused_runs']} finished runs reused from an "
               "interrupted run of the same command (--reuse)"
               if report.get('reused_runs') else '')
            + f"; lr/epochs {report['choices_source']})",
            '']
    text += ['Summary (both regimes):', '', summary_table(report['results']),
             '']
    for regime, rows in report['results'].items():
        text += [markdown(regime, rows), '']
    md = '\n'.join(text)
    print('\n' + md, flush=True)
    os.makedirs(work_dir, exist_ok=True)
    paths = {'json': osp.join(work_dir, 'results.json'),
             'md': osp.join(work_dir, 'results.md'),
             'png': osp.join(work_dir, 'results.png')}
    with open(paths['json'], 'w') as f:
        json.dump(report, f, indent=1)
    with open(paths['md'], 'w') as f:
        f.write(md + '\n')
    chart(report['results'], paths['png'])
    print(f"[demo] wrote {paths['md']}, {paths['json']}, {paths['png']}")
    if results_dir:
        os.makedirs(results_dir, exist_ok=True)
        for ext, path in paths.items():
            shutil.copy(path, osp.join(results_dir,
                                       f'digits_benchmark.{ext}'))


if __name__ == '__main__':
    main()
