# Multi-teacher AEKT, CIFAR-100: resnet32x4 and wrn_40_2 -> resnet8x4 (AEKT
# student head), AEKTLoss on the teachers' per-sample confidence-weighted
# logits (MultiTeacherDistill, combine='confidence'); loss settings and
# recipe as configs/aekt_r32x4_r8x4_cifar100.py (DKD's: 240 epochs, batch
# 64, SGD lr 0.05, tau 4, alpha 1, beta 8, 20-epoch warm-up).
#   python tools/train.py configs/mt_aekt_r32x4_wrn40x2_r8x4_cifar100.py
_base_ = ['./aekt_r32x4_r8x4_cifar100.py', '_base_/models/cifar/wrn_40_2.py']
_m = _base_.model
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
model = dict(
    _delete_=True,
    _scope_='mmrazor',
    type='MultiTeacherDistill',
    data_preprocessor=_m.data_preprocessor,
    architecture=_m.architecture,
    teachers=[_m.teacher, dict(**_base_.wrn_40_2, data_preprocessor=_cls_pre)],
    teacher_ckpts=['work_dirs/teachers/resnet32x4_cifar100.pth',
                   'work_dirs/teachers/wrn_40_2_cifar100.pth'],
    combine='confidence',
    distiller=_m.distiller)
