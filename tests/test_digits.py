"""The bundled Digits data set and the ImageFolder helper."""
import numpy as np
import pytest
import torch
from mmpretrain.registry import DATASETS

from kd_plugins.datasets import (DIGITS_CLASSES, load_digits_split,
                                 write_digits_image_folder)


def test_split_is_stratified_disjoint_and_deterministic():
    xtr, ytr = load_digits_split('train')
    xte, yte = load_digits_split('test')
    assert len(ytr) + len(yte) == 1797
    assert len(yte) == 360  # 20 %
    # every class keeps its share (stratified)
    for c in range(10):
        frac = (yte == c).sum() / ((ytr == c).sum() + (yte == c).sum())
        assert 0.17 < frac < 0.23
    # disjoint: no test image equals a train image at the same position set
    train_set = {x.tobytes() for x in xtr}
    dup = sum(x.tobytes() in train_set for x in xte)
    assert dup < 5  # sklearn digits has a handful of true duplicates
    x2, y2 = load_digits_split('test')
    np.testing.assert_array_equal(yte, y2)
    np.testing.assert_array_equal(xte, x2)


def test_bad_split_is_a_clear_error():
    with pytest.raises(ValueError, match="'train', 'val' or 'test'"):
        DATASETS.build(dict(type='Digits', split='valid'))
    with pytest.raises(ValueError, match='needs val_per_class'):
        DATASETS.build(dict(type='Digits', split='val'))
    with pytest.raises(ValueError, match='num_per_class'):
        DATASETS.build(dict(type='Digits', split='test', num_per_class=5))
    with pytest.raises(ValueError, match='cannot hold out'):
        DATASETS.build(dict(type='Digits', val_per_class=100,
                            num_per_class=100))


def _keys(ds):
    return {d['img'].tobytes() + bytes([d['gt_label']])
            for d in ds.load_data_list()}


def test_subsets_are_stratified_disjoint_and_deterministic():
    """A validation split carved out of the train split and a K-per-class
    labelled subset: the same images on every call, whatever the seed."""
    full = DATASETS.build(dict(type='Digits', split='train', img_size=8))
    val = DATASETS.build(dict(type='Digits', split='val', val_per_class=28,
                              img_size=8))
    rest = DATASETS.build(dict(type='Digits', split='train',
                               val_per_class=28, img_size=8))
    few = DATASETS.build(dict(type='Digits', split='train', val_per_class=28,
                              num_per_class=15, img_size=8))
    assert len(full) == 1437 and len(val) == 280
    assert len(rest) == 1437 - 280 and len(few) == 150
    for ds, k in ((val, 28), (few, 15)):
        counts = np.bincount([d['gt_label'] for d in ds.load_data_list()],
                             minlength=10)
        assert (counts == k).all()  # stratified: exactly k per class
    # disjoint, and together the train split
    v, r, f = _keys(val), _keys(rest), _keys(few)
    assert not v & r and f <= r
    assert len(v | r) >= 1437 - 5  # (sklearn digits has a few duplicates)
    # deterministic: the same images again, also after reseeding numpy
    np.random.seed(123)
    torch.manual_seed(123)
    again = DATASETS.build(dict(type='Digits', split='train',
                                val_per_class=28, num_per_class=15,
                                img_size=8))
    assert _keys(again) == f
    # without a validation split the few-label subset is 15 per class of the
    # whole train split
    few_all = DATASETS.build(dict(type='Digits', num_per_class=15,
                                  img_size=8))
    assert len(few_all) == 150


def test_dataset_gives_uint8_rgb_images_through_standard_pipelines():
    ds = DATASETS.build(dict(
        type='Digits', split='train', img_size=32,
        pipeline=[dict(type='RandomCrop', crop_size=32, padding=4),
                  dict(type='RandomFlip', prob=0.5),
                  dict(type='PackInputs')]))
    assert len(ds) == 1437
    assert ds.metainfo['classes'] == DIGITS_CLASSES
    raw = ds.get_data_info(0)
    assert raw['img'].dtype == np.uint8 and raw['img'].shape == (32, 32, 3)
    assert raw['img'].max() > 100  # scaled from [0, 16] to [0, 255]
    out = ds[0]
    assert out['inputs'].shape == (3, 32, 32)
    assert out['inputs'].dtype == torch.uint8
    assert int(out['data_samples'].gt_label) == raw['gt_label']


def test_img_size_is_configurable():
    ds = DATASETS.build(dict(type='Digits', split='test', img_size=8))
    assert ds.get_data_info(5)['img'].shape == (8, 8, 3)
    assert len(ds) == 360


def test_image_folder_helper_feeds_custom_dataset(tmp_path):
    root = write_digits_image_folder(str(tmp_path / 'digits'), split='test',
                                     per_class=3)
    ds = DATASETS.build(dict(
        type='CustomDataset', data_root=root,
        pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
    assert len(ds) == 30
    assert list(ds.metainfo['classes']) == list(DIGITS_CLASSES)
    item = ds[0]
    assert item['inputs'].shape == (3, 32, 32)
