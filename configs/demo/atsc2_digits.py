# Two-teacher ATSC on Digits: two teachers (the demo teacher and a second one
# trained with another seed), one projector each; the student's prediction is
# the mean of the two shared-classifier logits, the loss the sum.
#   python tools/train.py configs/demo/atsc2_digits.py --cfg-options \
#     "model.teacher_ckpts=[work_dirs/demo/teacher.pth,work_dirs/demo/teacher2.pth]"
_base_ = ['./atsc_digits.py']
_cls_pre = dict(type='mmpretrain.ClsDataPreprocessor')
model = dict(
    teachers=[
        dict(**_base_.teacher_model, data_preprocessor=_cls_pre),
        dict(**_base_.teacher_model, data_preprocessor=_cls_pre),
    ],
    teacher_ckpts=['work_dirs/demo/teacher.pth',
                   'work_dirs/demo/teacher2.pth'],
    projectors=[
        dict(type='ATSCProjector', in_channels=32, out_channels=128),
        dict(type='ATSCProjector', in_channels=32, out_channels=128),
    ])
# Schedule: that of atsc_digits.py (not tuned for this variant by the benchmark).
