# CIFAR-100 ShuffleV1 (KD benchmark, RepDistiller naming) as an mmpretrain
# ImageClassifier. Import with `_base_` and use `_base_.shufflev1`.
shufflev1 = dict(
    type='mmpretrain.ImageClassifier',
    backbone=dict(type='mmpretrain.ShuffleNetV1CifarKD'),
    neck=dict(type='mmpretrain.GlobalAveragePooling'),
    head=dict(
        type='mmpretrain.LinearClsHead',
        num_classes=100,
        in_channels=960,
        loss=dict(type='mmpretrain.CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
