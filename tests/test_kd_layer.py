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
class _OfficialConv2dCos(nn.Module):
    """letKD-framework distillation/architectures/tools.py L153-181."""

    def __init__(self, in_planes, out_planes, scale):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_planes, in_planes, 1, 1))
        self.scale = nn.Parameter(torch.FloatTensor(1).fill_(scale))

    def forward(self, x):
        weight = self.weight
        x = F.normalize(x, p=2, dim=1, eps=1e-12)
        weight = F.normalize(weight, p=2, dim=1, eps=1e-12)
        weight = weight * self.scale.view(-1, 1, 1, 1)
        return F.conv2d(x, weight, bias=None, stride=1, padding=0)


class _OfficialValueLayer(nn.Module):
    """miscellaneous/valueLayer.py L49-75 (penultimate)."""

    def __init__(self, inp_size, emb_size, value_ratio=1.0):
        super().__init__()
        self.conv_value = _OfficialConv2dCos(emb_size, inp_size, scale=1)
        self.bn = nn.BatchNorm2d(emb_size)
        self.value_ratio = value_ratio

    def forward(self, scores, stage_out):
        out = F.relu(self.bn(scores))
        value = self.conv_value(out)
        return self.value_ratio * value + stage_out


class _OfficialValueLayerSubclass(_OfficialValueLayer):
    """miscellaneous/valueLayer_subclass.py L117-210 (intermediate): LDA
    conv, nearest subclass of the true class, row of s_T, KL (L96-115)."""

    def __init__(self, inp_size, num_classes, emb_size, scalings, xbar,
                 centers, teacher_scores):
        super().__init__(inp_size, emb_size)
        self.each_subclass = emb_size // num_classes
        self.num_classes = num_classes
        w = torch.from_numpy(np.transpose(scalings)).float()
        self.lda_w = w[:, :, None, None]
        self.lda_b = torch.from_numpy(-np.matmul(np.transpose(scalings),
                                                 xbar)).float()
        self.lda_comp = centers.shape[1]
        self.cluster_centers = torch.from_numpy(centers).float()
        self.teacher_scores = torch.from_numpy(teacher_scores).float()

    def forward(self, feature_teacher, scores, in_block, labels):
        feature_teacher = F.conv2d(feature_teacher, self.lda_w, self.lda_b)
        feature_teacher = feature_teacher[:, 0:self.lda_comp, :, :]
        feature_teacher = feature_teacher.permute(0, 2, 3, 1).contiguous()
        patches = feature_teacher.shape[1]**2
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
            self.each_subclass * self.num_classes).to(torch.float32)
        encoding_targets = torch.matmul(encoding_targets,
                                        self.teacher_scores)
        s = scores.permute(0, 2, 3, 1).contiguous()
        s = s.view(-1, s.size(3))
        loss_sub = F.kl_div(F.log_softmax(s, dim=1), encoding_targets,
                            reduction='batchmean')
        return super().forward(scores, in_block), loss_sub


def _official_letkd_steps(stu, bow, value, fc, teacher, centers, tau,
                          batches, lr):
    """classification_subclass_quest_value.py L57-200
    (object_classification_with_subclass_quest, cls = quest = sub = 1), with
    the penultimate targets of vector_quantization.py L42-110 (eval, with
    temperature) and quest_dense_prediction (L16-50). SGD as the official
    CIFAR configs (one optimizer per network, the same settings: nesterov,
    momentum 0.9, wd 5e-4)."""
    nets = [stu, bow[0], bow[1], value[0], value[1], fc]
    optims = [torch.optim.SGD(n.parameters(), lr=lr, momentum=0.9,
                              weight_decay=5e-4, nesterov=True)
              for n in nets]
    emb = torch.from_numpy(centers).float()
    for images, labels in batches:
        for o in optims:
            o.zero_grad()
        with torch.no_grad():
            teacher.eval()
            tb = teacher.backbone
            x = tb.relu(tb.norm1(tb.conv1(images)))
            x = tb.layer3(tb.layer2(tb.layer1(x)))
            features_target_hint = tb.layer4[0](x)
            features_target = nn.Sequential(*list(tb.layer4)[1:])(
                features_target_hint)
            flat = features_target.permute(0, 2, 3, 1).reshape(
                -1, features_target.shape[1])
            distances = (torch.sum(flat**2, dim=1, keepdim=True)
                         + torch.sum(emb**2, dim=1)
                         - 2 * torch.matmul(flat, emb.t()))
            encodings = F.softmax(-tau * distances, dim=1)
        x = stu.relu(stu.norm1(stu.conv1(images)))
        features_sc = stu.layer4[0](stu.layer3(stu.layer2(stu.layer1(x))))
        scores = bow[0](features_sc)
        features_hint, loss_sub = value[0](features_target_hint, scores,
                                           features_sc, labels)
        features_final_stage = nn.Sequential(*list(stu.layer4)[1:])(
            features_hint)
        scores_final_stage = bow[1](features_final_stage)
        features = value[1](scores_final_stage, features_final_stage)
        s = scores_final_stage.permute(0, 2, 3, 1).contiguous()
        s = s.view(-1, s.size(3))
        loss_quest = F.kl_div(F.log_softmax(s, dim=1), encodings,
                              reduction='batchmean')
        scores_cls = fc(F.adaptive_avg_pool2d(features, 1).flatten(1))
        loss_cls = F.cross_entropy(scores_cls, labels)
        loss_total = loss_cls + loss_quest + loss_sub
        loss_total.backward()
        for o in optims:
            o.step()


def test_three_steps_equal_the_official_training_step(tmp_path):
    """Student ResNet-18-CIFAR of width 8 with 4 stages (maps 4x4 like the
    teacher's, as in the official same-size pairs), KD layers after layer4.0
    (80 subclass templates) and layer4 (64 templates)."""
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
    # official copies of the same weights
    stu = MODELS.build(plain)
    stu.load_state_dict(model.student.backbone.backbone.state_dict())
    kdl = model.student.backbone.kd_layers
    bow, value = [], []
    for key, k in (('layer4_0', 80), ('layer4', 64)):
        b = _OfficialConv2dCos(64, k, scale=3.0)
        b.weight.data.copy_(kdl[key].match.weight)
        bow.append(b)
    value.append(_OfficialValueLayerSubclass(64, 10, 80, scalings, xbar,
                                             centers_i, s_t))
    value.append(_OfficialValueLayer(64, 64))
    for v, key in zip(value, ('layer4_0', 'layer4')):
        v.bn.load_state_dict(kdl[key].bn.state_dict())
        v.conv_value.weight.data.copy_(kdl[key].value.weight)
    fc = nn.Linear(64, 10)
    fc.load_state_dict(model.student.head.fc.state_dict())
    teacher = model.teacher
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
    _official_letkd_steps(stu, bow, value, fc, teacher, centers_p, 1.0,
                          batches, lr=0.05)
    start = copy.deepcopy(model.student.state_dict())
    cfg.optim_wrapper.optimizer.lr = 0.05  # the official steps' lr
    ow = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    for r in raw:
        log = model.train_step(r, ow)
    assert {'distill.loss_penult', 'distill.loss_inter'} <= set(log)
    # parameters and buffers (BN running statistics)
    theirs = {**{f'backbone.backbone.{k}': v
                 for k, v in stu.state_dict().items()},
              **{f'head.fc.{k}': v for k, v in fc.state_dict().items()}}
    for key, b, v in zip(('layer4_0', 'layer4'), bow, value):
        pre = f'backbone.kd_layers.{key}.'
        theirs[pre + 'match.weight'] = b.weight
        theirs[pre + 'match.scale'] = b.scale
        theirs.update({pre + f'bn.{k}': x
                       for k, x in v.bn.state_dict().items()})
        theirs[pre + 'value.weight'] = v.conv_value.weight
        theirs[pre + 'value.scale'] = v.conv_value.scale
    ours = model.student.state_dict()
    assert set(ours) == set(theirs)
    for name, p in ours.items():
        torch.testing.assert_close(p, theirs[name], rtol=1e-5, atol=1e-5,
                                   msg=name)
    # the steps moved (nearly) every float tensor, not a handful
    floats = [k for k, v in ours.items() if v.is_floating_point()]
    moved = [k for k in floats if not torch.equal(ours[k], start[k])]
    assert len(moved) >= 0.9 * len(floats), sorted(set(floats) - set(moved))
    # the steps moved the learnable scales away from their initial values
    assert float(ours['backbone.kd_layers.layer4.match.scale']) != 3.0
    assert float(ours['backbone.kd_layers.layer4_0.value.scale']) != 1.0
