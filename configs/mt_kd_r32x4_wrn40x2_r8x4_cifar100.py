# Multi-teacher KD, CIFAR-100: resnet32x4 and wrn_40_2 (the pair of ATSC's
# multi-teacher config) -> resnet8x4; mmrazor's KLDivergence (tau 4) on the
# mean of the teachers' logits (MultiTeacherDistill). CIFAR KD recipe: 240
# epochs, batch 64, SGD lr 0.05, wd 5e-4, x0.1 at 150/180/210.
# Other rules: combine='mean_probs' (with tau=4, the loss's temperature),
# 'confidence' (per-sample weights by each teacher's CE), 'per_teacher'.
# Teachers: python tools/train.py configs/teachers/resnet32x4_cifar100.py and
# configs/teachers/wrn_40_2_cifar100.py (or tools/convert_repdistiller_ckpt.py)
#   python tools/train.py configs/mt_kd_r32x4_wrn40x2_r8x4_cifar100.py
_base_ = [
    '_base_/models/cifar/resnet32x4.py', '_base_/models/cifar/wrn_40_2.py',
    '_base_/models/cifar/resnet8x4.py', '_base_/datasets/cifar100_kd.py',
    '_base_/schedules/cifar100_kd_240e.py', '_base_/default_runtime.py',
    '_base_/distill/kd.py'
]
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
model = dict(
    _scope_='mmrazor',
    type='MultiTeacherDistill',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(**_base_.resnet8x4, data_preprocessor=_cls_pre),
    teachers=[dict(**_base_.resnet32x4, data_preprocessor=_cls_pre),
              dict(**_base_.wrn_40_2, data_preprocessor=_cls_pre)],
    teacher_ckpts=['work_dirs/teachers/resnet32x4_cifar100.pth',
                   'work_dirs/teachers/wrn_40_2_cifar100.pth'],
    combine='mean_logits',
    distiller=_base_.kd_distiller)
