# mmpretrain ImageNet ResNets used as teachers / students, with the official
# mmpretrain checkpoints. Override the teacher's with --cfg-options
# model.teacher_ckpt=PATH (FastDistill configs: KD, AEKT, IE-KD, KD layer) or
# model.teacher_ckpts=[PATH] (ATSC: a list, one per teacher).
_ckpt = 'https://download.openmmlab.com/mmclassification/v0/resnet/'
resnet18_ckpt = _ckpt + 'resnet18_8xb32_in1k_20210831-fbbb1da6.pth'
resnet34_ckpt = _ckpt + 'resnet34_8xb32_in1k_20210831-f257d4e6.pth'
resnet50_ckpt = _ckpt + 'resnet50_8xb32_in1k_20210831-ea4938fc.pth'


def _resnet(depth, in_channels):
    return dict(
        type='mmpretrain.ImageClassifier',
        backbone=dict(type='mmpretrain.ResNet', depth=depth, num_stages=4,
                      out_indices=(3, ), style='pytorch'),
        neck=dict(type='mmpretrain.GlobalAveragePooling'),
        head=dict(type='mmpretrain.LinearClsHead', num_classes=1000,
                  in_channels=in_channels,
                  loss=dict(type='mmpretrain.CrossEntropyLoss',
                            loss_weight=1.0),
                  topk=(1, 5)))


resnet18 = _resnet(18, 512)
resnet34 = _resnet(34, 512)
resnet50 = _resnet(50, 2048)
