# Demo baseline KD: mmrazor's own SingleTeacherDistill + KLDivergence (Hinton
# KD, tau 4) on the Digits pair; every method in kd_plugins is compared to it.
#   python tools/train.py configs/demo/kd_digits.py \
#       --cfg-options model.teacher_ckpt=work_dirs/teacher_digits/epoch_12.pth
_base_ = [
    '../_base_/models/demo_digits.py', '../_base_/datasets/digits.py',
    '../_base_/schedules/digits_cosine.py', '../_base_/default_runtime.py'
]
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
model = dict(
    _scope_='mmrazor',
    type='SingleTeacherDistill',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(**_base_.student_model, data_preprocessor=_cls_pre),
    teacher=dict(**_base_.teacher_model, data_preprocessor=_cls_pre),
    teacher_ckpt='work_dirs/teacher_digits/epoch_12.pth',
    distiller=dict(
        type='ConfigurableDistiller',
        student_recorders=dict(
            fc=dict(type='ModuleOutputs', source='head.fc')),
        teacher_recorders=dict(
            fc=dict(type='ModuleOutputs', source='head.fc')),
        distill_losses=dict(
            loss_kd=dict(type='KLDivergence', tau=4, loss_weight=1.0)),
        loss_forward_mappings=dict(
            loss_kd=dict(
                preds_S=dict(from_student=True, recorder='fc'),
                preds_T=dict(from_student=False, recorder='fc')))))
find_unused_parameters = True
default_hooks = dict(logger=dict(interval=10))
