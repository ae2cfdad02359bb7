# CIFAR-100 ShuffleV2 (KD benchmark, RepDistiller naming) as an mmpretrain
# ImageClassifier. Import with `_base_` and use `_base_.shufflev2`.
shufflev2 = dict(
    type='mmpretrain.ImageClassifier',
    backbone=dict(type='mmpretrain.ShuffleNetV2CifarKD'),
    neck=dict(type='mmpretrain.GlobalAveragePooling'),
    head=dict(
        type='mmpretrain.LinearClsHead',
        num_classes=100,
        in_channels=1024,
        loss=dict(type='mmpretrain.CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
