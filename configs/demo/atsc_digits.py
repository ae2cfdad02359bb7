# ATSC on the Digits demo pair: the student (3-stage ResNet, 32 ch, 8x8 map)
# learns through a SimKD projector into the teacher's feature space (128 ch,
# 4x4; the student map is pooled to 4x4) and predicts with the teacher's live
# classifier; the teacher adapts, anchored to its pre-trained weights.
#   python tools/train.py configs/demo/atsc_digits.py \
#       --cfg-options model.teacher_ckpts=work_dirs/demo/teacher.pth
_base_ = [
    '../_base_/models/demo_digits.py', '../_base_/datasets/digits.py',
    '../_base_/schedules/digits_cosine.py', '../_base_/default_runtime.py'
]
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
model = dict(
    _scope_='mmrazor',
    type='ATSC',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(**_base_.student_model, data_preprocessor=_cls_pre),
    teachers=[dict(**_base_.teacher_model, data_preprocessor=_cls_pre)],
    teacher_ckpts=['work_dirs/demo/teacher.pth'],
    projectors=[dict(type='ATSCProjector', in_channels=32, out_channels=128,
                     factor=2)],
    mse_weight=1.0,  # b
    anchor_weight=1.0,  # w (CIFAR value)
    ce_weight=0.0,  # c
    kd_weight=0.0)  # d
# main optimizer + a separate one for the teacher classifier biases (step 2)
optim_wrapper = dict(constructor='KDMultiOptimWrapperConstructor',
                     optimizer=dict(lr=0.1))  # lr: see the schedule below
default_hooks = dict(logger=dict(interval=10))
# several updates per iteration: under DDP, this wrapper calls the method's own
# train_step and synchronises every optimizer's gradients (kd_plugins.engine.dist)
model_wrapper_cfg = dict(type='KDModelWrapper')
# Schedule: the learning rate and epochs that the committed Digits benchmark
# chose on its validation split (full regime; docs/results/
# digits_benchmark.json; tests/test_digits_benchmark.py checks that they agree).
train_cfg = dict(max_epochs=24)
