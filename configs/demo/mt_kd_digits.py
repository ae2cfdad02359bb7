# Multi-teacher KD on Digits: the demo's two teachers (same network, seeds 0
# and 1) -> the demo student, mmrazor's KLDivergence (tau 4) on the mean of
# the teachers' logits (MultiTeacherDistill, combine='mean_logits').
#   python tools/train.py configs/demo/mt_kd_digits.py --cfg-options \
#       model.teacher_ckpts=[work_dirs/demo/teacher.pth,work_dirs/demo/teacher2.pth]
_base_ = [
    '../_base_/models/demo_digits.py', '../_base_/datasets/digits.py',
    '../_base_/schedules/digits_cosine.py', '../_base_/default_runtime.py',
    '../_base_/distill/kd.py'
]
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
model = dict(
    _scope_='mmrazor',
    type='MultiTeacherDistill',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(**_base_.student_model, data_preprocessor=_cls_pre),
    teachers=[dict(**_base_.teacher_model, data_preprocessor=_cls_pre),
              dict(**_base_.teacher_model, data_preprocessor=_cls_pre)],
    teacher_ckpts=['work_dirs/demo/teacher.pth',
                   'work_dirs/demo/teacher2.pth'],
    combine='mean_logits',  # or 'mean_probs' (tau=4), 'confidence',
                            # 'per_teacher'
    distiller=_base_.kd_distiller)
default_hooks = dict(logger=dict(interval=10))
# Schedule: the learning rate and epochs that the committed Digits benchmark
# chose on its validation split (full regime; docs/results/
# digits_benchmark.json; tests/test_digits_benchmark.py checks that they agree).
optim_wrapper = dict(optimizer=dict(lr=0.2))
train_cfg = dict(max_epochs=24)
