"""CUDA placement without a GPU.

Every method is built on the CPU, moved to CUDA inside
``torch._subclasses.fake_tensor.FakeTensorMode`` (its tensors then claim to be
on ``cuda:0`` and carry shapes, dtypes and devices but no data), and runs its
preprocessing, training forward and losses there. A tensor that the code
creates on the CPU and that meets a CUDA one raises
``FakeTensorDeviceMismatchError``, as it would on a real GPU; the negative
control below proves that this harness catches it. What needs a real GPU is
not covered here: backward, optimizer steps, autocast and kernels
(``make gpu-check`` runs those: tests/test_gpu.py), and the KD-layer
statistics tool's feature extraction (it moves features to numpy, which a
fake tensor cannot give); the statistics it writes are covered, as buffers
of the losses that move with the model.
"""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmrazor.registry import MODELS
from torch._subclasses.fake_tensor import (FakeTensorDeviceMismatchError,
                                           FakeTensorMode)

from kd_plugins.utils.teacher import clear_teacher_ckpts
from tests.conftest import ROOT, raw_batch

# method: its Digits config
METHODS = {
    'kd': 'configs/demo/kd_digits.py',
    'aekt_classify_first': 'configs/demo/aekt_digits.py',
    'aekt_distill_first': 'configs/demo/aekt_digits.py',
    'atsc': 'configs/demo/atsc_digits.py',
    'atsc_two_teachers': 'configs/demo/atsc2_digits.py',
    'ie_kd_stage1': 'configs/demo/ie_kd_stage1_digits.py',
    'ie_kd_stage2': 'configs/demo/ie_kd_digits.py',
    'ie_kd_on_kd': 'configs/demo/ie_kd_kd_digits.py',
    'ie_dml': 'configs/demo/ie_dml_digits.py',
    'kd_layer': 'configs/demo/kd_layer_digits.py',
    'kd_layer1': 'configs/demo/kd_layer1_digits.py',
    'mt_kd': 'configs/demo/mt_kd_digits.py',
    'mt_aekt': 'configs/demo/mt_aekt_digits.py',
}


def method_config(name, tmp_path):
    """The method's config, runnable without files: random teachers,
    synthetic KD-layer statistics, IE-KD stage 2 with a random frozen
    stage-1 encoder."""
    from kd_plugins.kd_layer_stats import synthetic_stats
    cfg = Config.fromfile(osp.join(ROOT, METHODS[name]))
    model = cfg.model
    clear_teacher_ckpts(model)
    if name == 'aekt_distill_first':
        model.architecture.head.order = 'distill_first'
    losses = (model.get('distiller') or {}).get('distill_losses') or {}
    if any('stats_file' in v for v in losses.values()):
        stats = str(tmp_path / 'stats.npz')
        synthetic_stats(cfg, stats, size=32)
        for v in losses.values():
            if 'stats_file' in v:
                v.stats_file = stats
    for conn in ((model.get('distiller') or {}).get('connectors')
                 or {}).values():
        if 'stage1_ckpt' in conn:
            conn.stage1_ckpt = None
    return cfg


def _build_on_cpu(name, tmp_path):
    return MODELS.build(method_config(name, tmp_path).model.to_dict())


def _raw_batch(n=4):
    """The loader's batch, already stacked: mmengine's stack_batch computes
    its padding from tensor values, which a fake tensor does not have."""
    return raw_batch(n)


def _on_fake_cuda(model, step):
    """``model`` moved to CUDA in fake mode, then ``step(model)``; returns
    the step's tensors (all must claim cuda)."""
    with FakeTensorMode(allow_non_fake_inputs=True):
        model.to('cuda')
        out = step(model)
    return out


@pytest.mark.parametrize('name', sorted(METHODS))
def test_training_forward_and_losses_stay_on_cuda(name, tmp_path):
    model = _build_on_cpu(name, tmp_path)

    def step(m):
        m.train()
        data = m.data_preprocessor(_raw_batch(), True)
        assert data['inputs'].device.type == 'cuda'
        losses = m(**data, mode='loss')
        if name.startswith('atsc'):  # step 2: the second teacher forward
            losses['teacher_ce'] = m.teacher_bias_loss()
        m.eval()
        logits = m(data['inputs'], mode='tensor')
        preds = m(data['inputs'], data['data_samples'], mode='predict')
        return losses, logits, preds

    losses, logits, preds = _on_fake_cuda(model, step)
    tensors = {k: v for k, v in losses.items() if torch.is_tensor(v)}
    assert any(k.split('.')[-1].startswith('loss') for k in tensors), tensors
    for k, v in tensors.items():
        assert v.device.type == 'cuda', (k, v.device)
        assert v.dtype == torch.float32, (k, v.dtype)
    logits = logits[0] if isinstance(logits, (list, tuple)) else logits
    assert logits.device.type == 'cuda'
    assert preds[0].pred_score.device.type == 'cuda'


def test_the_harness_catches_a_cpu_tensor():
    """Negative control: a loss that builds a CPU tensor (the bug this file
    looks for) fails in fake CUDA mode."""

    class Bad(torch.nn.Module):
        def forward(self, x):
            return x * torch.ones(x.shape[1])  # device not given: CPU

    with pytest.raises(FakeTensorDeviceMismatchError):
        _on_fake_cuda(Bad(), lambda m: m(torch.randn(2, 3, device='cuda')))
