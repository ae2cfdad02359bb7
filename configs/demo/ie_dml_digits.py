# IE-DML on Digits: two students (the demo student, and a ResNet-18 w8 with a
# 64-channel last stage) trained together with alternating updates; each has
# inheritance/exploration encoders and learns from the other (DML KL + IE).
# Validation, test and export use student A.
#   python tools/train.py configs/demo/ie_dml_digits.py
_base_ = [
    '../_base_/models/demo_digits.py', '../_base_/datasets/digits.py',
    '../_base_/schedules/digits_cosine.py', '../_base_/default_runtime.py'
]
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
_peer = dict(**_base_.teacher_model, data_preprocessor=_cls_pre)
_peer['backbone'] = dict(_peer['backbone'], stem_channels=8, base_channels=8)
_peer['head'] = dict(_peer['head'], in_channels=64)
model = dict(
    _scope_='mmrazor',
    type='IEDML',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(**_base_.student_model, data_preprocessor=_cls_pre),
    peer=_peer,
    encoders_a=dict(
        inherit=dict(type='IEStudentEncoder', in_channels=32, out_channels=16,
                     part='inherit'),
        explore=dict(type='IEStudentEncoder', in_channels=32, out_channels=16,
                     part='explore')),
    encoders_b=dict(
        inherit=dict(type='IEStudentEncoder', in_channels=64, out_channels=16,
                     part='inherit'),
        explore=dict(type='IEStudentEncoder', in_channels=64, out_channels=16,
                     part='explore')),
    inherit_loss=dict(type='IEInheritLoss', loss_weight=50.0),
    explore_loss=dict(type='IEExploreLoss', loss_weight=50.0),
    dml_weight=1.0)
optim_wrapper = dict(constructor='KDMultiOptimWrapperConstructor',
                     optimizer=dict(lr=0.2))  # lr: see the schedule below
default_hooks = dict(logger=dict(interval=10))
# several updates per iteration: under DDP, this wrapper calls the method's own
# train_step and synchronises every optimizer's gradients (kd_plugins.engine.dist)
model_wrapper_cfg = dict(type='KDModelWrapper')
# Schedule: the learning rate and epochs that the committed Digits benchmark
# chose on its validation split (full regime; docs/results/
# digits_benchmark.json; tests/test_digits_benchmark.py checks that they agree).
train_cfg = dict(max_epochs=24)
