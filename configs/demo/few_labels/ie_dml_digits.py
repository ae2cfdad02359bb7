# Few-labels regime of the Digits benchmark: configs/demo/ie_dml_digits.py trained on
# 15 labelled images per class (a fixed stratified subset of the train split,
# drawn outside the 28-per-class validation split); the teachers still saw
# the whole train split. Test split as validation.
_base_ = ['../ie_dml_digits.py']
train_dataloader = dict(dataset=dict(val_per_class=28, num_per_class=15))
# Schedule: the learning rate and epochs that the committed Digits benchmark
# chose on its validation split (few-labels regime; docs/results/
# digits_benchmark.json; tests/test_digits_benchmark.py checks that they agree).
optim_wrapper = dict(optimizer=dict(lr=0.2))
train_cfg = dict(max_epochs=120, val_interval=20)
