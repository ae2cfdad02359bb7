# IE-KD stage 2, ImageNet ResNet-34 -> ResNet-18 (paper: top-1 71.81):
# CE + inheritance / exploration losses (lambda 50 each, 50/50 split of
# layer4's 512 channels) against the frozen stage-1 teacher encoder.
# Schedule: 100 epochs, batch 512 (8 GPUs x 64), SGD 0.2, x0.1 at 30/60/90.
#   1) bash tools/dist_train.sh configs/ie_kd/stage1_r34_in1k.py 8
#   2) bash tools/dist_train.sh configs/ie_kd_r34_r18_in1k.py 8
_base_ = [
    '_base_/models/resnet_in1k.py', '_base_/datasets/imagenet.py',
    '_base_/schedules/imagenet_100e.py', '_base_/default_runtime.py',
    '_base_/distill/ie_kd.py'
]
train_dataloader = dict(batch_size=64)
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
_conn = _base_.ie_connectors
_conn['s_inh'].update(in_channels=512, out_channels=256)
_conn['s_exp'].update(in_channels=512, out_channels=256)
_conn['t_enc'].update(in_channels=512, rate=0.5,
                      stage1_ckpt='work_dirs/stage1_r34_in1k/epoch_10.pth')
_s_rec = _base_.ie_student_recorders
_s_rec['ie_feat']['source'] = 'backbone.layer4'
model = dict(
    _scope_='mmrazor',
    type='FastDistill',
    data_preprocessor=_base_.data_preprocessor,
    architecture=dict(**_base_.resnet18, data_preprocessor=_cls_pre),
    teacher=dict(**_base_.resnet34, data_preprocessor=_cls_pre),
    teacher_ckpt=_base_.resnet34_ckpt,
    distiller=dict(
        type='ConfigurableDistiller',
        student_recorders=_s_rec,
        teacher_recorders=_base_.ie_teacher_recorders,
        connectors=_conn,
        distill_losses=_base_.ie_losses,
        loss_forward_mappings=_base_.ie_mappings))
# the published top-1 tools/reproduce.py puts beside this run's
paper_top1 = dict(top1=71.81, source='IE-KD paper')
