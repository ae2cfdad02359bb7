# Demo baseline: the student trained alone (no teacher), to see what KD adds.
_base_ = [
    '../_base_/models/demo_digits.py', '../_base_/datasets/digits.py',
    '../_base_/schedules/digits_cosine.py', '../_base_/default_runtime.py'
]
model = _base_.student_model
default_hooks = dict(logger=dict(interval=10))
