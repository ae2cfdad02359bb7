# IE-KD stage 2, CIFAR-100 resnet56 -> resnet20: CE + inheritance /
# exploration losses (lambda 50 each, 50/50 split of layer3's 64 channels)
# against the frozen stage-1 teacher encoder. Recipe: 160 epochs, batch 128,
# SGD nesterov 0.1, x0.1 at 80/120, wd 5e-4.
#   1) python tools/train.py configs/ie_kd/stage1_r56_cifar100.py
#   2) python tools/train.py configs/ie_kd_r56_r20_cifar100.py
_base_ = [
    '_base_/models/cifar/resnet56.py', '_base_/models/cifar/resnet20.py',
    '_base_/datasets/cifar100_kd.py', '_base_/schedules/cifar_ie_kd_160e.py',
    '_base_/default_runtime.py', '_base_/distill/ie_kd.py'
]
train_dataloader = dict(batch_size=128)
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
_conn = _base_.ie_connectors
_conn['s_inh'].update(in_channels=64, out_channels=32)
_conn['s_exp'].update(in_channels=64, out_channels=32)
_conn['t_enc'].update(in_channels=64, rate=0.5,
                      stage1_ckpt='work_dirs/stage1_r56_cifar100/epoch_30.pth')
_t_rec = _base_.ie_teacher_recorders
_t_rec['ie_feat']['source'] = 'backbone.layer3'
model = dict(
    _scope_='mmrazor',
    type='FastDistill',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(**_base_.resnet20, data_preprocessor=_cls_pre),
    teacher=dict(**_base_.resnet56, data_preprocessor=_cls_pre),
    teacher_ckpt='work_dirs/teachers/resnet56_cifar100.pth',
    distiller=dict(
        type='ConfigurableDistiller',
        student_recorders=_base_.ie_student_recorders,
        teacher_recorders=_t_rec,
        connectors=_conn,
        distill_losses=_base_.ie_losses,
        loss_forward_mappings=_base_.ie_mappings))
