# Demo step 1: train the teacher on the bundled Digits data set.
#   python tools/train.py configs/demo/teacher_digits.py
_base_ = [
    '../_base_/models/demo_digits.py', '../_base_/datasets/digits.py',
    '../_base_/schedules/digits_cosine.py', '../_base_/default_runtime.py'
]
model = _base_.teacher_model
default_hooks = dict(logger=dict(interval=10))
