"""The Digits benchmark's statistics, verdicts, table and chart on synthetic
numbers, and its row selection (tools/demo.py runs it end to end in
tests/test_docs.py)."""
import dataclasses
import math

import pytest

from benchmarks.digits import (ROWS, chart, markdown, select, summarize,
                               verdict, welch)


def test_summary_is_mean_and_sample_std():
    s = summarize([90.0, 92.0, 94.0])
    assert s['mean'] == pytest.approx(92.0) and s['n'] == 3
    assert s['std'] == pytest.approx(2.0)  # ddof 1
    assert summarize([88.0])['std'] == 0.0


def test_welch_by_hand():
    a, b = [90.0, 91.0, 93.0], [85.0, 86.5, 90.0]
    ma, mb = sum(a) / 3, sum(b) / 3
    va = sum((x - ma)**2 for x in a) / 2
    vb = sum((x - mb)**2 for x in b) / 2
    t_hand = (ma - mb) / math.sqrt(va / 3 + vb / 3)
    t, p = welch(a, b)
    assert t == pytest.approx(t_hand)
    # Welch-Satterthwaite degrees of freedom, two-sided p
    from scipy import stats
    df = (va / 3 + vb / 3)**2 / ((va / 3)**2 / 2 + (vb / 3)**2 / 2)
    assert p == pytest.approx(2 * stats.t.sf(abs(t_hand), df))


def test_verdicts():
    assert verdict([95, 96, 97], [80, 81, 82])['verdict'] == 'better'
    assert verdict([80, 81, 82], [95, 96, 97])['verdict'] == 'worse'
    v = verdict([90, 94, 86], [89, 93, 88])
    assert v['verdict'] == 'within noise' and v['p'] > 0.05
    assert verdict([90.0], [80.0])['verdict'] == 'n/a (1 seed)'
    # identical runs (zero variance): equal -> within noise, else by sign
    assert verdict([90, 90], [90, 90])['verdict'] == 'within noise'
    assert verdict([91, 91], [90, 90])['verdict'] == 'better'


def _rows():
    base = summarize([80.0, 82.0, 81.0])
    return [
        dict(name='teacher', label='Teacher', lr=0.2, epochs=20,
             test=summarize([99.0])),
        dict(name='student', label='Student alone', lr=0.2, epochs=60,
             test=base),
        dict(name='kd', label='KD', lr=0.1, epochs=60,
             test=summarize([90.0, 91.0, 92.0]),
             vs_student=verdict([90.0, 91.0, 92.0], base['values'])),
        dict(name='atsc', label='ATSC', lr=0.1, epochs=60,
             test=summarize([70.0, 72.0, 71.0]),
             vs_student=verdict([70.0, 72.0, 71.0], base['values']),
             vs_kd=verdict([70.0, 72.0, 71.0], [90.0, 91.0, 92.0])),
    ]


def test_markdown_table_has_every_row_and_verdict(tmp_path):
    text = markdown('few-labels', _rows())
    lines = [line for line in text.splitlines() if line.startswith('| ')]
    assert len(lines) == 2 + 4  # header, rule, rows
    kd = next(line for line in lines if line.startswith('| KD '))
    assert '91.00 ± 1.00 (n=3)' in kd and 'better (p=' in kd
    atsc = next(line for line in lines if line.startswith('| ATSC '))
    assert atsc.count('worse') == 2 and '-10.00' in atsc


def test_chart_is_written(tmp_path):
    path = chart({'full': _rows(), 'few-labels': _rows()},
                 str(tmp_path / 'c.png'))
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_row_selection_adds_what_a_row_needs():
    names = [r.name for r in select(['kd_layer', 'mt_aekt'])]
    assert names[:2] == ['teacher', 'teacher2']
    assert 'student' in names  # the baseline is always there
    names = [r.name for r in select(['ie_kd'])]
    assert 'ie_stage1' in names and 'teacher' in names
    assert [r.name for r in select(None)] == [r.name for r in ROWS]
    # make demo: one row per method (and every method is there)
    demo = [r.name for r in select(None, variants=False)]
    assert demo == ['teacher', 'teacher2', 'ie_stage1', 'student', 'kd',
                    'aekt', 'atsc', 'ie_kd', 'ie_dml', 'kd_layer', 'mt_kd']
    assert 'atsc_anchor_norm' in [r.name for r in select(
        ['atsc_anchor_norm'], variants=False)]  # named rows always run


def test_summary_table_puts_the_regimes_side_by_side():
    from benchmarks.digits import summary_table
    text = summary_table({'full': _rows(), 'few-labels': _rows()[:3]})
    lines = text.splitlines()
    assert lines[0].count('top-1 (%)') == 2 and len(lines) == 2 + 4
    atsc = next(line for line in lines if line.startswith('| ATSC '))
    assert atsc.count('worse') == 2 and atsc.endswith('|  |  |  |')


def test_reuse_only_a_finished_run_with_the_same_options(tmp_path):
    """``tools/demo.py --reuse``: a run is read from its log only when it
    finished (last_checkpoint names an existing file) and the config
    mmengine dumped has every option of the job."""
    from tests.conftest import load_tool
    demo = load_tool('demo')
    wd = tmp_path / 'run'
    wd.mkdir()
    (wd / 'kd_digits.py').write_text(
        "optim_wrapper = dict(optimizer=dict(lr=0.2))\n"
        "train_cfg = dict(max_epochs=24)\nrandomness = dict(seed=1)\n"
        "model = dict(teacher_ckpts=['a.pth', 'b.pth'])\n")
    (wd / 'train.log').write_text(
        '11/27 08:48:48 - mmengine - INFO - start\n'
        '11/27 08:52:18 - mmengine - INFO - Epoch(val) [24][3/3]    '
        'accuracy/top1: 99.7222  data_time: 0.0105\n')
    job = demo.Job(tag='kd', config='configs/demo/kd_digits.py', row='kd',
                   regime='full', work_dir=str(wd), lr=0.2, epochs=24,
                   options=['optim_wrapper.optimizer.lr=0.2',
                            'train_cfg.max_epochs=24', 'randomness.seed=1',
                            'model.teacher_ckpts=[a.pth,b.pth]'])
    assert demo.finished_run(job) is None  # no last_checkpoint: unfinished
    (wd / 'last_checkpoint').write_text(str(wd / 'epoch_24.pth'))
    assert demo.finished_run(job) is None  # the checkpoint is missing
    (wd / 'epoch_24.pth').write_bytes(b'')
    text = demo.finished_run(job)
    assert demo.parse_log(text)['top1'] == pytest.approx(99.7222)
    assert demo.log_seconds(text) == 210.0
    # the config's own schedule changed since (no lr option)
    assert demo.finished_run(dataclasses.replace(
        job, lr=0.4, options=job.options[1:])) is None
    assert demo.finished_run(dataclasses.replace(
        job, epochs=12, options=job.options[2:])) is None
    for other in ('optim_wrapper.optimizer.lr=0.4', 'randomness.seed=2',
                  'train_dataloader.dataset.num_per_class=15',
                  'model.teacher_ckpts=[a.pth]'):
        assert demo.finished_run(dataclasses.replace(
            job, options=job.options[:1] + [other])) is None, other


def _committed_choices():
    import json
    import os.path as osp

    from tests.conftest import ROOT
    with open(osp.join(ROOT, 'docs/results/digits_benchmark.json')) as f:
        return json.load(f)['choices']


@pytest.mark.parametrize('regime', ['full', 'few-labels'])
def test_configs_carry_the_committed_benchmark_choices(regime):
    """One source of truth: every row's config for a regime trains, as it
    is, with the learning rate and epochs that the committed tuned run chose
    (tools/demo.py reads them from the configs), on the regime's data."""
    import os.path as osp

    from mmengine.config import Config

    from benchmarks.digits import REGIMES
    from tests.conftest import ROOT, load_tool
    demo = load_tool('demo')
    committed = _committed_choices()
    rows = [r for r in ROWS if r.kind == 'student']
    assert set(committed[regime]) == {r.name for r in rows}
    for r in rows:
        path = r.config_for(regime)
        assert demo.schedule_of(path) == committed[regime][r.name], path
        ds = Config.fromfile(osp.join(ROOT, path)).train_dataloader.dataset
        for key in ('val_per_class', 'num_per_class'):
            assert ds.get(key) == REGIMES[regime]['final'].get(key), path
    for r in ROWS:
        if r.kind == 'teacher':
            assert demo.schedule_of(r.config) == committed['teacher'][
                'teacher'], r.config
    assert demo.config_choices(ROWS)['few-labels']['kd'] == \
        committed['few-labels']['kd']


def test_a_tuned_run_names_the_configs_it_disagrees_with():
    from tests.conftest import load_tool
    demo = load_tool('demo')
    own = demo.config_choices(select(['kd']))
    tuned = {g: {n: dict(c) for n, c in rows.items()}
             for g, rows in own.items()}
    tuned['few-labels']['kd']['lr'] = 0.4
    plan = demo.Plan(demo.parse_args(['--tune']), select(['kd']), tuned, own)
    assert demo.config_disagreements(plan) == [
        'configs/demo/few_labels/kd_digits.py: tuned lr 0.4 / 120 epochs, '
        'the config has 0.1 / 120']


def test_progress_line_names_running_jobs_epochs_and_time_left(tmp_path):
    """make demo is not silent while its first runs train: a progress line
    every --progress-every seconds gives each running job's epoch (from its
    log) and an estimate of the stage's time left."""
    import time

    from tests.conftest import load_tool
    demo = load_tool('demo')
    runner = demo.JobRunner(str(tmp_path), jobs=2, progress_every=0)
    jobs = []
    for name, epoch in (('teacher', 5), ('teacher2', None)):
        wd = tmp_path / name
        wd.mkdir()
        (wd / 'train.log').write_text(
            '' if epoch is None else
            '12/02 10:00:00 - mmengine - INFO - Epoch(train)  [4][20/23]  '
            'lr: 0.1\n12/02 10:00:09 - mmengine - INFO - Epoch(train)  '
            f'[{epoch}][10/23]  lr: 0.1  loss: 0.5\n')
        jobs.append(demo.Job(tag=name, config='c.py', row=name,
                             regime='teacher', work_dir=str(wd), lr=0.4,
                             epochs=20, options=[]))
    assert demo.log_position(str(tmp_path / 'teacher' / 'train.log')) == \
        (5, 10, 23)
    runner._done, runner._total = 0, 3
    now = time.time()
    runner.running = {j.work_dir: (j, now - 100) for j in jobs}
    line = runner.progress_line()
    assert 'teacher epoch 5/20 (100 s)' in line
    assert 'teacher2 starting (100 s)' in line
    assert '0 of 3 done, 1 queued' in line
    # teacher: 102 of 460 iterations in 100 s -> about 351 s left; the
    # queued run as long as that projection (451 s); 2 jobs at a time
    left = float(line.rsplit('about ', 1)[1].split(' s left')[0])
    assert left == pytest.approx((100 * 460 / 102 - 100 + 100 * 460 / 102)
                                 / 2, abs=1)


def test_demo_pool_starts_a_run_after_the_files_it_reads(tmp_path):
    """make demo runs IE-KD stage 1 and the KD-layer statistics in the
    final stage's pool, beside the rows that do not need them: a row that
    reads their files starts when they have ended (and gets the options
    naming them then); one whose input failed is not run."""
    import sys

    from tests.conftest import load_tool
    demo = load_tool('demo')
    runner = demo.JobRunner(str(tmp_path), jobs=2, progress_every=0)
    made = tmp_path / 'stage1.pth'
    box = {}

    def job(tag, code, **kw):
        return demo.Job(tag=tag, config='-', row=tag, regime='teacher',
                        work_dir=str(tmp_path / tag), lr=None, epochs=None,
                        options=[], cmd=[sys.executable, '-c', code], **kw)
    prep = job('prep', f'import time; time.sleep(1); '
               f'open({str(made)!r}, "w").write("x")',
               done=lambda res: box.update(path=str(made)))
    bad = job('bad', 'raise SystemExit(3)')
    # with two workers, 'reads' would start at once without the wait
    reads = job('reads', f'import os, sys; sys.exit(0 if os.path.exists('
                f'{str(made)!r}) else 4)', after=('prep', ),
                late=lambda: [f'stage1={box["path"]}'])
    orphan = job('orphan', 'pass', after=('bad', ))
    res = {r['tag']: r for r in runner.run_all([prep, bad, reads, orphan])}
    assert res['prep']['ok'] and res['reads']['ok'], res
    assert res['reads']['options'] == [f'stage1={made}']
    assert not res['bad']['ok']
    assert not res['orphan']['ok'] and 'needs bad' in res['orphan']['error']
    with pytest.raises(ValueError, match='not before it'):
        runner.run_all([reads, prep])


def test_cache_rows_build_one_cache_per_view_count_before_their_runs():
    """KD and AEKT from a cache share the cache of their view count (same
    teacher, data, pipeline); each cached run waits for its cache's build
    and names it; the committed rows (ROWS, make demo) are unchanged."""
    from benchmarks.digits import BY_NAME, CACHE_ROWS
    from tests.conftest import load_tool
    demo = load_tool('demo')
    assert not set(r.name for r in CACHE_ROWS) & {r.name for r in ROWS}
    rows = select(['kd_cache_all', 'aekt_cache_all', 'kd_cache_5'])
    assert [r.name for r in rows] == ['teacher', 'student', 'kd_cache_5',
                                      'kd_cache_all', 'aekt_cache_all']
    plan = demo.Plan(demo.parse_args(['--only', 'kd_cache_all']), rows,
                     demo.config_choices(rows), demo.config_choices(rows))
    plan.ckpts['teacher'] = '/t/teacher.pth'
    jobs, of = demo.cache_jobs(plan, 'full', 'tune', rows,
                               ['train_dataloader.dataset.val_per_class=28'])
    assert [j.tag for j in jobs] == ['full tune teacher cache (5 views)',
                                     'full tune teacher cache (all views)']
    cmd = jobs[1].cmd
    assert cmd[1:3] == ['tools/cache_teacher.py', 'configs/demo/kd_digits.py']
    assert cmd[4:6] == ['--views', 'all']
    assert 'model.teacher_ckpt=/t/teacher.pth' in cmd
    assert 'train_dataloader.dataset.val_per_class=28' in cmd
    assert of['kd_cache_all'][0] == of['aekt_cache_all'][0] == jobs[1].tag
    assert of['aekt_cache_all'][1] == [
        f'model.teacher_cache={cmd[3]}']
    # the cache rows train with their live method's config and schedule
    assert BY_NAME['aekt_cache_all'].config_for('few-labels') == \
        BY_NAME['aekt'].config_for('few-labels')
