# Multi-teacher AEKT on Digits: the demo's two teachers -> the AEKT student
# (AEKTHead), AEKTLoss on the teachers' per-sample confidence-weighted logits
# (MultiTeacherDistill, combine='confidence'); loss settings as
# configs/demo/aekt_digits.py.
#   python tools/train.py configs/demo/mt_aekt_digits.py --cfg-options \
#       model.teacher_ckpts=[work_dirs/demo/teacher.pth,work_dirs/demo/teacher2.pth]
_base_ = ['./aekt_digits.py']
_m = _base_.model
model = dict(
    _delete_=True,
    _scope_='mmrazor',
    type='MultiTeacherDistill',
    data_preprocessor=_m.data_preprocessor,
    architecture=_m.architecture,
    teachers=[_m.teacher, _m.teacher],
    teacher_ckpts=['work_dirs/demo/teacher.pth',
                   'work_dirs/demo/teacher2.pth'],
    combine='confidence',
    distiller=_m.distiller)
# Schedule: the learning rate and epochs that the committed Digits benchmark
# chose on its validation split (full regime; docs/results/
# digits_benchmark.json; tests/test_digits_benchmark.py checks that they agree).
optim_wrapper = dict(optimizer=dict(lr=0.1))
train_cfg = dict(max_epochs=24)
