# ATSC + anchor_norm on Digits (ours): as configs/demo/atsc_digits.py, and the
# teacher's BN parameters are anchored too (see docs/methods/atsc.md).
#   python tools/train.py configs/demo/atsc_anchor_norm_digits.py \
#       --cfg-options model.teacher_ckpts=[work_dirs/demo/teacher.pth]
_base_ = ['./atsc_digits.py']
model = dict(anchor_norm=True)
# Schedule: the learning rate and epochs that the committed Digits benchmark
# chose on its validation split (full regime; docs/results/
# digits_benchmark.json; tests/test_digits_benchmark.py checks that they agree).
optim_wrapper = dict(optimizer=dict(lr=0.4))
train_cfg = dict(max_epochs=24)
