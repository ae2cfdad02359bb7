# IE-KD stage 1 on Digits: train the teacher factor auto-encoder (Coder
# encoder + mirrored decoder, rate 0.5) on the frozen teacher's last map with
# an L1 reconstruction loss (mmrazor's Factor-Transfer pre-training pattern:
# student_trainable=False, calculate_student_loss=False). Its checkpoint holds
# the teacher encoder that stage 2 (configs/demo/ie_kd_digits.py) loads.
#   python tools/train.py configs/demo/ie_kd_stage1_digits.py \
#       --cfg-options model.teacher_ckpt=work_dirs/demo/teacher.pth
_base_ = [
    '../_base_/models/demo_digits.py', '../_base_/datasets/digits.py',
    '../_base_/schedules/digits_cosine.py', '../_base_/default_runtime.py',
    '../_base_/distill/ie_kd.py'
]
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
_s1 = _base_.ie_stage1_distiller
_s1['teacher_recorders']['feat']['source'] = 'backbone.layer4'
_s1['connectors']['t_ae']['in_channels'] = 128
model = dict(
    _scope_='mmrazor',
    type='FastDistill',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(**_base_.student_model, data_preprocessor=_cls_pre),
    teacher=dict(**_base_.teacher_model, data_preprocessor=_cls_pre),
    teacher_ckpt='work_dirs/demo/teacher.pth',
    student_trainable=False,
    calculate_student_loss=False,
    distiller=_s1)
# DDP: the student runs (under no_grad) but is not trained in stage 1; only
# this config needs DDP to tolerate parameters without gradients
find_unused_parameters = True
# stage 1's own short schedule (not tuned: the auto-encoder converges in it)
optim_wrapper = dict(optimizer=dict(lr=0.05))
train_cfg = dict(max_epochs=8, val_interval=100)
# only the auto-encoder learns: no accuracy to validate or test (mmengine
# needs each loader, its loop config and its evaluator all set or all None)
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(save_best=None))
