# IE-KD stage 1: the teacher factor auto-encoder on the teacher's last map,
# L1 reconstruction (use with SingleTeacherDistill(student_trainable=False,
# calculate_student_loss=False)); set the record source and in_channels.
ie_stage1_distiller = dict(
    type='ConfigurableDistiller',
    teacher_recorders=dict(
        feat=dict(type='ModuleOutputs', source='backbone.layer4')),
    connectors=dict(t_ae=dict(type='IEAutoEncoder', in_channels=128,
                              rate=0.5)),
    distill_losses=dict(loss_rec=dict(type='L1Loss', loss_weight=1.0)),
    loss_forward_mappings=dict(
        loss_rec=dict(
            s_feature=dict(from_student=False, recorder='feat',
                           connector='t_ae'),
            t_feature=dict(from_student=False, recorder='feat'))))

# IE-KD stage-2 wiring (mmrazor ConfigurableDistiller): the student's last map
# split by channel into inheritance / exploration parts, two student encoders,
# the frozen stage-1 teacher encoder, IEInheritLoss and IEExploreLoss.
# Method configs fill in the channel numbers, record sources and stage1_ckpt.
ie_student_recorders = dict(
    ie_feat=dict(type='ModuleOutputs', source='backbone.layer3'))
ie_teacher_recorders = dict(
    ie_feat=dict(type='ModuleOutputs', source='backbone.layer4'))
ie_connectors = dict(
    s_inh=dict(type='IEStudentEncoder', in_channels=32, out_channels=64,
               part='inherit', split_ratio=0.5),
    s_exp=dict(type='IEStudentEncoder', in_channels=32, out_channels=64,
               part='explore', split_ratio=0.5),
    t_enc=dict(type='IETeacherEncoder', in_channels=128, rate=0.5,
               stage1_ckpt=None))
ie_losses = dict(
    loss_inh=dict(type='IEInheritLoss', loss_weight=50.0),
    loss_exp=dict(type='IEExploreLoss', loss_weight=50.0))
ie_mappings = dict(
    loss_inh=dict(
        preds_S=dict(from_student=True, recorder='ie_feat', connector='s_inh'),
        preds_T=dict(from_student=False, recorder='ie_feat',
                     connector='t_enc')),
    loss_exp=dict(
        preds_S=dict(from_student=True, recorder='ie_feat', connector='s_exp'),
        preds_T=dict(from_student=False, recorder='ie_feat',
                     connector='t_enc')))
