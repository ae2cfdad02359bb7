# IE-KD stage 2 on Digits: CE + inheritance/exploration losses (lambda 50 each,
# 50/50 channel split) against the frozen stage-1 teacher encoder.
#   python tools/train.py configs/demo/ie_kd_digits.py --cfg-options \
#     model.teacher_ckpt=work_dirs/demo/teacher.pth \
#     model.distiller.connectors.t_enc.stage1_ckpt=work_dirs/demo/ie_stage1.pth
_base_ = [
    '../_base_/models/demo_digits.py', '../_base_/datasets/digits.py',
    '../_base_/schedules/digits_cosine.py', '../_base_/default_runtime.py',
    '../_base_/distill/ie_kd.py'
]
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
_connectors = _base_.ie_connectors
_connectors['t_enc']['stage1_ckpt'] = \
    'work_dirs/demo/ie_stage1.pth'
model = dict(
    _scope_='mmrazor',
    type='FastDistill',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(**_base_.student_model, data_preprocessor=_cls_pre),
    teacher=dict(**_base_.teacher_model, data_preprocessor=_cls_pre),
    teacher_ckpt='work_dirs/demo/teacher.pth',
    distiller=dict(
        type='ConfigurableDistiller',
        student_recorders=_base_.ie_student_recorders,
        teacher_recorders=_base_.ie_teacher_recorders,
        connectors=_connectors,
        distill_losses=_base_.ie_losses,
        loss_forward_mappings=_base_.ie_mappings))
default_hooks = dict(logger=dict(interval=10))
# Schedule: the learning rate and epochs that the committed Digits benchmark
# chose on its validation split (full regime; docs/results/
# digits_benchmark.json; tests/test_digits_benchmark.py checks that they agree).
optim_wrapper = dict(optimizer=dict(lr=0.2))
train_cfg = dict(max_epochs=24)
