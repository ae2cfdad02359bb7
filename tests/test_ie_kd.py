"""IE-KD: losses by hand, channel split, exploration sign, frozen stage-1
encoder, stage 1 -> stage 2 on Digits, composition, export, errors."""
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmrazor.registry import MODELS

from tests.conftest import (MID_EPOCH_3, ROOT, SMALL_TRAIN,
                            assert_killed_after, assert_preempted,
                            last_val_top1, run_tool, shipped_test_top1)


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
