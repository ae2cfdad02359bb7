# KD layer (letKD-2) distiller wiring: the student's template scores
# (KDLayer.match outputs) and the teacher's maps at the matching places, with
# KDLayerLoss for the penultimate and the intermediate layer. Method configs
# set the record sources, stats_file, num_templates and num_classes.
kd_layer_distiller = dict(
    type='ConfigurableDistiller',
    student_recorders=dict(
        penult=dict(type='ModuleOutputs',
                    source='backbone.kd_layers.layer4.match'),
        inter=dict(type='ModuleOutputs',
                   source='backbone.kd_layers.layer4_0.match'),
        gt_labels=dict(type='ModuleInputs', source='head.loss_module')),
    teacher_recorders=dict(
        penult=dict(type='ModuleOutputs', source='backbone.layer4'),
        inter=dict(type='ModuleOutputs', source='backbone.layer4.0')),
    distill_losses=dict(
        loss_penult=dict(type='KDLayerLoss', kind='penultimate',
                         stats_file=None, tau=1.0, loss_weight=1.0),
        loss_inter=dict(type='KDLayerLoss', kind='intermediate',
                        stats_file=None, loss_weight=1.0)),
    loss_forward_mappings=dict(
        loss_penult=dict(
            preds_S=dict(from_student=True, recorder='penult'),
            preds_T=dict(from_student=False, recorder='penult')),
        loss_inter=dict(
            preds_S=dict(from_student=True, recorder='inter'),
            preds_T=dict(from_student=False, recorder='inter'),
            gt_labels=dict(from_student=True, recorder='gt_labels',
                           data_idx=1))))
