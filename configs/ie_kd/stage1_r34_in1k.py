# IE-KD stage 1, ImageNet teacher ResNet-34 (official mmpretrain weights):
# teacher factor auto-encoder on backbone.layer4 (512 ch, 7x7), rate 0.5,
# L1 reconstruction. Output: the teacher encoder for configs/ie_kd_r34_r18_in1k.py.
_base_ = [
    '../_base_/models/resnet_in1k.py', '../_base_/datasets/imagenet.py',
    '../_base_/default_runtime.py'
]
train_dataloader = dict(batch_size=64)
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
model = dict(
    _scope_='mmrazor',
    type='SingleTeacherDistill',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(**_base_.resnet18, data_preprocessor=_cls_pre),
    teacher=dict(**_base_.resnet34, data_preprocessor=_cls_pre),
    teacher_ckpt=_base_.resnet34_ckpt,
    student_trainable=False,
    calculate_student_loss=False,
    distiller=dict(
        type='ConfigurableDistiller',
        teacher_recorders=dict(
            feat=dict(type='ModuleOutputs', source='backbone.layer4')),
        connectors=dict(
            t_ae=dict(type='IEAutoEncoder', in_channels=512, rate=0.5)),
        distill_losses=dict(loss_rec=dict(type='L1Loss', loss_weight=1.0)),
        loss_forward_mappings=dict(
            loss_rec=dict(
                s_feature=dict(from_student=False, recorder='feat',
                               connector='t_ae'),
                t_feature=dict(from_student=False, recorder='feat')))))
find_unused_parameters = True
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.2, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(type='CosineAnnealingLR', by_epoch=True, T_max=10)
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=1000)
val_dataloader = None
val_cfg = None
val_evaluator = None
default_hooks = dict(checkpoint=dict(save_best=None))
