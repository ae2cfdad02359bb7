"""End to end through tools/train.py and tools/test.py on Digits."""
import json
import os
import os.path as osp

import pytest
import torch

from tests.conftest import (MID_EPOCH_2, MID_EPOCH_3, ROOT, SMALL_TRAIN,
                            assert_killed_after, assert_preempted,
                            last_val_top1, run_tool)

KD_CFG = 'configs/demo/kd_digits.py'


def _state_dict(path):
    return torch.load(path, map_location='cpu',
                      weights_only=True)['state_dict']


def test_teacher_trains_validates_and_tests(digits_teacher, tmp_path):
    wd, ckpt, log = digits_teacher
    val_top1 = last_val_top1(log)
    metrics = tmp_path / 'm.json'
    run_tool(['tools/test.py', 'configs/demo/teacher_digits.py', ckpt,
              '--work-dir', str(tmp_path), '--dump-metrics', str(metrics)])
    test_top1 = json.loads(metrics.read_text())['accuracy/top1']
    # the test split is the validation split: same model, same number
    assert test_top1 == pytest.approx(val_top1, abs=1e-3)
    assert test_top1 > 80.0  # 8 epochs on Digits; chance is 10 %


def _kd_run(work_dir, teacher_ckpt, *extra, kill_at=None, term_at=None,
            options=()):
    return run_tool([
        'tools/train.py', KD_CFG, '--work-dir', work_dir, *extra,
        '--cfg-options', f'model.teacher_ckpt={teacher_ckpt}',
        'train_cfg.max_epochs=3', 'train_cfg.val_interval=3', *SMALL_TRAIN,
        *options], kill_at=kill_at, term_at=term_at)


# stochastic depth: the training step itself draws random numbers, so a
# resume that did not restore the RNG states would train other weights
DROP_PATH = ['model.architecture.backbone.drop_path_rate=0.3']


def test_kd_student_resume_matches_uninterrupted_run(digits_teacher,
                                                     tmp_path):
    _, teacher_ckpt, _ = digits_teacher
    full = str(tmp_path / 'full')
    proc = _kd_run(full, teacher_ckpt, options=DROP_PATH)
    assert 'distill.loss_kd' in proc.stdout + proc.stderr
    # preempted (SIGTERM) in the middle of epoch 2: it finishes the
    # iteration, saves preempt_iter_N.pth and exits 143
    part = str(tmp_path / 'part')
    proc = _kd_run(part, teacher_ckpt, term_at=MID_EPOCH_2,
                   options=DROP_PATH)
    n = assert_preempted(part, epoch=2)
    assert f'checkpoint {part}/preempt_iter_{n}.pth' in proc.stdout
    # restarted with --auto-resume: on from batch n - 7 + 1 of epoch 2; then
    # killed (SIGKILL) in the middle of epoch 3
    proc = _kd_run(part, teacher_ckpt, '--auto-resume', kill_at=MID_EPOCH_3,
                   options=DROP_PATH)
    assert f'resuming epoch 2 at batch {n - 7 + 1} of 7' in proc.stdout
    assert_killed_after(part, epoch=2)
    # the preemption checkpoint went once epoch_2.pth superseded it
    assert not [f for f in os.listdir(part) if 'preempt' in f]
    # --resume with an explicit path (the latest: epoch_2.pth)
    explicit = osp.join(part, 'epoch_2.pth')
    proc = _kd_run(part, teacher_ckpt, '--resume', explicit,
                   options=DROP_PATH)
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 2' in log
    a = _state_dict(osp.join(full, 'epoch_3.pth'))
    b = _state_dict(osp.join(part, 'epoch_3.pth'))
    assert a.keys() == b.keys()
    student = [k for k in a if k.startswith('architecture.')]
    assert student
    for k in a:
        assert torch.equal(a[k], b[k]), f'{k} differs after resume'


def test_missing_imagenet_data_fails_fast_with_a_fix(tmp_path):
    proc = run_tool(['tools/train.py', 'configs/kd_r34_r18_in1k.py',
                     '--work-dir', str(tmp_path), '--cfg-options',
                     'train_dataloader.dataset.data_root=' +
                     str(tmp_path / 'nowhere')], check=False, timeout=120)
    assert proc.returncode != 0
    assert 'does not exist' in proc.stderr
    assert 'train/<wnid>' in proc.stderr and 'Fix' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_missing_teacher_checkpoint_fails_fast(tmp_path):
    proc = run_tool(['tools/train.py', KD_CFG, '--work-dir', str(tmp_path),
                     '--cfg-options', 'model.teacher_ckpt=/no/teacher.pth'],
                    check=False, timeout=120)
    assert proc.returncode != 0
    assert "teacher_ckpt '/no/teacher.pth' does not exist" in proc.stderr


def test_test_tool_names_a_missing_checkpoint(tmp_path):
    proc = run_tool(['tools/test.py', KD_CFG, str(tmp_path / 'x.pth')],
                    check=False, timeout=120)
    assert proc.returncode != 0
    assert 'x.pth' in proc.stderr and 'does not exist' in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only check')
def test_amp_without_gpu_is_a_clear_error(tmp_path):
    proc = run_tool(['tools/train.py', 'configs/demo/student_digits.py',
                     '--amp', 'bf16', '--work-dir', str(tmp_path)],
                    check=False, timeout=120)
    assert proc.returncode != 0
    assert 'no CUDA device' in proc.stderr


def test_demo_report_holds_its_runs_numbers_and_reuses_them(demo_scratch):
    """The short demo of tests/conftest.py (committed choices, 2 epochs,
    2 seeds): the table is printed, the report's numbers are its runs'
    own, and the same command with --reuse trains nothing."""
    import re
    import statistics
    import subprocess
    import sys

    from benchmarks.digits import verdict
    root, env, stdout = demo_scratch
    wd = root / 'work_dirs' / 'demo'
    assert "learning rates / epochs: the configs' own schedules" in stdout
    assert '| method | lr | epochs | top-1 (%) |' in stdout
    assert 'run 1 of ' in stdout and 's left in the stage' in stdout
    # progress while runs train (--progress-every 5): epoch and time left
    beats = [x for x in stdout.splitlines() if x.startswith('[demo] running')]
    assert beats and any(re.search(r' epoch \d+/2 \(\d+ s\)', b)
                         for b in beats), stdout
    report = json.loads((wd / 'results.json').read_text())
    rows = {r['name']: r for r in report['results']['few-labels']}
    assert list(rows) == ['teacher', 'student', 'kd', 'aekt']
    assert rows['kd']['test']['n'] == 2
    # each seed's top-1 is the last validation top-1 in that run's log; the
    # mean, std and verdict follow from them
    for name in ('student', 'kd', 'aekt'):
        logged = []
        for seed in range(2):
            log = (wd / 'few-labels' / name / f'seed{seed}' /
                   'train.log').read_text()
            last = re.findall(r'Epoch\(val\).*?accuracy/top1: ([0-9.]+)',
                              log)[-1]
            logged.append(float(last))
        assert rows[name]['test']['values'] == logged, name
        assert rows[name]['test']['mean'] == pytest.approx(
            statistics.mean(logged))
        assert rows[name]['test']['std'] == pytest.approx(
            statistics.stdev(logged))
    expect = verdict(rows['kd']['test']['values'],
                     rows['student']['test']['values'])
    assert rows['kd']['vs_student']['verdict'] == expect['verdict']
    assert rows['kd']['vs_student']['diff'] == pytest.approx(
        rows['kd']['test']['mean'] - rows['student']['test']['mean'])
    assert (wd / 'results.png').is_file()
    assert (wd / 'teacher.pth').is_file()  # what the configs read
    # --reuse: the same command again trains nothing (teacher, 2 x student,
    # 2 x kd, 2 x aekt read from their logs), with the same numbers
    from tests.conftest import DEMO_ARGS
    again = subprocess.run([sys.executable, 'tools/demo.py', *DEMO_ARGS,
                            '--reuse'], cwd=root, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads((wd / 'results.json').read_text())
    assert second['reused_runs'] == 7, again.stdout
    assert again.stdout.count(': reused ') == 7
    assert [r['test'] for r in second['results']['few-labels']] == \
        [r['test'] for r in report['results']['few-labels']]


def test_demo_trains_each_config_with_its_own_schedule():
    """Without --tune the demo passes no learning rate (its runs train with
    their configs' schedules) and says where the choices come from."""
    from tests.conftest import load_tool
    demo = load_tool('demo')
    args = demo.parse_args([])
    rows = demo.select(['kd'])
    choices, own, source = demo.load_choices(args, rows)
    assert choices == own and source.startswith("the configs' own")
    plan = demo.Plan(args, rows, choices, own)
    lr, epochs, opts = plan.schedule('few-labels', rows[-1], 0)
    assert (lr, epochs) == (0.1, 120) and not any(
        o.startswith(('optim_wrapper', 'train_cfg.max_epochs')) for o in opts)


# --------------------------------------- file arguments: one clean message
STUDENT = 'configs/demo/student_digits.py'


@pytest.mark.parametrize('args, needle', [
    (['tools/train.py', '/no/cfg.py'], "config '/no/cfg.py' does not exist"),
    (['tools/train.py', STUDENT, '--resume', '/no/r.pth'],
     "--resume checkpoint '/no/r.pth' does not exist"),
    (['tools/test.py', STUDENT, '/no/c.pth'],
     "checkpoint '/no/c.pth' does not exist"),
    (['tools/export_student.py', STUDENT, '/no/c.pth', 'out'],
     "checkpoint '/no/c.pth' does not exist"),
    (['tools/kd_layer_stats.py', 'configs/demo/kd_layer_digits.py',
      '/no/t.pth', 'o.npz'], "teacher checkpoint '/no/t.pth' does not exist"),
    (['tools/plot_serialization.py', '/no/c.pth', 'o'],
     "checkpoint '/no/c.pth' does not exist"),
    (['tools/benchmark.py', '/no/cfg.py'],
     "config '/no/cfg.py' does not exist"),
    (['tools/convert_repdistiller_ckpt.py', '/no/u.pth', 'o.pth', '--arch',
      'resnet56'], "upstream checkpoint '/no/u.pth' does not exist"),
])
def test_every_tool_names_a_missing_file_in_one_line(args, needle):
    proc = run_tool(args, check=False, timeout=300)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[0].startswith('kd_plugins: ')
    assert needle in proc.stderr and 'Fix:' in proc.stderr


def test_unusable_outputs_and_broken_configs_are_named(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    broken = tmp_path / 'broken.py'
    broken.write_text('model = dict(\n')
    ckpt = tmp_path / 'c.pth'
    torch.save({'state_dict': {}}, ckpt)
    for args, needle in [
            (['tools/export_student.py', STUDENT, str(ckpt),
              str(blocker / 'out')], 'OUT_DIR'),
            (['tools/test.py', str(broken), str(ckpt)],
             'could not be read: SyntaxError'),
            (['tools/train.py', STUDENT, '--work-dir', str(blocker)],
             'is not a folder')]:
        proc = run_tool(args, check=False, timeout=300)
        assert proc.returncode != 0 and 'Traceback' not in proc.stderr
        assert proc.stderr.startswith('kd_plugins: ') and needle in \
            proc.stderr, proc.stderr[-2000:]


def test_gpu_check_dry_run_exercises_its_plumbing(tmp_path):
    """make gpu-check DRY_RUN=1: no install, the GPU tests collected, the
    benchmark on tiny CPU sizes, one output folder of five files."""
    out = tmp_path / 'gpu'
    proc = run_tool(['tools/gpu_check.py', '--dry-run', '--out', str(out),
                     '--only', 'kd'], timeout=600)
    assert sorted(p.name for p in out.iterdir()) == [
        'bench.log', 'gpu_tests.log', 'gpu_tests.xml', 'summary.json',
        'summary.md']
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['dry_run'] and summary['tests']['collected'] >= 15
    (bench, ) = summary['benchmarks']
    assert {r['name'] for r in bench['rows']} == {
        'student', 'mmrazor-kd', 'FastDistill', 'FastDistill (cache)'}
    assert bench['meta']['cache']['images'] == 2  # synthetic: the batch
    assert 'targets' in bench
    assert 'DRY RUN' in (out / 'summary.md').read_text()
    assert 'summary.md' in proc.stdout


def test_export_refuses_a_checkpoint_of_another_student(tmp_path):
    """export: a checkpoint whose student is not this config's (here the
    classifier has another width) is refused before anything is written."""
    from mmengine.config import Config
    from mmrazor.registry import MODELS

    from kd_plugins.errors import CheckpointError
    from kd_plugins.export import write_student
    cfg = Config.fromfile(osp.join(ROOT, KD_CFG))
    cfg.model.teacher_ckpt = None
    state = MODELS.build(cfg.model.to_dict()).state_dict()
    state['architecture.head.fc.weight'] = torch.zeros(10, 7)
    out = tmp_path / 'student.pth'
    with pytest.raises(CheckpointError, match=r'does not hold the student of '
                       r'this config: .*1 shape mismatches'):
        write_student(cfg, dict(state_dict=state), None, str(out), 'x.pth')
    assert not out.exists()


def test_plot_serialization_names_a_checkpoint_without_aekt(tmp_path):
    """plot_serialization: a KD run's checkpoint has no AEKT serialization
    layer; the message says so and which checkpoint to pass."""
    from kd_plugins.errors import ArgumentError
    from tests.conftest import load_tool
    path = tmp_path / 'kd.pth'
    torch.save(dict(state_dict={'architecture.head.fc.weight':
                                torch.zeros(10, 32)}, meta={}), path)
    with pytest.raises(ArgumentError, match='has no AEKT serialization '
                       r'layer.*\n  Fix: pass a checkpoint of an AEKT run'):
        load_tool('plot_serialization').load_serialization(str(path))
