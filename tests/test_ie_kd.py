"""IE-KD: losses by hand, channel split, exploration sign, frozen stage-1
encoder, stage 1 -> stage 2 on Digits, composition, export, errors."""
import json
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmrazor.registry import MODELS

from tests.conftest import (MID_EPOCH_3, ROOT, SMALL_TRAIN,
                            assert_killed_after, assert_preempted,
                            last_val_top1, run_tool, shipped_test_top1)
from tests.tolerance import DEPTH, rounding_tol


def n(x):
    flat = x.flatten(1)
    return (flat / flat.norm(dim=1, keepdim=True)).view_as(x)


def test_losses_match_the_formula():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5,
                                                             generator=g)
    inh = MODELS.build(dict(type='IEInheritLoss'))(s, t)
    exp = MODELS.build(dict(type='IEExploreLoss', loss_weight=7.0))(s, t)
    ref = (n(s) - n(t)).abs().mean()
    torch.testing.assert_close(inh, 50.0 * ref)
    torch.testing.assert_close(exp, -7.0 * ref)
    # by hand for one sample: x / ||x||_2 over all of (C, H, W)
    x = s[0]
    torch.testing.assert_close(n(s)[0], x / x.pow(2).sum().sqrt())


def test_exploration_pushes_away_and_inheritance_pulls_closer():
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 3, 4, 4)
    step = 0.05
    for kind, sign in (('IEInheritLoss', -1), ('IEExploreLoss', +1)):
        loss_fn = MODELS.build(dict(type=kind, loss_weight=1.0))
        s.grad = None
        loss_fn(s, t).backward()
        dist = (n(s) - n(t)).abs().mean().item()
        moved = (s - step * s.grad).detach()  # one gradient-descent step
        new = (n(moved) - n(t)).abs().mean().item()
        assert (new - dist) * sign > 0, kind
    # the explore gradient is exactly the negated inherit gradient
    s.grad = None
    MODELS.build(dict(type='IEInheritLoss'))(s, t).backward()
    g_inh = s.grad.clone()
    s.grad = None
    MODELS.build(dict(type='IEExploreLoss'))(s, t).backward()
    torch.testing.assert_close(s.grad, -g_inh)


def test_no_gradient_reaches_the_teacher_factor():
    s, t = torch.randn(2, 3, 4, 4, requires_grad=True), \
        torch.randn(2, 3, 4, 4, requires_grad=True)
    MODELS.build(dict(type='IEInheritLoss'))(s, t).backward()
    assert t.grad is None


def test_spatial_sizes_are_aligned_and_channels_checked():
    loss = MODELS.build(dict(type='IEInheritLoss', loss_weight=1.0))
    s, t = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)
    pooled = torch.nn.functional.adaptive_avg_pool2d(s, 4)
    torch.testing.assert_close(loss(s, t), (n(pooled) - n(t)).abs().mean())
    with pytest.raises(ValueError, match='out_channels'):
        loss(torch.randn(2, 5, 4, 4), t)


def test_split_sends_gradients_to_the_right_channels_only():
    feat = torch.randn(2, 32, 8, 8, requires_grad=True)
    for part, (lo, hi) in (('inherit', (0, 16)), ('explore', (16, 32))):
        enc = MODELS.build(dict(type='IEStudentEncoder', in_channels=32,
                                out_channels=64, part=part))
        feat.grad = None
        enc(feat).sum().backward()
        per_channel = feat.grad.abs().sum((0, 2, 3))
        assert (per_channel[lo:hi] > 0).all()
        outside = torch.cat([per_channel[:lo], per_channel[hi:]])
        assert torch.equal(outside, torch.zeros_like(outside))
    enc = MODELS.build(dict(type='IEStudentEncoder', in_channels=32,
                            out_channels=64, split_ratio=0.25,
                            part='explore'))
    assert enc.channels == (8, 32)


def test_coder_layout():
    ae = MODELS.build(dict(type='IEAutoEncoder', in_channels=16, rate=0.5))
    convs = [m for m in ae.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == \
        [(16, 16), (16, 8), (8, 8)]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1)
               for c in convs)
    assert isinstance(ae.encoder[0], torch.nn.LeakyReLU)
    assert ae(torch.randn(2, 16, 4, 4)).shape == (2, 16, 4, 4)


def test_coder_initialisation_is_the_official_one():
    """Official init: conv N(0, sqrt(2 / (9 C_out))), BN weight 1, bias 0;
    it survives the distiller's init_weights."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, 'configs/demo/ie_kd_digits.py'))
    cfg.model.teacher_ckpt = None
    cfg.model.distiller.connectors.t_enc.stage1_ckpt = None
    model = MODELS.build(cfg.model)
    model.init_weights()
    big = MODELS.build(dict(type='IEAutoEncoder', in_channels=256))
    for enc in (model.distiller.connectors['s_inh'].encoder, big.encoder,
                big.decoder):
        for m in enc.modules():
            if isinstance(m, torch.nn.Conv2d):
                want = (2.0 / (9 * m.out_channels)) ** 0.5
                assert float(m.weight.mean()).__abs__() < want / 5
                if m.weight.numel() > 10000:  # enough for a 3 % estimate
                    assert float(m.weight.std()) == pytest.approx(
                        want, rel=0.03)
            elif isinstance(m, torch.nn.BatchNorm2d):
                assert torch.equal(m.weight, torch.ones_like(m.weight))
                assert torch.equal(m.bias, torch.zeros_like(m.bias))


STAGE1 = 'configs/demo/ie_kd_stage1_digits.py'
STAGE2 = 'configs/demo/ie_kd_digits.py'


@pytest.fixture(scope='module')
def stage1(digits_teacher, tmp_path_factory):
    _, teacher, _ = digits_teacher
    wd = str(tmp_path_factory.mktemp('ie_stage1'))
    proc = run_tool(['tools/train.py', STAGE1, '--work-dir', wd,
                     '--cfg-options', f'model.teacher_ckpt={teacher}',
                     'train_cfg.max_epochs=2', *SMALL_TRAIN])
    assert 'distill.loss_rec' in proc.stdout + proc.stderr
    return teacher, osp.join(wd, 'epoch_2.pth')


def _stage2(cfg, wd, teacher, s1, epochs=2, extra=(), resume=False,
            kill_at=None):
    return run_tool(['tools/train.py', cfg, '--work-dir', wd,
                     *(['--resume'] if resume else []),
                     '--cfg-options',
                     f'model.teacher_ckpt={teacher}',
                     f'model.distiller.connectors.t_enc.stage1_ckpt={s1}',
                     f'train_cfg.max_epochs={epochs}',
                     f'train_cfg.val_interval={epochs}', *extra],
                    kill_at=kill_at)


def test_stage1_trains_only_the_autoencoder(stage1):
    teacher, s1 = stage1
    state = torch.load(s1, weights_only=True)['state_dict']
    pre = torch.load(teacher, weights_only=True)['state_dict']
    for k, v in pre.items():  # teacher frozen
        assert torch.equal(state['teacher.' + k], v), k
    assert any(k.startswith('distiller.connectors.t_ae.encoder.')
               for k in state)
    # the student is not trained in stage 1: no student checkpoints
    import glob
    assert not glob.glob(osp.join(osp.dirname(s1), 'student*'))


def test_stage2_end_to_end_encoder_frozen_and_export(stage1, tmp_path):
    teacher, s1 = stage1
    wd = str(tmp_path / 's2')
    proc = _stage2(STAGE2, wd, teacher, s1, epochs=3, extra=SMALL_TRAIN)
    log = proc.stdout + proc.stderr
    assert 'distill.loss_inh' in log and 'distill.loss_exp' in log
    # killed (SIGKILL) mid-epoch 3 and resumed: the uninterrupted weights
    part = str(tmp_path / 'part')
    _stage2(STAGE2, part, teacher, s1, epochs=3, extra=SMALL_TRAIN,
            kill_at=MID_EPOCH_3)
    assert_killed_after(part, epoch=2)
    _stage2(STAGE2, part, teacher, s1, epochs=3, extra=SMALL_TRAIN,
            resume=True)
    a = torch.load(osp.join(wd, 'epoch_3.pth'), weights_only=True)
    b = torch.load(osp.join(part, 'epoch_3.pth'), weights_only=True)
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k
    ck = torch.load(osp.join(wd, 'epoch_2.pth'), weights_only=True)
    sd = ck['state_dict']
    s1_sd = torch.load(s1, weights_only=True)['state_dict']
    enc = {k: v for k, v in sd.items()
           if k.startswith('distiller.connectors.t_enc.encoder.')}
    assert enc
    for k, v in enc.items():  # frozen: identical to stage 1 (BN stats too)
        src = k.replace('connectors.t_enc.', 'connectors.t_ae.')
        assert torch.equal(v, s1_sd[src]), k
    # export: the student only, no IE encoders
    out = str(tmp_path / 'export')
    run_tool(['tools/export_student.py', STAGE2, osp.join(wd, 'epoch_2.pth'),
              out])
    keys = torch.load(osp.join(out, 'student.pth'),
                      weights_only=True)['state_dict'].keys()
    assert not any('connectors' in k or 'encoder' in k or 'teacher' in k
                   for k in keys)
    m1, m2 = tmp_path / 'm1.json', tmp_path / 'm2.json'
    run_tool(['tools/test.py', STAGE2, osp.join(wd, 'epoch_2.pth'),
              '--work-dir', str(tmp_path / 't1'), '--dump-metrics', str(m1),
              '--cfg-options',
              f'model.distiller.connectors.t_enc.stage1_ckpt={s1}'])
    run_tool(['tools/test.py', osp.join(out, 'student.py'),
              osp.join(out, 'student.pth'), '--work-dir', str(tmp_path / 't2'),
              '--dump-metrics', str(m2)])
    top = [json.loads(m.read_text())['accuracy/top1'] for m in (m1, m2)]
    assert top[0] == pytest.approx(top[1], abs=1e-6)
    assert shipped_test_top1(osp.join(out, 'student.py'),
                             osp.join(out, 'student.pth'),
                             str(tmp_path / 't3')) == pytest.approx(
                                 top[0], abs=1e-3)


@pytest.mark.parametrize('cfg,needle', [
    ('configs/demo/ie_kd_kd_digits.py', 'distill.loss_kd'),
    ('configs/demo/ie_kd_aekt_digits.py', 'distill.loss_aekt'),
])
def test_ie_composes_with_other_kd_losses(stage1, cfg, needle):
    """The composed config as tools/train.py builds it (teacher and stage-1
    checkpoints set); one training step computes every term."""
    from mmengine.optim import build_optim_wrapper

    from tests.conftest import raw_batch
    teacher, s1 = stage1
    c = Config.fromfile(osp.join(ROOT, cfg))
    c.model.teacher_ckpt = teacher
    c.model.distiller.connectors.t_enc.stage1_ckpt = s1
    model = MODELS.build(c.model)
    model.train()
    log = model.train_step(raw_batch(), build_optim_wrapper(
        model, c.optim_wrapper))
    assert {needle, 'distill.loss_inh', 'distill.loss_exp'} <= set(log)
    assert all(torch.isfinite(v) for v in log.values()), log


def test_stage2_without_stage1_checkpoint_is_a_clear_error(digits_teacher,
                                                           tmp_path):
    _, teacher, _ = digits_teacher
    proc = run_tool(['tools/train.py', STAGE2, '--work-dir', str(tmp_path),
                     '--cfg-options', f'model.teacher_ckpt={teacher}',
                     'model.distiller.connectors.t_enc.stage1_ckpt='
                     '/no/stage1.pth'], check=False)
    assert proc.returncode != 0
    assert "'/no/stage1.pth' does not exist" in proc.stderr
    assert 'run stage 1 first' in proc.stderr
    assert 'Traceback' not in proc.stderr  # caught before any model is built


def test_missing_or_mismatched_stage1_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match='run stage 1 first'):
        MODELS.build(dict(type='IETeacherEncoder', in_channels=128,
                          stage1_ckpt=str(tmp_path / 'none.pth')))
    ae = MODELS.build(dict(type='IEAutoEncoder', in_channels=64))
    path = str(tmp_path / 's1.pth')
    torch.save({'state_dict': {f'distiller.connectors.t_ae.{k}': v
                               for k, v in ae.state_dict().items()}}, path)
    with pytest.raises(ValueError, match='another teacher or channel count'):
        MODELS.build(dict(type='IETeacherEncoder', in_channels=128,
                          stage1_ckpt=path))
    enc = MODELS.build(dict(type='IETeacherEncoder', in_channels=64,
                            stage1_ckpt=path))
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training


def test_imagenet_and_cifar_configs_build():
    for f, c_t in (('configs/ie_kd_r34_r18_in1k.py', 512),
                   ('configs/ie_kd_r56_r20_cifar100.py', 64)):
        cfg = Config.fromfile(osp.join(ROOT, f))
        cfg.model.teacher_ckpt = None
        cfg.model.distiller.connectors.t_enc.stage1_ckpt = None
        model = MODELS.build(cfg.model)
        assert model.distiller.connectors.t_enc.in_channels == c_t
    for f in ('configs/ie_kd/stage1_r34_in1k.py',
              'configs/ie_kd/stage1_r56_cifar100.py'):
        cfg = Config.fromfile(osp.join(ROOT, f))
        cfg.model.teacher_ckpt = None
        MODELS.build(cfg.model)


# ------------------------------------------- the official steps, transcribed
# github.com/aliyun/Revisiting-Knowledge-Distillation-an-Inheritance-and-
# Exploration-Framework (HEAD 3274ab0): processors/IE_KD.py with its
# modules, the official statements in the official order. The official code
# swaps the names: its ``teacher`` is the network trained in stage 2 (the
# paper's student, ours ``architecture``), its ``student`` the frozen
# pre-trained one (the paper's teacher, ours ``teacher``); ``embedS`` is the
# stage-1 auto-encoder of the frozen network (ours t_ae / t_enc), ``embedTI``
# / ``embedTE`` the auto-encoders of the trained network's two channel
# halves (ours s_inh / s_exp: the encoders; the official decoders run but
# reach no loss). What is adapted is marked "ADAPTED" at its line.


def _official_conv(cin, cout):
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1, stride=1,
                     bias=False)


def _official_bn(chn):
    return nn.BatchNorm2d(chn)


def _official_relu():
    return nn.LeakyReLU(0.1)


class _OfficialCoder(nn.Module):
    """model/auto_encoder.py ``Coder`` (use_bn=True)."""

    def __init__(self, cin, cout, use_bn=True):
        super().__init__()

        if use_bn:
            layers = [_official_relu(), _official_conv(cin, cin),
                      _official_bn(cin), _official_relu(),
                      _official_conv(cin, cout), _official_bn(cout),
                      _official_relu(), _official_conv(cout, cout),
                      _official_bn(cout), _official_relu()]
        else:
            layers = [_official_conv(cin, cin), _official_relu(),
                      _official_conv(cin, cout), _official_relu(),
                      _official_conv(cout, cout), _official_relu()]
        self.layers = nn.Sequential(*layers)

        # Initialize
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2. / n))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def forward(self, x):
        return self.layers(x)


class _OfficialAutoEncoder(nn.Module):
    """model/auto_encoder.py ``auto_encoder``."""

    def __init__(self, cin, cout, use_bn=True):
        super().__init__()

        self.encoder = _OfficialCoder(cin, cout, use_bn=use_bn)
        self.decoder = _OfficialCoder(cout, cin, use_bn=use_bn)

    def forward(self, x):
        factor = self.encoder(x)
        y = self.decoder(factor)
        return factor, y


def _official_factor_transfer(x, y, p=1):
    """loss/factor_transfer.py ``_factor_transfer``."""
    assert x.dim() == y.dim() == 4
    x = F.normalize(x.view(x.size(0), -1), p=2, dim=1)
    y = F.normalize(y.view(y.size(0), -1), p=2, dim=1)
    diff = x - y
    diff = diff.norm(p=p).pow(p) / diff.numel()
    return diff.pow(1 / p)


class _OfficialNormLoss(nn.Module):
    """loss/factor_transfer.py ``NormLoss``."""

    def __init__(self, p=1, negative=False):
        super().__init__()
        self.p = p
        self.negative = negative

    def forward(self, x, y):
        if self.negative:
            return -_official_factor_transfer(x, y, p=self.p)
        else:
            return _official_factor_transfer(x, y, p=self.p)


class _OfficialRecLoss(nn.Module):
    """loss/reconstruction.py ``RecLoss``."""

    def __init__(self, norm=1):
        super().__init__()
        self.norm = norm

    def forward(self, x, y):
        diff = x - y
        diff = diff.norm(p=self.norm).pow(self.norm) / diff.numel()
        return diff.pow(1 / self.norm)


class _OfficialNet(nn.Module):
    """ADAPTED: model/resnet.py ``forward`` returns ``out, feature`` (the
    logits and the last stage's map), here over an mmpretrain
    ImageClassifier (backbone -> GlobalAveragePooling -> LinearClsHead)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model.extract_feat(x, stage='backbone')[-1]
        feature = out
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        out = self.model.head.fc(out)
        return out, feature


def _official_load_one_sgd(*models, lr, nesterov=True, weight_decay=5e-4):
    """processors/base.py ``_load_one_sgd`` (``nesterov`` and
    ``weight_decay`` from config/ie_kd.yaml). ADAPTED: ``lr`` passed in (the
    official 0.1, then set by the LearningRate scheduler)."""
    return torch.optim.SGD([{'params': m.parameters()} for m in models],
                           lr=lr,
                           momentum=0.9,
                           nesterov=nesterov,
                           weight_decay=weight_decay)


class _OfficialIEKD:
    """processors/IE_KD.py ``IE_KD``: ``train_student`` (stage 1: embedS
    learns to reconstruct the frozen network's map) and ``train_teacher``
    (stage 2), one iteration per batch; their logging left out.
    ``inh_loss`` / ``exp_loss``: ADAPTED: NormLoss(p=1) and
    NormLoss(p=1, negative=True), the paper's L1 factor distances (the
    repository's config/ie_kd.yaml names none: it does not run as
    shipped); ``divide='natural'`` (main.py's default)."""

    def __init__(self, teacher, student, embedTI, embedTE, embedS, lr):
        # load_model (ADAPTED: the caller's networks and weights)
        self.teacher, self.student = teacher, student
        self.embedTI, self.embedTE, self.embedS = embedTI, embedTE, embedS
        # load_loss
        self.inh_loss = _OfficialNormLoss(p=1)
        self.exp_loss = _OfficialNormLoss(p=1, negative=True)
        self.rec_loss = _OfficialRecLoss()
        # load_optimizer
        self.optimizerT = _official_load_one_sgd(self.teacher, self.embedTI,
                                                 self.embedTE, lr=lr)
        self.optimizerS = _official_load_one_sgd(self.embedS, lr=lr)

    def train_student(self, batches):
        self.teacher.eval()
        self.embedTI.eval()
        self.embedTE.eval()
        self.student.eval()
        self.embedS.train()

        for inputs, targets in batches:
            # (ADAPTED: .float().cuda() / .long().cuda() left out)
            _, features = self.student(inputs)
            _, rec_features = self.embedS(features)
            loss = self.rec_loss(features, rec_features)

            self.optimizerS.zero_grad()
            loss.backward()
            self.optimizerS.step()

    def train_teacher(self, batches, inh_loss_weight, exp_loss_weight):
        self.teacher.train()
        self.embedTI.train()
        self.embedTE.train()
        self.student.eval()
        self.embedS.eval()

        for inputs, targets in batches:
            # teacher forward
            outputsT, featuresT = self.teacher(inputs)
            featuresTI, featuresTE = self.divide_features(featuresT)
            factorsTI, _ = self.embedTI(featuresTI)
            factorsTE, _ = self.embedTE(featuresTE)

            # student forward
            _, featuresS = self.student(inputs)
            factorsS, _ = self.embedS(featuresS)

            # loss
            loss_ce = F.cross_entropy(outputsT, targets)
            loss_inh = self.inh_loss(factorsS, factorsTI)
            loss_exp = self.exp_loss(factorsS, factorsTE)
            loss = loss_ce + inh_loss_weight * loss_inh + \
                exp_loss_weight * loss_exp

            # backward
            self.optimizerT.zero_grad()
            loss.backward()
            self.optimizerT.step()

    def divide_features(self, feature):
        inh_index = getattr(self, 'inh_index', None)
        exp_index = getattr(self, 'exp_index', None)
        if inh_index is None or exp_index is None:
            length = feature.size(1)
            # self.arg.divide == 'natural' (ADAPTED: .cuda() left out)
            index = torch.arange(length)
            self.inh_index = index[:int(length / 2)]
            self.exp_index = index[int(length / 2):]
        inh_feature = feature.index_select(dim=1, index=self.inh_index)
        exp_feature = feature.index_select(dim=1, index=self.exp_index)
        return inh_feature, exp_feature


# Compared in float64. Two float computations of the same step differ by the
# order of their sums only; tests/tolerance.py bounds that by layers x terms
# x u. A step is a forward and a backward pass of the deepest network (the
# frozen one gives targets, not gradients), three steps six passes: a
# relative 1.5e-11 in float64.
STEP_TOL = rounding_tol(torch.float64, layers=6 * DEPTH)


def _assert_close_state(ours, theirs):
    """Every float tensor of the state dict ``ours`` within STEP_TOL of
    ``theirs``' relative to its largest element; integers equal."""
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        if not a[name].is_floating_point():
            assert torch.equal(a[name], b[name]), name
            continue
        scale = float(b[name].abs().max().clamp_min(1e-300))
        rel = float((a[name] - b[name]).abs().max()) / scale
        assert rel <= STEP_TOL, f'{name}: {rel:.3g} > {STEP_TOL:.3g}'


def _ie_batches(model):
    from tests.conftest import raw_batch
    raw = [raw_batch(n=8, seed=i) for i in range(3)]
    pre = [model.data_preprocessor(r, True) for r in raw]
    assert pre[0]['inputs'].dtype == torch.float64
    return raw, [(d['inputs'], torch.cat([s.gt_label for s in
                                          d['data_samples']]))
                 for d in pre]


def _ie_model(cfg_file, **student_backbone):
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(osp.join(ROOT, cfg_file))
    cfg.model.teacher_ckpt = None
    cfg.model.architecture.backbone.update(student_backbone)
    if 't_enc' in cfg.model.distiller.connectors:
        cfg.model.distiller.connectors.t_enc.stage1_ckpt = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.double()
    cfg.optim_wrapper.optimizer.lr = 0.05
    assert cfg.optim_wrapper.optimizer.nesterov  # as config/ie_kd.yaml
    assert cfg.optim_wrapper.optimizer.weight_decay == 5e-4
    return model, build_optim_wrapper(model, cfg.optim_wrapper)


def test_stage1_three_steps_equal_the_official_train_student():
    """Ours (FastDistill, student_trainable=False: the teacher auto-encoder
    learns an L1 reconstruction of the frozen teacher's last map) against
    ``train_student``, from the same weights, in float64."""
    from mmpretrain.registry import MODELS as PT
    model, ow = _ie_model(STAGE1)
    raw, batches = _ie_batches(model)
    t_ae = model.distiller.connectors['t_ae']
    frozen = PT.build(Config.fromfile(osp.join(ROOT, STAGE1)).model.teacher)
    frozen.double().load_state_dict(model.teacher.state_dict())
    embedS = _OfficialAutoEncoder(128, 64).double()
    embedS.encoder.layers.load_state_dict(t_ae.encoder.state_dict())
    embedS.decoder.layers.load_state_dict(t_ae.decoder.state_dict())
    unused = [_OfficialAutoEncoder(16, 64).double() for _ in range(2)]
    official = _OfficialIEKD(nn.Identity(), _OfficialNet(frozen), *unused,
                             embedS, lr=0.05)
    official.train_student(batches)
    start = {k: v.clone() for k, v in t_ae.state_dict().items()}
    model.train()
    for r in raw:
        model.train_step(r, ow)
    _assert_close_state(t_ae.encoder, embedS.encoder.layers)
    _assert_close_state(t_ae.decoder, embedS.decoder.layers)
    moved = [k for k, v in t_ae.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, start[k])]
    assert len(moved) >= 0.9 * sum(v.is_floating_point()
                                   for v in start.values())


def test_stage2_three_steps_equal_the_official_train_teacher():
    """Ours (CE + 50 L_inh + 50 L_exp through mmrazor's distiller) against
    ``train_teacher``, from the same weights, in float64. The student
    (strides 2, 2, 2) gives 4x4 maps like the teacher's: the official code
    has no pooling for maps of different sizes (ours pools the larger
    factor: an addition of ours)."""
    from mmpretrain.registry import MODELS as PT
    model, ow = _ie_model(STAGE2, strides=(2, 2, 2))
    raw, batches = _ie_batches(model)
    conn = model.distiller.connectors
    cfg = Config.fromfile(osp.join(ROOT, STAGE2)).model
    cfg.architecture.backbone.strides = (2, 2, 2)
    trained = PT.build(cfg.architecture)
    trained.double().load_state_dict(model.student.state_dict())
    frozen = PT.build(cfg.teacher)
    frozen.double().load_state_dict(model.teacher.state_dict())
    embeds = []
    for name, cin in (('s_inh', 16), ('s_exp', 16), ('t_enc', 128)):
        ae = _OfficialAutoEncoder(cin, 64).double()
        ae.encoder.layers.load_state_dict(conn[name].encoder.state_dict())
        embeds.append(ae)
    official = _OfficialIEKD(_OfficialNet(trained), _OfficialNet(frozen),
                             *embeds, lr=0.05)
    official.train_teacher(batches, inh_loss_weight=50.0,
                           exp_loss_weight=50.0)
    start = {k: v.clone() for k, v in model.student.state_dict().items()}
    t_enc = {k: v.clone() for k, v in conn['t_enc'].state_dict().items()}
    model.train()
    for r in raw:
        log = model.train_step(r, ow)
    assert {'distill.loss_inh', 'distill.loss_exp'} <= set(log)
    _assert_close_state(model.student, trained)
    _assert_close_state(conn['s_inh'].encoder, embeds[0].encoder.layers)
    _assert_close_state(conn['s_exp'].encoder, embeds[1].encoder.layers)
    for k, v in conn['t_enc'].state_dict().items():  # frozen, BN included
        assert torch.equal(v, t_enc[k]), k
    floats = [k for k, v in start.items() if v.is_floating_point()]
    moved = [k for k in floats
             if not torch.equal(model.student.state_dict()[k], start[k])]
    assert len(moved) >= 0.9 * len(floats)


def test_losses_equal_the_official_norm_loss_with_gradients():
    """IEInheritLoss / IEExploreLoss against loss/factor_transfer.py
    ``NormLoss(p=1)`` times the weight (float64), values and gradients."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64,
                    requires_grad=True)
    t = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64)
    tol = rounding_tol(torch.float64, terms=s.numel(), layers=3)
    for kind, negative in (('IEInheritLoss', False),
                           ('IEExploreLoss', True)):
        ours = MODELS.build(dict(type=kind, loss_weight=50.0))(s, t)
        (g_ours, ) = torch.autograd.grad(ours, s)
        theirs = 50.0 * _OfficialNormLoss(p=1, negative=negative)(t, s)
        (g_theirs, ) = torch.autograd.grad(theirs, s)
        torch.testing.assert_close(ours, theirs, rtol=tol, atol=0)
        torch.testing.assert_close(g_ours, g_theirs, rtol=tol,
                                   atol=tol * float(g_theirs.abs().max()))


# ---------------------------------------------------------------- IE-DML
DML = 'configs/demo/ie_dml_digits.py'


def _dml(**overrides):
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(osp.join(ROOT, DML))
    cfg.model.update(overrides)
    model = MODELS.build(cfg.model)
    ow = build_optim_wrapper(model, dict(
        constructor='KDMultiOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.05, momentum=0.9)))
    return model, ow


def _batch(n=8):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(0)
    return dict(inputs=[torch.randint(0, 255, (3, 32, 32), generator=g,
                                      dtype=torch.uint8) for _ in range(n)],
                data_samples=[DataSample().set_gt_label(i % 10)
                              for i in range(n)])


def test_dml_alternating_updates(monkeypatch):
    model, ow = _dml()
    model.train()
    groups = model.optim_param_groups()
    ids = {k: {id(p) for p in v} for k, v in groups.items()}
    assert not ids['student_a'] & ids['student_b']
    seen = []
    real = model._outputs

    def spy(name, inputs):
        out = real(name, inputs)
        if name == 'student_a' and not torch.is_grad_enabled():
            seen.append({k: v.clone() for k, v in
                         model.architecture.state_dict().items()
                         if 'weight' in k})
        return out

    monkeypatch.setattr(model, '_outputs', spy)
    before_a = {k: v.clone() for k, v in
                model.architecture.state_dict().items()}
    before_b = {k: v.clone() for k, v in model.peer.state_dict().items()}
    log = model.train_step(_batch(), ow)
    assert {'loss_ce_a', 'loss_dml_a', 'loss_inh_a', 'loss_exp_a',
            'loss_ce_b', 'loss_exp_b'} <= set(log)
    after_a = model.architecture.state_dict()
    assert not torch.equal(after_a['backbone.conv1.weight'],
                           before_a['backbone.conv1.weight'])
    assert not torch.equal(model.peer.state_dict()['backbone.conv1.weight'],
                           before_b['backbone.conv1.weight'])
    # step B ran student A *after* A's update (alternating, as DML)
    assert len(seen) == 1
    assert torch.equal(seen[0]['backbone.conv1.weight'],
                       after_a['backbone.conv1.weight'])


def test_dml_term_by_hand():
    model, _ = _dml()
    model.eval()
    data = model.data_preprocessor(_batch(4), False)
    labels = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        peer = model._outputs('student_b', data['inputs'])
        losses = model.branch_losses('student_a', data['inputs'], labels,
                                     peer)
        za = model._outputs('student_a', data['inputs'])[0]
    pb = torch.softmax(peer[0], 1)
    want = (pb * (pb.log() - torch.log_softmax(za, 1))).sum(1).mean()
    torch.testing.assert_close(losses['loss_dml'], want)
    torch.testing.assert_close(losses['loss_ce'],
                               torch.nn.functional.cross_entropy(za, labels))


def test_factor_spread_by_hand_and_the_anti_collapse_hinge():
    from kd_plugins.algorithms.ie_dml import factor_spread
    g = torch.Generator().manual_seed(0)
    f = torch.rand(6, 2, 3, 3, generator=g)
    n = f.flatten(1) / f.flatten(1).norm(dim=1, keepdim=True)
    want = 1 - (n.mean(0) ** 2).sum()
    torch.testing.assert_close(factor_spread(f), want)
    same = f[:1].repeat(6, 1, 1, 1)  # every image the same factor
    assert float(factor_spread(same)) == pytest.approx(0.0, abs=1e-6)
    # the hinge: present below min_spread, zero above, and its gradient
    # spreads the factors
    model, _ = _dml(min_spread=0.99)
    model.train()
    data = model.data_preprocessor(_batch(8), True)
    labels = torch.arange(8) % 10
    peer = model._outputs('student_b', data['inputs'])
    losses = model.branch_losses('student_a', data['inputs'], labels, peer)
    spread = losses['inh_spread']
    torch.testing.assert_close(losses['loss_spread'],
                               10.0 * (0.99 - spread))
    enc = model.encoders['student_a']['inherit']
    feat = model.architecture.extract_feat(data['inputs'],
                                           stage='backbone')[-1].detach()
    f1 = enc(feat)
    loss = 10.0 * torch.relu(0.99 - factor_spread(f1, detach=False))
    loss.backward()
    with torch.no_grad():
        for p in enc.parameters():
            p -= 0.05 * p.grad
        assert float(factor_spread(enc(feat))) > float(factor_spread(f1))
    model, _ = _dml(min_spread=0.0)
    losses = model.branch_losses('student_a', data['inputs'], labels, peer)
    assert float(losses['loss_spread']) == 0.0
    model, _ = _dml(spread_weight=0.0)
    assert 'loss_spread' not in model.branch_losses(
        'student_a', data['inputs'], labels, peer)


def test_dml_trains_resumes_and_exports_student_a(tmp_path):
    wd = str(tmp_path / 'dml')
    args = ['--cfg-options', 'train_cfg.max_epochs=3',
            'train_cfg.val_interval=3', *SMALL_TRAIN]
    proc = run_tool(['tools/train.py', DML, '--work-dir', wd, *args])
    log = proc.stdout + proc.stderr
    assert 'loss_exp_b' in log
    # preempted (SIGTERM) mid-epoch 3 and resumed from that batch: both
    # peers and both optimizers come back exactly
    part = str(tmp_path / 'part')
    run_tool(['tools/train.py', DML, '--work-dir', part, *args],
             term_at=MID_EPOCH_3)
    n = assert_preempted(part, epoch=3)
    proc = run_tool(['tools/train.py', DML, '--work-dir', part, '--resume',
                     *args])
    assert f'resumed epoch: 2, iter: {n}' in proc.stdout + proc.stderr
    a = torch.load(osp.join(wd, 'epoch_3.pth'), weights_only=True)
    b = torch.load(osp.join(part, 'epoch_3.pth'), weights_only=True)
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k
    out = str(tmp_path / 'export')
    run_tool(['tools/export_student.py', DML, osp.join(wd, 'epoch_3.pth'),
              out])
    keys = torch.load(osp.join(out, 'student.pth'),
                      weights_only=True)['state_dict'].keys()
    assert 'head.fc.weight' in keys
    assert not any(k.startswith(('peer', 'encoders')) for k in keys)
    # the distiller's evaluation (student A, its last validation) == the
    # export under mmpretrain's shipped test script
    top1 = last_val_top1(log)
    assert shipped_test_top1(osp.join(out, 'student.py'),
                             osp.join(out, 'student.pth'),
                             str(tmp_path / 't2')) == pytest.approx(
                                 top1, abs=1e-3)


def test_dml_cifar_config_builds():
    cfg = Config.fromfile(osp.join(ROOT, 'configs/ie_dml_r32_cifar100.py'))
    model = MODELS.build(cfg.model)
    assert set(model.optim_param_groups()) == {'student_a', 'student_b'}
