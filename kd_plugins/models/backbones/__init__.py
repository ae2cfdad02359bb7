from .mobilenetv2_cifar_kd import MobileNetV2CifarKD
from .resnet_cifar_kd import ResNetCifarKD
from .shufflenet_cifar_kd import ShuffleNetV1CifarKD, ShuffleNetV2CifarKD
from .vgg_cifar_kd import VGGCifarKD
from .wrn import WideResNetCifarKD

__all__ = ['ResNetCifarKD', 'WideResNetCifarKD', 'VGGCifarKD',
           'MobileNetV2CifarKD', 'ShuffleNetV1CifarKD', 'ShuffleNetV2CifarKD']
