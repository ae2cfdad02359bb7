"""docs/training.md's "Add a method to any mmpretrain config" recipe works on
mmpretrain's own shipped configs (ResNet-34 teacher -> ResNet-18 student)."""
import os.path as osp

import mmpretrain
import torch
from mmengine.config import Config
from mmrazor.registry import MODELS

from tests.conftest import ROOT

MIM = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'configs', 'resnet')


def guide_recipe() -> str:
    """The first python block of docs/training.md's "Add a method to any
    mmpretrain config" section, as a user copies it."""
    import re
    with open(osp.join(ROOT, 'docs', 'training.md')) as f:
        text = f.read()
    section = text.split('## Add a method to any mmpretrain config', 1)[1]
    return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_guide_recipe_wraps_an_mmpretrain_config(tmp_path):
    student = Config.fromfile(osp.join(MIM, 'resnet18_8xb32_in1k.py'))
    student.dump(str(tmp_path / 'my_student_config.py'))
    teacher = Config.fromfile(osp.join(MIM, 'resnet34_8xb32_in1k.py'))
    # the recipe, as docs/training.md gives it, with the user's three
    # blanks filled in: where kd_plugins is, the teacher's model dict, and
    # no teacher checkpoint (random weights)
    recipe = guide_recipe()
    fills = [("'/path/to/kd_plugins/configs/_base_/distill/kd.py'",
              repr(osp.join(ROOT, 'configs/_base_/distill/kd.py'))),
             ("_teacher = dict(type='ImageClassifier', backbone=..., "
              "neck=..., head=...)",
              f'_teacher = {teacher.model.to_dict()!r}'),
             ("teacher_ckpt='teacher.pth'", 'teacher_ckpt=None')]
    for blank, value in fills:
        assert blank in recipe, f'docs/training.md recipe lost {blank!r}'
        recipe = recipe.replace(blank, value)
    (tmp_path / 'my_kd.py').write_text(recipe)
    cfg = Config.fromfile(str(tmp_path / 'my_kd.py'))
    assert cfg.train_dataloader == student.train_dataloader  # the rest stays
    from kd_plugins.engine.pair_checks import check_pairs
    check_pairs(cfg)
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'FastDistill'
    assert type(model.student.backbone).__name__ == 'ResNet'
    assert model.student.backbone.depth == 18
    assert model.teacher.backbone.depth == 34
    # the student normalises exactly as the user's config says
    want = torch.tensor(student.data_preprocessor.mean).view(-1, 1, 1)
    for pre in (model.data_preprocessor, model.student.data_preprocessor):
        torch.testing.assert_close(pre.mean, want)
    # one distillation step on two tiny images
    from mmpretrain.structures import DataSample
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
                        for _ in range(2)],
                data_samples=[DataSample().set_gt_label(i) for i in (3, 7)])
    data = model.data_preprocessor(data, True)
    losses = model(**data, mode='loss')
    assert {'loss_kd', 'loss'} <= {k.split('.')[-1] for k in losses}
