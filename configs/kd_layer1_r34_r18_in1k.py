# letKD-1 (penultimate KD layer only, K = 4096), ImageNet ResNet-34 ->
# ResNet-18; everything else as configs/kd_layer_r34_r18_in1k.py, whose
# statistics file serves both (its intermediate part is unused here).
# Reference (paper): letKD-1 72.33, letKD-2 72.38, DKD 71.70.
#   1) python tools/kd_layer_stats.py configs/kd_layer1_r34_r18_in1k.py \
#          resnet34_8xb32_in1k_20210831-f257d4e6.pth work_dirs/kd_layer_stats_r34_in1k.npz
#   2) bash tools/dist_train.sh configs/kd_layer1_r34_r18_in1k.py 8
_base_ = ['./kd_layer_r34_r18_in1k.py']
_d = _base_.model.distiller
model = dict(
    architecture=dict(
        backbone=dict(kd_layers=[
            dict(after='layer4', in_channels=512, num_templates=4096),
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
paper_top1 = dict(top1=72.33, source='letKD-1, KD-layer paper')
