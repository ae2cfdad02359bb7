# AEKT, ImageNet ResNet-34 (teacher, official mmpretrain weights) -> ResNet-18.
# NOTE: the AEKT loss is a documented RECONSTRUCTION from the paper's abstract
# and DKD's gradient analysis (kd_plugins/losses/aekt.py, docs/methods/aekt.md).
# Recipe (DKD's): 100 epochs, batch 512 (8 GPUs x 64), SGD lr 0.2, momentum
# 0.9, wd 1e-4, x0.1 at 30/60/90; tau 1, alpha 1, beta 0.5, 1-epoch warm-up.
# Reference top-1 (DKD paper): T 73.31, S 69.75, KD 70.66, DKD 71.70.
#   bash tools/dist_train.sh configs/aekt_r34_r18_in1k.py 8
#   other teacher weights: --cfg-options model.teacher_ckpt=/path/r34.pth
_base_ = [
    '_base_/models/resnet_in1k.py', '_base_/datasets/imagenet.py',
    '_base_/schedules/imagenet_100e.py', '_base_/default_runtime.py',
    '_base_/distill/aekt.py'
]
train_dataloader = dict(batch_size=64)
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
_student = dict(**_base_.resnet18, data_preprocessor=_cls_pre)
_student['head'] = dict(_student['head'], type='mmpretrain.AEKTHead',
                        order='classify_first')
_distiller = _base_.aekt_distiller
# ratio_max 2: the spec's default clamp (10) diverged on the demo pair.
_distiller['distill_losses']['loss_aekt'].update(
    tau=1.0, alpha=1.0, beta=0.5, ratio_max=2.0, loss_weight=1.0,
    warmup_iters=2502)  # 1 epoch: 1,281,167 images / batch 512
model = dict(
    _scope_='mmrazor',
    type='FastDistill',
    data_preprocessor=_base_.data_preprocessor,
    architecture=_student,
    teacher=dict(**_base_.resnet34, data_preprocessor=_cls_pre),
    teacher_ckpt=_base_.resnet34_ckpt,
    distiller=_distiller)
# the published top-1 tools/reproduce.py puts beside this run's
paper_top1 = dict(top1=71.7, source="DKD (DKD paper); AEKT's own table was not readable")
