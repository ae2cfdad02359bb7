# letKD-1 (penultimate KD layer only, K = 4096), CIFAR-100 resnet56 ->
# resnet20; everything else as configs/kd_layer_r56_r20_cifar100.py, whose
# statistics file serves both (its intermediate part is unused here).
# Reference (paper, supplementary): letKD-1 72.44, letKD-2 73.27, DKD 71.97.
#   1) python tools/kd_layer_stats.py configs/kd_layer1_r56_r20_cifar100.py \
#          work_dirs/teachers/resnet56_cifar100.pth work_dirs/kd_layer_stats_r56_cifar100.npz
#   2) python tools/train.py configs/kd_layer1_r56_r20_cifar100.py
_base_ = ['./kd_layer_r56_r20_cifar100.py']
_d = _base_.model.distiller
model = dict(
    architecture=dict(
        backbone=dict(kd_layers=[
            dict(after='layer3', in_channels=64, num_templates=4096),
        ])),
    distiller=dict(
        _delete_=True,
        type='ConfigurableDistiller',
        student_recorders=dict(penult=_d['student_recorders']['penult']),
        teacher_recorders=dict(penult=_d['teacher_recorders']['penult']),
        distill_losses=dict(loss_penult=_d['distill_losses']['loss_penult']),
        loss_forward_mappings=dict(
            loss_penult=_d['loss_forward_mappings']['loss_penult'])))
# the published top-1 tools/reproduce.py puts beside this run's
paper_top1 = dict(top1=72.44, source='letKD-1, KD-layer paper (supplementary)')
