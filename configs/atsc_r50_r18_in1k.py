# ATSC, ImageNet ResNet-50 (teacher, official mmpretrain weights, adapted and
# anchored) -> ResNet-18 predicting through the shared teacher classifier.
# Recipe (official run): 4 GPUs x 16 images per GPU (total batch 64), 120
# epochs, SGD lr 0.01, momentum 0.9, wd 1e-4, x0.1 at 30/60/90; b = 1, w = 10,
# c = d = 0.
#   bash tools/dist_train.sh configs/atsc_r50_r18_in1k.py 4
# Other GPU counts: keep 16 images per GPU (BatchNorm statistics as in the
# official run) and add --auto-scale-lr (lr scaled linearly from the base
# batch of 64, e.g. 8 GPUs -> batch 128, lr 0.02); or keep the total batch of
# 64 with train_dataloader.batch_size=64/GPUS (BN then sees fewer images per
# GPU than the official 16).
_base_ = [
    '_base_/models/resnet_in1k.py', '_base_/datasets/imagenet.py',
    '_base_/default_runtime.py'
]
train_dataloader = dict(batch_size=16)  # per GPU, x 4 GPUs
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
model = dict(
    _scope_='mmrazor',
    type='ATSC',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(**_base_.resnet18, data_preprocessor=_cls_pre),
    teachers=[dict(**_base_.resnet50, data_preprocessor=_cls_pre)],
    teacher_ckpts=[_base_.resnet50_ckpt],
    projectors=[dict(type='ATSCProjector', in_channels=512,
                     out_channels=2048, factor=2)],
    mse_weight=1.0, anchor_weight=10.0, ce_weight=0.0, kd_weight=0.0)
optim_wrapper = dict(
    constructor='KDMultiOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[30, 60, 90], gamma=0.1)
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=120,
                 val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=64)
# several updates per iteration: under DDP, this wrapper calls the method's own
# train_step and synchronises every optimizer's gradients (kd_plugins.engine.dist)
model_wrapper_cfg = dict(type='KDModelWrapper')
