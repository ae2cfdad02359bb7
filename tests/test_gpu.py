"""The CUDA path (``pytest -m gpu``; skipped without a CUDA device).

Every method trains a few steps on the GPU through tools/train.py with
``--amp bf16`` (KD and ATSC also fp16) and FastDistill's GPU defaults
(channels_last on); the checkpoint written on the GPU resumes on the GPU and
loads on the CPU. The exported student predicts the same on CPU and GPU;
FastDistill on CUDA fp32 equals the CPU run; ``compile=True`` (inductor)
matches eager. Tiny inputs: 20 Digits images per class, 2 + 1 epochs.
``make gpu-check`` runs this file and the throughput benchmarks.
"""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from tests.conftest import ROOT, run_tool

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason='needs a CUDA device (run: make gpu-check)'),
]

SMALL = ['train_dataloader.dataset.num_per_class=20',
         'train_dataloader.batch_size=32', 'default_hooks.logger.interval=1']

METHODS = {
    # name: (config, needs)   needs: 'teacher' / 'teachers' / 'stage1' /
    # 'stats' / ''
    'kd': ('configs/demo/kd_digits.py', 'teacher'),
    'aekt': ('configs/demo/aekt_digits.py', 'teacher'),
    'aekt_distill_first': ('configs/demo/aekt_digits.py', 'teacher'),
    'atsc': ('configs/demo/atsc_digits.py', 'atsc1'),
    'atsc2': ('configs/demo/atsc2_digits.py', 'atsc2'),
    'ie_stage1': ('configs/demo/ie_kd_stage1_digits.py', 'teacher'),
    'ie_kd': ('configs/demo/ie_kd_digits.py', 'stage1'),
    'ie_dml': ('configs/demo/ie_dml_digits.py', ''),
    'kd_layer': ('configs/demo/kd_layer_digits.py', 'stats'),
    'mt_kd': ('configs/demo/mt_kd_digits.py', 'teachers'),
}


def _train(cfg, wd, opts, epochs, *extra):
    return run_tool(['tools/train.py', cfg, '--work-dir', wd, *extra,
                     '--cfg-options', *SMALL, *opts,
                     f'train_cfg.max_epochs={epochs}',
                     f'train_cfg.val_interval={epochs}'], timeout=600)


@pytest.fixture(scope='module')
def gpu_teacher(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp('gpu_teacher'))
    proc = _train('configs/demo/teacher_digits.py', wd, [], 3, '--amp',
                  'bf16')
    assert 'cuda' in (proc.stdout + proc.stderr).lower()
    return osp.join(wd, 'epoch_3.pth')


@pytest.fixture(scope='module')
def gpu_stage1(gpu_teacher, tmp_path_factory):
    wd = str(tmp_path_factory.mktemp('gpu_stage1'))
    _train('configs/demo/ie_kd_stage1_digits.py', wd,
           [f'model.teacher_ckpt={gpu_teacher}'], 2, '--amp', 'bf16')
    return osp.join(wd, 'epoch_2.pth')


@pytest.fixture(scope='module')
def gpu_stats(gpu_teacher, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('gpu_stats') / 'stats.npz')
    proc = run_tool(['tools/kd_layer_stats.py',
                     'configs/demo/kd_layer_digits.py', gpu_teacher, out,
                     '--max-locations', '20000'], timeout=600)
    assert '[kd_layer_stats] teacher on cuda' in proc.stdout
    return out


def _needs(kind, request):
    if kind == 'teacher':
        return [f'model.teacher_ckpt={request.getfixturevalue("gpu_teacher")}']
    t = request.getfixturevalue('gpu_teacher') if kind else None
    if kind == 'atsc1':
        return [f'model.teacher_ckpts=[{t}]']
    if kind in ('atsc2', 'teachers'):
        return [f'model.teacher_ckpts=[{t},{t}]']
    if kind == 'stage1':
        s1 = request.getfixturevalue('gpu_stage1')
        return [f'model.teacher_ckpt={t}',
                f'model.distiller.connectors.t_enc.stage1_ckpt={s1}']
    if kind == 'stats':
        s = request.getfixturevalue('gpu_stats')
        return [f'model.teacher_ckpt={t}'] + [
            f'model.distiller.distill_losses.{k}.stats_file={s}'
            for k in ('loss_penult', 'loss_inter')]
    return []


@pytest.mark.parametrize('name', sorted(METHODS))
def test_method_trains_on_gpu_with_bf16_resumes_and_loads_on_cpu(
        name, request, tmp_path):
    from mmrazor.registry import MODELS
    cfg_file, kind = METHODS[name]
    opts = _needs(kind, request)
    if name == 'aekt_distill_first':
        opts.append('model.architecture.head.order=distill_first')
    wd = str(tmp_path / name)
    log = _train(cfg_file, wd, opts, 2, '--amp', 'bf16')
    text = log.stdout + log.stderr
    assert 'non-finite' not in text
    # the GPU checkpoint resumes on the GPU ...
    _train(cfg_file, wd, opts, 3, '--amp', 'bf16', '--resume')
    ckpt = osp.join(wd, 'epoch_3.pth')
    assert osp.isfile(ckpt)
    # ... and loads on the CPU into the CPU-built model (strict)
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    cfg = Config.fromfile(osp.join(ROOT, cfg_file))
    for key in ('teacher_ckpt', 'teacher_ckpts'):
        if key in cfg.model:
            cfg.model[key] = None if key == 'teacher_ckpt' else \
                [None] * len(cfg.model.teachers)
    for o in opts:  # the method files (stage 1, statistics) of the run
        if 'stage1_ckpt' in o or 'stats_file' in o:
            cfg.merge_from_dict(dict([o.split('=', 1)]))
    if name == 'aekt_distill_first':
        cfg.model.architecture.head.order = 'distill_first'
    model = MODELS.build(cfg.model)
    model.load_state_dict(state['state_dict'])  # strict


@pytest.mark.parametrize('name', ['kd', 'atsc'])
def test_fp16_amp_trains(name, request, tmp_path):
    cfg_file, kind = METHODS[name]
    log = _train(cfg_file, str(tmp_path / name), _needs(kind, request), 2,
                 '--amp', 'fp16')
    assert 'non-finite' not in log.stdout + log.stderr


def test_exported_student_predicts_the_same_on_cpu_and_gpu(gpu_teacher,
                                                           tmp_path):
    from mmpretrain.apis import init_model
    wd = str(tmp_path / 'kd')
    _train('configs/demo/kd_digits.py', wd,
           [f'model.teacher_ckpt={gpu_teacher}'], 2, '--amp', 'bf16')
    out = str(tmp_path / 'export')
    run_tool(['tools/export_student.py', 'configs/demo/kd_digits.py',
              osp.join(wd, 'epoch_2.pth'), out])
    cpu = init_model(osp.join(out, 'student.py'),
                     osp.join(out, 'student.pth'), device='cpu')
    gpu = init_model(osp.join(out, 'student.py'),
                     osp.join(out, 'student.pth'), device='cuda')
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        a = cpu(x, mode='tensor')
        b = gpu(x.cuda(), mode='tensor').cpu()
        with torch.autocast('cuda', dtype=torch.bfloat16):
            c = gpu(x.cuda(), mode='tensor').float().cpu()
    torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(c, a, rtol=5e-2, atol=5e-2)  # bf16
    assert (c.argmax(1) == a.argmax(1)).float().mean() >= 0.9


def _kd_model(device, **overrides):
    from mmrazor.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs/demo/kd_digits.py'))
    cfg.model.teacher_ckpt = None
    cfg.model.update(overrides)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.to(device), cfg


def _batches(n=3):
    from mmpretrain.structures import DataSample
    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        out.append(dict(
            inputs=[torch.randint(0, 255, (3, 32, 32), generator=g,
                                  dtype=torch.uint8) for _ in range(16)],
            data_samples=[DataSample().set_gt_label((i + j) % 10)
                          for j in range(16)]))
    return out


def _steps(model, cfg, batches):
    from mmengine.optim import build_optim_wrapper
    ow = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    logs = [model.train_step(b, ow) for b in batches]
    return logs


def test_fast_distill_cuda_fp32_equals_cpu():
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cpu, cfg = _kd_model('cpu', channels_last=False)
    gpu, _ = _kd_model('cuda')  # GPU defaults: channels_last
    assert gpu.channels_last
    gpu.load_state_dict(cpu.state_dict())
    batches = _batches()
    a = _steps(cpu, cfg, batches)
    b = _steps(gpu, cfg, batches)
    for la, lb in zip(a, b):
        torch.testing.assert_close(lb['loss'].cpu(), la['loss'],
                                   rtol=1e-3, atol=1e-4)
    sa, sb = cpu.student.state_dict(), gpu.student.state_dict()
    for k in sa:
        if sa[k].is_floating_point():
            torch.testing.assert_close(sb[k].cpu(), sa[k], rtol=1e-3,
                                       atol=1e-4, msg=k)


def test_bf16_teacher_weights_on_gpu():
    model, cfg = _kd_model('cuda', teacher_dtype='bf16')
    assert next(model.teacher.parameters()).dtype == torch.bfloat16
    logs = _steps(model, cfg, _batches(2))
    assert all(torch.isfinite(log['loss']) for log in logs)


def test_compile_with_inductor_matches_eager():
    eager, cfg = _kd_model('cuda')
    compiled, _ = _kd_model('cuda', compile=True)
    compiled.load_state_dict(eager.state_dict())
    batches = _batches(2)
    a = _steps(eager, cfg, batches)
    b = _steps(compiled, cfg, batches)
    for la, lb in zip(a, b):
        torch.testing.assert_close(lb['loss'], la['loss'], rtol=1e-2,
                                   atol=1e-3)
    # the keys did not change (checkpoints stay compatible)
    assert set(compiled.state_dict()) == set(eager.state_dict())
