# Demo step 1: train the teacher on the bundled Digits data set.
#   python tools/train.py configs/demo/teacher_digits.py
_base_ = [
    '../_base_/models/demo_digits.py', '../_base_/datasets/digits.py',
    '../_base_/schedules/digits_cosine.py', '../_base_/default_runtime.py'
]
model = _base_.teacher_model
default_hooks = dict(logger=dict(interval=10))
# Schedule: the learning rate and epochs that the committed Digits benchmark
# chose on its validation split (teachers; docs/results/
# digits_benchmark.json; tests/test_digits_benchmark.py checks that they agree).
optim_wrapper = dict(optimizer=dict(lr=0.4))
train_cfg = dict(max_epochs=20)
