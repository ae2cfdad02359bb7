"""KD-layer statistics as in the official letKD step: the whole training
split through the test pipeline, every location when it fits (a guaranteed
minimum per class when sampled), teacher maps pooled to the student's size
before k-means / LDA, full Lloyd k-means; seed-independent but for k-means."""
import json
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmrazor.registry import MODELS as RZ

from kd_plugins.kd_layer_stats import (compute_kd_layer_stats, location_index,
                                       location_quota)
from tests.conftest import ROOT

KDL = osp.join(ROOT, 'configs/demo/kd_layer_digits.py')


def test_quota_keeps_everything_that_fits():
    labels = np.repeat(np.arange(3), [10, 20, 30])
    q = location_quota(labels, hw=16, channels=8, budget_bytes=1e9,
                       min_per_class=5)
    assert (q == 16).all()


def test_quota_samples_with_a_minimum_per_class():
    labels = np.repeat(np.arange(3), [4, 50, 400])  # class 0 is rare
    # budget: 2 locations per image on average
    q = location_quota(labels, hw=16, channels=8,
                       budget_bytes=2 * 454 * 8 * 4, min_per_class=40)
    per_class = [q[labels == c].sum() for c in range(3)]
    assert per_class[0] == 4 * 10  # ceil(40 / 4) per image
    assert per_class[1] == 50 * 2  # the budget already gives 100 >= 40
    assert per_class[2] == 400 * 2
    assert min(per_class) >= 40
    # a class too small for the minimum gets all of its locations
    q = location_quota(labels, hw=16, channels=8,
                       budget_bytes=2 * 454 * 8 * 4, min_per_class=1000)
    assert (q[labels == 0] == 16).all()
    # an explicit cap below the budget also samples
    q = location_quota(labels, hw=16, channels=8, budget_bytes=1e12,
                       min_per_class=0, max_locations=454 * 3)
    assert (q == 3).all()


def test_location_choice_depends_only_on_the_image_index():
    a = location_index(12345, hw=49, q=5)
    assert len(set(a.tolist())) == 5 and a.max() < 49
    np.testing.assert_array_equal(a, location_index(12345, hw=49, q=5))
    assert not np.array_equal(a, location_index(12346, hw=49, q=5))
    np.testing.assert_array_equal(location_index(7, hw=16, q=16),
                                  np.arange(16))


def _teacher_ckpt(cfg, path):
    teacher = RZ.build(cfg.model.teacher)
    torch.manual_seed(0)
    teacher.init_weights()
    torch.save({'state_dict': teacher.state_dict(), 'meta': {}}, path)
    return teacher


def test_statistics_use_the_test_pipeline_and_do_not_depend_on_the_seed(
        tmp_path):
    """Two seeds: the same locations and LDA (the train pipeline's random
    crop would change them); only k-means initialisation differs."""
    cfg = Config.fromfile(KDL)
    ckpt = str(tmp_path / 't.pth')
    _teacher_ckpt(cfg, ckpt)
    metas, arrays = [], []
    for seed in (0, 1):
        c = Config.fromfile(KDL)
        c.kd_layer_stats.seed = seed
        out = str(tmp_path / f's{seed}.npz')
        metas.append(compute_kd_layer_stats(c, ckpt, out,
                                            max_locations=5000,
                                            log=lambda *a: None))
        with np.load(out) as f:
            arrays.append({k: f[k] for k in f.files})
    assert metas[0]['pipeline'] == 'test'
    assert metas[0]['num_locations'] == metas[1]['num_locations']
    for key in ('inter_mean', 'inter_proj'):
        np.testing.assert_array_equal(arrays[0][key], arrays[1][key])
    # sampled: 5000 // 1437 = 3 per image, raised for the 1000-per-class
    # minimum (~144 images per class -> 7 or 8 per image)
    from kd_plugins.datasets.digits import load_digits_split
    _, y = load_digits_split('train')
    counts = np.bincount(y)
    want = sum(n * max(3, -(-1000 // n)) for n in counts)
    assert metas[0]['num_locations']['penultimate'] == want


def test_larger_teacher_maps_are_pooled_before_kmeans_and_lda(tmp_path):
    """Teacher penultimate at layer2 (16x16) vs the student's KD layer at
    layer3 (8x8): statistics on maps pooled to 8x8, as the official
    *_downscale statistics; centres equal a k-means fit done by hand on
    the pooled train-split features."""
    from sklearn.cluster import KMeans

    from kd_plugins.datasets.digits import load_digits_split, to_rgb_uint8
    cfg = Config.fromfile(KDL)
    cfg.kd_layer_stats.penultimate.teacher_layer = 'backbone.layer2'
    cfg.kd_layer_stats.penultimate.num_templates = 16
    cfg.kd_layer_stats.intermediate = None
    cfg.model.distiller.teacher_recorders.penult.source = 'backbone.layer2'
    ckpt = str(tmp_path / 't.pth')
    teacher = _teacher_ckpt(cfg, ckpt).eval()
    out = str(tmp_path / 's.npz')
    meta = compute_kd_layer_stats(cfg, ckpt, out, log=lambda *a: None)
    assert meta['pooled_to'] == {'penultimate': [8, 8]}
    assert meta['num_locations']['penultimate'] == 1437 * 64  # all of them
    # by hand: every train image, no augmentation, in data-set order
    images, _ = load_digits_split('train')
    x = torch.from_numpy(np.stack([to_rgb_uint8(i, 32) for i in images]))
    x = (x.permute(0, 3, 1, 2).float() - 127.5) / 127.5
    with torch.no_grad():
        feats = []
        for b in range(0, len(x), 256):
            t = teacher.backbone.layer2(teacher.backbone.layer1(
                teacher.backbone.relu(teacher.backbone.norm1(
                    teacher.backbone.conv1(x[b:b + 256])))))
            feats.append(F.adaptive_avg_pool2d(t, 8).flatten(2)
                         .transpose(1, 2).reshape(-1, t.shape[1]))
    f = torch.cat(feats).numpy()
    km = KMeans(16, init='k-means++', n_init=1, max_iter=20, random_state=0,
                algorithm='lloyd').fit(f)
    with np.load(out) as data:
        np.testing.assert_allclose(data['penult_centers'],
                                   km.cluster_centers_, rtol=1e-3,
                                   atol=1e-4)
    # training compares the same pooled maps: accepted; a student map of
    # another size is refused with the fix
    loss = RZ.build(dict(type='KDLayerLoss', stats_file=out,
                         kind='penultimate', num_templates=16))
    assert torch.isfinite(loss(torch.randn(2, 16, 8, 8),
                               torch.randn(2, 32, 16, 16)))
    with pytest.raises(ValueError, match='pooled to'):
        loss(torch.randn(2, 16, 4, 4), torch.randn(2, 32, 16, 16))


def test_unpooled_statistics_are_refused_for_a_larger_teacher(tmp_path):
    path = str(tmp_path / 's.npz')
    meta = dict(kinds=['penultimate'], num_classes=2,
                pooled_to={'penultimate': None})
    np.savez(path, meta=np.array(json.dumps(meta)),
             penult_centers=np.zeros((3, 4), np.float32))
    loss = RZ.build(dict(type='KDLayerLoss', stats_file=path))
    assert torch.isfinite(loss(torch.randn(1, 3, 2, 2),
                               torch.randn(1, 4, 2, 2)))
    with pytest.raises(ValueError, match='at their own size'):
        loss(torch.randn(1, 3, 2, 2), torch.randn(1, 4, 4, 4))


def test_rank_deficient_features_name_the_lda_dim_to_use():
    """A teacher layer with dead channels gives fewer LDA directions than
    lda_dim asks for: a clear error with the number found and the option
    (it crashed in numpy's broadcasting before)."""
    from kd_plugins.errors import ConfigError
    from kd_plugins.kd_layer_stats import intermediate_statistics
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 20)
    x = np.zeros((200, 8))
    x[:, :4] = rng.normal(size=(200, 4)) + y[:, None] * 0.3  # 4 live
    with pytest.raises(ConfigError, match=r'only 4 LDA directions, fewer '
                       r'than the 8') as err:
        intermediate_statistics(x, y, 10, lda_dim=8, subclasses=2, seed=0)
    assert 'kd_layer_stats.intermediate.lda_dim=4' in str(err.value)
    out = intermediate_statistics(x, y, 10, lda_dim=4, subclasses=2, seed=0)
    assert out  # the suggested value works
