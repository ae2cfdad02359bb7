# CIFAR-100 vgg13 (KD benchmark, RepDistiller naming) as an mmpretrain
# ImageClassifier. Import with `_base_` and use `_base_.vgg13`.
vgg13 = dict(
    type='mmpretrain.ImageClassifier',
    backbone=dict(type='mmpretrain.VGGCifarKD', arch='vgg13'),
    neck=dict(type='mmpretrain.GlobalAveragePooling'),
    head=dict(
        type='mmpretrain.LinearClsHead',
        num_classes=100,
        in_channels=512,
        loss=dict(type='mmpretrain.CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
