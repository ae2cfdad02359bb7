"""FastDistill's fast path keeps results and the teacher frozen; the
benchmark tool runs on CPU and prints every column."""
import copy
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmrazor.registry import MODELS

from tests.conftest import ROOT, raw_batch, run_tool
from tests.tolerance import CONV_TERMS, rounding_tol

KD = osp.join(ROOT, 'configs/demo/kd_digits.py')


def _model(**kw):
    cfg = Config.fromfile(KD)
    m = cfg.model.to_dict()
    m.update(teacher_ckpt=None, **kw)
    torch.manual_seed(0)
    return MODELS.build(m)


def _batch(n=8):
    return raw_batch(n, seed=1)


def _losses(model, data):
    model.train()
    d = model.data_preprocessor(copy.deepcopy(data), True)
    return model(**d, mode='loss')


def _ow(model):
    return build_optim_wrapper(model, dict(
        optimizer=dict(type='SGD', lr=0.1, momentum=0.9)))


@pytest.fixture
def one_thread():
    """torch 2.14 CPU NHWC training can abort with several threads (see
    FastDistill): the layout test runs single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_channels_last_is_on_by_default_only_with_a_gpu():
    assert _model().channels_last == torch.cuda.is_available()


def test_channels_last_changes_nothing_but_the_layout(one_thread):
    """NHWC and NCHW give the same losses and the same step.

    Both run in float64: the two layouts use different convolution kernels
    (other summation orders), and in float32 their results differ by
    rounding that depends on the CPU's vector width (1.4e-6 on the KD term
    with AVX2 / AVX-512 kernels, 0 with the default ones). In float64 that
    rounding is below ``rounding_tol(float64, ...)`` (~1e-11 for these
    reductions) while a layout mistake (a permuted axis, a lost conversion)
    moves the losses by orders of magnitude more.
    """
    nhwc, nchw = _model(channels_last=True), _model(channels_last=False)
    nchw.load_state_dict(nhwc.state_dict())
    nhwc.double()  # the preprocessor's float64 mean/std promote the batch
    nchw.double()
    conv = nhwc.student.backbone.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert conv.dtype == torch.float64
    tol = rounding_tol(torch.float64, terms=CONV_TERMS)
    data = _batch()
    a, b = _losses(nhwc, data), _losses(nchw, data)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == torch.float64, k
        torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol)
    # and after a training step the weights agree too
    nhwc.train_step(data, _ow(nhwc))
    nchw.train_step(data, _ow(nchw))
    for (k, p), q in zip(nhwc.state_dict().items(),
                         nchw.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=tol, atol=tol, msg=k)


def test_same_losses_as_mmrazor_single_teacher_distill():
    fast = _model(channels_last=False)
    cfg = Config.fromfile(KD).model.to_dict()
    cfg.update(type='SingleTeacherDistill', teacher_ckpt=None)
    ref = MODELS.build(cfg)
    ref.load_state_dict(fast.state_dict())
    data = _batch()
    a, b = _losses(fast, data), _losses(ref, data)
    assert a.keys() == b.keys()  # mmrazor logs no teacher loss either
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_teacher_is_frozen_in_eval_and_runs_once_without_its_loss(
        monkeypatch):
    model = _model()
    calls = []
    model.teacher.backbone.register_forward_hook(
        lambda *a: calls.append(torch.is_grad_enabled()))
    monkeypatch.setattr(model.teacher.head, 'loss', lambda *a, **k: (
        _ for _ in ()).throw(AssertionError('teacher loss computed')))
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    ow = _ow(model)
    for _ in range(2):
        model.train()  # the runner calls train() every epoch
        assert not model.teacher.training
        assert all(not m.training for m in model.teacher.modules())
        model.train_step(_batch(), ow)
    assert calls == [False, False]  # once per step, no autograd
    assert all(p.grad is None and not p.requires_grad
               for p in model.teacher.parameters())
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k  # BN statistics included


def test_bf16_teacher_weights_and_float_losses():
    model = _model(teacher_dtype='bf16', channels_last=False)
    ref = _model(channels_last=False)
    ref.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    assert {p.dtype for p in model.teacher.parameters()} == {torch.bfloat16}
    data = _batch()
    a, b = _losses(model, data), _losses(ref, data)
    for k in a:
        assert a[k].dtype == torch.float32, k
        assert torch.isfinite(a[k])
    # bf16 teacher logits: the KD term moves by far less than its size
    kd_a, kd_b = a['distill.loss_kd'], b['distill.loss_kd']
    assert abs(kd_a - kd_b) < 0.05 * kd_b + 1e-3


def test_compiled_model_keeps_results_and_checkpoint_keys():
    """``compile=`` compiles the student and the teacher (dynamo captures
    their graphs) and changes neither the checkpoint keys nor the losses:
    the ``eager`` backend runs the captured graph's ops as they are, so the
    losses are bit for bit the uncompiled ones."""
    from torch._dynamo.utils import counters
    model = _model(channels_last=False, compile=dict(backend='eager'))
    ref = _model(channels_last=False)
    assert model.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(model.state_dict())
    data = _batch()
    counters.clear()
    a = _losses(model, data)
    assert counters['stats']['unique_graphs'] >= 2  # student and teacher
    b = _losses(ref, data)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_trainable_teacher_is_refused():
    from kd_plugins.errors import ConfigError
    with pytest.raises(ConfigError, match='frozen teacher'):
        _model(teacher_trainable=True)


def assert_rows_consistent(rows, batch):
    """What a benchmark table must satisfy: img/s is the batch over the
    step time, and both ratio columns are quotients of the ms/step column
    (mmrazor-kd's own row is then 1 by construction, so it is not checked
    alone)."""
    by = {r['name']: r for r in rows}
    for r in rows:
        assert r['ms_per_step'] > 0, r
        assert r['img_per_s'] == pytest.approx(
            batch * 1000 / r['ms_per_step'], rel=1e-6), r
        assert r['speedup_vs_mmrazor_kd'] == pytest.approx(
            by['mmrazor-kd']['ms_per_step'] / r['ms_per_step'], rel=1e-6), r
        assert r['step_vs_student'] == pytest.approx(
            r['ms_per_step'] / by['student']['ms_per_step'], rel=1e-6), r


@pytest.mark.parametrize('cfg', ['configs/demo/aekt_digits.py',
                                 'configs/demo/atsc_digits.py'])
def test_benchmark_tool_on_cpu(tmp_path, cfg):
    out = str(tmp_path / 'bench.json')
    proc = run_tool(['tools/benchmark.py', cfg, '--device', 'cpu',
                     '--batch', '4', '--size', '32', '--iters', '1',
                     '--warmup', '1', '--json', out],
                    env={'OMP_NUM_THREADS': '1'})
    text = proc.stdout
    for col in ('img/s', 'ms/step', 'x mmrazor-kd', 'step / student',
                'peak mem (MB)', 'params (M)'):
        assert col in text
    with open(out) as f:
        res = json.load(f)
    names = [r['name'] for r in res['rows']]
    algo = (['ATSC', 'ATSC (reuse_teacher_features)'] if 'atsc' in cfg
            else ['FastDistill'])
    assert names == ['student', 'mmrazor-kd', *algo]
    assert res['meta']['device'] == 'cpu'
    assert_rows_consistent(res['rows'], batch=4)


def test_connectors_are_amp_safe():
    """Under mixed precision the connectors return the dtype they were
    given, so losses never mix bf16 and fp32 (mmrazor issue #190)."""
    conns = [
        (dict(type='ATSCProjector', in_channels=8, out_channels=16), 8),
        (dict(type='IEStudentEncoder', in_channels=8, out_channels=4), 8),
        (dict(type='IEAutoEncoder', in_channels=8, rate=0.5), 8),
    ]
    for cfg, c in conns:
        conn = MODELS.build(cfg)
        x = torch.randn(2, c, 4, 4)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y = conn(x.bfloat16())
        assert y.dtype == torch.bfloat16, cfg['type']
        assert conn(x).dtype == torch.float32, cfg['type']
