# letKD-1 on Digits: only the penultimate KD layer (after the student's last
# stage, K = 64) and its loss. Statistics as for configs/demo/kd_layer_digits.py
# (its intermediate part is simply unused).
_base_ = ['./kd_layer_digits.py']
_d = _base_.model.distiller
model = dict(
    architecture=dict(
        backbone=dict(kd_layers=[
            dict(after='layer3', in_channels=32, num_templates=64,
                 alpha=1.0),
        ])),
    distiller=dict(
        _delete_=True,
        type='ConfigurableDistiller',
        student_recorders=dict(penult=_d['student_recorders']['penult']),
        teacher_recorders=dict(penult=_d['teacher_recorders']['penult']),
        distill_losses=dict(loss_penult=_d['distill_losses']['loss_penult']),
        loss_forward_mappings=dict(
            loss_penult=_d['loss_forward_mappings']['loss_penult'])))
# Schedule: that of kd_layer_digits.py (not tuned for this variant by the benchmark).
