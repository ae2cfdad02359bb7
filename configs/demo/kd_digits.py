# Demo baseline KD: mmrazor's KLDivergence (Hinton KD, tau 4) through
# FastDistill (mmrazor's SingleTeacherDistill + the fast path) on the Digits
# pair; every method in kd_plugins is compared to it.
#   python tools/train.py configs/demo/kd_digits.py \
#       --cfg-options model.teacher_ckpt=work_dirs/demo/teacher.pth
_base_ = [
    '../_base_/models/demo_digits.py', '../_base_/datasets/digits.py',
    '../_base_/schedules/digits_cosine.py', '../_base_/default_runtime.py',
    '../_base_/distill/kd.py'
]
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
model = dict(
    _scope_='mmrazor',
    type='FastDistill',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(**_base_.student_model, data_preprocessor=_cls_pre),
    teacher=dict(**_base_.teacher_model, data_preprocessor=_cls_pre),
    teacher_ckpt='work_dirs/demo/teacher.pth',
    distiller=_base_.kd_distiller)  # tau 4
default_hooks = dict(logger=dict(interval=10))
# Schedule: the learning rate and epochs that the committed Digits benchmark
# chose on its validation split (full regime; docs/results/
# digits_benchmark.json; tests/test_digits_benchmark.py checks that they agree).
optim_wrapper = dict(optimizer=dict(lr=0.2))
train_cfg = dict(max_epochs=24)
