"""Bad input fails fast with a message that names the problem and the fix.

Every case runs ``tools/train.py`` in a subprocess, as a user would, and
checks the message (and that it is a clean message, not a traceback).
README.md "Troubleshooting" lists the same errors.
"""
import glob
import os
import os.path as osp
import pickle
import shutil

import pytest
import torch

from tests.conftest import ROOT, run_tool

KD = 'configs/demo/kd_digits.py'
ATSC = 'configs/demo/atsc_digits.py'
IE2 = 'configs/demo/ie_kd_digits.py'
KDL = 'configs/demo/kd_layer_digits.py'


def _fails(args, *needles, clean=True):
    """Run tools/train.py ARGS; it must fail and print every needle."""
    proc = run_tool(['tools/train.py', *args], check=False, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    for needle in needles:
        assert needle in out, f'{needle!r} not in:\n{out[-3000:]}'
    if clean:  # a kd_plugins error: one message, no traceback
        assert 'Traceback' not in out, out[-3000:]
        assert 'kd_plugins: ' in proc.stderr
    return out


def _derived(tmp_path, base, body, name='cfg.py'):
    path = tmp_path / name
    path.write_text(f"_base_ = '{osp.join(ROOT, base)}'\n{body}\n")
    return str(path)


def test_class_count_mismatch(digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    _fails([KD, '--work-dir', str(tmp_path), '--cfg-options',
            f'model.teacher_ckpt={teacher}',
            'model.architecture.head.num_classes=5'],
           'model.teacher predicts 10 classes but the student',
           'predicts 5', 'model.architecture.head.num_classes=10')


def test_teacher_checkpoint_missing(tmp_path):
    _fails([KD, '--work-dir', str(tmp_path), '--cfg-options',
            'model.teacher_ckpt=/nonexistent/teacher.pth'],
           "model.teacher_ckpt '/nonexistent/teacher.pth' does not exist",
           'Fix: train the teacher first')


def test_teacher_checkpoint_truncated(digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    bad = str(tmp_path / 'teacher.pth')
    with open(teacher, 'rb') as f:
        data = f.read()
    with open(bad, 'wb') as f:
        f.write(data[:len(data) // 2])
    out = _fails([KD, '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                  f'model.teacher_ckpt={bad}'],
                 f"checkpoint '{bad}' is unreadable - truncated or corrupt",
                 'this is a teacher checkpoint', 'model.teacher_ckpt=PATH')
    assert '--resume' not in out  # a teacher is not resumed


def test_teacher_checkpoint_of_another_architecture(digits_teacher,
                                                    tmp_path):
    _, teacher, _ = digits_teacher
    out = _fails([KD, '--work-dir', str(tmp_path), '--cfg-options',
                  f'model.teacher_ckpt={teacher}',
                  'model.teacher.backbone.depth=34'],
                 'does not match the teacher architecture model.teacher',
                 'missing keys: backbone.layer1.2.conv1.weight',
                 'Fix: set model.teacher to the model the checkpoint')
    assert 'unexpected keys' not in out  # R18 keys are a subset of R34's


def test_teacher_checkpoint_shape_mismatch(digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    _fails([KD, '--work-dir', str(tmp_path), '--cfg-options',
            f'model.teacher_ckpt={teacher}',
            'model.teacher.backbone.base_channels=8',
            'model.teacher.head.in_channels=64'],
           'shape mismatches: backbone.layer1.0.conv1.weight: checkpoint '
           '(16, 16, 3, 3) vs model (8, 16, 3, 3)')


def test_recorder_on_a_missing_module(digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    _fails([KD, '--work-dir', str(tmp_path), '--cfg-options',
            f'model.teacher_ckpt={teacher}',
            'model.distiller.teacher_recorders.fc.source=head.fcc'],
           "model.distiller.teacher_recorders.fc records module 'head.fcc'",
           "Nearest module names: 'head.fc'")


def test_connector_cannot_adapt_the_feature_shape(digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    _fails([ATSC, '--work-dir', str(tmp_path), '--cfg-options',
            f'model.teacher_ckpts=[{teacher}]',
            'model.projectors.0.in_channels=16'],
           'ATSCProjector expects 16 student channels but got a map of '
           'shape (', "set the projector's in_channels")


def test_data_root_missing(tmp_path):
    _fails(['configs/teachers/resnet56_cifar100.py', '--work-dir',
            str(tmp_path), '--cfg-options',
            'train_dataloader.dataset.data_root=/nonexistent/cifar100'],
           "data_root '/nonexistent/cifar100' of the CIFAR100 data set "
           'does not exist', 'cifar-100-python/train', 'ln -s')


def test_data_root_empty(tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    _fails(['configs/teachers/resnet56_cifar100.py', '--work-dir',
            str(tmp_path / 'wd'), '--cfg-options',
            f'train_dataloader.dataset.data_root={empty}'],
           f"data_root '{empty}' of the CIFAR100 data set is empty")


def test_class_names_differ_from_the_teacher(digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    cfg = _derived(tmp_path, KD,
                   "train_dataloader = dict(dataset=dict(metainfo=dict("
                   "classes=[str(9 - i) for i in range(10)])))")
    _fails([cfg, '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
            f'model.teacher_ckpt={teacher}'],
           'was trained on 10 classes that differ from the 10 classes of '
           'train_dataloader.dataset',
           "0: teacher '0' vs data '9'")


def test_kd_layer_statistics_for_other_classes(digits_teacher, tmp_path):
    from tests.test_kd_layer import _write_stats
    _, teacher, _ = digits_teacher
    stats = str(tmp_path / 'stats.npz')
    _write_stats(stats)  # 2 classes, 3 templates, 4 channels
    _fails([KDL, '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
            f'model.teacher_ckpt={teacher}',
            f'model.distiller.distill_losses.loss_penult.stats_file={stats}',
            f'model.distiller.distill_losses.loss_inter.stats_file={stats}'],
           f"{stats!r} holds 3 penultimate templates but the student KD "
           'layer has num_templates=64', 'python tools/kd_layer_stats.py')


def test_ie_kd_stage2_without_stage1(digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    _fails([IE2, '--work-dir', str(tmp_path), '--cfg-options',
            f'model.teacher_ckpt={teacher}',
            'model.distiller.connectors.t_enc.stage1_ckpt=/none/stage1.pth'],
           "'/none/stage1.pth' does not exist: IE-KD stage 2 needs the "
           'stage-1 checkpoint', 'run stage 1 first')


def test_atsc_teacher_without_linear_classifier(tmp_path):
    cfg = _derived(tmp_path, ATSC, """
model = dict(teacher_ckpts=[None], teachers=[dict(
    type='mmpretrain.ImageClassifier',
    backbone=dict(type='mmpretrain.ResNet_CIFAR', depth=18, stem_channels=16,
                  base_channels=16),
    neck=dict(type='mmpretrain.GlobalAveragePooling'),
    head=dict(type='mmpretrain.StackedLinearClsHead', num_classes=10,
              in_channels=128, mid_channels=[64]),
    data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor'))])""")
    _fails([cfg, '--work-dir', str(tmp_path / 'wd')],
           'has no linear classifier at head.fc',
           'Fix: use a teacher with an mmpretrain LinearClsHead')


def test_unknown_method_option(digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    _fails([KD, '--work-dir', str(tmp_path), '--cfg-options',
            f'model.teacher_ckpt={teacher}',
            'model.distiller.distill_losses.loss_kd.tua=4'],
           "model.distiller.distill_losses.loss_kd: KLDivergence has no "
           "option 'tua' (did you mean 'tau'?)")


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a CPU machine')
def test_amp_without_a_gpu(digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    _fails([KD, '--work-dir', str(tmp_path), '--amp', 'bf16',
            '--cfg-options', f'model.teacher_ckpt={teacher}'],
           '--amp bf16 was requested but no CUDA device is available',
           'Fix: drop --amp')


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
        digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    wd = str(tmp_path / 'wd')
    opts = ['--cfg-options', f'model.teacher_ckpt={teacher}',
            'train_cfg.max_epochs=2', 'train_cfg.val_interval=2']
    run_tool(['tools/train.py', KD, '--work-dir', wd, *opts],
             kill_at=r'Epoch\(train\)\s+\[2\]')  # epoch_1.pth is saved
    good = osp.join(wd, 'epoch_1.pth')
    before = open(good, 'rb').read()
    # the KD term overflows to inf from the first step after the resume
    out = _fails([KD, '--work-dir', wd, '--resume', *opts,
                  'model.distiller.distill_losses.loss_kd.loss_weight=1e39'],
                 "loss term 'distill.loss_kd' became non-finite at "
                 'iteration 24 (epoch 2, batch 1)',
                 f'the last good checkpoint is {good}')
    assert 'student.loss=' not in out.split('non-finite terms:')[1][:60]
    assert not osp.exists(osp.join(wd, 'epoch_2.pth'))
    assert open(osp.join(wd, 'last_checkpoint')).read().strip() == good
    assert open(good, 'rb').read() == before


def test_resume_from_a_corrupt_checkpoint(digits_teacher, tmp_path):
    wd, teacher, _ = digits_teacher
    good = str(tmp_path / 'epoch_7.pth')
    bad = str(tmp_path / 'epoch_8.pth')
    shutil.copy(osp.join(wd, 'epoch_7.pth'), good)
    with open(teacher, 'rb') as f:
        data = f.read()
    with open(bad, 'wb') as f:
        f.write(data[:1000])
    _fails(['configs/demo/teacher_digits.py', '--work-dir',
            str(tmp_path / 'wd'), '--resume', bad],
           f"checkpoint '{bad}' is unreadable - truncated or corrupt",
           f'--resume {good}')


class _Evil:
    """Unpickling this runs ``open(marker, 'w')``: a stand-in for any code
    a malicious checkpoint could run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.mark.parametrize('where', ['teacher', 'resume'])
def test_malicious_checkpoint_is_refused(digits_teacher, tmp_path, where):
    _, teacher, _ = digits_teacher
    marker = str(tmp_path / 'pwned')
    evil = str(tmp_path / 'evil.pth')
    state = torch.load(teacher, weights_only=True)
    state['meta']['payload'] = _Evil(marker)
    torch.save(state, evil, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    assert not osp.exists(marker)
    if where == 'teacher':
        args = [KD, '--cfg-options', f'model.teacher_ckpt={evil}']
    else:
        args = ['configs/demo/teacher_digits.py', '--resume', evil]
    out = _fails([*args, '--work-dir', str(tmp_path / 'wd')],
                 f"refused to load checkpoint '{evil}'", 'weights_only=True',
                 "outside kd_plugins' allow-list")
    # torch's own text is not pasted (raw terminal codes, cut sentences)
    assert '\x1b[' not in out and 'Weights only load failed' not in out
    assert not osp.exists(marker), 'the pickled payload ran'
    # the same file *would* run code when loaded without weights_only
    torch.load(evil, weights_only=False)
    assert osp.exists(marker)
    os.remove(marker)


# ---------------------------------------- mistakes of cluster users, round 3
def test_teacher_url_on_a_node_without_network(tmp_path):
    """A zoo URL that cannot be downloaded: where to put the file (torch's
    hub cache, where mmengine looks first) or how to pass a local path."""
    url = 'http://127.0.0.1:9/resnet18_teacher.pth'  # nothing listens
    proc = run_tool(['tools/train.py', KD, '--work-dir', str(tmp_path / 'w'),
                     '--cfg-options', f'model.teacher_ckpt={url}'],
                    check=False, timeout=600,
                    env={'TORCH_HOME': str(tmp_path / 'th')})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert 'could not be downloaded' in proc.stderr, out[-3000:]
    assert osp.join(str(tmp_path / 'th'), 'hub', 'checkpoints',
                    'resnet18_teacher.pth') in proc.stderr
    assert 'model.teacher_ckpt=/path/to/teacher.pth' in proc.stderr
    assert 'Traceback' not in out


def test_a_distillers_checkpoint_as_teacher_loads_its_student(tmp_path):
    """A student promoted to teacher (born-again, teacher-assistant
    chains): the distillation checkpoint's student is loaded, and the
    pre-flight weight check compares that student."""
    from mmengine.config import Config
    from mmrazor.registry import MODELS

    from kd_plugins.engine.pair_checks import check_pairs
    from kd_plugins.utils.teacher import build_teacher
    cfg = Config.fromfile(osp.join(ROOT, KD))
    cfg.model.teacher_ckpt = None
    run = MODELS.build(cfg.model)
    with torch.no_grad():
        for p in run.student.parameters():
            p.normal_()
    ckpt = str(tmp_path / 'kd_run_epoch_3.pth')
    torch.save({'state_dict': run.state_dict(), 'meta': {}}, ckpt)
    teacher = build_teacher(dict(cfg.model.architecture), ckpt)
    for k, v in run.student.state_dict().items():
        assert torch.equal(teacher.state_dict()[k], v), k
    # the next generation: the student's architecture as the teacher
    cfg.model.teacher = dict(cfg.model.architecture)
    cfg.model.teacher_ckpt = ckpt
    check_pairs(cfg)  # no mismatch: the student part is what is compared


def test_a_registry_typo_names_the_closest_types():
    from mmengine.config import Config

    from kd_plugins.engine.pair_checks import check_pairs
    from kd_plugins.errors import PreflightError
    cfg = Config.fromfile(osp.join(ROOT, KD))
    cfg.model.teacher_ckpt = None
    cfg.model.distiller.distill_losses.loss_kd.type = 'KLDivergense'
    with pytest.raises(PreflightError, match="type='KLDivergense' is not a "
                       r"registered type .* Closest: 'KLDivergence'"):
        check_pairs(cfg)


def test_resume_with_another_methods_checkpoint(tmp_path):
    """ATSC (two named optimizers) resumed from a KD checkpoint (one): the
    message says what the checkpoint holds and what the run expects
    (mmengine's own error was KeyError: 'param_groups')."""
    ckpt = str(tmp_path / 'kd_epoch_2.pth')
    torch.save({'state_dict': {}, 'meta': {'cfg': (
        "model = dict(\n    _scope_='mmrazor',\n    type='FastDistill',\n"
        "    teacher_ckpt=None)\noptim_wrapper = dict()\n")},
        'optimizer': {'state': {}, 'param_groups': []}}, ckpt)
    out = _fails([ATSC, '--work-dir', str(tmp_path / 'w'), '--resume', ckpt,
                  '--cfg-options', 'model.teacher_ckpts=[None]'],
                 'holds a run of FastDistill with one optimizer',
                 'this config trains ATSC with several named optimizers',
                 'load_from=PATH')
    assert 'param_groups' not in out


def test_resume_check_accepts_a_checkpoint_of_the_same_method(tmp_path):
    from mmengine.config import Config

    from kd_plugins.engine.preflight import check_resume
    cfg = Config.fromfile(osp.join(ROOT, ATSC))
    ckpt = str(tmp_path / 'atsc_epoch_2.pth')
    group = {'state': {}, 'param_groups': []}
    torch.save({'state_dict': {}, 'meta': {'cfg': cfg.pretty_text},
                'optimizer': {'main': group, 'teacher_bias': group}}, ckpt)
    check_resume(cfg, ckpt)  # no error
    kd = Config.fromfile(osp.join(ROOT, KD))
    from kd_plugins.errors import PreflightError
    with pytest.raises(PreflightError, match='holds a run of ATSC with the '
                       r"optimizers \['main', 'teacher_bias'\]"):
        check_resume(kd, ckpt)


def test_atomic_write_on_a_full_disk_keeps_the_old_file(tmp_path,
                                                        monkeypatch):
    """The writer: ENOSPC -> DiskFullError naming the file, the bytes and
    the fix; the temporary file is removed, the old file untouched."""
    import errno

    import kd_plugins.utils.checkpoint as ckpt_io
    from kd_plugins.errors import DiskFullError
    target = tmp_path / 'epoch_1.pth'
    ckpt_io.atomic_write(b'old', str(target))
    real = ckpt_io.os.fdopen

    def full(fd, *a, **k):
        f = real(fd, *a, **k)

        def write(data):
            raise OSError(errno.ENOSPC, 'No space left on device')
        f.write = write
        return f
    monkeypatch.setattr(ckpt_io.os, 'fdopen', full)
    with pytest.raises(DiskFullError, match=r'could not write .*epoch_1.pth'
                       r': No space left on device \(0.0 MiB needed, '):
        ckpt_io.atomic_write(b'x' * 1000, str(target))
    assert target.read_bytes() == b'old'
    assert [p.name for p in tmp_path.iterdir()] == ['epoch_1.pth']


def test_full_disk_ends_the_run_with_one_line_and_loadable_checkpoints(
        digits_teacher, tmp_path):
    """The save of epoch 2 hits a full disk (simulated in the writer by
    tests/enospc_helpers.py): one line with the file, the space and the
    fix; epoch_1.pth stays loadable and last_checkpoint names it."""
    from tests.conftest import SMALL_TRAIN
    _, teacher, _ = digits_teacher
    wd = tmp_path / 'wd'
    cfg = _derived(tmp_path, KD, "custom_imports = dict(imports=["
                   "'kd_plugins', 'tests.enospc_helpers'], "
                   'allow_failed_imports=False)')
    out = _fails([cfg, '--work-dir', str(wd), '--cfg-options',
                  f'model.teacher_ckpt={teacher}', 'train_cfg.max_epochs=3',
                  'train_cfg.val_interval=3', *SMALL_TRAIN],
                 'could not write', 'epoch_2.pth', 'MiB needed',
                 'previous checkpoints', '--work-dir on a larger disk')
    assert 'No space left on device' in out
    torch.load(wd / 'epoch_1.pth', weights_only=True)  # loadable
    assert (wd / 'last_checkpoint').read_text().strip().endswith(
        'epoch_1.pth')
    assert not list(wd.glob('.*.tmp')) and not (wd / 'epoch_2.pth').exists()


def test_check_data_lists_corrupt_truncated_empty_and_misnamed_files(
        tmp_path):
    """tools/check_data.py: every bad sample of a file-based data set is
    listed with its error (exit code 1); a clean set passes (0)."""
    from kd_plugins.datasets.image_folder import write_digits_image_folder
    root = write_digits_image_folder(str(tmp_path / 'digits'), split='test',
                                     per_class=3)
    cfg = _derived(tmp_path, KD, f"""
train_dataloader = dict(dataset=dict(
    _delete_=True, type='CustomDataset', data_root='{root}',
    pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
""")
    ok = run_tool(['tools/check_data.py', cfg, '--workers', '2'])
    assert '30 samples' in ok.stdout and 'every sample decodes' in ok.stdout
    files = sorted(glob.glob(osp.join(root, '*', '*.png')))
    corrupt, truncated, empty = files[0], files[5], files[10]
    with open(corrupt, 'wb') as f:
        f.write(os.urandom(500))
    data = open(truncated, 'rb').read()
    with open(truncated, 'wb') as f:
        f.write(data[:len(data) // 3])
    open(empty, 'wb').close()
    misnamed = osp.join(root, '3', 'notes.png')  # text with an image name
    with open(misnamed, 'w') as f:
        f.write('not an image\n')
    proc = run_tool(['tools/check_data.py', cfg, '--workers', '2'],
                    check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    bad = [line for line in proc.stdout.splitlines()
           if line.startswith('BAD ')]
    listed = {line.split()[1] for line in bad}
    assert listed == {corrupt, truncated, empty, misnamed}, proc.stdout
    assert '4 of 31 samples cannot be read' in proc.stdout
    assert '[check_data] 31/31 samples' in proc.stdout  # progress


class _Flaky:
    """A data set whose samples in ``bad`` raise as a broken file does."""
    metainfo = dict(classes=('a', 'b'))

    def __init__(self, n, bad):
        self.n, self.bad = n, set(bad)

    def __len__(self):
        return self.n

    def get_data_info(self, i):
        return dict(img_path=f'/data/{i}.png')

    def __getitem__(self, i):
        if i in self.bad:
            raise AssertionError(f'failed to load image: /data/{i}.png')
        return i


def test_data_error_policies_raise_skip_and_stop(tmp_path):
    from kd_plugins.datasets import DataErrorGuard
    from kd_plugins.errors import ConfigError, DataError
    strict = DataErrorGuard(_Flaky(6, {2}))
    assert strict[1] == 1 and len(strict) == 6
    assert strict.metainfo == dict(classes=('a', 'b'))
    with pytest.raises(DataError, match=r"(?s)/data/2\.png cannot be read: "
                       r"AssertionError.*tools/check_data\.py.*"
                       r"policy='skip'"):
        strict[2]
    log = tmp_path / 'wd' / 'skipped_samples.txt'
    lenient = DataErrorGuard(_Flaky(6, {2, 3, 5}), policy='skip',
                             max_skipped=2, log_file=str(log))
    assert lenient[2] == 4  # 2 and 3 unreadable: the next readable index
    assert log.read_text().splitlines() == ['/data/2.png', '/data/3.png']
    assert lenient[2] == 4  # the same files again: still 2 distinct
    with pytest.raises(DataError, match=r'(?s)3 unreadable files, more than '
                       r'data_errors\.max_skipped=2:.*/data/5\.png'):
        lenient[5]
    with pytest.raises(ConfigError, match="'ignore' is not one of"):
        DataErrorGuard(_Flaky(1, ()), policy='ignore')


def _folder_config(tmp_path, root, body=''):
    return _derived(tmp_path, 'configs/demo/teacher_digits.py', f"""
train_dataloader = dict(num_workers=2, batch_size=16, dataset=dict(
    _delete_=True, type='CustomDataset', data_root='{root}',
    pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
train_cfg = dict(max_epochs=2, val_interval=2)
{body}""")


def test_a_corrupt_image_ends_the_run_with_its_name(tmp_path):
    """The default policy (raise), from a data-loader worker: one line that
    names the file and the fixes."""
    from kd_plugins.datasets.image_folder import write_digits_image_folder
    root = write_digits_image_folder(str(tmp_path / 'digits'), split='test',
                                     per_class=4)
    bad = sorted(glob.glob(osp.join(root, '4', '*.png')))[0]
    with open(bad, 'wb') as f:
        f.write(os.urandom(300))
    _fails([_folder_config(tmp_path, root), '--work-dir',
            str(tmp_path / 'wd')], f'kd_plugins: {bad} cannot be read',
           'tools/check_data.py', "policy='skip'")


def test_a_schedule_longer_than_the_run(tmp_path):
    """The Digits warm-up + cosine schedule with max_epochs=1: the cosine
    part would begin at epoch 1 and end at 1 (mmengine: a traceback)."""
    _fails([KD, '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
            'train_cfg.max_epochs=1'],
           'param_scheduler[1] (CosineAnnealingLR) runs from epoch 1 to 1',
           'train for more than 1 epochs')
