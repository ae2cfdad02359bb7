"""ATSC: projector, anchor, the two update steps, multi-teacher, deployed
prediction, resume of theta0, export."""
import copy
import json
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmpretrain.registry import MODELS as PT_MODELS
from mmpretrain.structures import DataSample
from mmrazor.registry import MODELS

from tests.conftest import (MID_EPOCH_3, ROOT, assert_killed_after,
                            run_tool, shipped_test_top1)

CFG = 'configs/demo/atsc_digits.py'
CFG2 = 'configs/demo/atsc2_digits.py'


def build(cfg_file=CFG, **overrides):
    cfg = Config.fromfile(osp.join(ROOT, cfg_file))
    cfg.model.teacher_ckpts = [None] * len(cfg.model.teachers)
    cfg.model.update(overrides)
    return MODELS.build(cfg.model), cfg


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(inputs=[torch.randint(0, 255, (3, 32, 32), generator=g,
                                      dtype=torch.uint8) for _ in range(n)],
                data_samples=[DataSample().set_gt_label(i % 10)
                              for i in range(n)])


def optim(model, **kw):
    from mmengine.optim import build_optim_wrapper
    cfg = dict(constructor='KDMultiOptimWrapperConstructor',
               optimizer=dict(type='SGD', lr=0.05, momentum=0.9, **kw))
    return build_optim_wrapper(model, cfg)


def test_projector_shapes_pooling_and_no_bias():
    proj = MODELS.build(dict(type='ATSCProjector', in_channels=32,
                             out_channels=128, factor=2))
    convs = [m for m in proj.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128]
    assert all(c.bias is None for c in convs)
    assert convs[1].kernel_size == (3, 3)
    x = torch.randn(2, 32, 8, 8)
    assert proj(x).shape == (2, 128, 8, 8)  # no target size: no pooling
    proj.proj.target_hw.copy_(torch.tensor([4, 4]))
    assert proj(x).shape == (2, 128, 4, 4)  # larger student map is pooled
    manual = proj.proj.layers(F.adaptive_avg_pool2d(x, (4, 4)))
    torch.testing.assert_close(proj(x), manual)
    assert proj(torch.randn(2, 32, 4, 4)).shape == (2, 128, 4, 4)
    with pytest.raises(ValueError, match='in_channels'):
        proj(torch.randn(2, 16, 8, 8))


def test_anchor_term_by_hand():
    model, _ = build()
    assert float(model.anchor_loss()) == 0.0
    teacher = model.teachers[0]
    conv = teacher.backbone.conv1.weight
    with torch.no_grad():
        conv.add_(0.5)  # ndim 4: anchored
        teacher.head.fc.weight.add_(3.0)  # final classifier weight: not
        teacher.backbone.bn1.weight.add_(7.0)  # ndim 1: not
    assert float(model.anchor_loss()) == pytest.approx(conv.numel() * 0.25)
    names = model._anchor_names[0]
    assert 'head.fc.weight' not in names and 'backbone.conv1.weight' in names
    assert all(dict(teacher.named_parameters())[n].ndim > 1 for n in names)


def test_teacher_moves_stays_anchored_and_theta0_is_frozen():
    model, _ = build()
    theta0 = {k: v.clone() for k, v in model.anchors.state_dict().items()}
    before = copy.deepcopy(model.teachers[0].state_dict())
    ow = optim(model)
    model.train()
    for i in range(3):
        log = model.train_step(batch(seed=i), ow)
    assert {'loss_mse0', 'loss_anchor', 'teacher_ce'} <= set(log)
    after = model.teachers[0].state_dict()
    assert not torch.equal(after['backbone.conv1.weight'],
                           before['backbone.conv1.weight'])  # teacher moved
    assert float(model.anchor_loss()) > 0  # ... away from theta0
    for k, v in model.anchors.state_dict().items():  # theta0 unchanged
        assert torch.equal(v, theta0[k])
    assert model.teachers[0].training  # teacher trains in train mode


def test_second_step_changes_only_the_teacher_fc_bias(monkeypatch):
    model, _ = build()
    ow = optim(model, weight_decay=5e-4)
    main = ow['main']
    monkeypatch.setattr(main, 'update_params', lambda loss: None)
    params = {k: v.clone() for k, v in model.named_parameters()}
    model.train()
    model.train_step(batch(), ow)
    changed = [k for k, v in model.named_parameters()
               if not torch.equal(v, params[k])]
    assert changed == ['teachers.0.head.fc.bias']


def test_step_two_gradient_is_the_teacher_ce_gradient():
    model, _ = build()
    model.train()
    data = model.data_preprocessor(batch(), True)
    model.loss(**data)
    fc = model.teachers[0].head.fc
    fc.bias.grad = None
    model.teacher_bias_loss().backward()
    feats, labels = model._step2
    logits = F.linear(feats[0], fc.weight, fc.bias).detach()
    want = (torch.softmax(logits, 1) - F.one_hot(labels, 10)).mean(0)
    torch.testing.assert_close(fc.bias.grad, want)
    assert fc.weight.grad is None


def test_multi_teacher_prediction_is_the_mean_and_loss_sums():
    model, _ = build(CFG2)
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    f_s = model._student_map(x)
    per = []
    for k, t in enumerate(model.teachers):
        p = model.connectors[k](f_s)
        per.append(t.head.fc(F.adaptive_avg_pool2d(p, 1).flatten(1)))
    torch.testing.assert_close(model(x, mode='tensor'),
                               (per[0] + per[1]) / 2)
    model.train()
    losses = model.loss(**model.data_preprocessor(batch(), True))
    assert {'loss_mse0', 'loss_mse1', 'loss_anchor'} <= set(losses)
    log = model.train_step(batch(), optim(model))
    assert torch.isfinite(log['teacher_ce'])


def test_predict_uses_the_deployed_prediction_not_the_student_head():
    model, _ = build()
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    out = model(x, [DataSample() for _ in range(4)], mode='predict')
    z = model.deployed_logits(model._student_map(x))
    torch.testing.assert_close(torch.stack([o.pred_score for o in out]),
                               torch.softmax(z, 1))
    own = model.student(x, mode='tensor')  # the unused student head
    assert not torch.allclose(own, z)


def test_optional_ce_and_kd_terms():
    model, _ = build(ce_weight=1.0, kd_weight=0.5)
    model.train()
    losses = model.loss(**model.data_preprocessor(batch(), True))
    assert {'loss_ce', 'loss_kd'} <= set(losses)


def test_clear_errors():
    with pytest.raises(ValueError, match='no linear classifier'):
        build(teachers=[dict(
            type='mmpretrain.ImageClassifier',
            backbone=dict(type='mmpretrain.ResNet_CIFAR', depth=18),
            neck=dict(type='mmpretrain.GlobalAveragePooling'),
            head=dict(type='mmpretrain.StackedLinearClsHead', num_classes=10,
                      in_channels=512, mid_channels=[64]),
            data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor'))])
    with pytest.raises(ValueError, match='out_channels=128'):
        build(projectors=[dict(type='ATSCProjector', in_channels=32,
                               out_channels=64)])
    with pytest.raises(ValueError, match='one projector'):
        build(projectors=[])


def _run(wd, teachers, *extra, cfg=CFG, epochs=3, kill_at=None):
    value = f'[{",".join(teachers)}]'
    return run_tool(['tools/train.py', cfg, '--work-dir', wd, *extra,
                     '--cfg-options', f'model.teacher_ckpts={value}',
                     f'train_cfg.max_epochs={epochs}',
                     f'train_cfg.val_interval={epochs}'], kill_at=kill_at)


def test_trains_resumes_keeps_theta0_and_exports(digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    full = str(tmp_path / 'full')
    proc = _run(full, [teacher])
    assert 'teacher_ce' in proc.stdout + proc.stderr
    # killed (SIGKILL) mid-epoch 3 and resumed: theta0, the adapted teacher
    # and both optimizers come back exactly
    part = str(tmp_path / 'part')
    _run(part, [teacher], kill_at=MID_EPOCH_3)
    assert_killed_after(part, epoch=2)
    _run(part, [teacher], '--resume')
    a = torch.load(osp.join(full, 'epoch_3.pth'), weights_only=True)
    b = torch.load(osp.join(part, 'epoch_3.pth'), weights_only=True)
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k
    sd = a['state_dict']
    # checkpoints hold the projector and the adapted teacher classifier
    assert any(k.startswith('connectors.0.proj.layers.') for k in sd)
    assert 'teachers.0.head.fc.weight' in sd
    # theta0 is the pre-trained teacher, not the adapted one
    pre = torch.load(teacher, weights_only=True)['state_dict']
    assert torch.equal(sd['anchors.0.p0'], pre['backbone.conv1.weight'])
    assert not torch.equal(sd['teachers.0.backbone.conv1.weight'],
                           pre['backbone.conv1.weight'])
    # optimizer states of both steps are saved
    assert set(a['optimizer']) >= {'main', 'teacher_bias'}
    # validation top-1 == test top-1 == exported student's top-1
    ckpt = osp.join(full, 'epoch_3.pth')
    m1, m2 = tmp_path / 'm1.json', tmp_path / 'm2.json'
    run_tool(['tools/test.py', CFG, ckpt, '--work-dir', str(tmp_path / 't1'),
              '--dump-metrics', str(m1)])
    out = str(tmp_path / 'export')
    run_tool(['tools/export_student.py', CFG, ckpt, out])
    exp = torch.load(osp.join(out, 'student.pth'), weights_only=True)
    assert not any(k.startswith(('teachers', 'anchors', 'connectors'))
                   for k in exp['state_dict'])
    assert 'head.classifiers.0.weight' in exp['state_dict']
    text = open(osp.join(out, 'student.py')).read()
    assert 'ATSCSharedHead' in text and 'mmrazor' not in text
    run_tool(['tools/test.py', osp.join(out, 'student.py'),
              osp.join(out, 'student.pth'), '--work-dir',
              str(tmp_path / 't2'), '--dump-metrics', str(m2)])
    top = [json.loads(m.read_text())['accuracy/top1'] for m in (m1, m2)]
    assert top[0] == pytest.approx(top[1], abs=1e-6)
    assert shipped_test_top1(osp.join(out, 'student.py'),
                             osp.join(out, 'student.pth'),
                             str(tmp_path / 't3')) == pytest.approx(
                                 top[0], abs=1e-3)


@pytest.mark.parametrize('cfg_file', [CFG, CFG2])
def test_exported_logits_equal_deployed_logits(digits_teacher, tmp_path,
                                               cfg_file):
    from mmpretrain.apis import init_model

    from kd_plugins.export import export_student
    _, teacher, _ = digits_teacher
    model, cfg = build(cfg_file)
    ow = optim(model)
    model.train()
    for i in range(2):  # move everything away from its initial values
        model.train_step(batch(seed=i), ow)
    ckpt = str(tmp_path / 'c.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    cfg_path, pth = export_student(cfg, ckpt, str(tmp_path / 'exp'))
    student = init_model(cfg_path, pth, device='cpu')
    model.eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(student(x, mode='tensor'),
                                   model(x, mode='tensor'))
    assert isinstance(student.head, PT_MODELS.get('ATSCSharedHead'))


def test_two_teacher_demo_config_trains(digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    proc = _run(str(tmp_path / 'two'), [teacher, teacher], cfg=CFG2,
                epochs=2)
    log = proc.stdout + proc.stderr
    assert 'loss_mse1' in log and 'accuracy/top1' in log


def test_in1k_config_builds_and_computes_losses():
    model, cfg = build('configs/atsc_r50_r18_in1k.py')
    assert cfg.model.anchor_weight == 10.0
    assert cfg.optim_wrapper.optimizer.lr == 0.01
    assert cfg.train_cfg.max_epochs == 120
    model.train()
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
                        for _ in range(2)],
                data_samples=[DataSample().set_gt_label(i) for i in (3, 999)])
    losses = model.loss(**model.data_preprocessor(data, True))
    assert torch.isfinite(losses['loss_mse0'])
