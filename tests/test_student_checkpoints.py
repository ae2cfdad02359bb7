"""StudentCheckpointHook: a plain mmpretrain student beside every
checkpoint."""
import glob
import os.path as osp

import pytest
import torch

from tests.conftest import (SMALL_TRAIN, last_val_top1, run_tool,
                            shipped_test_top1)

KD = 'configs/demo/kd_digits.py'


def test_student_copies_follow_the_checkpoints(digits_teacher, tmp_path):
    _, teacher, _ = digits_teacher
    wd = str(tmp_path / 'wd')
    proc = run_tool(['tools/train.py', KD, '--work-dir', wd, '--cfg-options',
                     f'model.teacher_ckpt={teacher}', 'train_cfg.max_epochs=3',
                     'train_cfg.val_interval=1',
                     'default_hooks.checkpoint.max_keep_ckpts=2',
                     *SMALL_TRAIN])
    names = sorted(osp.basename(p) for p in glob.glob(osp.join(wd, '*.pth')))
    best = [n for n in names if n.startswith('best_')]
    assert len(best) == 1
    # epoch_1 was rotated out, and its student copy with it
    assert names == sorted(['epoch_2.pth', 'epoch_3.pth', best[0],
                            'student_epoch_2.pth', 'student_epoch_3.pth',
                            'student_' + best[0]])
    # the copy is exactly what tools/export_student.py writes
    out = str(tmp_path / 'export')
    run_tool(['tools/export_student.py', KD, osp.join(wd, 'epoch_3.pth'),
              out])
    a = torch.load(osp.join(wd, 'student_epoch_3.pth'), weights_only=True)
    b = torch.load(osp.join(out, 'student.pth'), weights_only=True)
    assert a['state_dict'].keys() == b['state_dict'].keys()
    assert not any(k.startswith(('teacher', 'architecture', 'distiller'))
                   for k in a['state_dict'])
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k
    assert a['meta']['dataset_meta']['classes'] == b['meta'][
        'dataset_meta']['classes']
    # and it runs in mmpretrain without kd_plugins' tools
    from mmpretrain.apis import ImageClassificationInferencer
    inferencer = ImageClassificationInferencer(
        osp.join(wd, 'student.py'), pretrained=osp.join(
            wd, 'student_epoch_3.pth'), device='cpu')
    img = (torch.rand(32, 32, 3) * 255).to(torch.uint8).numpy()
    res = inferencer(img)[0]
    assert res['pred_class'] in [str(i) for i in range(10)]
    # an image of another size (a native 8x8 digit PNG) is resized to the
    # training size: the same prediction as the 32x32 test image
    import cv2
    import numpy as np

    from kd_plugins.datasets.digits import load_digits_split, to_rgb_uint8
    images, _ = load_digits_split('test')
    agree = []
    for i, digit in enumerate(images[:20]):
        png = str(tmp_path / f'digit{i}.png')
        cv2.imwrite(png, np.clip(digit * 255 / 16, 0, 255).astype(np.uint8))
        small = inferencer(png)[0]['pred_label']
        big = inferencer(to_rgb_uint8(digit, 32))[0]['pred_label']
        agree.append(small == big)
    assert sum(agree) >= 19, agree
    # mmpretrain's shipped test.py on the copy == the distiller's top-1
    # the distiller's last validation (its student) == mmpretrain's shipped
    # test script on the student copy
    top1 = last_val_top1(proc.stdout + proc.stderr)
    assert shipped_test_top1(
        osp.join(wd, 'student.py'), osp.join(wd, 'student_epoch_3.pth'),
        str(tmp_path / 't2')) == pytest.approx(top1, abs=1e-3)


def test_teacher_runs_get_no_student_copies(digits_teacher):
    wd, _, _ = digits_teacher
    assert not glob.glob(osp.join(wd, 'student_*'))
    assert not osp.exists(osp.join(wd, 'student.py'))
