"""MultiTeacherDistill: the combination rules by hand, one teacher ==
FastDistill exactly, frozen teachers run once per step, preflight names the
teacher that does not fit, resume after SIGKILL, student export, benchmark."""
import copy
import json
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmpretrain.structures import DataSample
from mmrazor.registry import MODELS

from kd_plugins.algorithms.multi_teacher import confidence_weights, mean_probs
from tests.conftest import (MID_EPOCH_3, ROOT, SMALL_TRAIN, assert_preempted,
                            last_val_top1, run_tool)

MT_KD = 'configs/demo/mt_kd_digits.py'
MT_AEKT = 'configs/demo/mt_aekt_digits.py'


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(inputs=[torch.randint(0, 255, (3, 32, 32), generator=g,
                                      dtype=torch.uint8) for _ in range(n)],
                data_samples=[DataSample().set_gt_label(i % 10)
                              for i in range(n)])


def _build(cfg_file=MT_KD, n_teachers=2, **overrides):
    cfg = Config.fromfile(osp.join(ROOT, cfg_file))
    cfg.model.teachers = cfg.model.teachers[:1] * n_teachers
    cfg.model.teacher_ckpts = [None] * n_teachers
    cfg.model.update(overrides)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    with torch.no_grad():  # distinct teachers
        for k, t in enumerate(model.teachers):
            for p in t.parameters():
                p.add_(0.05 * k * torch.randn_like(p))
    return model, cfg


def _losses(model, seed=0):
    model.train()
    data = model.data_preprocessor(_batch(seed=seed), True)
    return model(**data, mode='loss'), data


def _teacher_logits(model, data):
    with torch.no_grad():
        return [t(data['inputs'], mode='tensor') for t in model.teachers]


def _student_logits(model, data):
    with torch.no_grad():
        return model.student(data['inputs'], mode='tensor')


def _kd(zs, zt, tau=4.0):
    return tau**2 * F.kl_div(F.log_softmax(zs / tau, 1),
                             F.softmax(zt / tau, 1), reduction='batchmean')


@pytest.mark.parametrize('combine', ['mean_logits', 'mean_probs',
                                     'confidence', 'per_teacher'])
@pytest.mark.parametrize('cfg_file, single', [
    (MT_KD, 'configs/demo/kd_digits.py'),
    (MT_AEKT, 'configs/demo/aekt_digits.py')])
def test_one_teacher_equals_fast_distill_exactly(cfg_file, single, combine):
    model, _ = _build(cfg_file, n_teachers=1, combine=combine,
                      teacher_weights=[1.0], tau=4.0)
    cfg = Config.fromfile(osp.join(ROOT, single))
    cfg.model.teacher_ckpt = None
    fast = MODELS.build(cfg.model)
    fast.student.load_state_dict(model.student.state_dict())
    fast.teacher.load_state_dict(model.teachers[0].state_dict())
    ours, _ = _losses(model)
    theirs, _ = _losses(fast)
    for key, value in theirs.items():
        got = ours[key + '_t0' if combine == 'per_teacher' and
                   key.startswith('distill') else key]
        torch.testing.assert_close(got, value, rtol=1e-6, atol=1e-7)


def test_mean_logits_by_hand():
    model, _ = _build(combine='mean_logits')
    losses, data = _losses(model)
    z1, z2 = _teacher_logits(model, data)
    want = _kd(_student_logits(model, data), (z1 + z2) / 2)
    torch.testing.assert_close(losses['distill.loss_kd'], want, rtol=1e-5,
                               atol=1e-6)


def test_mean_probs_by_hand():
    z = [torch.randn(5, 7), torch.randn(5, 7) * 3]
    tau = 4.0
    ens = mean_probs(z, tau)
    want = (F.softmax(z[0] / tau, 1) + F.softmax(z[1] / tau, 1)) / 2
    torch.testing.assert_close(F.softmax(ens / tau, 1), want)
    model, _ = _build(combine='mean_probs', tau=tau)
    losses, data = _losses(model)
    zs = _student_logits(model, data)
    p = sum(F.softmax(t / tau, 1) for t in _teacher_logits(model, data)) / 2
    want = tau**2 * F.kl_div(F.log_softmax(zs / tau, 1), p,
                             reduction='batchmean')
    torch.testing.assert_close(losses['distill.loss_kd'], want, rtol=1e-5,
                               atol=1e-6)


def test_confidence_weights_by_hand():
    z1 = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    z2 = torch.tensor([[0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    y = torch.tensor([0, 2])
    w = confidence_weights([z1, z2], y)
    p1 = F.softmax(z1, 1)[torch.arange(2), y]
    p2 = F.softmax(z2, 1)[torch.arange(2), y]
    torch.testing.assert_close(w[0], p1 / (p1 + p2))  # p_k(y) / sum_j p_j(y)
    assert w[0, 0] > 0.95  # teacher 1 right, teacher 2 wrong on sample 0
    torch.testing.assert_close(w[:, 1], torch.tensor([0.5, 0.5]))  # tie
    model, _ = _build(combine='confidence')
    losses, data = _losses(model)
    zt = _teacher_logits(model, data)
    labels = torch.cat([d.gt_label for d in data['data_samples']])
    ww = confidence_weights(zt, labels)
    ens = ww[0, :, None] * zt[0] + ww[1, :, None] * zt[1]
    torch.testing.assert_close(losses['distill.loss_kd'],
                               _kd(_student_logits(model, data), ens),
                               rtol=1e-5, atol=1e-6)


def test_per_teacher_losses_by_hand():
    model, _ = _build(combine='per_teacher', teacher_weights=[0.7, 0.3])
    losses, data = _losses(model)
    zs = _student_logits(model, data)
    z1, z2 = _teacher_logits(model, data)
    torch.testing.assert_close(losses['distill.loss_kd_t0'],
                               0.7 * _kd(zs, z1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses['distill.loss_kd_t1'],
                               0.3 * _kd(zs, z2), rtol=1e-5, atol=1e-6)
    assert 'distill.loss_kd' not in losses


def test_teachers_frozen_in_eval_mode_and_run_once_per_step():
    from mmengine.optim import build_optim_wrapper
    model, cfg = _build(combine='confidence')
    calls = []
    for k, t in enumerate(model.teachers):
        t.register_forward_hook(lambda m, i, o, k=k: calls.append(k))
    before = copy.deepcopy(model.teacher.state_dict())
    ow = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    for i in range(2):
        model.train_step(_batch(seed=i), ow)
    assert calls == [0, 1, 0, 1]  # once per teacher per step
    assert all(not t.training for t in model.teachers)
    assert all(not p.requires_grad for p in model.teacher.parameters())
    for k, v in model.teacher.state_dict().items():  # BN stats too
        assert torch.equal(v, before[k]), k


def test_clear_errors():
    with pytest.raises(ValueError, match="combine must be one of"):
        _build(combine='vote')
    with pytest.raises(ValueError, match='2 teachers but 1 teacher_ckpts'):
        cfg = Config.fromfile(osp.join(ROOT, MT_KD))
        cfg.model.teacher_ckpts = [None]
        MODELS.build(cfg.model)
    model, _ = _build(combine='mean_probs')
    with pytest.raises(ValueError, match=r'\(N, C\) logits'):
        model.combine_outputs([torch.randn(2, 3, 4, 4)] * 2)
    with pytest.raises(ValueError, match='per_teacher'):
        model.combine_outputs([torch.randn(2, 3), torch.randn(2, 4)])


def test_preflight_names_the_teacher_that_does_not_fit(tmp_path):
    from kd_plugins.engine.pair_checks import check_pairs
    from kd_plugins.errors import PreflightError
    cfg = Config.fromfile(osp.join(ROOT, MT_KD))
    cfg.model.teacher_ckpts = [None, None]
    cfg.model.teachers[1].head.num_classes = 5
    with pytest.raises(PreflightError, match=r'model.teachers\[1\] predicts '
                       '5 classes'):
        check_pairs(cfg)
    cfg = Config.fromfile(osp.join(ROOT, MT_KD))
    cfg.model.teacher_ckpts = [None, None]
    cfg.model.teachers[1].neck = None
    cfg.model.distiller.teacher_recorders.fc.source = 'head.fcc'
    with pytest.raises(PreflightError, match=r"teacher \(model.teachers"
                       r"\[0\]\) does not have"):
        check_pairs(cfg)


def test_trains_resumes_after_preemption_and_exports(digits_teacher,
                                                     tmp_path):
    _, teacher, _ = digits_teacher
    opts = ['--cfg-options', f'model.teacher_ckpts=[{teacher},{teacher}]',
            'model.combine=confidence', 'train_cfg.max_epochs=3',
            'train_cfg.val_interval=3', *SMALL_TRAIN]
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    log = run_tool(['tools/train.py', MT_KD, '--work-dir', full, *opts])
    run_tool(['tools/train.py', MT_KD, '--work-dir', part, *opts],
             term_at=MID_EPOCH_3)  # preempted: resumes from that batch
    assert_preempted(part, epoch=3)
    run_tool(['tools/train.py', MT_KD, '--work-dir', part, '--resume',
              *opts])
    a = torch.load(osp.join(full, 'epoch_3.pth'), weights_only=True)
    b = torch.load(osp.join(part, 'epoch_3.pth'), weights_only=True)
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k
    # student-only checkpoints beside the run's, and the export tool
    assert osp.isfile(osp.join(full, 'student_epoch_3.pth'))
    sd = torch.load(osp.join(full, 'student_epoch_3.pth'),
                    weights_only=True)['state_dict']
    assert not any(k.startswith('teacher') for k in sd)
    out = str(tmp_path / 'export')
    run_tool(['tools/export_student.py', MT_KD,
              osp.join(full, 'epoch_3.pth'), out])
    # the distiller's last validation (its student) == tools/test.py on the
    # exported student
    m2 = tmp_path / 'm2.json'
    run_tool(['tools/test.py', osp.join(out, 'student.py'),
              osp.join(out, 'student.pth'), '--work-dir',
              str(tmp_path / 't2'), '--dump-metrics', str(m2)])
    top = json.loads(m2.read_text())['accuracy/top1']
    assert top == pytest.approx(last_val_top1(log.stdout + log.stderr),
                                abs=1e-3)


def test_benchmark_row_with_two_teachers(tmp_path):
    out = tmp_path / 'b.json'
    run_tool(['tools/benchmark.py', MT_KD, '--device', 'cpu', '--batch',
              '8', '--iters', '2', '--warmup', '1', '--json', str(out)])
    rows = {r['name']: r for r in json.loads(out.read_text())['rows']}
    assert {'student', 'mmrazor-kd', 'MultiTeacherDistill'} <= set(rows)
    from tests.test_fast_path import assert_rows_consistent
    assert_rows_consistent(list(rows.values()), batch=8)
