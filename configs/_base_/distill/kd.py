# Hinton KD with mmrazor's own parts (the baseline): student and teacher
# logits recorded at head.fc, KLDivergence (tau^2-scaled, batchmean).
# Method configs set tau / loss_weight; merges into any ConfigurableDistiller.
kd_distiller = dict(
    type='ConfigurableDistiller',
    student_recorders=dict(fc=dict(type='ModuleOutputs', source='head.fc')),
    teacher_recorders=dict(fc=dict(type='ModuleOutputs', source='head.fc')),
    distill_losses=dict(
        loss_kd=dict(type='KLDivergence', tau=4, loss_weight=1.0)),
    loss_forward_mappings=dict(
        loss_kd=dict(
            preds_S=dict(from_student=True, recorder='fc'),
            preds_T=dict(from_student=False, recorder='fc'))))
