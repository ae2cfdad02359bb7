"""ATSC: projector, anchor, the two update steps, multi-teacher, deployed
prediction, resume of theta0, export."""
import copy
import json
import os.path as osp
from types import SimpleNamespace

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
from tests.tolerance import DEPTH, rounding_tol

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


# ------------------------------------------- the official step, transcribed
# github.com/random2314235/ATSC (HEAD 8bde1b2): the official statements in
# the official order. What is adapted (how a module is called, the device) is
# marked "ADAPTED" at its line; logging and accuracy statements, which only
# read the tensors, are left out.


class _OfficialSimKD(nn.Module):
    """models/util.py ``SimKD`` (L189-237)."""

    def __init__(self, *, s_n, t_n, factor=2):
        super(_OfficialSimKD, self).__init__()

        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))

        def conv1x1(in_channels, out_channels, stride=1):
            return nn.Conv2d(in_channels, out_channels, kernel_size=1,
                             padding=0, stride=stride, bias=False)

        def conv3x3(in_channels, out_channels, stride=1, groups=1):
            return nn.Conv2d(in_channels, out_channels, kernel_size=3,
                             padding=1, stride=stride, bias=False,
                             groups=groups)

        # A bottleneck design to reduce extra parameters
        setattr(self, 'transfer', nn.Sequential(
            conv1x1(s_n, t_n // factor),
            nn.BatchNorm2d(t_n // factor),
            nn.ReLU(inplace=True),
            conv3x3(t_n // factor, t_n // factor),
            nn.BatchNorm2d(t_n // factor),
            nn.ReLU(inplace=True),
            conv1x1(t_n // factor, t_n),
            nn.BatchNorm2d(t_n),
            nn.ReLU(inplace=True),
        ))

    def forward(self, feat_s, feat_t, cls_t):
        # Spatial Dimension Alignment
        s_H, t_H = feat_s.shape[2], feat_t.shape[2]
        if s_H > t_H:
            source = F.adaptive_avg_pool2d(feat_s, (t_H, t_H))
            target = feat_t
        else:
            source = feat_s
            target = F.adaptive_avg_pool2d(feat_t, (s_H, s_H))

        trans_feat_t = target

        # Channel Alignment
        trans_feat_s = getattr(self, 'transfer')(source)

        # Prediction via Teacher Classifier
        temp_feat = self.avg_pool(trans_feat_s)
        temp_feat = temp_feat.view(temp_feat.size(0), -1)
        pred_feat_s = cls_t(temp_feat)

        return trans_feat_s, trans_feat_t, pred_feat_s


class _OfficialDistillKL(nn.Module):
    """distiller_zoo/KD.py ``DistillKL``."""

    def __init__(self, T):
        super(_OfficialDistillKL, self).__init__()
        self.T = T

    def forward(self, y_s, y_t):
        p_s = F.log_softmax(y_s / self.T, dim=1)
        p_t = F.softmax(y_t / self.T, dim=1)
        loss = nn.KLDivLoss(reduction='batchmean')(p_s, p_t) * (self.T**2)
        return loss


def _extract_weights_except_last(model, opt, detach=True):
    """helper/util.py ``extract_weights_except_last``."""
    weights = {}
    all_params = list(model.named_parameters())
    for name, param in all_params[:-1]:
        if param.requires_grad and param.ndim > 1:
            if detach:
                # ADAPTED: official .cuda(opt.gpu) after detach(): CPU here
                weights[name] = param.clone().detach()
            else:
                weights[name] = param
    return weights


def _sum_of_weight_differences(weight_dict1, weight_dict2):
    """helper/util.py ``sum_of_weight_differences``."""
    total_difference = 0
    for key in weight_dict1:
        difference = weight_dict1[key] - weight_dict2[key]
        total_difference += torch.sum(torch.square(difference))
    return total_difference


class _OfficialNet(nn.Module):
    """ADAPTED: the official networks' interface over an mmpretrain
    ImageClassifier (backbone -> GlobalAveragePooling -> LinearClsHead).
    models/resnet.py ``forward(x, is_feat)`` returns ``[f0, .., f3, f4],
    fc(f4)`` with f3 the last map and f4 = avgpool(f3).view(N, -1); the
    official step reads only ``feat[-2]`` (= f3). ``get_feat_modules()[-1]``
    is its ``fc``. The wrapped model's parameters keep their order (fc.bias
    last)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def get_feat_modules(self):
        return [self.model.head.fc]  # ADAPTED: only [-1] is read

    def forward(self, x, is_feat=False):
        x = self.model.extract_feat(x, stage='backbone')[-1]
        f3 = x
        x = F.avg_pool2d(x, x.shape[2:])  # ADAPTED: nn.AvgPool2d(8) on 8x8
        x = x.view(x.size(0), -1)
        f4 = x
        x = self.model.head.fc(x)
        if is_feat:
            return [f3, f4], x  # ADAPTED: f0..f2 are never read
        else:
            return x


def _official_atsc_steps(model_s, model_t, model_simkd, batches, opt):
    """train_student.py ``main_worker`` L197-321 (the criteria and the two
    optimizers) and helper/loops.py ``train_distill`` L64-199 with
    ``opt.distill == 'atsc'``, one iteration per batch. ``opt`` holds the
    official options read there (learning_rate, momentum, weight_decay, cls,
    div, beta, w, kd_T)."""
    # ---- train_student.py main_worker
    # (load_teacher, model_s = model_dict[...]: the caller's networks;
    # the eval-mode forwards of random data that read the feature shapes
    # change nothing and are left out)
    weight_t_except_last = _extract_weights_except_last(model_t, opt)
    module_list = nn.ModuleList([])
    module_list.append(model_s)
    trainable_list = nn.ModuleList([])
    trainable_list.append(model_s)

    criterion_cls = nn.CrossEntropyLoss()
    criterion_div = _OfficialDistillKL(opt.kd_T)
    # elif opt.distill == 'atsc':  (model_simkd = SimKD(s_n, t_n, factor):
    # ADAPTED, built by the caller with our projector's initial weights)
    criterion_kd = nn.MSELoss()
    module_list.append(model_simkd)
    trainable_list.append(model_simkd)
    trainable_list.append(model_t)

    criterion_list = nn.ModuleList([])
    criterion_list.append(criterion_cls)  # classification loss
    criterion_list.append(criterion_div)  # KL divergence loss
    criterion_list.append(criterion_kd)  # other knowledge distillation loss

    module_list.append(model_t)

    optimizer = torch.optim.SGD(trainable_list.parameters(),
                                lr=opt.learning_rate,
                                momentum=opt.momentum,
                                weight_decay=opt.weight_decay)

    t_last = list(model_t.parameters())[-1]
    optimizer_last = torch.optim.SGD([t_last],
                                     lr=opt.learning_rate,
                                     momentum=opt.momentum,
                                     weight_decay=opt.weight_decay)
    # (adjust_learning_rate at epoch 1 changes no rate: left out)
    # ---- helper/loops.py train_distill(epoch, train_loader, module_list,
    # criterion_list, optimizer, opt, weight_t_except_last, optimizer_last)
    teacher_weight_except_last = weight_t_except_last
    for module in module_list:
        module.train()

    criterion_cls = criterion_list[0]
    criterion_div = criterion_list[1]
    criterion_kd = criterion_list[2]

    model_s = module_list[0]
    model_t = module_list[-1]

    for images, labels in batches:
        # ===================forward=====================
        feat_s, logit_s = model_s(images, is_feat=True)
        feat_t, logit_t = model_t(images, is_feat=True)

        cls_t = model_t.get_feat_modules()[-1]

        # cls + kl div
        loss_cls = criterion_cls(logit_s, labels)
        loss_cls_t = criterion_cls(logit_t, labels)  # noqa: F841 (unused)
        loss_div = criterion_div(logit_s, logit_t)

        # elif opt.distill == 'atsc':
        trans_feat_s, trans_feat_t, pred_feat_s = module_list[1](
            feat_s[-2], feat_t[-2], cls_t)
        logit_s = pred_feat_s
        loss_kd = criterion_kd(trans_feat_s, trans_feat_t)
        cur_teacher_weight_except_last = _extract_weights_except_last(
            module_list[-1], opt, detach=False)
        loss_w = _sum_of_weight_differences(teacher_weight_except_last,
                                            cur_teacher_weight_except_last)

        loss = opt.cls * loss_cls + opt.div * loss_div + \
            opt.beta * loss_kd + opt.w * loss_w

        # ===================backward=====================
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        # if opt.distill == 'atsc':
        logit_t = model_t(images, is_feat=False)
        loss_last = criterion_cls(logit_t, labels)

        # ===================backward=====================
        optimizer_last.zero_grad()
        loss_last.backward(retain_graph=True)
        optimizer_last.step()


# The comparison runs in float64. Two float computations of the same step
# differ by the order of their sums only; tests/tolerance.py bounds that by
# layers x terms x u. One training step here is three passes of the deepest
# network (the forward, the backward, step 2's teacher forward), three steps
# nine: a relative 2.4e-11 in float64, while a real difference (e.g. the
# student's own classifier left undecayed: 1.4e-4) is far above it.
STEP_TOL = rounding_tol(torch.float64, layers=9 * DEPTH)


def _assert_state_equal(ours, official, tol=STEP_TOL):
    """Parameters and buffers (BN running statistics, num_batches_tracked)
    of ``ours`` equal ``official``'s, each within ``tol`` relative to its
    largest element. Returns the largest such relative difference."""
    a, b = ours.state_dict(), official.state_dict()
    assert a.keys() == b.keys()
    worst = 0.0
    for name in a:
        if not a[name].is_floating_point():
            assert torch.equal(a[name], b[name]), name
            continue
        scale = float(b[name].abs().max().clamp_min(1e-300))
        rel = float((a[name] - b[name]).abs().max()) / scale
        assert rel <= tol, f'{name}: {rel:.3g} > {tol:.3g}'
        worst = max(worst, rel)
    return worst


@pytest.mark.parametrize('anchor_weight,wd,cls,div', [
    (1.0, 5e-4, 0.0, 0.0),  # the official CIFAR defaults
    (10.0, 1e-4, 0.0, 0.0),  # the official ImageNet defaults
    (1.0, 0.0, 0.5, 0.0),  # CE on the student's own classifier
    (1.0, 5e-4, 0.5, 0.5)])  # CE and KD
def test_three_steps_equal_the_official_training_step(anchor_weight, wd, cls,
                                                      div):
    """Ours (step 1 and step 2 through its optimizers) against the
    transcription above, from the same weights, in float64."""
    torch.manual_seed(0)  # the teacher's perturbation below, whatever ran
    model, _ = build(anchor_weight=anchor_weight, ce_weight=cls,
                     kd_weight=div)
    model.double()
    with torch.no_grad():  # a teacher away from its init, as after loading
        for p in model.teachers[0].parameters():
            p.add_(0.01 * torch.randn_like(p))
        for holder, names in zip(model.anchors, model._anchor_names):
            params = dict(model.teachers[0].named_parameters())
            for i, n in enumerate(names):
                getattr(holder, f'p{i}').copy_(params[n])
    model_s = _OfficialNet(copy.deepcopy(model.student))
    model_t = _OfficialNet(copy.deepcopy(model.teachers[0]))
    simkd = _OfficialSimKD(s_n=32, t_n=128, factor=2).double()
    simkd.transfer.load_state_dict(
        model.connectors[0].proj.layers.state_dict())
    mods = (model.student, model.teachers[0], model.connectors[0].proj.layers)
    before = {id(m): copy.deepcopy(m.state_dict()) for m in mods}
    raw = [batch(seed=i) for i in range(3)]
    prepped = [model.data_preprocessor(b, True) for b in raw]
    assert prepped[0]['inputs'].dtype == torch.float64
    batches = [(d['inputs'], torch.cat([s.gt_label for s in
                                        d['data_samples']]))
               for d in prepped]
    opt = SimpleNamespace(learning_rate=0.05, momentum=0.9, weight_decay=wd,
                          cls=cls, div=div, beta=1.0, w=anchor_weight,
                          kd_T=4.0)
    _official_atsc_steps(model_s, model_t, simkd, batches, opt)
    ow = optim(model, weight_decay=wd)
    model.train()
    for b in raw:
        model.train_step(b, ow)
    pairs = [(model.student, model_s.model), (model.teachers[0],
                                              model_t.model),
             (model.connectors[0].proj.layers, simkd.transfer)]
    moved = 0
    for ours, official in pairs:
        _assert_state_equal(ours, official)
        start = before[id(ours)]
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
    # the student's own classifier, never deployed, is decayed (c = d = 0)
    # or trained (c, d > 0) as the official one
    s_fc = before[id(model.student)]['head.fc.weight']
    assert not torch.equal(model.student.head.fc.weight, s_fc)
    # the teacher's classifier weight: anchored at theta0 (zero anchor
    # gradient there), moved only by weight decay or the KD term
    t_fc = before[id(model.teachers[0])]['head.fc.weight']
    assert torch.equal(model.teachers[0].head.fc.weight, t_fc) == \
        (wd == 0 and div == 0)


def test_at_the_defaults_the_official_terms_touch_only_two_classifiers():
    """c = d = 0: against a step without the zero-weighted CE / KD terms and
    without the teachers' classifier biases in step 1 (ours before
    2026-12-08, when the Digits ATSC rows were measured), six steps differ
    only in the student's own classifier and the teachers' classifier bias;
    every other tensor is bit for bit the same (float64)."""
    import types
    torch.manual_seed(0)
    new, _ = build()
    new.double()
    old = copy.deepcopy(new)
    plain_loss = type(old).loss

    def loss_without_terms(self, inputs, data_samples):
        losses = plain_loss(self, inputs, data_samples)
        losses.pop('loss_ce'), losses.pop('loss_kd')
        return losses

    def groups_without_biases(self):
        ids = {id(p) for p in self.teacher_bias_params()}
        return {'main': [p for p in self.parameters()
                         if p.requires_grad and id(p) not in ids],
                'teacher_bias': self.teacher_bias_params()}

    old.loss = types.MethodType(loss_without_terms, old)
    old.optim_param_groups = types.MethodType(groups_without_biases, old)
    ow_new = optim(new, weight_decay=5e-4)
    ow_old = optim(old, weight_decay=5e-4)
    new.train(), old.train()
    for i in range(6):
        new.train_step(batch(seed=i), ow_new)
        old.train_step(batch(seed=i), ow_old)
    a, b = new.state_dict(), old.state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == [
        'architecture.head.fc.weight', 'architecture.head.fc.bias',
        'teachers.0.head.fc.bias']


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


@pytest.mark.parametrize('c,d', [(0.0, 0.0), (1.0, 0.5)])
def test_ce_and_kd_act_on_the_students_own_classifier(c, d):
    """As the official loss (helper/loops.py): c * CE and d * KD on the
    student's OWN logits (its head, which is not deployed) against the
    teacher's (not detached); at weight 0 both stay in the graph, so the
    student's own classifier and the teacher's classifier bias get a zero
    gradient, not none. Float64: the by-hand values are another summation
    order of the same sums (tests/tolerance.py)."""
    model, _ = build(ce_weight=c, kd_weight=d)
    model.double().train()
    data = model.data_preprocessor(batch(), True)
    # copies in the same state: the same train-mode forward
    student = copy.deepcopy(model.student)
    teacher = copy.deepcopy(model.teachers[0])
    losses = model.loss(**data)
    labels = torch.cat([s.gt_label for s in data['data_samples']])
    z_own = student(data['inputs'], mode='tensor')
    z_t = teacher(data['inputs'], mode='tensor')
    tol = rounding_tol(torch.float64)
    torch.testing.assert_close(losses['loss_ce'],
                               c * F.cross_entropy(z_own, labels),
                               rtol=tol, atol=tol)
    p_t = torch.softmax(z_t / 4.0, 1)
    kl = 16.0 * (p_t * (p_t.log() - torch.log_softmax(z_own / 4.0, 1))
                 ).sum(1).mean()
    torch.testing.assert_close(losses['loss_kd'], d * kl, rtol=tol,
                               atol=tol)
    sum(losses.values()).backward()
    s_grad = model.student.head.fc.weight.grad
    t_grad = model.teachers[0].head.fc.bias.grad
    assert s_grad is not None and t_grad is not None
    assert bool((s_grad == 0).all()) == (c == 0 and d == 0)
    assert bool((t_grad == 0).all()) == (d == 0)


def test_official_defaults_decay_the_students_own_classifier():
    """c = d = 0: the student's own classifier gets a zero gradient, so the
    first SGD step (momentum buffer = wd * w) scales it by 1 - lr * wd, as
    the official step does; the teacher's classifier bias is also decayed
    in step 1 (it is in both optimizers)."""
    model, _ = build()
    model.double().train()
    fc = model.student.head.fc
    w0, b0 = fc.weight.detach().clone(), fc.bias.detach().clone()
    ow = optim(model, weight_decay=5e-4)
    assert any(p is model.teachers[0].head.fc.bias
               for p in ow['main'].optimizer.param_groups[0]['params'])
    model.train_step(batch(), ow)
    tol = rounding_tol(torch.float64, terms=1, layers=4)  # 4 roundings
    torch.testing.assert_close(fc.weight.detach(), w0 * (1 - 0.05 * 5e-4),
                               rtol=tol, atol=0)
    torch.testing.assert_close(fc.bias.detach(), b0 * (1 - 0.05 * 5e-4),
                               rtol=tol, atol=0)


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
    cfg = Config.fromfile(osp.join(ROOT, CFG))
    headless = dict(cfg.model.architecture, head=None)
    with pytest.raises(ValueError, match="student's own classifier"):
        build(architecture=headless)


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
