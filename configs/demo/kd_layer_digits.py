# KD layer (letKD-2) on Digits: KD layers after the student's last stage
# (penultimate, K = 64) and after the first block of it (intermediate, 8
# subclasses x 10 classes), supervised by the teacher's decisions.
#   1) python tools/kd_layer_stats.py configs/demo/kd_layer_digits.py \
#          work_dirs/demo/teacher.pth work_dirs/demo/kd_layer_stats.npz
#   2) python tools/train.py configs/demo/kd_layer_digits.py \
#          --cfg-options model.teacher_ckpt=work_dirs/demo/teacher.pth
_base_ = [
    '../_base_/models/demo_digits.py', '../_base_/datasets/digits.py',
    '../_base_/schedules/digits_cosine.py', '../_base_/default_runtime.py',
    '../_base_/distill/kd_layer.py'
]
stats_file = 'work_dirs/demo/kd_layer_stats.npz'
kd_layer_stats = dict(
    penultimate=dict(teacher_layer='backbone.layer4', num_templates=64),
    intermediate=dict(teacher_layer='backbone.layer4.0', lda_dim=60,
                      subclasses=8),
    max_memory_gb=8.0, min_per_class=1000, kmeans_iters=20, seed=0)
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
_student = dict(**_base_.student_model, data_preprocessor=_cls_pre)
_student['backbone'] = dict(
    type='mmpretrain.KDLayerBackbone',
    backbone=_student['backbone'],
    kd_layers=[
        dict(after='layer3.0', in_channels=32, num_templates=80, alpha=1.0),
        dict(after='layer3', in_channels=32, num_templates=64, alpha=1.0),
    ])
_d = _base_.kd_layer_distiller
_d['student_recorders']['penult']['source'] = \
    'backbone.kd_layers.layer3.match'
_d['student_recorders']['inter']['source'] = \
    'backbone.kd_layers.layer3_0.match'
_d['distill_losses']['loss_penult'].update(stats_file=stats_file,
                                           num_templates=64)
_d['distill_losses']['loss_inter'].update(stats_file=stats_file,
                                          num_templates=80, num_classes=10)
model = dict(
    _scope_='mmrazor',
    type='FastDistill',
    data_preprocessor=_base_.data_preprocessor,
    architecture=_student,
    teacher=dict(**_base_.teacher_model, data_preprocessor=_cls_pre),
    teacher_ckpt='work_dirs/demo/teacher.pth',
    distiller=_d)
default_hooks = dict(logger=dict(interval=10))
# Schedule: the learning rate and epochs that the committed Digits benchmark
# chose on its validation split (full regime; docs/results/
# digits_benchmark.json; tests/test_digits_benchmark.py checks that they agree).
optim_wrapper = dict(optimizer=dict(lr=0.4))
train_cfg = dict(max_epochs=24)
