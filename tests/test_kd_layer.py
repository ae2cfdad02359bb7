"""KD layer (letKD) deploy-time parts: the layer's math by hand, insertion
into backbones of different families by config, export equality.
(The supervision and the statistics tool are not implemented yet.)"""
import pytest
import torch
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
    with pytest.raises(KeyError, match='nearest valid names') as err:
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
