"""KD layer (letKD): the layer's math by hand, insertion into backbones of
different families by config, export equality; the supervision (targets and
KL by hand, statistics file checks), training, resume and export; three
training steps equal to a transcription of the official step."""
import copy
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS


def layer(c=6, k=5, **kw):
    m = MODELS.build(dict(type='KDLayer', in_channels=c, num_templates=k,
                          **kw))
    return m.eval()


def test_submodules_and_initial_scales():
    m = layer()
    assert m.match.weight.shape == (5, 6, 1, 1)
    assert m.value.weight.shape == (6, 5, 1, 1)
    assert [p.ndim for p in m.match.parameters()].count(4) == 1
    assert float(m.match.scale) == 3.0 and float(m.value.scale) == 1.0
    assert isinstance(m.bn, torch.nn.BatchNorm2d) and m.bn.num_features == 5


def test_math_by_hand():
    m = layer(alpha=0.7)
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 6, 3, 4)
    # cosine of every location's channel vector with every template
    xv = x.permute(0, 2, 3, 1)  # (N, H, W, C)
    w1 = m.match.weight.flatten(1)  # (K, C)
    cos = (xv / xv.norm(dim=-1, keepdim=True)) @ (
        w1 / w1.norm(dim=1, keepdim=True)).T
    scores = 3.0 * cos.permute(0, 3, 1, 2)
    torch.testing.assert_close(m.match(x), scores)
    a = F.relu(m.bn(scores)).permute(0, 2, 3, 1)
    w2 = m.value.weight.flatten(1)
    v = (a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)) @ (
        w2 / w2.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(m(x), x + 0.7 * v.permute(0, 3, 1, 2),
                               rtol=1e-5, atol=1e-5)


def test_scales_are_learnable_and_alpha_zero_is_identity():
    m = layer(alpha=1.0)
    m.train()
    m(torch.randn(2, 6, 3, 3)).sum().backward()
    assert m.match.scale.grad is not None and m.value.scale.grad is not None
    x = torch.randn(2, 6, 3, 3)
    assert torch.equal(layer(alpha=0.0)(x), x)


@pytest.mark.parametrize('backbone,after,channels,size', [
    (dict(type='ResNet', depth=18, out_indices=(3, )),
     ['layer4.0', 'layer4'], [512, 512], 64),
    (dict(type='ResNetCifarKD', arch='resnet20'),
     ['layer3.0', 'layer3'], [64, 64], 32),
    (dict(type='MobileNetV2', widen_factor=0.5, out_indices=(7, )),
     ['layer7', 'conv2'], [160, 1280], 64),
])
def test_insertion_into_backbone_families(backbone, after, channels, size):
    cfg = dict(type='KDLayerBackbone', backbone=backbone,
               kd_layers=[dict(after=a, in_channels=c, num_templates=7)
                          for a, c in zip(after, channels)])
    wrapped, plain = MODELS.build(cfg), MODELS.build(backbone)
    wrapped.eval(), plain.eval()  # mmpretrain's train() returns None
    plain.load_state_dict({k[len('backbone.'):]: v for k, v in
                           wrapped.state_dict().items()
                           if k.startswith('backbone.')})
    x = torch.randn(2, 3, size, size)
    scores = {}
    for name in wrapped.kd_layers:
        wrapped.kd_layers[name].match.register_forward_hook(
            lambda m, i, o, n=name: scores.__setitem__(n, o))
    out = wrapped(x)[-1]
    assert set(scores) == {a.replace('.', '_') for a in after}
    assert out.shape == plain(x)[-1].shape
    assert not torch.allclose(out, plain(x)[-1])  # the layers act
    for lyr in wrapped.kd_layers.values():
        lyr.alpha = 0.0
    torch.testing.assert_close(wrapped(x)[-1], plain(x)[-1])


def test_wrong_module_name_lists_nearest_names():
    with pytest.raises(ValueError, match='nearest valid names') as err:
        MODELS.build(dict(type='KDLayerBackbone',
                          backbone=dict(type='ResNet', depth=18),
                          kd_layers=[dict(after='layer5.0', in_channels=512,
                                          num_templates=4)]))
    assert 'layer4' in str(err.value) or 'layer1' in str(err.value)


def test_export_keeps_the_kd_layers(tmp_path):
    from mmengine.config import Config
    from mmpretrain.apis import init_model

    from kd_plugins.export import export_student
    model_cfg = dict(
        type='ImageClassifier',
        backbone=dict(type='KDLayerBackbone',
                      backbone=dict(type='ResNetCifarKD', arch='resnet8'),
                      kd_layers=[dict(after='layer3', in_channels=64,
                                      num_templates=12)]),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=64))
    model = MODELS.build(model_cfg)
    with torch.no_grad():  # move BN statistics and scales off their init
        model.train()
        model(torch.randn(8, 3, 32, 32), mode='tensor')
        model.backbone.kd_layers['layer3'].match.scale.fill_(2.5)
    ckpt = str(tmp_path / 'm.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    cfg = Config(dict(model=model_cfg, default_scope='mmpretrain'))
    cfg_path, pth = export_student(cfg, ckpt, str(tmp_path / 'exp'))
    exported = init_model(cfg_path, pth, device='cpu')
    assert 'KDLayerBackbone' in open(cfg_path).read()
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(exported(x, mode='tensor'),
                                   model(x, mode='tensor'))


# ------------------------------------------------------------ supervision
import json  # noqa: E402
import os.path as osp  # noqa: E402

import numpy as np  # noqa: E402
from mmrazor.registry import MODELS as RZ  # noqa: E402

from tests.conftest import (MID_EPOCH_3, ROOT, SMALL_TRAIN,  # noqa: E402
                            assert_killed_after, run_tool, shipped_test_top1)
from tests.tolerance import DEPTH, rounding_tol  # noqa: E402


def _write_stats(path, c=4, k=3, classes=2, sub=2, d=2, seed=0):
    rng = np.random.default_rng(seed)
    s = classes * sub
    s_t = rng.random((s, s)).astype(np.float32)
    s_t /= s_t.sum(1, keepdims=True)
    meta = dict(kinds=['penultimate', 'intermediate'], num_classes=classes,
                subclasses=sub, classes=[str(i) for i in range(classes)])
    arrays = dict(penult_centers=rng.normal(size=(k, c)).astype(np.float32),
                  inter_mean=rng.normal(size=c).astype(np.float32),
                  inter_proj=rng.normal(size=(c, d)).astype(np.float32),
                  inter_centers=rng.normal(size=(s, d)).astype(np.float32),
                  inter_s_t=s_t)
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    return arrays


def test_penultimate_targets_and_kl_by_hand(tmp_path):
    path = str(tmp_path / 's.npz')
    arr = _write_stats(path)
    loss = RZ.build(dict(type='KDLayerLoss', stats_file=path,
                         kind='penultimate', num_templates=3, tau=0.5))
    feat_t = torch.randn(2, 4, 2, 2)
    scores = torch.randn(2, 3, 2, 2)
    rho = torch.from_numpy(arr['penult_centers'])
    total = 0.0
    for b in range(2):
        for i in range(2):
            for j in range(2):
                f = feat_t[b, :, i, j]
                d2 = ((f[None] - rho) ** 2).sum(1)
                p_t = torch.softmax(-0.5 * d2, 0)
                log_p_s = torch.log_softmax(scores[b, :, i, j], 0)
                total += (p_t * (p_t.log() - log_p_s)).sum()
    torch.testing.assert_close(loss(scores, feat_t), total / 8, rtol=1e-4,
                               atol=1e-5)


def test_intermediate_targets_by_hand(tmp_path):
    path = str(tmp_path / 's.npz')
    arr = _write_stats(path)
    loss = RZ.build(dict(type='KDLayerLoss', stats_file=path,
                         kind='intermediate', num_templates=4, num_classes=2))
    feat_t = torch.randn(2, 4, 1, 2)
    labels = torch.tensor([1, 0])
    got = loss.targets(feat_t, labels)
    mean, proj = arr['inter_mean'], arr['inter_proj']
    centers, s_t = arr['inter_centers'], arr['inter_s_t']
    rows = []
    for b in range(2):
        for j in range(2):
            z = (feat_t[b, :, 0, j].numpy() - mean) @ proj
            c = int(labels[b])
            cand = [c * 2, c * 2 + 1]  # the true class's subclasses only
            k = min(cand, key=lambda s: ((z - centers[s]) ** 2).sum())
            rows.append(s_t[k])
    np.testing.assert_allclose(got.numpy(), np.stack(rows), rtol=1e-6)


def test_teacher_map_is_pooled_to_the_student_size(tmp_path):
    path = str(tmp_path / 's.npz')
    _write_stats(path)
    loss = RZ.build(dict(type='KDLayerLoss', stats_file=path,
                         kind='penultimate'))
    feat_t, scores = torch.randn(1, 4, 4, 4), torch.randn(1, 3, 2, 2)
    torch.testing.assert_close(
        loss(scores, feat_t),
        loss(scores, torch.nn.functional.adaptive_avg_pool2d(feat_t, 2)))


def test_stats_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='kd_layer_stats.py'):
        RZ.build(dict(type='KDLayerLoss', stats_file=str(tmp_path / 'x.npz')))
    path = str(tmp_path / 's.npz')
    _write_stats(path)
    with pytest.raises(ValueError, match='num_templates=5'):
        RZ.build(dict(type='KDLayerLoss', stats_file=path, num_templates=5))
    with pytest.raises(ValueError, match='built for 2 classes'):
        RZ.build(dict(type='KDLayerLoss', stats_file=path,
                      kind='intermediate', num_classes=10))


def test_intermediate_statistics_on_separable_data():
    from kd_plugins.kd_layer_stats import intermediate_statistics
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 200)
    x = rng.normal(size=(600, 5)) + 6.0 * np.eye(5)[y]
    st = intermediate_statistics(x, y, num_classes=3, lda_dim=60,
                                 subclasses=2, seed=0)
    assert st['inter_proj'].shape == (5, 2)  # min(60, classes - 1, C)
    assert st['inter_centers'].shape == (6, 2)
    s_t = st['inter_s_t']
    np.testing.assert_allclose(s_t.sum(1), 1.0, rtol=1e-6)
    # well separated classes: decisions stay within the true class
    within = sum(s_t[i, (i // 2) * 2:(i // 2) * 2 + 2].sum()
                 for i in range(6)) / 6
    assert within > 0.95
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    lda = LinearDiscriminantAnalysis(n_components=2).fit(x, y)
    np.testing.assert_allclose((x - st['inter_mean']) @ st['inter_proj'],
                               lda.transform(x), rtol=1e-3, atol=1e-3)


KDL = 'configs/demo/kd_layer_digits.py'


@pytest.fixture(scope='module')
def digits_stats(digits_teacher, tmp_path_factory):
    _, teacher, _ = digits_teacher
    out = str(tmp_path_factory.mktemp('kdl') / 'stats.npz')
    proc = run_tool(['tools/kd_layer_stats.py', KDL, teacher, out,
                     '--max-locations', '20000'])
    assert '[kd_layer_stats] 20/23 batches' in proc.stdout  # progress
    assert re.search(r'23/23 batches, \d+ s, about 0 s left', proc.stdout)
    return teacher, out


def _opts(stats):
    return [f'model.distiller.distill_losses.loss_penult.stats_file={stats}',
            f'model.distiller.distill_losses.loss_inter.stats_file={stats}']


def test_stats_tool_writes_metadata(digits_stats):
    teacher, stats = digits_stats
    with np.load(stats, allow_pickle=False) as f:
        meta = json.loads(str(f['meta']))
        assert f['penult_centers'].shape == (64, 128)
        assert f['inter_s_t'].shape == (80, 80)
    assert meta['num_classes'] == 10 and meta['subclasses'] == 8
    assert meta['layers'] == {'penultimate': 'backbone.layer4',
                              'intermediate': 'backbone.layer4.0'}
    assert meta['teacher_ckpt'] == osp.abspath(teacher)


def test_demo_trains_resumes_evaluates_and_exports(digits_stats, tmp_path):
    teacher, stats = digits_stats
    base = ['--cfg-options', f'model.teacher_ckpt={teacher}', *_opts(stats),
            'train_cfg.max_epochs=3', 'train_cfg.val_interval=3',
            *SMALL_TRAIN]
    full = str(tmp_path / 'full')
    log = run_tool(['tools/train.py', KDL, '--work-dir', full, *base])
    out = log.stdout + log.stderr
    assert 'distill.loss_penult' in out and 'distill.loss_inter' in out
    # killed (SIGKILL) mid-epoch 3 and resumed: the uninterrupted weights
    part = str(tmp_path / 'part')
    run_tool(['tools/train.py', KDL, '--work-dir', part, *base],
             kill_at=MID_EPOCH_3)
    assert_killed_after(part, epoch=2)
    run_tool(['tools/train.py', KDL, '--work-dir', part, '--resume', *base])
    a = torch.load(osp.join(full, 'epoch_3.pth'), weights_only=True)
    b = torch.load(osp.join(part, 'epoch_3.pth'), weights_only=True)
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k
    ckpt = osp.join(full, 'epoch_3.pth')
    exp = str(tmp_path / 'export')
    run_tool(['tools/export_student.py', KDL, ckpt, exp, *[]])
    keys = torch.load(osp.join(exp, 'student.pth'),
                      weights_only=True)['state_dict'].keys()
    assert any('kd_layers.layer3.match' in k for k in keys)
    assert not any(k.startswith('teacher') for k in keys)
    m1, m2 = tmp_path / 'm1.json', tmp_path / 'm2.json'
    run_tool(['tools/test.py', KDL, ckpt, '--work-dir', str(tmp_path / 't1'),
              '--dump-metrics', str(m1), '--cfg-options', *_opts(stats)])
    run_tool(['tools/test.py', osp.join(exp, 'student.py'),
              osp.join(exp, 'student.pth'), '--work-dir',
              str(tmp_path / 't2'), '--dump-metrics', str(m2)])
    top = [json.loads(m.read_text())['accuracy/top1'] for m in (m1, m2)]
    assert top[0] == pytest.approx(top[1], abs=1e-6)
    assert shipped_test_top1(osp.join(exp, 'student.py'),
                             osp.join(exp, 'student.pth'),
                             str(tmp_path / 't3')) == pytest.approx(
                                 top[0], abs=1e-3)


def test_missing_stats_file_fails_before_training(digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    proc = run_tool(['tools/train.py', KDL, '--work-dir', str(tmp_path),
                     '--cfg-options', f'model.teacher_ckpt={teacher}',
                     *_opts('/no/stats.npz')], check=False)
    assert proc.returncode != 0
    assert "'/no/stats.npz' does not exist" in proc.stderr
    assert 'kd_layer_stats.py' in proc.stderr and 'Traceback' not in \
        proc.stderr
    # the fix names every loss that reads the file
    assert 'loss_penult.stats_file=PATH' in proc.stderr
    assert 'loss_inter.stats_file=PATH' in proc.stderr


@pytest.mark.parametrize('cfg_file', [
    'configs/kd_layer_r56_r20_cifar100.py',
    'configs/kd_layer_r32x4_r8x4_cifar100.py',
    'configs/kd_layer_r34_r18_in1k.py'])
def test_benchmark_configs_build(cfg_file, tmp_path):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, cfg_file))
    d = cfg.model.distiller
    k_pen = d.distill_losses.loss_penult.num_templates
    k_int = d.distill_losses.loss_inter.num_templates
    n_cls = d.distill_losses.loss_inter.num_classes
    assert k_int == 8 * n_cls
    # a stats file of the right shape stands in for the real one
    c = cfg.model.architecture.backbone.kd_layers[0]['in_channels']
    t_c = {'resnet56': 64, 'resnet32x4': 256}.get(
        cfg.model.teacher.backbone.get('arch'), 512)
    path = str(tmp_path / 's.npz')
    meta = dict(kinds=['penultimate', 'intermediate'], num_classes=n_cls,
                subclasses=8)
    np.savez(path, meta=np.array(json.dumps(meta)),
             penult_centers=np.zeros((k_pen, t_c), np.float32),
             inter_mean=np.zeros(t_c, np.float32),
             inter_proj=np.zeros((t_c, 60), np.float32),
             inter_centers=np.zeros((k_int, 60), np.float32),
             inter_s_t=np.eye(k_int, dtype=np.float32))
    d.distill_losses.loss_penult.stats_file = path
    d.distill_losses.loss_inter.stats_file = path
    cfg.model.teacher_ckpt = None
    model = RZ.build(cfg.model)
    assert len(model.student.backbone.kd_layers) == 2
    assert c == model.student.backbone.kd_layers['layer3' if 'cifar' in
                                                 cfg_file else
                                                 'layer4'].in_channels


def test_letkd1_config_trains(digits_stats, tmp_path):
    teacher, stats = digits_stats
    proc = run_tool([
        'tools/train.py', 'configs/demo/kd_layer1_digits.py', '--work-dir',
        str(tmp_path), '--cfg-options', f'model.teacher_ckpt={teacher}',
        f'model.distiller.distill_losses.loss_penult.stats_file={stats}',
        'train_cfg.max_epochs=2', 'train_cfg.val_interval=2', *SMALL_TRAIN])
    log = proc.stdout + proc.stderr
    assert 'distill.loss_penult' in log and 'distill.loss_inter' not in log


def test_statistics_of_another_teacher_width_are_refused(tmp_path):
    path = str(tmp_path / 's.npz')
    _write_stats(path, c=4)
    loss = RZ.build(dict(type='KDLayerLoss', stats_file=path))
    with pytest.raises(ValueError, match='4-channel teacher features'):
        loss(torch.randn(1, 3, 2, 2), torch.randn(1, 8, 2, 2))


# ------------------------------------------- the official step, transcribed
# github.com/adagorgun/letKD-framework (HEAD 4fb2289): the official statements
# in the official order. What is adapted (how a network is built or loaded,
# the device, float64) is marked "ADAPTED" at its line.


def _official_top1accuracy(output, target):
    """distillation/utils.py ``top1accuracy`` (L135-144)."""
    pred = output.max(dim=1)[1]
    pred = pred.view(-1)
    target = target.view(-1)
    accuracy = 100 * pred.eq(target).float().mean()
    return accuracy.item()


def _official_global_pooling(x, pool_type):
    """distillation/architectures/tools.py ``global_pooling``."""
    assert (x.dim() == 4)
    if pool_type == 'max':
        return F.max_pool2d(x, (x.size(2), x.size(3)))
    elif pool_type == 'avg':
        return F.avg_pool2d(x, (x.size(2), x.size(3)))
    else:
        raise ValueError('Unknown pooling type.')


class _OfficialConv2dCos(nn.Module):
    """distillation/architectures/tools.py ``Conv2dCos`` (L153-181)."""

    def __init__(self, in_planes, out_planes, bias=False, scale=None,
                 learn_scale=True):
        super(_OfficialConv2dCos, self).__init__()

        self.in_planes = in_planes
        self.out_planes = out_planes

        weight = torch.FloatTensor(out_planes, in_planes, 1, 1).normal_(
            0.0, np.sqrt(2.0 / in_planes))
        self.weight = nn.Parameter(weight, requires_grad=True)

        if bias:
            bias = torch.FloatTensor(out_planes).fill_(0.0)
            self.bias = nn.Parameter(bias, requires_grad=True)
        else:
            self.bias = None
        if scale:
            scale = torch.FloatTensor(1).fill_(scale)
            self.scale = nn.Parameter(scale, requires_grad=learn_scale)
        else:
            self.scale = None

    def forward(self, x):
        weight = self.weight
        x = F.normalize(x, p=2, dim=1, eps=1e-12)
        weight = F.normalize(weight, p=2, dim=1, eps=1e-12)
        if self.scale is not None:
            weight = weight * self.scale.view(-1, 1, 1, 1)
        return F.conv2d(x, weight, bias=self.bias, stride=1, padding=0)


class _OfficialClassifier(nn.Module):
    """distillation/architectures/classifiers/classifier.py ``Classifier``:
    the student's classifier (linear, global average pooling) and the
    ``BoW_predictor_*`` (conv_cosine)."""

    def __init__(self, opt):
        super(_OfficialClassifier, self).__init__()

        self.classifier_type = opt['classifier_type']
        self.num_channels = opt['num_channels']
        self.num_classes = opt['num_classes']
        self.global_pooling = opt.get('global_pooling', False)

        if self.classifier_type == 'linear':
            bias = opt.get('bias', True)
            self.layers = nn.Linear(
                self.num_channels, self.num_classes, bias=bias)
            if bias:
                self.layers.bias.data.zero_()
            fout = self.layers.out_features
            self.layers.weight.data.normal_(0.0, np.sqrt(2.0 / fout))
        elif self.classifier_type == 'conv_cosine':
            assert self.global_pooling is False
            bias = opt.get('bias', False)
            self.layers = _OfficialConv2dCos(
                self.num_channels, self.num_classes, bias=bias,
                scale=opt['scale_cls'], learn_scale=opt['learn_scale'])
        else:
            raise ValueError(
                f'Not supported classifier type {self.classifier_type}')

    def flatten(self):
        return self.classifier_type == 'linear'

    def forward(self, features):
        if self.global_pooling:
            features = _official_global_pooling(features, pool_type='avg')

        if features.dim() > 2 and self.flatten():
            features = features.view(features.size(0), -1)
        scores = self.layers(features)

        return scores


class _OfficialValueClassifier(_OfficialClassifier):
    """miscellaneous/valueLayer.py and valueLayer_subclass.py
    ``Classifier(s_shape, t_shape, scale, learn_scale)`` (L9-47; the same in
    both files): conv_cosine, no bias, no pooling."""

    def __init__(self, s_shape, t_shape, scale, learn_scale=True):
        super().__init__(dict(classifier_type='conv_cosine',
                              num_channels=s_shape, num_classes=t_shape,
                              global_pooling=False, bias=False,
                              scale_cls=scale, learn_scale=learn_scale))


class _OfficialValueLayer(nn.Module):
    """miscellaneous/valueLayer.py ``valueLayer`` (L48-71): penultimate."""

    def __init__(self, inp_size, emb_size=4096, value_ratio=1.0):
        super(_OfficialValueLayer, self).__init__()

        self.conv_value = _OfficialValueClassifier(emb_size, inp_size,
                                                   scale=1, learn_scale=True)

        self.bn = nn.BatchNorm2d(emb_size)
        self.relu = nn.ReLU(inplace=True)
        self.value_ratio = value_ratio

    def forward(self, scores, stage_out):

        out = self.relu(self.bn(scores))

        value = self.conv_value(out)

        features = self.value_ratio * value + stage_out

        return features, value


class _OfficialLDALayer(nn.Module):
    """miscellaneous/valueLayer_subclass.py ``LDA_Layer`` (L71-90)."""

    def __init__(self, scalings, xbar):
        super(_OfficialLDALayer, self).__init__()

        weight = np.transpose(scalings)

        # ADAPTED: float64 (official float32; the npz holds float32, so the
        # conversion is exact)
        weight = torch.from_numpy(weight).to(torch.float64)

        weight = weight.unsqueeze(-1).unsqueeze(-1)

        self.weight = nn.Parameter(weight, requires_grad=False)

        bias = -np.matmul(np.transpose(scalings), xbar)

        bias = torch.from_numpy(bias).to(torch.float64)  # ADAPTED: float64

        self.bias = nn.Parameter(bias, requires_grad=False)

    def forward(self, features):
        return F.conv2d(features, self.weight, bias=self.bias, stride=1,
                        padding=0)


def _official_sub_dense_prediction(scores, targets, record):
    """miscellaneous/valueLayer_subclass.py ``sub_dense_prediction``
    (L92-113)."""
    num_target_levels = len(scores)
    loss_weights = [1.0 for _ in range(num_target_levels)]
    assert isinstance(loss_weights, (list, tuple))
    assert len(loss_weights) == num_target_levels

    loss_total = 0.0
    for i in range(num_target_levels):

        scores[i] = scores[i].permute(0, 2, 3, 1).contiguous()
        scores[i] = scores[i].view(-1, scores[i].size(3))
        scores_log = F.log_softmax(scores[i], dim=1)
        loss = F.kl_div(scores_log, targets[i], reduction='batchmean')

        loss_total = loss_total + loss_weights[i] * loss
        if num_target_levels > 1:
            record[f'loss_sub_l{i}'] = loss.item()

    record['loss_sub'] = loss_total.item()
    return loss_total, targets, record


class _OfficialValueLayerSubclass(nn.Module):
    """miscellaneous/valueLayer_subclass.py ``valueLayer`` (L115-213):
    intermediate (downscale False and no PCA, as the letKD-2 configs)."""

    def __init__(self, inp_size, num_classes, emb_size, cluster_centers,
                 lda_model_scalings, lda_model_xbar, teacher_scores,
                 downscale=False, value_ratio=1.0):
        # ADAPTED: the arrays, not the file names they are loaded from
        super(_OfficialValueLayerSubclass, self).__init__()

        self.downscale = downscale
        self.value_ratio = value_ratio
        self.is_pca = False

        self.conv_value = _OfficialValueClassifier(emb_size, inp_size,
                                                   scale=1, learn_scale=True)

        self.bn = nn.BatchNorm2d(emb_size)
        self.relu = nn.ReLU(inplace=True)

        self.each_subclass = int(emb_size / num_classes)
        self.num_classes = num_classes
        self.LDA = _OfficialLDALayer(lda_model_scalings, lda_model_xbar)
        self.LDA_comp = cluster_centers.shape[1]

        # ADAPTED: float64 (exact from the float32 npz); .cuda() left out
        self.cluster_centers = torch.from_numpy(cluster_centers).to(
            torch.float64)

        self.teacher_scores = torch.from_numpy(teacher_scores).to(
            torch.float64)  # ADAPTED: float64; .cuda() left out

    def forward(self, feature_teacher, scores, in_block, labels, record):

        if self.downscale:
            feature_teacher = F.avg_pool2d(feature_teacher, (2, 2),
                                           stride=(2, 2))

        if self.is_pca:
            feature_teacher = self.PCA(feature_teacher)

        feature_teacher = self.LDA(feature_teacher)
        feature_teacher = feature_teacher[:, 0:self.LDA_comp, :, :]

        feature_teacher = feature_teacher.permute(0, 2, 3, 1).contiguous()
        patches = feature_teacher.shape[1]**2

        # Flatten input
        flat_teacher = feature_teacher.view(-1, feature_teacher.shape[-1])

        distances = (torch.sum(flat_teacher**2, dim=1, keepdim=True)
                     + torch.sum(self.cluster_centers**2, dim=1)
                     - 2 * torch.matmul(flat_teacher,
                                        self.cluster_centers.t()))

        row_max = distances.max(axis=-1, keepdims=True).values

        label_mask = F.one_hot(labels, self.num_classes)
        label_mask = label_mask.repeat_interleave(self.each_subclass, dim=1)
        label_mask = label_mask.repeat_interleave(patches, dim=0)

        masked_distances = label_mask * (row_max - distances)
        encoding_targets = torch.argmax(masked_distances, dim=1)
        encoding_targets = F.one_hot(
            encoding_targets,
            self.each_subclass * self.num_classes).to(
                torch.float64)  # ADAPTED: float64

        encoding_targets = torch.matmul(encoding_targets,
                                        self.teacher_scores)

        loss_sub, _, record = _official_sub_dense_prediction(
            [scores, ], [encoding_targets], record)

        out = self.relu(self.bn(scores))

        value = self.conv_value(out)

        features = self.value_ratio * value + in_block

        return features, value, loss_sub, record


class _OfficialVectorQuantizerEMA(nn.Module):
    """miscellaneous/vector_quantization.py ``VectorQuantizerEMA``
    (L9-111): the penultimate targets (evaluation mode, temperature)."""

    def __init__(self, num_embeddings, embedding_dim, commitment_cost, decay,
                 epsilon=1e-5, temperature=None):

        super(_OfficialVectorQuantizerEMA, self).__init__()

        self._embedding_dim = embedding_dim
        self._num_embeddings = num_embeddings

        self._embedding = nn.Embedding(
            self._num_embeddings,
            self._embedding_dim)
        self._embedding.weight.data.normal_()
        self._commitment_cost = commitment_cost

        self.register_buffer('_ema_cluster_size',
                             torch.zeros(num_embeddings))
        self._ema_w = nn.Parameter(
            torch.Tensor(num_embeddings, self._embedding_dim))
        self._ema_w.data.normal_()

        self._decay = decay
        self._epsilon = epsilon

        self._temperature = temperature
        if self._temperature is not None:
            assert isinstance(self._temperature, (float, int))
            assert self._temperature > 0.0

    def forward(self, inputs, encodings_out=False):
        # convert inputs from BCHW -> BHWC
        inputs = inputs.permute(0, 2, 3, 1).contiguous()
        input_shape = inputs.shape

        # Flatten input
        flat_input = inputs.view(-1, self._embedding_dim)
        # Calculate distances
        distances = (torch.sum(flat_input**2, dim=1, keepdim=True)
                     + torch.sum(self._embedding.weight**2, dim=1)
                     - 2 * torch.matmul(flat_input,
                                        self._embedding.weight.t()))

        # Encoding
        encoding_indices = torch.argmin(distances, dim=1).unsqueeze(1)

        encodings = distances.new_full(
            (encoding_indices.shape[0], self._num_embeddings), 0.0)
        assert encodings.device == distances.device
        assert encodings.type() == distances.type()

        encodings.scatter_(1, encoding_indices, 1)

        # Use EMA to update the embedding vectors (not taken: the official
        # step sets eval mode)
        if self.training:
            self._ema_cluster_size = (
                self._ema_cluster_size * self._decay +
                (1 - self._decay) * torch.sum(encodings, 0))

            # Laplace smoothing of the cluster size
            n = torch.sum(self._ema_cluster_size.data)
            self._ema_cluster_size = (
                (self._ema_cluster_size + self._epsilon) /
                (n + self._num_embeddings * self._epsilon) * n)

            dw = torch.matmul(encodings.t(), flat_input)
            self._ema_w = nn.Parameter(
                self._ema_w * self._decay + (1 - self._decay) * dw)

            self._embedding.weight = nn.Parameter(
                self._ema_w / self._ema_cluster_size.unsqueeze(1))

        # Quantize and unflatten
        quantized = torch.matmul(
            encodings, self._embedding.weight).view(input_shape)

        # Loss
        e_latent_loss = torch.mean((quantized.detach() - inputs)**2)
        loss = self._commitment_cost * e_latent_loss

        avg_probs = torch.mean(encodings, dim=0)
        perplexity = torch.exp(-torch.sum(avg_probs *
                                          torch.log(avg_probs + 1e-10)))

        encoding_indices = encoding_indices.view(
            input_shape[0], 1, input_shape[1], input_shape[2])

        quantized = None

        if self._temperature is not None:
            encodings = F.softmax(- self._temperature * distances, dim=1)
            mean_assign_score = F.softmax(
                - self._temperature * distances, dim=1).max(dim=1)[0].mean()

        assert encodings.size(1) == self._num_embeddings
        encodings = encodings.view(
            input_shape[0], input_shape[1], input_shape[2],
            self._num_embeddings)
        if encodings_out:
            return (quantized, loss, perplexity, encoding_indices, encodings,
                    mean_assign_score)
        else:
            return quantized, loss, perplexity, encoding_indices


def _official_quest_dense_prediction(scores, targets, record):
    """algorithms/classification/classification_subclass_quest_value.py
    ``quest_dense_prediction`` (L16-55)."""
    num_target_levels = len(scores)
    loss_weights = [1.0 for _ in range(num_target_levels)]
    assert isinstance(loss_weights, (list, tuple))
    assert len(loss_weights) == num_target_levels

    loss_total = 0.0
    for i in range(num_target_levels):
        assert scores[i].dim() == 4
        assert targets[i].size(0) == scores[i].size(0)  # batch size
        assert targets[i].size(1) == scores[i].size(2)  # height
        assert targets[i].size(2) == scores[i].size(3)  # width
        assert targets[i].size(3) == scores[i].size(1)  # channels/clusters

        targets[i] = targets[i].view(-1, targets[i].size(3))
        scores[i] = scores[i].permute(0, 2, 3, 1).contiguous()
        scores[i] = scores[i].view(-1, scores[i].size(3))
        scores_log = F.log_softmax(scores[i], dim=1)
        loss = F.kl_div(scores_log, targets[i], reduction='batchmean')

        loss_total = loss_total + loss_weights[i] * loss
        if num_target_levels > 1:
            record[f'loss_quest_l{i}'] = loss.item()

        with torch.no_grad():
            key = 'Accur_vword' if (num_target_levels == 1) else \
                f'Accur_vword_l{i}'
            targets[i] = targets[i].max(dim=1)[1]
            record[key] = _official_top1accuracy(scores[i], targets[i])

    record['loss_quest'] = loss_total.item()
    return loss_total, targets, record


def test_targets_equal_the_official_ones_but_at_a_degenerate_tie(
        tmp_path, monkeypatch):
    """Our targets against the official code's, in float64.

    Penultimate: ours equal ``VectorQuantizerEMA``'s (evaluation mode,
    temperature 1) at every location. Intermediate: the row of s_T of the
    nearest subclass of the true class, equal to ``valueLayer_subclass``'s at
    every location but one kind: where every subclass of the true class lies
    at the row's largest distance, the official ``argmax(label_mask *
    (row_max - distances))`` sees a row of zeros and takes subclass 0 (of
    class 0), ours the true class's nearest. Shown with one subclass per
    class and a location whose true-class centre is the farthest; the test
    checks that the two differ exactly at such locations."""
    import sys
    rng = np.random.default_rng(1)
    classes, sub, c, k = 3, 1, 2, 5
    s_t = rng.random((classes * sub, classes * sub)).astype(np.float32)
    s_t /= s_t.sum(1, keepdims=True)
    centers_p = rng.normal(size=(k, c)).astype(np.float32)
    scalings = np.eye(c, dtype=np.float32)  # z = f - xbar
    xbar = np.zeros(c, np.float32)
    centers_i = np.array([[0, 0], [1, 0], [10, 0]], np.float32)
    path = str(tmp_path / 's.npz')
    np.savez(path, meta=np.array(json.dumps(dict(
        kinds=['penultimate', 'intermediate'], num_classes=classes,
        subclasses=sub))), penult_centers=centers_p, inter_mean=xbar,
        inter_proj=scalings, inter_centers=centers_i, inter_s_t=s_t)
    feat_t = torch.from_numpy(rng.normal(size=(4, c, 2, 2)) * 4)
    labels = torch.tensor([2, 0, 1, 2])
    feat_t[0, :, 0, 0] = torch.tensor([0.0, 0.0])  # class 2's centre is the
    # farthest of the three from this location of an image of class 2
    # penultimate
    ours = RZ.build(dict(type='KDLayerLoss', stats_file=path,
                         kind='penultimate')).double()
    vq = _OfficialVectorQuantizerEMA(k, c, commitment_cost=0.25, decay=0.99,
                                     temperature=1).double().eval()
    vq._embedding.weight.data.copy_(torch.from_numpy(centers_p))
    theirs = vq(feat_t, True)[4].reshape(-1, k)
    tol = rounding_tol(torch.float64, terms=c, layers=3)
    torch.testing.assert_close(ours.targets(feat_t), theirs, rtol=tol,
                               atol=tol)
    # intermediate
    ours = RZ.build(dict(type='KDLayerLoss', stats_file=path,
                         kind='intermediate', num_classes=classes)).double()
    seen = []
    real = _official_sub_dense_prediction

    def capture(scores, targets, record):
        seen.append(targets[0])
        return real(scores, targets, record)

    monkeypatch.setattr(sys.modules[__name__],
                        '_official_sub_dense_prediction', capture)
    layer = _OfficialValueLayerSubclass(c, classes, classes * sub, centers_i,
                                        scalings, xbar, s_t).double()
    layer(feat_t, torch.randn(4, classes * sub, 2, 2, dtype=torch.float64),
          torch.randn(4, c, 2, 2, dtype=torch.float64), labels, {})
    theirs, got = seen[0], ours.targets(feat_t, labels)
    # the locations whose true-class subclasses are all at the largest
    # distance (distances computed as the official code does)
    z = feat_t.permute(0, 2, 3, 1).reshape(-1, c)
    cen = torch.from_numpy(centers_i).double()
    dist = (z**2).sum(1, keepdim=True) + (cen**2).sum(1) - 2 * z @ cen.t()
    y = labels.repeat_interleave(4)
    own = dist.gather(1, y[:, None] * sub + torch.arange(sub)[None])
    tie = (own == dist.max(1, keepdim=True).values).all(1) & (y != 0)
    differ = (got != theirs).any(1)
    assert bool(tie[0]) and bool((~tie).any())
    assert torch.equal(differ, tie)
    s_t64 = torch.from_numpy(s_t).double()
    assert torch.equal(theirs[0], s_t64[0])  # the official: class 0's row
    assert torch.equal(got[0], s_t64[2])  # ours: the true class's


def _official_letkd_steps(networks, batches, lr, which_stage_t=6,
                          which_stage_s=6, quest_loss_coef=1.0,
                          sub_loss_coef=1.0, cls_loss_coef=1.0):
    """algorithms/algorithm.py ``init_all_optimizers`` (one SGD per network
    with optim_params: nesterov, momentum 0.9, wd 5e-4, as every official
    CIFAR config), ``run_train_epoch`` (networks with an optimizer in train
    mode, the others in eval mode), then per batch
    algorithms/classification/classification_subclass_quest_value.py
    ``object_classification_with_subclass_quest`` (L59-207, is_train=True).
    ``networks``: the official algorithm's ``self.networks``."""
    optimizers = {}
    for key in ('feature_extractor', 'classifier', 'BoW_predictor_0',
                'BoW_predictor_1', 'valueLayer_0', 'valueLayer_1'):
        parameters = filter(lambda p: p.requires_grad,
                            networks[key].parameters())
        optimizers[key] = torch.optim.SGD(
            parameters, lr=lr, momentum=0.9, nesterov=True,
            weight_decay=5e-4)
    for key, network in networks.items():
        if optimizers.get(key) is None:
            network.eval()
        else:
            network.train()
    # ClassificationSubQUESTValue.process_batch_classification_task
    BoW_predictor = [networks.get(f'BoW_predictor_{key}')
                     for key in range(2)]
    BoW_predictor_optimizer = [optimizers.get(f'BoW_predictor_{key}')
                               for key in range(2)]
    valueLayer = [networks.get(f'valueLayer_{key}') for key in range(2)]
    valueLayer_optimizer = [optimizers.get(f'valueLayer_{key}')
                            for key in range(2)]
    vector_quantizer_target = networks.get('vector_quantizer_target')
    feature_extractor = networks['feature_extractor']
    feature_extractor_optimizer = optimizers.get('feature_extractor')
    classifier = networks['classifier']
    classifier_optimizer = optimizers.get('classifier')
    feature_extractor_target = networks.get('feature_extractor_target')
    for images, labels in batches:
        # ---- object_classification_with_subclass_quest(..., is_train=True)
        is_train = True
        assert images.dim() == 4
        assert labels.dim() == 1
        assert images.size(0) == labels.size(0)

        t_do_without_layer = 0  # WRN requires .layer
        s_do_without_layer = 0  # WRN requires .layer
        t_rest = 0  # some models do not end with stage3
        s_rest = 0  # some models do not end with stage3

        record = {}
        if is_train:  # Zero gradients.
            feature_extractor_optimizer.zero_grad()
            classifier_optimizer.zero_grad()
            for i in range(len(BoW_predictor)):
                BoW_predictor_optimizer[i].zero_grad()
                valueLayer_optimizer[i].zero_grad()

        # Extrack knowledge from teacher network.
        with torch.no_grad():
            feature_extractor_target.eval()

            if [*feature_extractor_target[which_stage_t]._modules][0] != \
                    'layer':
                t_do_without_layer = 1

            if len(feature_extractor_target._modules.keys()) - \
                    which_stage_t > 1:
                t_rest = 1

            features_target_hint = feature_extractor_target[
                0:which_stage_t](images)

            if t_do_without_layer:

                features_target_hint = feature_extractor_target[
                    which_stage_t][0](features_target_hint)
                features_target = feature_extractor_target[which_stage_t][
                    1:](features_target_hint)

            else:
                features_target_hint = feature_extractor_target[
                    which_stage_t].layer[0](features_target_hint)
                features_target = feature_extractor_target[
                    which_stage_t].layer[1:](features_target_hint)

            if t_rest:
                features_target = feature_extractor_target[
                    which_stage_t + 1:](features_target)

            if not isinstance(features_target, (list, tuple)):
                features_target = [features_target, ]

        if not isinstance(vector_quantizer_target, (list, tuple)):
            vector_quantizer_target = [vector_quantizer_target, ]
        encoding_targets = []
        num_vq_targets = len(features_target)
        for k in range(num_vq_targets):
            vector_quantizer_target[k].eval()
            _, _, perp_trg, _, enc_this, mean_assign_score = (
                vector_quantizer_target[k](features_target[k], True))
            encoding_targets.append(enc_this)
            record[f'perp_trg_{k}'] = perp_trg.item()
            record[f'mean_assign_dist_{k}'] = mean_assign_score.item()

        with torch.set_grad_enabled(is_train):
            # (the MobileNet-v2 ImageNet branch, one module, is not taken)
            if [*feature_extractor[which_stage_s]._modules][0] != 'layer':
                s_do_without_layer = 1

            if len(feature_extractor._modules.keys()) - which_stage_s > 1:
                s_rest = 1
            # Extract features from the images.
            features_sc = feature_extractor[0:which_stage_s](images)

            if s_do_without_layer:
                features_sc = feature_extractor[which_stage_s][0](
                    features_sc)
            else:
                features_sc = feature_extractor[which_stage_s].layer[0](
                    features_sc)

            scores = BoW_predictor[0](features_sc)

            features_hint, _, loss_sub, record = valueLayer[0](
                features_target_hint, scores, features_sc, labels, record)

            if s_do_without_layer:
                features_final_stage = feature_extractor[which_stage_s][1:](
                    features_hint)
            else:
                features_final_stage = feature_extractor[
                    which_stage_s].layer[1:](features_hint)

            if s_rest:
                features_final_stage = feature_extractor[
                    which_stage_s + 1:](features_final_stage)

            scores_final_stage = BoW_predictor[1](features_final_stage)
            features, _ = valueLayer[1](scores_final_stage,
                                        features_final_stage)

            loss_quest, _, record = _official_quest_dense_prediction(
                [scores_final_stage], encoding_targets, record)

            # Perform the object classification task.
            scores_cls = classifier(features)
            loss_cls = F.cross_entropy(scores_cls, labels)
            record['loss_cls'] = loss_cls.item()
            loss_total = loss_cls * cls_loss_coef

            loss_total = loss_total + loss_quest * quest_loss_coef + \
                loss_sub * sub_loss_coef
            record['loss_total'] = loss_total.item()

        with torch.no_grad():  # Compute accuracies.
            AccTop1 = _official_top1accuracy(scores_cls, labels)
            record['AccuracyTop1'] = AccTop1
            record['Error'] = 100.0 - AccTop1

        if is_train:
            # Backward loss and apply gradient steps.
            loss_total.backward()
            feature_extractor_optimizer.step()
            classifier_optimizer.step()
            for i in range(len(BoW_predictor)):
                BoW_predictor_optimizer[i].step()
                valueLayer_optimizer[i].step()


def _stages(backbone):
    """ADAPTED: the official feature extractor (tools.py splits the network
    into an ``nn.Sequential`` of its stem modules and stages) over an
    mmpretrain ResNet_CIFAR, sharing its modules: [conv1, bn1, relu, layer1,
    ..., layer4], each stage a plain ``nn.Sequential`` of its blocks (as the
    official networks' stages: sliceable); ``which_stage`` = 6 is the last
    stage."""
    return nn.Sequential(backbone.conv1, backbone.norm1, backbone.relu,
                         *[nn.Sequential(*getattr(backbone, n))
                           for n in backbone.res_layers])


# The comparison runs in float64. Two float computations of the same step
# differ by the order of their sums only; tests/tolerance.py bounds that by
# layers x terms x u. One step is a forward and a backward pass of the
# student (the teacher's forward gives targets, not gradients), three steps
# six passes: a relative 1.5e-11 in float64.
STEP_TOL = rounding_tol(torch.float64, layers=6 * DEPTH)


def test_three_steps_equal_the_official_training_step(tmp_path):
    """Student ResNet-18-CIFAR of width 8 with 4 stages (maps 4x4 like the
    teacher's, as in the official same-size pairs), KD layers after layer4.0
    (80 subclass templates) and layer4 (64 templates); ours against the
    transcription above from the same weights, in float64."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmpretrain.structures import DataSample
    cfg = Config.fromfile(osp.join(ROOT, KDL))
    rng = np.random.default_rng(0)
    s_t = rng.random((80, 80)).astype(np.float32)
    s_t /= s_t.sum(1, keepdims=True)
    scalings = rng.normal(size=(128, 9)).astype(np.float32) * 0.1
    xbar = rng.random(128).astype(np.float32)
    centers_i = rng.normal(size=(80, 9)).astype(np.float32)
    centers_p = rng.random((64, 128)).astype(np.float32)
    stats = str(tmp_path / 's.npz')
    np.savez(stats, meta=np.array(json.dumps(dict(
        kinds=['penultimate', 'intermediate'], num_classes=10, subclasses=8,
        pooled_to={'penultimate': None, 'intermediate': None}))),
        penult_centers=centers_p, inter_mean=xbar, inter_proj=scalings,
        inter_centers=centers_i, inter_s_t=s_t)
    plain = dict(type='mmpretrain.ResNet_CIFAR', depth=18, stem_channels=8,
                 base_channels=8)
    arch = cfg.model.architecture
    arch.backbone = dict(type='mmpretrain.KDLayerBackbone', backbone=plain,
                         kd_layers=[dict(after='layer4.0', in_channels=64,
                                         num_templates=80),
                                    dict(after='layer4', in_channels=64,
                                         num_templates=64)])
    arch.head.in_channels = 64
    d = cfg.model.distiller
    d.student_recorders.penult.source = 'backbone.kd_layers.layer4.match'
    d.student_recorders.inter.source = 'backbone.kd_layers.layer4_0.match'
    d.distill_losses.loss_penult.stats_file = stats
    d.distill_losses.loss_inter.stats_file = stats
    cfg.model.teacher_ckpt = None
    torch.manual_seed(0)
    model = RZ.build(cfg.model)
    model.init_weights()
    model.double()
    # the official networks, with copies of the same weights (ADAPTED: the
    # official builds them from its configs and pretrained files)
    # (fresh networks: a deep copy would keep our KD layers' forward hooks
    # and the distiller's recorder hooks)
    stu = MODELS.build(plain).double()
    stu.load_state_dict(model.student.backbone.backbone.state_dict())
    kdl = model.student.backbone.kd_layers
    networks = {'feature_extractor': _stages(stu)}
    networks['classifier'] = _OfficialClassifier(dict(
        classifier_type='linear', num_classes=10, num_channels=64,
        global_pooling=True)).double()
    networks['classifier'].layers.load_state_dict(
        model.student.head.fc.state_dict())
    for i, (key, k) in enumerate((('layer4_0', 80), ('layer4', 64))):
        bow = _OfficialClassifier(dict(
            classifier_type='conv_cosine', num_classes=k, num_channels=64,
            scale_cls=3.0, learn_scale=True)).double()
        bow.layers.weight.data.copy_(kdl[key].match.weight)
        networks[f'BoW_predictor_{i}'] = bow
    networks['valueLayer_0'] = _OfficialValueLayerSubclass(
        64, 10, 80, centers_i, scalings, xbar, s_t).double()
    networks['valueLayer_1'] = _OfficialValueLayer(64, 64).double()
    for i, key in enumerate(('layer4_0', 'layer4')):
        v = networks[f'valueLayer_{i}']
        v.bn.load_state_dict(kdl[key].bn.state_dict())
        v.conv_value.layers.weight.data.copy_(kdl[key].value.weight)
    teacher = MODELS.build(cfg.model.teacher.backbone).double()
    teacher.load_state_dict(model.teacher.backbone.state_dict())
    networks['feature_extractor_target'] = _stages(teacher)
    vq = _OfficialVectorQuantizerEMA(64, 128, commitment_cost=0.25,
                                     decay=0.99, epsilon=1e-5,
                                     temperature=1).double()
    vq._embedding.weight.data.copy_(torch.from_numpy(centers_p))
    networks['vector_quantizer_target'] = vq
    # three batches through the data preprocessor (the same inputs for both)
    raw = []
    for i in range(3):
        g = torch.Generator().manual_seed(i)
        raw.append(dict(
            inputs=[torch.randint(0, 255, (3, 32, 32), generator=g,
                                  dtype=torch.uint8) for _ in range(8)],
            data_samples=[DataSample().set_gt_label((i + j) % 10)
                          for j in range(8)]))
    batches = []
    for r in raw:
        dd = model.data_preprocessor(r, True)
        batches.append((dd['inputs'], torch.cat(
            [s.gt_label for s in dd['data_samples']])))
    assert batches[0][0].dtype == torch.float64
    _official_letkd_steps(networks, batches, lr=0.05)
    start = copy.deepcopy(model.student.state_dict())
    cfg.optim_wrapper.optimizer.lr = 0.05  # the official steps' lr
    assert cfg.optim_wrapper.optimizer.nesterov  # as the official configs
    ow = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    for r in raw:
        log = model.train_step(r, ow)
    assert {'distill.loss_penult', 'distill.loss_inter'} <= set(log)
    # parameters and buffers (BN running statistics)
    theirs = {**{f'backbone.backbone.{k}': v
                 for k, v in stu.state_dict().items()},
              **{f'head.fc.{k}': v for k, v in
                 networks['classifier'].layers.state_dict().items()}}
    for i, key in enumerate(('layer4_0', 'layer4')):
        pre = f'backbone.kd_layers.{key}.'
        b, v = networks[f'BoW_predictor_{i}'], networks[f'valueLayer_{i}']
        theirs[pre + 'match.weight'] = b.layers.weight
        theirs[pre + 'match.scale'] = b.layers.scale
        theirs.update({pre + f'bn.{k}': x
                       for k, x in v.bn.state_dict().items()})
        theirs[pre + 'value.weight'] = v.conv_value.layers.weight
        theirs[pre + 'value.scale'] = v.conv_value.layers.scale
    ours = model.student.state_dict()
    assert set(ours) == set(theirs)
    for name, p in ours.items():
        if not p.is_floating_point():
            assert torch.equal(p, theirs[name]), name
            continue
        t = theirs[name].detach()
        scale = float(t.abs().max().clamp_min(1e-300))
        rel = float((p - t).abs().max()) / scale
        assert rel <= STEP_TOL, f'{name}: {rel:.3g} > {STEP_TOL:.3g}'
    # the steps moved (nearly) every float tensor, not a handful
    floats = [k for k, v in ours.items() if v.is_floating_point()]
    moved = [k for k in floats if not torch.equal(ours[k], start[k])]
    assert len(moved) >= 0.9 * len(floats), sorted(set(floats) - set(moved))
    # the steps moved the learnable scales away from their initial values
    assert float(ours['backbone.kd_layers.layer4.match.scale']) != 3.0
    assert float(ours['backbone.kd_layers.layer4_0.value.scale']) != 1.0
