"""The CIFAR KD-benchmark networks by their RepDistiller / mdistiller names.

``CIFAR_ZOO[name] = (backbone config, channels of the last stage)``. Used by
``tools/convert_repdistiller_ckpt.py`` and by ``configs/_base_/models/cifar``.
"""
from __future__ import annotations

from ...errors import ConfigError

CIFAR_ZOO: dict[str, tuple[dict, int]] = {}
for _name in ('resnet8', 'resnet14', 'resnet20', 'resnet32', 'resnet44',
              'resnet56', 'resnet110'):
    CIFAR_ZOO[_name] = (dict(type='ResNetCifarKD', arch=_name), 64)
CIFAR_ZOO['resnet8x4'] = (dict(type='ResNetCifarKD', arch='resnet8x4'), 256)
CIFAR_ZOO['resnet32x4'] = (dict(type='ResNetCifarKD', arch='resnet32x4'), 256)
CIFAR_ZOO['wrn_16_2'] = (dict(type='WideResNetCifarKD', arch='wrn_16_2'), 128)
CIFAR_ZOO['wrn_40_1'] = (dict(type='WideResNetCifarKD', arch='wrn_40_1'), 64)
CIFAR_ZOO['wrn_40_2'] = (dict(type='WideResNetCifarKD', arch='wrn_40_2'), 128)
CIFAR_ZOO['vgg8'] = (dict(type='VGGCifarKD', arch='vgg8'), 512)
CIFAR_ZOO['vgg13'] = (dict(type='VGGCifarKD', arch='vgg13'), 512)
CIFAR_ZOO['MobileNetV2'] = (dict(type='MobileNetV2CifarKD'), 1280)
CIFAR_ZOO['ShuffleV1'] = (dict(type='ShuffleNetV1CifarKD'), 960)
CIFAR_ZOO['ShuffleV2'] = (dict(type='ShuffleNetV2CifarKD'), 1024)

# Name of the final linear layer in the upstream checkpoints.
UPSTREAM_CLASSIFIER = {name: 'fc' for name in CIFAR_ZOO}
UPSTREAM_CLASSIFIER.update({'vgg8': 'classifier', 'vgg13': 'classifier',
                            'MobileNetV2': 'classifier.0',
                            'ShuffleV1': 'linear', 'ShuffleV2': 'linear'})


def cifar_classifier(name: str, num_classes: int = 100) -> dict:
    """An mmpretrain ``ImageClassifier`` config for a zoo network."""
    if name not in CIFAR_ZOO:
        raise ConfigError(f'unknown CIFAR network {name!r}; choose from '
                          f'{", ".join(CIFAR_ZOO)}.')
    backbone, channels = CIFAR_ZOO[name]
    return dict(
        type='mmpretrain.ImageClassifier',
        backbone=dict(backbone, type='mmpretrain.' + backbone['type']),
        neck=dict(type='mmpretrain.GlobalAveragePooling'),
        head=dict(type='mmpretrain.LinearClsHead', num_classes=num_classes,
                  in_channels=channels,
                  loss=dict(type='mmpretrain.CrossEntropyLoss',
                            loss_weight=1.0),
                  topk=(1, 5) if num_classes >= 5 else (1, )))
