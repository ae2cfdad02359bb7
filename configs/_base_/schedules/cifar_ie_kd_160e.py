# IE-KD's CIFAR schedule (paper / official code): 160 epochs, batch 128,
# SGD nesterov lr 0.1, momentum 0.9, wd 5e-4, x0.1 at epochs 80 and 120.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4,
                   nesterov=True))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[80, 120], gamma=0.1)
# kd_plugins' epoch loop (mmengine's, plus: a preempted run resumes at its
# batch; the train set is built as the config asks: model.teacher_cache,
# data_errors). Any entry point runs it: mmpretrain's tools/train.py too.
train_cfg = dict(type='ResumableEpochBasedTrainLoop',
                 max_epochs=160, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=128)
