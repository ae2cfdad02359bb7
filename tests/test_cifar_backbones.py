"""CIFAR KD-benchmark backbones: build, shapes, parameter counts, training."""
import pytest
import torch
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODELS

from kd_plugins.models.backbones.cifar_zoo import CIFAR_ZOO, cifar_classifier
from tests.conftest import ROOT, run_tool

# Published parameter counts (millions, CIFAR-100 classifier included), from
# CRD (Tian et al. 2020) / RepDistiller; two decimals.
PUBLISHED_M = {
    'resnet8': 0.08, 'resnet20': 0.28, 'resnet32': 0.47, 'resnet44': 0.67,
    'resnet56': 0.86, 'resnet110': 1.74, 'resnet8x4': 1.23,
    'resnet32x4': 7.43, 'wrn_16_2': 0.70, 'wrn_40_1': 0.57, 'wrn_40_2': 2.26,
    'vgg8': 3.96, 'vgg13': 9.46, 'MobileNetV2': 0.81, 'ShuffleV1': 0.95,
    'ShuffleV2': 1.36,
}
# (last-stage channels, spatial size) for a 32x32 input
LAST_SHAPE = {'vgg8': (512, 4), 'vgg13': (512, 4), 'MobileNetV2': (1280, 2),
              'ShuffleV1': (960, 4), 'ShuffleV2': (1024, 4)}


@pytest.mark.parametrize('name', list(PUBLISHED_M))
def test_parameter_count_matches_published(name):
    model = MODELS.build(cifar_classifier(name, 100))
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - PUBLISHED_M[name]) <= 0.005 + 0.005 * PUBLISHED_M[name], n


@pytest.mark.parametrize('name', list(CIFAR_ZOO))
def test_forward_shapes_and_out_indices(name):
    cfg, channels = CIFAR_ZOO[name]
    backbone = MODELS.build(dict(cfg, out_indices=tuple(
        range(len(MODELS.build(cfg).stage_names)))))
    x = torch.randn(2, 3, 32, 32)
    outs = backbone(x)
    assert len(outs) == len(backbone.stage_names)
    assert outs[-1].shape[1] == channels
    exp_c, exp_hw = LAST_SHAPE.get(name, (channels, 8))
    assert outs[-1].shape == (2, exp_c, exp_hw, exp_hw)
    assert tuple(o.shape[1] for o in outs) == backbone.out_channels
    # every stage is reachable by module name (mmrazor recorders)
    names = dict(backbone.named_modules())
    assert all(s in names for s in backbone.stage_names)
    # default out_indices: the last stage only, same values
    default = MODELS.build(cfg)
    default.load_state_dict(backbone.state_dict())
    backbone.eval(), default.eval()
    last = default(x)
    assert len(last) == 1
    torch.testing.assert_close(last[0], backbone(x)[-1])


def test_out_indices_validation():
    with pytest.raises(ValueError, match='out of range'):
        MODELS.build(dict(type='ResNetCifarKD', arch='resnet8',
                          out_indices=(3, )))
    from kd_plugins.errors import ConfigError
    with pytest.raises(ConfigError, match='unknown arch'):
        MODELS.build(dict(type='ResNetCifarKD', arch='resnet9'))


def test_frozen_stages_and_norm_eval():
    bb = MODELS.build(dict(type='ResNetCifarKD', arch='resnet20',
                           frozen_stages=1, norm_eval=True))
    bb.train()
    assert not any(p.requires_grad for p in bb.conv1.parameters())
    assert not any(p.requires_grad for p in bb.layer1.parameters())
    assert all(p.requires_grad for p in bb.layer2.parameters())
    assert not bb.layer1.training and not bb.bn1.training
    assert not bb.layer3[0].bn1.training  # norm_eval
    assert bb.layer3[0].training


def test_vgg_pools_before_block4_only_for_64px():
    vgg = MODELS.build(dict(type='VGGCifarKD', arch='vgg8'))
    assert vgg(torch.randn(1, 3, 32, 32))[0].shape[-1] == 4
    assert vgg(torch.randn(1, 3, 64, 64))[0].shape[-1] == 4


@pytest.mark.parametrize('name', ['resnet8x4', 'wrn_16_2', 'vgg8',
                                  'MobileNetV2'])
def test_one_training_iteration_on_digits(name):
    from mmengine.dataset import default_collate  # noqa: F401
    from mmpretrain.registry import DATASETS
    ds = DATASETS.build(dict(type='Digits', split='train',
                             pipeline=[dict(type='PackInputs')]))
    batch = dict(inputs=[ds[i]['inputs'] for i in range(8)],
                 data_samples=[ds[i]['data_samples'] for i in range(8)])
    model = MODELS.build(dict(
        cifar_classifier(name, 10),
        data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor',
                               mean=[127.5] * 3, std=[127.5] * 3)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    log = model.train_step(batch, optim)
    assert torch.isfinite(log['loss'])
    changed = [k for k, v in model.state_dict().items()
               if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert any(k.startswith('backbone.') for k in changed)
    assert 'head.fc.weight' in changed


# Spot checks of upstream key names (RepDistiller models/*.py).
UPSTREAM_KEYS = {
    'resnet8x4': ['conv1.weight', 'layer2.0.downsample.0.weight',
                  'layer3.0.bn2.running_var', 'fc.weight'],
    'wrn_40_2': ['block1.layer.0.convShortcut.weight',
                 'block3.layer.5.conv2.weight', 'bn1.weight', 'fc.bias'],
    'vgg13': ['block0.0.weight', 'block0.4.weight', 'block4.4.bias',
              'classifier.weight'],
    'MobileNetV2': ['conv1.0.weight', 'blocks.1.0.conv.3.weight',
                    'conv2.1.running_mean', 'classifier.0.weight'],
    'ShuffleV1': ['layer1.0.conv1.weight', 'layer3.3.bn3.weight',
                  'linear.weight'],
    'ShuffleV2': ['layer1.0.conv5.weight', 'layer2.7.conv3.weight',
                  'bn2.weight', 'linear.bias'],
}


def _upstream_checkpoint(name, path):
    """A checkpoint in RepDistiller's ckpt_epoch_240.pth layout."""
    from kd_plugins.models.backbones.cifar_zoo import UPSTREAM_CLASSIFIER
    model = MODELS.build(cifar_classifier(name, 100))
    up = {}
    for k, v in model.state_dict().items():
        if k.startswith('backbone.'):
            up[k[len('backbone.'):]] = torch.randn_like(v.float()).to(v.dtype)
        else:
            up[UPSTREAM_CLASSIFIER[name] + k[len('head.fc'):]] = \
                torch.randn_like(v)
    for key in UPSTREAM_KEYS.get(name, []):
        assert key in up, f'{key} not in the upstream layout'
    torch.save({'epoch': 240, 'model': up, 'accuracy': torch.tensor(79.42),
                'optimizer': {'state': {}, 'param_groups': []}}, path)
    return up


@pytest.mark.parametrize('name', list(UPSTREAM_KEYS))
def test_converter_maps_upstream_checkpoints(name, tmp_path):
    src, dst = tmp_path / 'ckpt_epoch_240.pth', tmp_path / 'out.pth'
    up = _upstream_checkpoint(name, src)
    run_tool(['tools/convert_repdistiller_ckpt.py', str(src), str(dst),
              '--arch', name])
    out = torch.load(dst, weights_only=True)
    model = MODELS.build(cifar_classifier(name, 100))
    model.load_state_dict(out['state_dict'], strict=True)
    head = {'vgg13': 'classifier', 'MobileNetV2': 'classifier.0',
            'ShuffleV1': 'linear', 'ShuffleV2': 'linear'}.get(name, 'fc')
    assert torch.equal(model.head.fc.weight, up[head + '.weight'])
    assert out['meta']['epoch'] == 240.0
    assert out['meta']['accuracy'] == pytest.approx(79.42)


def test_converter_lists_mismatched_keys(tmp_path):
    src, dst = tmp_path / 'c.pth', tmp_path / 'o.pth'
    _upstream_checkpoint('resnet8x4', src)
    proc = run_tool(['tools/convert_repdistiller_ckpt.py', str(src), str(dst),
                     '--arch', 'resnet32x4'], check=False)
    assert proc.returncode != 0
    assert 'does not match --arch resnet32x4' in proc.stderr
    assert 'missing' in proc.stderr and 'backbone.layer1.1.' in proc.stderr


def test_teacher_configs_build():
    import glob

    from mmengine.config import Config
    files = sorted(glob.glob(f'{ROOT}/configs/teachers/*_cifar100.py'))
    assert len(files) >= 5
    for f in files:
        cfg = Config.fromfile(f)
        assert cfg.optim_wrapper.optimizer.lr == 0.05
        assert cfg.param_scheduler.milestones == [150, 180, 210]
        assert cfg.train_dataloader.batch_size == 64
        MODELS.build(cfg.model)
