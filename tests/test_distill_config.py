"""tools/distill_config.py: one step from mmpretrain's shipped classifier
configs to a distillation config, for every method. Each written config is
loaded as mmengine loads it, built, trains one step on tiny inputs (64 px,
random pixels) and exports its student; teachers come from mmpretrain's
model zoo by name with random weights (``--teacher-ckpt none``: nothing is
downloaded)."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmrazor.registry import MODELS

from kd_plugins.errors import ArgumentError, ConfigError
from tests.conftest import ROOT, load_tool, mmpretrain_tool, run_tool

R18 = 'mmpretrain::resnet/resnet18_8xb32_in1k.py'
MBV2 = 'mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py'
DEIT = 'mmpretrain::deit/deit-tiny_4xb256_in1k.py'
R34, R50 = 'resnet34_8xb32_in1k', 'resnet50_8xb32_in1k'


def _write(tmp_path, student, method, teachers, *extra, name=None,
           ckpt='none'):
    tool = load_tool('distill_config')
    out = str(tmp_path / f'{name or method}.py')
    args = [student, '--method', method, '-o', out]
    for t in teachers:
        args += ['--teacher', t, '--teacher-ckpt', ckpt]
    tool.main(args + list(extra))
    return out


def _batch(n=2, size=64):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(0)
    return dict(inputs=torch.randint(0, 256, (n, 3, size, size), generator=g,
                                     dtype=torch.uint8),
                data_samples=[DataSample().set_gt_label(i) for i in range(n)])


def _train_step(path):
    """Build the written config's model, one training step; the student's
    weights must move and every loss be finite."""
    cfg = Config.fromfile(path)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.train()
    ow = build_optim_wrapper(model, cfg.optim_wrapper)  # the config's own
    student = model.student
    before = {k: v.clone() for k, v in student.state_dict().items()}
    log = model.train_step(_batch(), ow)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log.values()), log
    moved = [k for k, v in student.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, before[k])]
    return cfg, model, log, moved


def _export(tmp_path, path, model):
    from kd_plugins.export import export_student
    ckpt = str(tmp_path / 'ckpt.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    cfg_path, pth = export_student(path, ckpt, str(tmp_path / 'export'))
    exported = Config.fromfile(cfg_path)
    assert exported.model.type.split('.')[-1] == 'ImageClassifier'
    sd = torch.load(pth, map_location='cpu', weights_only=True)
    sd = sd.get('state_dict', sd)
    assert not any(k.startswith(('teacher', 'distiller')) for k in sd)
    return exported


def _unscoped(obj):
    """``obj`` without the ``_scope_`` keys mmengine adds to what a config
    inherits from another package (``mmpretrain::``)."""
    if isinstance(obj, dict):
        return {k: _unscoped(v) for k, v in obj.items() if k != '_scope_'}
    if isinstance(obj, list):
        return [_unscoped(v) for v in obj]
    return obj


def _methods_ran(log, *keys):
    for key in keys:
        assert any(key in k for k in log), (key, sorted(log))


@pytest.mark.parametrize('method,teachers,keys', [
    ('kd', [R34], ['loss_kd']),
    ('aekt', [R34], ['loss_aekt']),
    ('mt_kd', [R34, R50], ['loss_kd']),
], ids=['kd', 'aekt', 'mt_kd'])
def test_logit_methods_on_resnet18(tmp_path, method, teachers, keys):
    path = _write(tmp_path, R18, method, teachers)
    text = open(path).read()
    assert f"_base_ = '{R18}'" in text
    cfg, model, log, moved = _train_step(path)
    assert moved, 'the student did not learn'
    _methods_ran(log, *keys)
    # the rest of the user's config stays
    student = Config.fromfile(osp.join(
        __import__('kd_plugins.distill_config').distill_config.mim_configs(),
        'resnet', 'resnet18_8xb32_in1k.py'))
    assert _unscoped(cfg.train_dataloader) == student.train_dataloader
    assert _unscoped(cfg.optim_wrapper) == student.optim_wrapper
    if method == 'aekt':
        assert type(model.student.head).__name__ == 'AEKTHead'
        assert model.student.head.fc.in_features == 512
    if method == 'mt_kd':
        assert len(model.teachers) == 2
    _export(tmp_path, path, model)


def test_kd_layer_places_the_layer_after_the_last_map(tmp_path):
    from tests.test_kd_layer import _write_stats
    path = _write(tmp_path, MBV2, 'kd_layer', [R50], '--num-templates', '8')
    cfg = Config.fromfile(path)
    layer = cfg.model.architecture.backbone.kd_layers[0]
    assert (layer.after, layer.in_channels, layer.num_templates) == \
        ('conv2', 1280, 8)
    assert cfg.kd_layer_stats.penultimate.teacher_layer == 'backbone.layer4'
    stats = cfg.model.distiller.distill_losses.loss_penult.stats_file
    assert 'kd_layer_stats.py' in open(path).read()  # the header's step 1
    _write_stats(str(tmp_path / 'stats.npz'), c=2048, k=8, classes=1000)
    text = open(path).read().replace(stats, str(tmp_path / 'stats.npz'))
    open(path, 'w').write(text)
    _, model, log, moved = _train_step(path)
    assert moved
    _methods_ran(log, 'loss_penult')
    exported = _export(tmp_path, path, model)  # the KD layer is the student's
    assert exported.model.backbone.type.split('.')[-1] == 'KDLayerBackbone'
    assert exported.model.backbone.backbone.type.endswith('MobileNetV2')


def test_kd_layer_statistics_step_of_the_header(tmp_path):
    """Step 1 of a written KD-layer config (tools/kd_layer_stats.py) reads
    its kd_layer_stats section; the distillation then trains from the
    file (Digits student and teacher configs, bundled data)."""
    from kd_plugins.kd_layer_stats import compute_kd_layer_stats
    teacher_cfg = osp.join(ROOT, 'configs/demo/teacher_digits.py')
    teacher = MODELS.build(dict(Config.fromfile(teacher_cfg).model.to_dict(),
                                _scope_='mmpretrain'))
    ckpt = str(tmp_path / 'teacher.pth')
    torch.save(dict(state_dict=teacher.state_dict()), ckpt)
    path = _write(tmp_path, osp.join(ROOT, 'configs/demo/student_digits.py'),
                  'kd_layer', [teacher_cfg], ckpt=ckpt)
    cfg = Config.fromfile(path)
    assert cfg.kd_layer_stats.penultimate.num_templates == 64  # 10 classes
    step = next(line for line in open(path) if 'kd_layer_stats.py' in line)
    assert ckpt in step
    stats = str(tmp_path / 'stats.npz')
    cfg.train_dataloader.dataset.num_per_class = 30
    compute_kd_layer_stats(cfg, ckpt, stats)
    text = open(path).read().replace(
        cfg.model.distiller.distill_losses.loss_penult.stats_file, stats)
    open(path, 'w').write(text)
    _, model, log, moved = _train_step(path)
    assert moved
    _methods_ran(log, 'loss_penult')


def test_ie_kd_writes_both_stages_with_the_encoder_widths(tmp_path):
    path = _write(tmp_path, R18, 'ie_kd', [R34])
    stage1 = str(tmp_path / 'ie_kd_stage1.py')
    cfg1 = Config.fromfile(stage1)
    conn = cfg1.model.distiller.connectors.t_ae
    assert (conn.in_channels, conn.rate) == (512, 0.5)
    assert cfg1.val_dataloader is None and cfg1.train_cfg.max_epochs == 10
    # stage 1 trains the auto-encoder only
    model1 = MODELS.build(cfg1.model)
    model1.train()
    ow = build_optim_wrapper(model1, dict(optimizer=dict(type='SGD',
                                                         lr=0.01)))
    log = model1.train_step(_batch(), ow)
    _methods_ran(log, 'loss_rec')
    cfg2 = Config.fromfile(path)
    t_enc = cfg2.model.distiller.connectors.t_enc
    assert t_enc.stage1_ckpt == 'work_dirs/ie_kd_stage1/epoch_10.pth'
    s_inh = cfg2.model.distiller.connectors.s_inh
    assert (s_inh.in_channels, s_inh.out_channels) == (512, 256)
    ckpt = str(tmp_path / 'stage1.pth')
    torch.save(dict(state_dict=model1.state_dict(), meta=dict()), ckpt)
    text = open(path).read().replace(t_enc.stage1_ckpt, ckpt)
    open(path, 'w').write(text)
    _, model, log, moved = _train_step(path)
    assert moved
    _methods_ran(log, 'loss_inh', 'loss_exp')
    # the stage-1 encoder is what stage 2 compares with
    enc = model.distiller.connectors['t_enc'].encoder.state_dict()
    for k, v in enc.items():
        assert torch.equal(
            v, model1.state_dict()[f'distiller.connectors.t_ae.encoder.{k}'])
    _export(tmp_path, path, model)


def test_atsc_sizes_the_projector_and_its_optimizers(tmp_path):
    path = _write(tmp_path, MBV2, 'atsc', [R50])
    cfg = Config.fromfile(path)
    proj = cfg.model.projectors[0]
    assert (proj.in_channels, proj.out_channels) == (1280, 2048)
    assert cfg.optim_wrapper.constructor == 'KDMultiOptimWrapperConstructor'
    assert cfg.model_wrapper_cfg.type == 'KDModelWrapper'
    assert cfg.model.anchor_weight == 10.0  # the paper's ImageNet value
    _, model, log, moved = _train_step(path)
    assert moved
    _methods_ran(log, 'loss_mse0', 'loss_anchor')
    _export(tmp_path, path, model)


def test_deit_student_logit_methods_and_batch_augments(tmp_path):
    # DeiT's config mixes images and labels (Mixup / CutMix in
    # model.train_cfg): KD keeps them, in the distiller's preprocessor
    path = _write(tmp_path, DEIT, 'kd', [R50])
    cfg = Config.fromfile(path)
    assert cfg.model.data_preprocessor.batch_augments.augments
    assert cfg.model.architecture.head.type.endswith(
        'VisionTransformerClsHead')
    assert "source='head.layers.head'" in open(path).read()
    _, model, log, moved = _train_step(path)
    assert moved
    assert type(model.data_preprocessor.batch_augments).__name__ == \
        'RandomBatchAugment'
    _export(tmp_path, path, model)
    # AEKT reads hard labels: refused with Mixup, named fix
    with pytest.raises(ConfigError, match='--no-batch-augments'):
        _write(tmp_path, DEIT, 'aekt', [R50])
    path = _write(tmp_path, DEIT, 'aekt', [R50], '--no-batch-augments',
                  name='aekt_plain')
    cfg = Config.fromfile(path)
    assert cfg.model.architecture.train_cfg is None
    assert 'batch_augments' not in cfg.model.data_preprocessor
    assert cfg.model.architecture.head.in_channels == 192
    _, model, log, moved = _train_step(path)
    assert moved
    _methods_ran(log, 'loss_aekt')
    exported = _export(tmp_path, path, model)  # a plain LinearClsHead
    assert exported.model.head.type.endswith('LinearClsHead')
    # feature methods: a ViT's tokens are not maps
    for method in ('kd_layer', 'ie_kd', 'atsc'):
        with pytest.raises(ConfigError, match=r'needs \(N, C, H, W\) feature '
                           r'maps.*\n.*kd, aekt, mt_kd'):
            _write(tmp_path, DEIT, method, [R50], name=f'no_{method}')


def test_vit_teacher_for_atsc_is_refused_and_kd_records_its_head(tmp_path):
    with pytest.raises(ConfigError, match=r'atsc needs \(N, C, H, W\) '
                       'feature maps, but the teacher deit-tiny'):
        _write(tmp_path, R18, 'atsc', ['deit-tiny_4xb256_in1k'])
    path = _write(tmp_path, R18, 'kd', ['deit-tiny_4xb256_in1k'])
    cfg = Config.fromfile(path)
    assert cfg.model.distiller.teacher_recorders.fc.source == \
        'head.layers.head'


def _teacher_config(tmp_path, **pre):
    """A ResNet-18 teacher config trained with other preprocessing."""
    student = Config.fromfile(osp.join(
        __import__('kd_plugins.distill_config').distill_config.mim_configs(),
        'resnet', 'resnet18_8xb32_in1k.py'))
    cfg = Config(dict(model=student.model.to_dict(),
                      data_preprocessor=dict(student.data_preprocessor, **pre),
                      train_dataloader=dict(dataset=dict(pipeline=[
                          dict(type='LoadImageFromFile'),
                          dict(type='RandomResizedCrop', scale=96),
                          dict(type='PackInputs')]))))
    path = str(tmp_path / 'teacher_cfg.py')
    cfg.dump(path)
    return path


def test_teacher_with_other_normalisation_and_size_gets_teacher_input(
        tmp_path):
    teacher = _teacher_config(tmp_path, mean=[127.5] * 3, std=[127.5] * 3,
                              to_rgb=False)
    with pytest.raises(ArgumentError, match='--teacher-ckpt'):
        load_tool('distill_config').main([R18, '--method', 'kd', '--teacher',
                                          teacher, '-o',
                                          str(tmp_path / 'x.py')])
    path = _write(tmp_path, R18, 'kd', [teacher])
    cfg = Config.fromfile(path)
    assert cfg.model.teacher_input == dict(mean=[127.5] * 3,
                                           std=[127.5] * 3, to_rgb=False,
                                           size=96)
    assert cfg.model.teacher.backbone.depth == 18
    _, model, log, moved = _train_step(path)
    assert moved
    # the teacher sees the raw images as its own preprocessing makes them
    from mmpretrain.models import ClsDataPreprocessor
    raw = _batch()
    teacher_pre = ClsDataPreprocessor(mean=[127.5] * 3, std=[127.5] * 3,
                                      to_rgb=False)
    want = torch.nn.functional.interpolate(
        teacher_pre(raw)['inputs'], size=(96, 96), mode='bilinear',
        align_corners=False, antialias=False)
    got = model.teacher_input(model.data_preprocessor(raw)['inputs'])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    # ATSC trains the teacher on the student's inputs: refused
    with pytest.raises(ConfigError, match='other preprocessing'):
        _write(tmp_path, R18, 'atsc', [teacher], name='atsc_norm')


def test_teacher_input_by_formula():
    from mmpretrain.models import ClsDataPreprocessor

    from kd_plugins.algorithms.teacher_input import TeacherInput
    pre = ClsDataPreprocessor(mean=[10., 20., 30.], std=[2., 4., 5.],
                              to_rgb=True)
    adapt = TeacherInput(pre, mean=[1., 2., 3.], std=[1., 2., 4.],
                         to_rgb=False)
    x = torch.randn(2, 3, 5, 5)
    raw_rgb = x * torch.tensor([2., 4., 5.]).view(1, 3, 1, 1) + \
        torch.tensor([10., 20., 30.]).view(1, 3, 1, 1)
    raw_bgr = raw_rgb.flip(1)
    want = (raw_bgr - torch.tensor([1., 2., 3.]).view(1, 3, 1, 1)) / \
        torch.tensor([1., 2., 4.]).view(1, 3, 1, 1)
    torch.testing.assert_close(adapt(x), want)
    assert TeacherInput(pre).identity  # same preprocessing: untouched
    with pytest.raises(ConfigError, match='std must be > 0'):
        TeacherInput(pre, std=[0., 1., 1.])


def test_ambiguous_or_wrong_choices_name_the_option(tmp_path):
    with pytest.raises(ConfigError, match='--student-feature'):
        _write(tmp_path, R18, 'kd', [R34], '--student-feature',
               'backbone.layer9', name='bad_feature')
    with pytest.raises(ConfigError, match='not a linear layer'):
        _write(tmp_path, R18, 'kd', [R34], '--teacher-logits',
               'head.loss_module', name='bad_logits')
    with pytest.raises(ConfigError, match='predicts 1000 classes, the '
                       'student 10'):
        _write(tmp_path, osp.join(ROOT, 'configs/demo/student_digits.py'),
               'kd', [R34], name='classes')
    with pytest.raises(ArgumentError, match='similar names'):
        _write(tmp_path, R18, 'kd', ['resnet19_in1k'], name='no_such')
    with pytest.raises(ArgumentError, match='mt_kd'):
        _write(tmp_path, R18, 'kd', [R34, R50], name='two')
    out = _write(tmp_path, R18, 'kd', [R34], name='twice')
    with pytest.raises(ArgumentError, match='--force'):
        _write(tmp_path, R18, 'kd', [R34], name='twice')
    assert osp.isfile(out)


def test_timm_backbone_student(tmp_path):
    pytest.importorskip('timm')
    cfg = Config(dict(
        model=dict(type='ImageClassifier',
                   backbone=dict(type='TIMMBackbone', model_name='resnet18',
                                 pretrained=False),
                   neck=dict(type='GlobalAveragePooling'),
                   head=dict(type='LinearClsHead', num_classes=1000,
                             in_channels=512,
                             loss=dict(type='CrossEntropyLoss'))),
        data_preprocessor=dict(mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], to_rgb=True),
        # a student config's schedule (the written config trains with it)
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1))))
    student = str(tmp_path / 'timm_student.py')
    cfg.dump(student)
    path = _write(tmp_path, student, 'kd', [R34])
    _, model, log, moved = _train_step(path)
    assert moved
    _export(tmp_path, path, model)


def test_written_config_trains_with_both_train_scripts(tmp_path):
    """The Digits student config + its teacher config (random weights):
    mmpretrain's own tools/train.py trains the written config as it is, and
    kd_plugins' tools/train.py --distill writes the same config and trains
    it (two short epochs each); the student of the run exports."""

    from kd_plugins.export import export_student
    student = 'configs/demo/student_digits.py'
    teacher = ['--teacher', 'configs/demo/teacher_digits.py',
               '--teacher-ckpt', 'none']
    out = str(tmp_path / 'kd_digits_written.py')
    load_tool('distill_config').main([osp.join(ROOT, student), '--method',
                                      'kd', '-o', out] + teacher)
    short = ['--cfg-options', 'train_cfg.max_epochs=2',
             'train_dataloader.dataset.num_per_class=10']
    theirs = str(tmp_path / 'theirs')
    # mmpretrain's own train.py, in a fresh interpreter (not the zygote)
    proc = mmpretrain_tool('train.py', [out, '--work-dir', theirs] + short,
                           cwd=ROOT)
    assert 'Epoch(train)' in proc.stdout + proc.stderr
    ours = str(tmp_path / 'ours')
    one_step = [student, '--distill', 'kd', *teacher, '--work-dir', ours]
    run_tool(['tools/train.py', *one_step, *short])
    written = osp.join(ours, 'distill', 'student_digits_kd.py')

    def body(path):
        return [line for line in open(path) if not line.startswith('#')]
    assert body(written)[1:] == body(out)[1:]  # (_base_: relative to each)
    for wd in (ours, theirs):
        assert osp.isfile(osp.join(wd, 'epoch_2.pth')), wd
    export_student(out, osp.join(theirs, 'epoch_2.pth'),
                   str(tmp_path / 'export'))
    assert osp.isfile(str(tmp_path / 'export' / 'student.pth'))
    # the same command again (a resume) keeps the same config; a config
    # the user edited since is not overwritten
    train = load_tool('train')
    args = train.parse_args(one_step)
    args.config = osp.join(ROOT, student)
    assert train.distill_config(args) == written
    open(written, 'a').write('foo = 1  # edited\n')
    with pytest.raises(ArgumentError, match='exists and differs'):
        train.distill_config(args)


def test_docs_one_step_commands_write_configs_as_documented(tmp_path):
    """docs/training.md's one-step commands, as written (the user's own
    files of the last one made here), write configs that load."""
    import re
    import shlex
    text = open(osp.join(ROOT, 'docs', 'training.md')).read()
    section = text.split('## Distil any mmpretrain model in one step')[1]
    block = re.search(r'```bash\n(.*?)```', section, re.S).group(1)
    commands = [c for c in re.sub(r'\\\n\s*', ' ', block).splitlines()
                if c.startswith('python tools/distill_config.py')]
    assert len(commands) == 3, commands
    r18 = Config.fromfile(osp.join(
        __import__('kd_plugins.distill_config').distill_config.mim_configs(),
        'resnet', 'resnet18_8xb32_in1k.py'))
    r18.dump(str(tmp_path / 'my_student.py'))
    r18.dump(str(tmp_path / 'my_teacher.py'))
    tool = load_tool('distill_config')
    for cmd in commands:
        args = shlex.split(cmd)[2:]
        args = [str(tmp_path / a) if a.startswith(('my_', 'work_dirs/'))
                else a for a in args]
        out = tool.main(args)
        cfg = Config.fromfile(out)
        assert cfg.model._scope_ == 'mmrazor' and cfg.custom_imports
