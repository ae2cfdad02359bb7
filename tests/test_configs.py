"""The ImageNet / CIFAR configs are complete and build."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from kd_plugins.engine.preflight import PreflightError, check_data
from tests.conftest import ROOT


def test_kd_r34_r18_in1k_builds_and_runs_a_step_on_tiny_images():
    from mmrazor.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs/kd_r34_r18_in1k.py'))
    assert cfg.model.teacher_ckpt.startswith('https://download.openmmlab.com')
    assert cfg.train_dataloader.batch_size * 8 == 512
    assert cfg.optim_wrapper.optimizer.lr == 0.2
    assert cfg.model.distiller.distill_losses.loss_kd.tau == 1
    cfg.model.teacher_ckpt = None
    model = MODELS.build(cfg.model)
    from mmpretrain.structures import DataSample
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
                        for _ in range(2)],
                data_samples=[DataSample().set_gt_label(i) for i in (1, 7)])
    data = model.data_preprocessor(data, True)
    losses = model(**data, mode='loss')
    assert set(losses) >= {'student.loss', 'distill.loss_kd'}
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize('base,needle', [
    ('configs/_base_/datasets/cifar100_kd.py', 'cifar-100-python'),
    ('configs/_base_/datasets/imagenet.py', 'train/<wnid>'),
])
def test_dataset_bases_name_the_expected_layout(base, needle, tmp_path):
    cfg = Config.fromfile(osp.join(ROOT, base))
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'missing')
    with pytest.raises(PreflightError, match='Fix') as err:
        check_data(cfg)
    assert needle in str(err.value)
    (tmp_path / 'empty').mkdir()
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'empty')
    with pytest.raises(PreflightError, match='is empty'):
        check_data(cfg)


def test_only_ie_kd_stage_one_asks_ddp_for_unused_parameters():
    """find_unused_parameters costs a graph traversal per step under DDP;
    only IE-KD stage 1 (student run but not trained) needs it. The CPU DDP
    tests (tests/test_distributed.py) train the others without it."""
    import glob

    from mmengine.config import Config
    found = sorted(
        osp.relpath(f, ROOT) for f in glob.glob(
            osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
        if '_base_' not in f and
        Config.fromfile(f).get('find_unused_parameters', False))
    assert found == ['configs/demo/ie_kd_stage1_digits.py',
                     'configs/ie_kd/stage1_r34_in1k.py',
                     'configs/ie_kd/stage1_r56_cifar100.py']


def test_gpu_tests_cover_every_method():
    """A static check of tests/test_gpu.py (runs without a GPU)."""
    from tests.test_gpu import METHODS
    names = {osp.basename(c) for c, _ in METHODS.values()}
    demo = {osp.basename(p) for p in glob.glob(
        osp.join(ROOT, 'configs/demo/*_digits.py'))}
    methods = {n for n in demo if not n.startswith(('teacher', 'student'))}
    # letKD-1, the IE+KD / IE+AEKT compositions and two-teacher AEKT share
    # their code paths with rows above
    assert methods - names <= {'kd_layer1_digits.py', 'ie_kd_kd_digits.py',
                               'ie_kd_aekt_digits.py', 'mt_aekt_digits.py',
                               'atsc_anchor_norm_digits.py'}


ALL_CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                         recursive=True) if '_base_' not in p)


@pytest.mark.parametrize('path', ALL_CONFIGS,
                         ids=lambda p: osp.relpath(p, ROOT))
def test_loops_loaders_and_evaluators_are_all_set_or_all_none(path):
    """mmengine's Runner refuses a config whose dataloader, loop config and
    evaluator disagree (IE-KD stage 1 inherited a test_dataloader without a
    test_cfg and failed before training); checked here for every config."""
    cfg = Config.fromfile(path)
    for split in ('val', 'test'):
        parts = [cfg.get(f'{split}_dataloader'), cfg.get(f'{split}_cfg'),
                 cfg.get(f'{split}_evaluator')]
        set_ = [p is not None for p in parts]
        assert all(set_) or not any(set_), (
            f'{split}_dataloader/_cfg/_evaluator set: {set_}')
    train = [cfg.get('train_dataloader'), cfg.get('train_cfg'),
             cfg.get('optim_wrapper')]
    assert all(p is not None for p in train)
