# IE-KD as a plug-in on top of KD, Digits: CE + Hinton KD (tau 4) + IE terms.
_base_ = ['./ie_kd_digits.py', '../_base_/distill/kd.py']
_kd = _base_.kd_distiller
model = dict(
    distiller=dict(
        student_recorders=_kd['student_recorders'],
        teacher_recorders=_kd['teacher_recorders'],
        distill_losses=_kd['distill_losses'],
        loss_forward_mappings=_kd['loss_forward_mappings']))
# Schedule: the learning rate and epochs that the committed Digits benchmark
# chose on its validation split (full regime; docs/results/
# digits_benchmark.json; tests/test_digits_benchmark.py checks that they agree).
optim_wrapper = dict(optimizer=dict(lr=0.1))
train_cfg = dict(max_epochs=24)
