# IE-DML on CIFAR-100: two resnet32 students trained together (alternating
# DML updates) with inheritance / exploration terms against each other.
# Schedule: IE-KD's CIFAR recipe (160 epochs, batch 128, SGD nesterov 0.1).
_base_ = [
    '_base_/models/cifar/resnet32.py', '_base_/datasets/cifar100_kd.py',
    '_base_/schedules/cifar_ie_kd_160e.py', '_base_/default_runtime.py'
]
train_dataloader = dict(batch_size=128)
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
_enc = dict(
    inherit=dict(type='IEStudentEncoder', in_channels=64, out_channels=32,
                 part='inherit'),
    explore=dict(type='IEStudentEncoder', in_channels=64, out_channels=32,
                 part='explore'))
model = dict(
    _scope_='mmrazor',
    type='IEDML',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(**_base_.resnet32, data_preprocessor=_cls_pre),
    peer=dict(**_base_.resnet32, data_preprocessor=_cls_pre),
    encoders_a=_enc,
    encoders_b=_enc,
    dml_weight=1.0)
optim_wrapper = dict(constructor='KDMultiOptimWrapperConstructor')
# several updates per iteration: under DDP, this wrapper calls the method's own
# train_step and synchronises every optimizer's gradients (kd_plugins.engine.dist)
model_wrapper_cfg = dict(type='KDModelWrapper')
