# CIFAR-100 vgg8 (KD benchmark, RepDistiller naming) as an mmpretrain
# ImageClassifier. Import with `_base_` and use `_base_.vgg8`.
vgg8 = dict(
    type='mmpretrain.ImageClassifier',
    backbone=dict(type='mmpretrain.VGGCifarKD', arch='vgg8'),
    neck=dict(type='mmpretrain.GlobalAveragePooling'),
    head=dict(
        type='mmpretrain.LinearClsHead',
        num_classes=100,
        in_channels=512,
        loss=dict(type='mmpretrain.CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
