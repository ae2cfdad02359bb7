"""AEKT: loss vs the formula, gradients, DKD reduction, head wirings,
end to end (train, evaluate, resume, export), configs."""
import json
import os
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmpretrain.registry import MODELS as PT_MODELS
from mmrazor.registry import MODELS as RZ_MODELS

from tests.conftest import (MID_EPOCH_3, ROOT, SMALL_TRAIN,
                            assert_killed_after, run_tool, shipped_test_top1)


def aekt(**kw):
    return RZ_MODELS.build(dict(type='AEKTLoss', **kw))


def reference_loss(s, t, y, tau, alpha, beta, ratio_max, adaptive=True):
    """The spec's formula with plain probabilities (no log-space tricks)."""
    ps = torch.softmax(s.double() / tau, 1)
    pt = torch.softmax(t.double() / tau, 1)
    total = 0.0
    for n in range(s.shape[0]):
        k = int(y[n])
        bs = torch.stack([ps[n, k], 1 - ps[n, k]])
        bt = torch.stack([pt[n, k], 1 - pt[n, k]])
        kl_b = (bt * (bt / bs).log()).sum()
        r = min(float(pt[n, k] / ps[n, k]), ratio_max) if adaptive else 1.0
        keep = [j for j in range(s.shape[1]) if j != k]
        hs = ps[n, keep] / ps[n, keep].sum()
        ht = pt[n, keep] / pt[n, keep].sum()
        kl_h = (ht * (ht / hs).log()).sum()
        total = total + alpha * r * kl_b + beta * kl_h
    return tau**2 * total / s.shape[0]


@pytest.mark.parametrize('tau,alpha,beta,ratio_max', [
    (1.0, 1.0, 1.0, 10.0), (4.0, 1.0, 8.0, 2.0), (2.0, 0.5, 0.25, 1.5)])
def test_loss_matches_formula(tau, alpha, beta, ratio_max):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 7, generator=g) * 2
    t = torch.randn(6, 7, generator=g) * 3
    y = torch.tensor([0, 3, 6, 2, 2, 5])
    got = aekt(tau=tau, alpha=alpha, beta=beta, ratio_max=ratio_max)(s, t, y)
    want = reference_loss(s, t, y, tau, alpha, beta, ratio_max)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    # the ratio really matters: differs from the non-adaptive value
    plain = reference_loss(s, t, y, tau, alpha, beta, ratio_max, False)
    assert abs(float(want - plain)) > 1e-4


def test_gradients_match_the_analytic_gradient():
    """dL/dz_t = tau*alpha*r*(pS_t - pT_t)/N;
    dL/dz_j = tau/N * [alpha*r*hatpS_j*(pT_t - pS_t)
                       + beta*(hatpS_j - hatpT_j)]
    (spec, "Why adaptive")."""
    tau, alpha, beta, rmax = 2.0, 1.0, 3.0, 10.0
    g = torch.Generator().manual_seed(1)
    s = (torch.randn(4, 5, generator=g) * 2).double().requires_grad_()
    t = (torch.randn(4, 5, generator=g) * 2).double()
    y = torch.tensor([1, 0, 4, 2])
    loss = aekt(tau=tau, alpha=alpha, beta=beta, ratio_max=rmax)(
        s, t, y)
    loss.backward()
    ps = torch.softmax(s.detach() / tau, 1)
    pt = torch.softmax(t / tau, 1)
    n = s.shape[0]
    for i in range(n):
        k = int(y[i])
        r = min(float(pt[i, k] / ps[i, k]), rmax)
        # target logit
        want_t = tau * alpha * r * (ps[i, k] - pt[i, k]) / n
        assert float(s.grad[i, k]) == pytest.approx(float(want_t), rel=1e-4,
                                                    abs=1e-6)
        # a non-target logit
        j = (k + 1) % 5
        keep = [c for c in range(5) if c != k]
        hs = ps[i, j] / ps[i, keep].sum()
        ht = pt[i, j] / pt[i, keep].sum()
        want_j = tau / n * (alpha * r * hs * (pt[i, k] - ps[i, k])
                            + beta * (hs - ht))
        assert float(s.grad[i, j]) == pytest.approx(float(want_j), rel=1e-4,
                                                    abs=1e-6)


def test_ratio_is_clamped_and_carries_no_gradient():
    # teacher far more confident than the student: r hits ratio_max
    s = torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64,
                     requires_grad=True)
    t = torch.tensor([[8.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0])
    loss = aekt(tau=1.0, alpha=1.0, beta=0.0, ratio_max=1.5)(s, t, y)
    loss.backward()
    ps, pt = torch.softmax(s.detach(), 1), torch.softmax(t, 1)
    assert float(pt[0, 0] / ps[0, 0]) > 1.5
    # gradient = clamp * plain binary-KL gradient (no d r / d z term)
    assert float(s.grad[0, 0]) == pytest.approx(
        1.5 * float(ps[0, 0] - pt[0, 0]), rel=1e-6)


@pytest.mark.parametrize('tau,alpha,beta', [(1.0, 1.0, 0.5), (4.0, 1.0, 8.0),
                                            (2.0, 2.0, 1.0)])
def test_ratio_one_reduces_to_mmrazor_dkd(tau, alpha, beta):
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8, ), generator=g)
    dkd = RZ_MODELS.build(dict(type='DKDLoss', tau=tau, alpha=alpha,
                               beta=beta))(s, t, y)
    ours = aekt(tau=tau, alpha=alpha, beta=beta, adaptive=False)(s, t, y)
    torch.testing.assert_close(ours, dkd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16,
                                   torch.bfloat16])
def test_finite_for_two_classes_onehot_teachers_and_huge_logits(dtype):
    loss = aekt(tau=4.0, beta=8.0)
    cases = [
        (torch.randn(4, 2), torch.randn(4, 2)),  # C = 2
        (torch.randn(4, 10), torch.eye(10)[:4] * 1e4),  # one-hot teacher
        (torch.randn(4, 10) * 1e4, torch.randn(4, 10) * 1e4),  # huge
    ]
    y = torch.tensor([0, 1, 1, 0])
    for s, t in cases:
        s = s.to(dtype).requires_grad_()
        out = loss(s, t.to(dtype), y)
        out.backward()
        assert out.dtype == torch.float32
        assert torch.isfinite(out) and torch.isfinite(s.grad).all()


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match='same number of classes'):
        aekt()(torch.randn(2, 10), torch.randn(2, 100), torch.tensor([0, 1]))


def test_warmup_reads_the_iteration_from_message_hub():
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    hub = MessageHub.get_instance('aekt_warmup_test')
    full = aekt(tau=2.0)(s, t, y)
    loss = aekt(tau=2.0, warmup_iters=10)
    hub.update_info('iter', 4)
    torch.testing.assert_close(loss(s, t, y), full * 0.5)
    hub.update_info('iter', 50)
    torch.testing.assert_close(loss(s, t, y), full)


def _head(order):
    head = PT_MODELS.build(dict(type='AEKTHead', num_classes=4,
                                in_channels=6, order=order,
                                loss=dict(type='CrossEntropyLoss')))
    head.init_weights()
    return head


@pytest.mark.parametrize('order', ['classify_first', 'distill_first'])
def test_head_wirings(order):
    from mmpretrain.structures import DataSample
    head = _head(order)
    assert torch.equal(head.serialization.weight, torch.eye(4))
    assert torch.equal(head.serialization.bias, torch.zeros(4))
    with torch.no_grad():  # a non-trivial serialization to tell them apart
        head.serialization.weight.copy_(torch.randn(4, 4))
    feats = (torch.randn(3, 6), )
    z = head.fc(feats[0])
    zs = head.serialization(z)
    z_cls, z_kd = (z, zs) if order == 'classify_first' else (zs, z)
    torch.testing.assert_close(head(feats), z_cls)
    recorded = []
    head.kd_out.register_forward_hook(lambda m, i, o: recorded.append(o))
    samples = [DataSample().set_gt_label(i) for i in (0, 3, 1)]
    losses = head.loss(feats, samples)
    torch.testing.assert_close(recorded[0], z_kd)
    ce = torch.nn.functional.cross_entropy(z_cls, torch.tensor([0, 3, 1]))
    torch.testing.assert_close(losses['loss'], ce)


def test_head_deploy_drops_or_keeps_serialization():
    for order, keeps in (('classify_first', False), ('distill_first', True)):
        head = _head(order)
        state = {f'head.{k}': v for k, v in head.state_dict().items()}
        cfg, sd = PT_MODELS.get('AEKTHead').deploy(
            dict(type='AEKTHead', num_classes=4, in_channels=6, order=order),
            state)
        assert any('serialization' in k for k in sd) is keeps
        assert cfg['type'].endswith('AEKTHead' if keeps else 'LinearClsHead')
        assert 'head.fc.weight' in sd


def test_serialization_gradient_is_scaled_and_the_forward_exact():
    from mmpretrain.structures import DataSample
    feats = (torch.randn(5, 6), )
    samples = [DataSample().set_gt_label(i % 4) for i in range(5)]
    import copy
    grads = {}
    head0 = _head('distill_first')  # CE reaches S in this wiring
    with torch.no_grad():
        head0.serialization.weight.copy_(torch.eye(4) + 0.1)
    for scale in (1.0, 0.01):
        head = copy.deepcopy(head0)
        head.grad_scale = scale
        loss = head.loss(feats, samples)['loss']
        loss.backward()
        grads[scale] = (head.serialization.weight.grad.clone(),
                        head.fc.weight.grad.clone(), float(loss))
    torch.testing.assert_close(grads[0.01][0], 0.01 * grads[1.0][0])
    torch.testing.assert_close(grads[0.01][1], grads[1.0][1])  # fc unchanged
    assert grads[0.01][2] == pytest.approx(grads[1.0][2])  # same forward
    with pytest.raises(ValueError, match='serialization_grad_scale'):
        PT_MODELS.build(dict(type='AEKTHead', num_classes=3, in_channels=2,
                             serialization_grad_scale=0.0))


def test_trains_at_the_baselines_learning_rate(digits_teacher, tmp_path):
    """lr 0.2 (what the student alone and KD use): without the gradient
    scale of the serialization layer this run is non-finite in epoch 2."""
    _, teacher, _ = digits_teacher
    proc = _aekt_run(str(tmp_path / 'lr02'), teacher, epochs=3,
                     lr_opt='optim_wrapper.optimizer.lr=0.2')
    assert 'non-finite' not in proc.stdout + proc.stderr
    assert re.findall(r'accuracy/top1: ([\d.]+)', proc.stdout)


def test_bad_order_is_a_clear_error():
    with pytest.raises(ValueError, match='classify_first'):
        PT_MODELS.build(dict(type='AEKTHead', num_classes=3, in_channels=2,
                             order='both'))


AEKT_CFG = 'configs/demo/aekt_digits.py'


def _aekt_run(wd, teacher, *extra, epochs=3, cfg=AEKT_CFG, kill_at=None,
              lr_opt=None, small=()):
    return run_tool(['tools/train.py', cfg, '--work-dir', wd, *extra,
                     '--cfg-options', f'model.teacher_ckpt={teacher}',
                     f'train_cfg.max_epochs={epochs}',
                     f'train_cfg.val_interval={epochs}',
                     *([lr_opt] if lr_opt else []), *small], kill_at=kill_at)


def test_demo_trains_evaluates_resumes_and_exports(digits_teacher, tmp_path):
    """The distill-first order, whose deployed student keeps the
    serialization layer; the default order's export is checked by
    test_exported_student_logits_equal_the_distillers."""
    order = 'distill_first'
    _, teacher, _ = digits_teacher
    cfg = Config.fromfile(osp.join(ROOT, AEKT_CFG))
    cfg.model.architecture.head.order = order
    cfg_file = str(tmp_path / 'aekt.py')
    cfg.dump(cfg_file)
    full = str(tmp_path / 'full')
    log = _aekt_run(full, teacher, cfg=cfg_file, small=SMALL_TRAIN)
    assert 'distill.loss_aekt' in log.stdout + log.stderr
    a = torch.load(osp.join(full, 'epoch_3.pth'), weights_only=True)
    ser = a['state_dict']['architecture.head.serialization.weight']
    assert not torch.equal(ser, torch.eye(10))  # it learned something
    # killed (SIGKILL) mid-epoch 3 and resumed: the full run's weights
    part = str(tmp_path / 'part')
    _aekt_run(part, teacher, cfg=cfg_file, kill_at=MID_EPOCH_3,
              small=SMALL_TRAIN)
    assert_killed_after(part, epoch=2)
    _aekt_run(part, teacher, '--resume', cfg=cfg_file, small=SMALL_TRAIN)
    b = torch.load(osp.join(part, 'epoch_3.pth'), weights_only=True)
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k
    # evaluate the distiller, export, evaluate the export: same top-1
    m1, m2 = tmp_path / 'm1.json', tmp_path / 'm2.json'
    ckpt = osp.join(full, 'epoch_3.pth')
    run_tool(['tools/test.py', cfg_file, ckpt, '--work-dir',
              str(tmp_path / 't1'), '--dump-metrics', str(m1)])
    out = str(tmp_path / 'export')
    run_tool(['tools/export_student.py', cfg_file, ckpt, out])
    exported = torch.load(osp.join(out, 'student.pth'), weights_only=True)
    keys = exported['state_dict'].keys()
    assert not any(k.startswith('teacher') for k in keys)
    assert any('serialization' in k for k in keys)  # distill-first keeps it
    run_tool(['tools/test.py', osp.join(out, 'student.py'),
              osp.join(out, 'student.pth'), '--work-dir',
              str(tmp_path / 't2'), '--dump-metrics', str(m2)])
    top1 = [json.loads(m.read_text())['accuracy/top1'] for m in (m1, m2)]
    assert top1[0] == pytest.approx(top1[1], abs=1e-6)
    # mmpretrain's own shipped test script agrees
    assert shipped_test_top1(osp.join(out, 'student.py'),
                             osp.join(out, 'student.pth'),
                             str(tmp_path / 't3')) == pytest.approx(
                                 top1[0], abs=1e-3)
    # the serialization heat map tool
    run_tool(['tools/plot_serialization.py', ckpt, str(tmp_path / 'ser')])
    assert (tmp_path / 'ser.png').stat().st_size > 1000
    import numpy as np
    np.testing.assert_allclose(np.load(tmp_path / 'ser.npy'), ser.numpy())


def test_exported_student_logits_equal_the_distillers(digits_teacher,
                                                      tmp_path):
    from mmrazor.registry import MODELS

    from kd_plugins.export import export_student
    _, teacher, _ = digits_teacher
    wd = str(tmp_path / 'run')
    _aekt_run(wd, teacher, epochs=2, small=SMALL_TRAIN)
    ckpt = osp.join(wd, 'epoch_2.pth')
    cfg_path, pth = export_student(osp.join(ROOT, AEKT_CFG), ckpt,
                                   str(tmp_path / 'exp'))
    # the default order (classify first): the deployed head is the classifier
    # alone, no serialization layer, no teacher
    keys = torch.load(pth, weights_only=True)['state_dict'].keys()
    assert not any('serialization' in k or k.startswith('teacher')
                   for k in keys)
    cfg = Config.fromfile(osp.join(ROOT, AEKT_CFG))
    cfg.model.teacher_ckpt = None
    distiller = MODELS.build(cfg.model)
    distiller.load_state_dict(
        torch.load(ckpt, weights_only=True)['state_dict'])
    from mmpretrain.apis import init_model
    student = init_model(cfg_path, pth, device='cpu')
    x = torch.randn(4, 3, 32, 32)
    distiller.eval(), student.eval()
    with torch.no_grad():
        a = distiller.student(x, mode='tensor')
        b = student(x, mode='tensor')
    torch.testing.assert_close(a, b)


def test_in1k_config_runs_two_iterations_on_tiny_images(tmp_path):
    """configs/aekt_r34_r18_in1k.py with a local teacher file and a tiny
    random 224-px image folder; everything else as shipped."""
    import numpy as np
    from PIL import Image
    cfg = Config.fromfile(osp.join(ROOT, 'configs/aekt_r34_r18_in1k.py'))
    assert cfg.model.teacher_ckpt.endswith('.pth')
    assert 'resnet34' in cfg.model.teacher_ckpt
    loss_cfg = cfg.model.distiller.distill_losses.loss_aekt
    assert (loss_cfg.tau, loss_cfg.alpha, loss_cfg.beta) == (1.0, 1.0, 0.5)
    assert cfg.optim_wrapper.optimizer.lr == 0.2
    assert cfg.param_scheduler.milestones == [30, 60, 90]
    # a local teacher checkpoint instead of the download
    teacher = PT_MODELS.build(cfg.model.teacher)
    tpath = str(tmp_path / 'r34.pth')
    torch.save({'state_dict': teacher.state_dict()}, tpath)
    rng = np.random.default_rng(0)
    for c in ('n01440764', 'n01443537'):
        os.makedirs(tmp_path / 'imgs' / c)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (240, 260, 3),
                                         dtype=np.uint8)).save(
                tmp_path / 'imgs' / c / f'{i}.JPEG')
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset = dict(type='CustomDataset',
                                data_root=str(tmp_path / 'imgs'),
                                pipeline=cfg[key].dataset.pipeline)
        cfg[key].batch_size = 2
        cfg[key].num_workers = 0
        cfg[key].persistent_workers = False
    cfg.model.teacher_ckpt = tpath
    cfg.train_cfg.max_epochs = 1
    cfg.default_hooks.logger.interval = 1
    cfg_file = str(tmp_path / 'in1k.py')
    cfg.dump(cfg_file)
    proc = run_tool(['tools/train.py', cfg_file, '--work-dir',
                     str(tmp_path / 'wd')])
    log = proc.stdout + proc.stderr
    assert 'Epoch(train) [1][2/2]' in log and 'distill.loss_aekt' in log
    assert osp.isfile(tmp_path / 'wd' / 'epoch_1.pth')


def test_cifar_config_builds():
    cfg = Config.fromfile(osp.join(ROOT,
                                   'configs/aekt_r32x4_r8x4_cifar100.py'))
    loss_cfg = cfg.model.distiller.distill_losses.loss_aekt
    assert (loss_cfg.tau, loss_cfg.beta) == (4.0, 8.0)
    cfg.model.teacher_ckpt = None
    model = RZ_MODELS.build(cfg.model)
    assert model.student.head.serialization.weight.shape == (100, 100)
