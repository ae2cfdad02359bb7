# Short schedule for the bundled Digits data set (23 iterations per epoch):
# SGD + 1 warm-up epoch + cosine decay. lr 0.2 and 24 epochs are the Digits
# benchmark's defaults; each demo config sets the learning rate and epochs that
# the benchmark chose for it (configs/demo/*.py, configs/demo/few_labels/*.py).
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.2, momentum=0.9, weight_decay=5e-4,
                   nesterov=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, eta_min=1e-4),
]
# kd_plugins' epoch loop (mmengine's, plus: a preempted run resumes at its
# batch; the train set is built as the config asks: model.teacher_cache,
# data_errors). Any entry point runs it: mmpretrain's tools/train.py too.
train_cfg = dict(type='ResumableEpochBasedTrainLoop',
                 max_epochs=24, val_interval=4)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=64)
