# IE-KD stage 1, ImageNet teacher ResNet-34 (official mmpretrain weights):
# teacher factor auto-encoder on backbone.layer4 (512 ch, 7x7), rate 0.5,
# L1 reconstruction. Output: the teacher encoder for configs/ie_kd_r34_r18_in1k.py.
_base_ = [
    '../_base_/models/resnet_in1k.py', '../_base_/datasets/imagenet.py',
    '../_base_/default_runtime.py',
    '../_base_/distill/ie_kd.py'
]
train_dataloader = dict(batch_size=64)
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
_s1 = _base_.ie_stage1_distiller
_s1['teacher_recorders']['feat']['source'] = 'backbone.layer4'
_s1['connectors']['t_ae']['in_channels'] = 512
model = dict(
    _scope_='mmrazor',
    type='FastDistill',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(**_base_.resnet18, data_preprocessor=_cls_pre),
    teacher=dict(**_base_.resnet34, data_preprocessor=_cls_pre),
    teacher_ckpt=_base_.resnet34_ckpt,
    student_trainable=False,
    calculate_student_loss=False,
    distiller=_s1)
# DDP: the student runs (under no_grad) but is not trained in stage 1; only
# this config needs DDP to tolerate parameters without gradients
find_unused_parameters = True
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.2, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(type='CosineAnnealingLR', by_epoch=True, T_max=10)
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=10,
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
