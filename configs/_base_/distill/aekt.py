# AEKT distiller wiring shared by the AEKT configs (mmrazor ConfigurableDistiller):
# student z_kd from AEKTHead.kd_out, teacher logits from head.fc, labels from
# the student's loss module. Set the loss parameters in the method config.
# NOTE: the AEKT loss is a documented RECONSTRUCTION (docs/methods/aekt.md).
aekt_distiller = dict(
    type='ConfigurableDistiller',
    student_recorders=dict(
        kd=dict(type='ModuleOutputs', source='head.kd_out'),
        gt_labels=dict(type='ModuleInputs', source='head.loss_module')),
    teacher_recorders=dict(fc=dict(type='ModuleOutputs', source='head.fc')),
    distill_losses=dict(loss_aekt=dict(type='AEKTLoss')),
    loss_forward_mappings=dict(
        loss_aekt=dict(
            preds_S=dict(from_student=True, recorder='kd'),
            preds_T=dict(from_student=False, recorder='fc'),
            gt_labels=dict(recorder='gt_labels', from_student=True,
                           data_idx=1))))
