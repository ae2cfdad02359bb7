# CIFAR-100 resnet110 (KD benchmark, RepDistiller naming) as an mmpretrain
# ImageClassifier. Import with `_base_` and use `_base_.resnet110`.
resnet110 = dict(
    type='mmpretrain.ImageClassifier',
    backbone=dict(type='mmpretrain.ResNetCifarKD', arch='resnet110'),
    neck=dict(type='mmpretrain.GlobalAveragePooling'),
    head=dict(
        type='mmpretrain.LinearClsHead',
        num_classes=100,
        in_channels=64,
        loss=dict(type='mmpretrain.CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
