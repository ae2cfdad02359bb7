# ImageNet distillation schedule (DKD / mdistiller recipe): 100 epochs,
# SGD lr 0.2 for a total batch of 512 (use --auto-scale-lr for other sizes),
# momentum 0.9, wd 1e-4, x0.1 at 30/60/90.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.2, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[30, 60, 90], gamma=0.1)
# kd_plugins' epoch loop (mmengine's, plus: a preempted run resumes at its
# batch; the train set is built as the config asks: model.teacher_cache,
# data_errors). Any entry point runs it: mmpretrain's tools/train.py too.
train_cfg = dict(type='ResumableEpochBasedTrainLoop',
                 max_epochs=100, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=512)
