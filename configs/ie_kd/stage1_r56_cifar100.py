# IE-KD stage 1, CIFAR-100 teacher resnet56: teacher factor auto-encoder on
# backbone.layer3 (64 ch, 8x8), rate 0.5, L1 reconstruction. Official
# schedule: 30 epochs at a constant lr 0.1 (SGD nesterov, momentum 0.9,
# wd 5e-4).
# Output: the teacher encoder that configs/ie_kd_r56_r20_cifar100.py loads.
_base_ = [
    '../_base_/models/cifar/resnet56.py', '../_base_/models/cifar/resnet20.py',
    '../_base_/datasets/cifar100_kd.py', '../_base_/default_runtime.py',
    '../_base_/distill/ie_kd.py'
]
train_dataloader = dict(batch_size=128)
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
_s1 = _base_.ie_stage1_distiller
_s1['teacher_recorders']['feat']['source'] = 'backbone.layer3'
_s1['connectors']['t_ae']['in_channels'] = 64
model = dict(
    _scope_='mmrazor',
    type='FastDistill',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(**_base_.resnet20, data_preprocessor=_cls_pre),
    teacher=dict(**_base_.resnet56, data_preprocessor=_cls_pre),
    teacher_ckpt='work_dirs/teachers/resnet56_cifar100.pth',
    student_trainable=False,
    calculate_student_loss=False,
    distiller=_s1)
# DDP: the student runs (under no_grad) but is not trained in stage 1; only
# this config needs DDP to tolerate parameters without gradients
find_unused_parameters = True
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4,
                   nesterov=True))
param_scheduler = dict(type='ConstantLR', factor=1.0, by_epoch=True, begin=0,
                       end=30)  # official: a constant lr
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=30,
                 val_interval=1000)
# only the auto-encoder learns: no accuracy to validate or test (mmengine
# needs each loader, its loop config and its evaluator all set or all None)
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
default_hooks = dict(checkpoint=dict(save_best=None))
