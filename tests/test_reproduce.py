"""tools/reproduce.py: the plan of each suite, and the paper path run as a
user runs it, on CIFAR-100 in its real on-disk format."""
import json
import os
import os.path as osp
import re
import sys

from tests.conftest import ROOT, load_tool, run_tool


def _dry_run(capsys, *args):
    reproduce = load_tool('reproduce')
    assert reproduce.main(['--dry-run', *args]) == 0
    return [line for line in capsys.readouterr().out.splitlines()
            if re.match(r'\[reproduce\] \d+/', line)]


def test_plans_every_config_after_what_it_needs(capsys):
    for suite, suffix in (('cifar100', '_cifar100.py'),
                          ('imagenet', '_in1k.py')):
        lines = _dry_run(capsys, '--suite', suite)
        configs = sorted(f for f in os.listdir(osp.join(ROOT, 'configs'))
                         if f.endswith(suffix))
        for name in configs:  # train, test and export of every config
            for what in ('train', 'test', 'export'):
                assert sum(f' {what} {name[:-3]} ' in line
                           for line in lines) == 1, (what, name)
        first_train = min(i for i, line in enumerate(lines)
                          if ' train ' in line)
        deps = [i for i, line in enumerate(lines)
                if re.search(r' (teacher|KD-layer stats|IE-KD stage 1) ',
                             line)]
        assert deps and max(deps) < first_train, suite
    # the CIFAR teachers the configs name, each once
    lines = _dry_run(capsys, '--suite', 'cifar100')
    teachers = [line for line in lines if ' teacher ' in line]
    assert len(teachers) == 3 and any('resnet56' in t for t in teachers)


def test_a_shorter_stage1_is_copied_to_the_file_stage2_loads(capsys):
    lines = _dry_run(capsys, '--suite', 'cifar100', '--methods', 'ie_kd',
                     '--cfg-options', 'train_cfg.max_epochs=1')
    stage1 = [line for line in lines if 'IE-KD stage 1' in line]
    assert len(stage1) == 1 and stage1[0].endswith(
        'then copy work_dirs/stage1_r56_cifar100/epoch_1.pth to '
        'work_dirs/stage1_r56_cifar100/epoch_30.pth'), stage1


def test_methods_filter_and_launchers(capsys):
    lines = _dry_run(capsys, '--suite', 'imagenet', '--methods', 'aekt',
                     '--launcher', 'slurm', '--partition', 'p1')
    assert len(lines) == 3 and 'slurm_train.sh p1 aekt_r34_r18_in1k' in \
        lines[0]
    lines = _dry_run(capsys, '--suite', 'cifar100', '--methods', 'atsc_r32',
                     '--launcher', 'pytorch', '--gpus', '4')
    assert 'dist_train.sh configs/teachers/resnet32x4_cifar100.py 4' in \
        lines[0]


def test_cifar100_paper_path_end_to_end(tmp_path):
    """From an empty work dir: the teacher trained from configs/teachers,
    AEKT trained, tested and exported by the project's tools on CIFAR-100
    pickles; the table; a second run skips every finished step; the
    exported student loads with mmpretrain's init_model."""
    sys.path.insert(0, ROOT)
    from tests.paper_data import site_dir, write_cifar100
    write_cifar100(str(tmp_path / 'data' / 'cifar100'))
    args = ['--suite', 'cifar100', '--methods', 'aekt_r32x4',
            '--work-root', 'runs', '--cfg-options',
            'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
            'train_dataloader.batch_size=32',
            *[f'{k}_dataloader.num_workers=0' for k in
              ('train', 'val', 'test')]]
    env = {'PYTHONPATH': site_dir(str(tmp_path / 'site')) + os.pathsep
           + ROOT}
    proc = run_tool([osp.join(ROOT, 'tools', 'reproduce.py'), *args],
                    cwd=str(tmp_path), env=env)
    out = proc.stdout
    assert '4 steps, 0 done already' in out, out[-3000:]
    assert osp.isfile(tmp_path / 'work_dirs/teachers/resnet32x4_cifar100.pth')
    rows = json.loads((tmp_path / 'runs/reproduce_cifar100.json').read_text())
    assert [r['method'] for r in rows] == ['aekt_r32x4_r8x4_cifar100']
    row = rows[0]
    assert row['best'] is not None and row['last'] is not None
    assert row['test'] is not None and row['paper'] == 76.32
    assert abs(row['diff'] - (row['last'] - 76.32)) < 1e-9
    assert '| aekt_r32x4_r8x4_cifar100 |' in (
        tmp_path / 'runs/reproduce_cifar100.md').read_text()
    again = run_tool([osp.join(ROOT, 'tools', 'reproduce.py'), *args],
                     cwd=str(tmp_path), env=env).stdout
    assert '3 steps, 3 done already' in again  # the teacher exists now
    assert ' (run)' not in again
    from mmpretrain.apis import init_model
    export = tmp_path / 'runs/aekt_r32x4_r8x4_cifar100/export'
    model = init_model(str(export / 'student.py'), str(export / 'student.pth'))
    assert not any(k.startswith('teacher') for k in model.state_dict())
