"""ATSC: projector, anchor, the two update steps, multi-teacher, deployed
prediction, resume of theta0, export."""
import copy
import json
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmpretrain.registry import MODELS as PT_MODELS
from mmpretrain.structures import DataSample
from mmrazor.registry import MODELS

from tests.conftest import (MID_EPOCH_3, ROOT, SMALL_TRAIN, assert_preempted,
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
    proj.proj.set_target((4, 4))
    assert proj.proj.target_hw.tolist() == [4, 4]  # saved with the weights
    assert proj(x).shape == (2, 128, 4, 4)  # larger student map is pooled
    manual = proj.proj.layers(F.adaptive_avg_pool2d(x, (4, 4)))
    torch.testing.assert_close(proj(x), manual)
    assert proj(torch.randn(2, 32, 4, 4)).shape == (2, 128, 4, 4)
    with pytest.raises(ValueError, match='in_channels'):
        proj(torch.randn(2, 16, 8, 8))


def test_anchor_term_by_hand():
    """Official anchor set: every teacher parameter with ndim > 1, the shared
    classifier's weight included (ATSC helper/util.py: all parameters but
    the last one, fc.bias, filtered to ndim > 1); BN scales are not."""
    model, _ = build()
    assert float(model.anchor_loss()) == 0.0
    teacher = model.teachers[0]
    conv = teacher.backbone.conv1.weight
    fc = teacher.head.fc
    with torch.no_grad():
        conv.add_(0.5)  # ndim 4: anchored
        fc.weight.add_(3.0)  # shared classifier weight: anchored
        fc.bias.add_(5.0)  # trained by step 2: never anchored
        teacher.backbone.bn1.weight.add_(7.0)  # ndim 1: not by default
    want = conv.numel() * 0.25 + fc.weight.numel() * 9.0
    assert float(model.anchor_loss()) == pytest.approx(want, rel=1e-6)
    names = model._anchor_names[0]
    assert 'head.fc.weight' in names and 'backbone.conv1.weight' in names
    params = dict(teacher.named_parameters())
    assert names == [n for n, p in params.items() if p.ndim > 1]


def test_anchor_norm_also_anchors_bn_but_not_the_classifier_bias():
    model, _ = build(anchor_norm=True)
    teacher = model.teachers[0]
    names = model._anchor_names[0]
    params = dict(teacher.named_parameters())
    assert 'head.fc.bias' not in names
    assert set(names) == set(params) - {'head.fc.bias'}
    with torch.no_grad():
        teacher.backbone.bn1.weight.add_(7.0)
        teacher.head.fc.bias.add_(5.0)
    assert float(model.anchor_loss()) == pytest.approx(
        teacher.backbone.bn1.weight.numel() * 49.0, rel=1e-6)


def test_larger_teacher_map_is_pooled_to_the_student_size():
    """Official SimKD.forward: whichever map is larger is pooled. Teacher
    8x8 (3 stages, 64 ch), student 4x4 (4 stages, 64 ch)."""
    pre = dict(type='mmpretrain.ClsDataPreprocessor')
    teacher = dict(
        type='mmpretrain.ImageClassifier', data_preprocessor=pre,
        backbone=dict(type='mmpretrain.ResNet_CIFAR', depth=18,
                      stem_channels=16, base_channels=16, num_stages=3,
                      strides=(1, 2, 2), dilations=(1, 1, 1),
                      out_indices=(2, )),
        neck=dict(type='mmpretrain.GlobalAveragePooling'),
        head=dict(type='mmpretrain.LinearClsHead', num_classes=10,
                  in_channels=64))
    student = dict(
        type='mmpretrain.ImageClassifier', data_preprocessor=pre,
        backbone=dict(type='mmpretrain.ResNet_CIFAR', depth=18,
                      stem_channels=8, base_channels=8, num_stages=4,
                      strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1),
                      out_indices=(3, )),
        neck=dict(type='mmpretrain.GlobalAveragePooling'),
        head=dict(type='mmpretrain.LinearClsHead', num_classes=10,
                  in_channels=64))
    model, _ = build(architecture=student, teachers=[teacher],
                     projectors=[dict(type='ATSCProjector', in_channels=64,
                                      out_channels=64)])
    model.train()
    data = model.data_preprocessor(batch(), True)
    f_s = model._student_map(data['inputs'])
    f_t = model._teacher_map(0, data['inputs'])
    assert f_s.shape[2:] == (4, 4) and f_t.shape[2:] == (8, 8)
    losses = model.loss(**data)
    # by hand, with the same (train-mode) forward: MSE against the pooled map
    p = model.connectors[0](f_s)
    assert p.shape[2:] == (4, 4)  # the student map is not pooled
    want = F.mse_loss(p, F.adaptive_avg_pool2d(f_t, (4, 4)))
    torch.testing.assert_close(losses['loss_mse0'], want, rtol=1e-5,
                               atol=1e-6)
    log = model.train_step(batch(seed=1), optim(model))
    assert torch.isfinite(log['loss'])


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


@pytest.mark.parametrize('reuse', [False, True])
def test_step_two_gradient_is_the_teacher_ce_gradient(reuse):
    """d CE / d b = mean(softmax(z) - onehot(y)), z from the teacher's
    features: a second forward (default) or step 1's (reuse)."""
    model, _ = build(reuse_teacher_features=reuse)
    model.train()
    data = model.data_preprocessor(batch(), True)
    model.loss(**data)
    fc = model.teachers[0].head.fc
    fc.bias.grad = None
    model.teacher_bias_loss().backward()
    with torch.no_grad():  # train mode: batch statistics, as both forwards
        feats = F.adaptive_avg_pool2d(
            model.teachers[0].extract_feat(data['inputs'],
                                           stage='backbone')[-1], 1).flatten(1)
    labels = torch.cat([s.gt_label for s in data['data_samples']])
    logits = F.linear(feats, fc.weight, fc.bias).detach()
    want = (torch.softmax(logits, 1) - F.one_hot(labels, 10)).mean(0)
    torch.testing.assert_close(fc.bias.grad, want)
    assert fc.weight.grad is None


def _official_atsc_steps(student, teacher, simkd, batches, lr, momentum,
                         wd, beta, w, cls=0.0, div=0.0, kd_T=4.0):
    """A transcription, unedited, of the official ATSC training step
    (github.com/random2314235/ATSC):

    - optimizers: train_student.py (``trainable_list`` = student, SimKD and
      the whole teacher in one SGD; ``optimizer_last``, a second SGD over the
      teacher's last parameter ``fc.bias``);
    - theta0: helper/util.py ``extract_weights_except_last`` (every
      parameter but the last, requires_grad and ndim > 1, detached);
    - the step: helper/loops.py ``train_distill`` with opt.distill ==
      'atsc': ``loss = cls * loss_cls + div * loss_div + beta * loss_kd +
      w * loss_w`` (cls = div = 0 by default), then step 2 runs the teacher
      a second time (train mode, updated weights) for ``loss_last``;
      models/util.py ``SimKD.forward`` for the spatial alignment and the
      shared classifier, helper/util.py ``sum_of_weight_differences``.

    One known difference with ours: ``fc.bias`` is in both official
    optimizers, so step 1 (whose loss reaches it through ``0 * loss_cls``)
    also applies weight decay (and its momentum) to it; ours gives it to
    step 2 only (the paper's step 2). With weight decay 0 the two are the
    same step; otherwise the test bounds that one difference.
    """
    def except_last(model, detach):
        return {n: (p.clone().detach() if detach else p)
                for n, p in list(model.named_parameters())[:-1]
                if p.requires_grad and p.ndim > 1}

    def distill_kl(y_s, y_t):  # helper DistillKL(T)
        p_s = F.log_softmax(y_s / kd_T, dim=1)
        p_t = F.softmax(y_t / kd_T, dim=1)
        return F.kl_div(p_s, p_t, reduction='batchmean') * kd_T**2

    theta0 = except_last(teacher, detach=True)
    trainable = nn.ModuleList([student, simkd, teacher])
    optimizer = torch.optim.SGD(trainable.parameters(), lr=lr,
                                momentum=momentum, weight_decay=wd)
    t_last = list(teacher.parameters())[-1]
    optimizer_last = torch.optim.SGD([t_last], lr=lr, momentum=momentum,
                                     weight_decay=wd)
    cls_t = teacher.head.fc
    student.train(), simkd.train(), teacher.train()
    for images, labels in batches:
        feat_s = student.extract_feat(images, stage='backbone')[-1]
        feat_t = teacher.extract_feat(images, stage='backbone')[-1]
        logit_t = cls_t(F.adaptive_avg_pool2d(feat_t, 1).flatten(1))
        # SimKD.forward(feat_s, feat_t, cls_t)
        s_h, t_h = feat_s.shape[2], feat_t.shape[2]
        if s_h > t_h:
            source = F.adaptive_avg_pool2d(feat_s, (t_h, t_h))
            target = feat_t
        else:
            source = feat_s
            target = F.adaptive_avg_pool2d(feat_t, (s_h, s_h))
        trans_feat_s = simkd(source)
        pred_feat_s = cls_t(
            F.adaptive_avg_pool2d(trans_feat_s, 1).flatten(1))
        logit_s = pred_feat_s
        loss_cls = F.cross_entropy(logit_s, labels)
        loss_div = distill_kl(logit_s, logit_t)
        loss_kd = F.mse_loss(trans_feat_s, target)
        cur = except_last(teacher, detach=False)
        loss_w = sum(torch.sum(torch.square(theta0[k] - cur[k]))
                     for k in theta0)
        loss = cls * loss_cls + div * loss_div + beta * loss_kd + w * loss_w
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # step 2: the teacher runs again, with its updated weights
        logit_t = teacher(images, mode='tensor')
        loss_last = F.cross_entropy(logit_t, labels)
        optimizer_last.zero_grad()
        loss_last.backward(retain_graph=True)
        optimizer_last.step()


def _assert_state_equal(ours, official, rtol=1e-5, atol=1e-5):
    """Parameters and buffers (BN running statistics, num_batches_tracked)
    of ``ours`` equal ``official``'s."""
    a, b = ours.state_dict(), official.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=rtol, atol=atol,
                                   msg=lambda m, n=name: f'{n}: {m}')


@pytest.mark.parametrize('anchor_weight,wd', [(1.0, 0.0), (10.0, 5e-4)])
def test_three_steps_equal_the_official_training_step(anchor_weight, wd):
    torch.manual_seed(0)  # the teacher's perturbation below, whatever ran
    model, _ = build(anchor_weight=anchor_weight)
    with torch.no_grad():  # a teacher away from its init, as after loading
        for p in model.teachers[0].parameters():
            p.add_(0.01 * torch.randn_like(p))
        for holder, names in zip(model.anchors, model._anchor_names):
            params = dict(model.teachers[0].named_parameters())
            for i, n in enumerate(names):
                getattr(holder, f'p{i}').copy_(params[n])
    student = copy.deepcopy(model.student)
    teacher = copy.deepcopy(model.teachers[0])
    simkd = copy.deepcopy(model.connectors[0].proj.layers)
    before = {id(m): copy.deepcopy(m.state_dict())
              for m in (model.student, model.teachers[0],
                        model.connectors[0].proj.layers)}
    bias0 = model.teachers[0].head.fc.bias.detach().clone()
    raw = [batch(seed=i) for i in range(3)]
    prepped = [model.data_preprocessor(b, True) for b in raw]
    batches = [(d['inputs'], torch.cat([s.gt_label for s in
                                        d['data_samples']]))
               for d in prepped]
    _official_atsc_steps(student, teacher, simkd, batches, lr=0.05,
                         momentum=0.9, wd=wd, beta=1.0, w=anchor_weight)
    ow = optim(model, weight_decay=wd)
    model.train()
    for b in raw:
        model.train_step(b, ow)
    pairs = [(model.student, student), (model.teachers[0], teacher),
             (model.connectors[0].proj.layers, simkd)]
    moved = compared = 0
    bias = model.teachers[0].head.fc.bias
    if wd:  # the official step 1 also decays fc.bias: per element at most
        # lr * wd * |b_i| per step (|b_i| over the steps: at most its larger
        # end value here, plus 10 %), through momentum 0.9 summed over 3
        # steps (1 + 1.9 + 2.71 = 5.61)
        size = torch.maximum(bias0.abs(), bias.detach().abs())
        bound = 0.05 * wd * 5.61 * 1.1 * size
        diff = (bias.detach() - teacher.head.fc.bias.detach()).abs()
        assert diff.max() > 0
        assert bool((diff <= bound).all()), float((diff / bound).max())
        with torch.no_grad():
            teacher.head.fc.bias.copy_(bias)
    for ours, official in pairs:
        _assert_state_equal(ours, official)
        start = before[id(ours)]
        compared += len(start)
        moved += sum(not torch.equal(v, start[k])
                     for k, v in ours.state_dict().items()
                     if v.is_floating_point())
    # the steps moved (nearly) every parameter and running statistic of the
    # three modules, not a handful
    n_float = sum(v.is_floating_point() for m, _ in pairs
                  for v in m.state_dict().values())
    assert moved >= 0.9 * n_float, (moved, n_float)
    # the teacher ran twice per step in train mode: BN counted 2 x 3 batches
    bn = next(m for m in model.teachers[0].modules()
              if isinstance(m, nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 6
    # with weight decay the classifier weight decayed (and is pulled back by
    # the anchor); its bias moved by step 2
    t0 = dict(model.anchors[0].named_buffers())
    fc_i = model._anchor_names[0].index('head.fc.weight')
    assert torch.equal(model.teachers[0].head.fc.weight,
                       t0[f'p{fc_i}']) == (not wd)
    assert not torch.equal(model.teachers[0].head.fc.bias,
                           before[id(model.teachers[0])]['head.fc.bias'])


def test_reuse_teacher_features_skips_the_second_teacher_forward():
    """The opt-in saving: step 2 reuses step 1's teacher features, the
    teacher's BN counts one batch per step, and the step differs from the
    official one only through step 2's teacher bias."""
    official, _ = build()
    reuse, _ = build(reuse_teacher_features=True)
    reuse.load_state_dict(official.state_dict())
    for m in (official, reuse):
        m.train()
        m.train_step(batch(seed=0), optim(m))
    bn = [next(x for x in m.teachers[0].modules()
               if isinstance(x, nn.BatchNorm2d)) for m in (official, reuse)]
    assert [int(b.num_batches_tracked) for b in bn] == [2, 1]
    torch.testing.assert_close(reuse.student.state_dict(),
                               official.student.state_dict())
    assert not torch.equal(reuse.teachers[0].head.fc.bias,
                           official.teachers[0].head.fc.bias)


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


def _run(wd, teachers, *extra, cfg=CFG, epochs=3, kill_at=None,
         term_at=None):
    value = f'[{",".join(teachers)}]'
    return run_tool(['tools/train.py', cfg, '--work-dir', wd, *extra,
                     '--cfg-options', f'model.teacher_ckpts={value}',
                     f'train_cfg.max_epochs={epochs}',
                     f'train_cfg.val_interval={epochs}', *SMALL_TRAIN],
                    kill_at=kill_at, term_at=term_at)


def test_trains_resumes_keeps_theta0_and_exports(digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    full = str(tmp_path / 'full')
    proc = _run(full, [teacher])
    assert 'teacher_ce' in proc.stdout + proc.stderr
    # preempted (SIGTERM) mid-epoch 3 and resumed from that batch: theta0,
    # the adapted teacher and both optimizers come back exactly
    part = str(tmp_path / 'part')
    _run(part, [teacher], term_at=MID_EPOCH_3)
    assert_preempted(part, epoch=3)
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
        want = model(x, mode='tensor')
        torch.testing.assert_close(student(x, mode='tensor'), want)
    assert isinstance(student.head, PT_MODELS.get('ATSCSharedHead'))
    # deployable: the head's target size is a plain int (no tensor read), so
    # torch.export captures the student and dynamo gives one graph
    ep = torch.export.export(student, (x, ), kwargs=dict(mode='tensor'))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x, mode='tensor'), want)
        compiled = torch.compile(student, fullgraph=True, backend='eager')
        torch.testing.assert_close(compiled(x, mode='tensor'), want)


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
