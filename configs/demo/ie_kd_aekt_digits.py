# IE-KD as a plug-in on top of AEKT (reconstruction), Digits: CE + AEKT + IE.
_base_ = ['./ie_kd_digits.py', '../_base_/distill/aekt.py']
_aekt = _base_.aekt_distiller
_aekt['distill_losses']['loss_aekt'].update(
    tau=4.0, alpha=1.0, beta=2.0, ratio_max=2.0, warmup_iters=23)
_student = dict(_base_.model.architecture)
_student['head'] = dict(_student['head'], type='mmpretrain.AEKTHead')
model = dict(
    architecture=_student,
    distiller=dict(
        student_recorders=_aekt['student_recorders'],
        teacher_recorders=_aekt['teacher_recorders'],
        distill_losses=_aekt['distill_losses'],
        loss_forward_mappings=_aekt['loss_forward_mappings']))
# Schedule: that of ie_kd_digits.py (not tuned for this variant by the benchmark).
