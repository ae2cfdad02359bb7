# Two-teacher ATSC, CIFAR-100: resnet32x4 and wrn_40_2 -> resnet8x4. One
# projector per teacher; the student predicts with the mean of both adapted
# teacher classifiers; the loss is the sum over teachers.
_base_ = [
    '_base_/models/cifar/resnet32x4.py', '_base_/models/cifar/wrn_40_2.py',
    '_base_/models/cifar/resnet8x4.py', '_base_/datasets/cifar100_kd.py',
    '_base_/schedules/cifar100_kd_240e.py', '_base_/default_runtime.py'
]
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
model = dict(
    _scope_='mmrazor',
    type='ATSC',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(**_base_.resnet8x4, data_preprocessor=_cls_pre),
    teachers=[dict(**_base_.resnet32x4, data_preprocessor=_cls_pre),
              dict(**_base_.wrn_40_2, data_preprocessor=_cls_pre)],
    teacher_ckpts=['work_dirs/teachers/resnet32x4_cifar100.pth',
                   'work_dirs/teachers/wrn_40_2_cifar100.pth'],
    projectors=[dict(type='ATSCProjector', in_channels=256, out_channels=256),
                dict(type='ATSCProjector', in_channels=256, out_channels=128)],
    mse_weight=1.0, anchor_weight=1.0, ce_weight=0.0, kd_weight=0.0)
optim_wrapper = dict(constructor='KDMultiOptimWrapperConstructor')
# several updates per iteration: under DDP, this wrapper calls the method's own
# train_step and synchronises every optimizer's gradients (kd_plugins.engine.dist)
model_wrapper_cfg = dict(type='KDModelWrapper')
