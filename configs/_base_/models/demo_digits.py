# The demo pair on Digits (32x32): a ResNet-18-style CIFAR teacher of width 16
# (0.70 M parameters) and a 3-stage width-8 student (0.04 M parameters).
teacher_model = dict(
    type='mmpretrain.ImageClassifier',
    backbone=dict(type='mmpretrain.ResNet_CIFAR', depth=18, stem_channels=16,
                  base_channels=16),
    neck=dict(type='mmpretrain.GlobalAveragePooling'),
    head=dict(type='mmpretrain.LinearClsHead', num_classes=10,
              in_channels=128,
              loss=dict(type='mmpretrain.CrossEntropyLoss', loss_weight=1.0)))

student_model = dict(
    type='mmpretrain.ImageClassifier',
    backbone=dict(type='mmpretrain.ResNet_CIFAR', depth=18, stem_channels=8,
                  base_channels=8, num_stages=3, strides=(1, 2, 2),
                  dilations=(1, 1, 1), out_indices=(2, )),
    neck=dict(type='mmpretrain.GlobalAveragePooling'),
    head=dict(type='mmpretrain.LinearClsHead', num_classes=10, in_channels=32,
              loss=dict(type='mmpretrain.CrossEntropyLoss', loss_weight=1.0)))
