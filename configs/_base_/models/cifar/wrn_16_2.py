# CIFAR-100 wrn_16_2 (KD benchmark, RepDistiller naming) as an mmpretrain
# ImageClassifier. Import with `_base_` and use `_base_.wrn_16_2`.
wrn_16_2 = dict(
    type='mmpretrain.ImageClassifier',
    backbone=dict(type='mmpretrain.WideResNetCifarKD', arch='wrn_16_2'),
    neck=dict(type='mmpretrain.GlobalAveragePooling'),
    head=dict(
        type='mmpretrain.LinearClsHead',
        num_classes=100,
        in_channels=128,
        loss=dict(type='mmpretrain.CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
