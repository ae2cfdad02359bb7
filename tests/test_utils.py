"""The shared helpers of kd_plugins/utils and losses/tempered_kl.py."""
import math

import pytest
import torch
import torch.nn as nn

from kd_plugins.errors import ConfigError
from kd_plugins.losses.tempered_kl import tempered_kl
from kd_plugins.utils.checkpoint import state_dict_diff
from kd_plugins.utils.config import find_key, innermost_dataset, iter_nodes
from kd_plugins.utils.teacher import (as_list, build_teacher,
                                      clear_teacher_ckpts, teacher_entries,
                                      teachers_and_ckpts)

TINY = dict(type='mmpretrain.ImageClassifier',
            backbone=dict(type='mmpretrain.ResNet_CIFAR', depth=18,
                          stem_channels=8, base_channels=8, num_stages=1,
                          strides=(1, ), dilations=(1, ), out_indices=(0, )),
            neck=dict(type='mmpretrain.GlobalAveragePooling'),
            head=dict(type='mmpretrain.LinearClsHead', num_classes=3,
                      in_channels=8))


def test_build_teacher_loads_ddp_prefixed_weights_and_freezes(tmp_path):
    """One prefix policy: a checkpoint saved from a DDP-wrapped model
    (``module.`` keys) loads; the teacher is frozen unless trainable."""
    src = build_teacher(TINY, trainable=True)
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    ckpt = tmp_path / 't.pth'
    torch.save({'state_dict': {f'module.{k}': v
                               for k, v in src.state_dict().items()}}, ckpt)
    t = build_teacher(TINY, str(ckpt))
    for k, v in src.state_dict().items():
        assert torch.equal(t.state_dict()[k], v), k
    assert not any(p.requires_grad for p in t.parameters())
    assert t._is_init  # init_weights will not overwrite the loaded weights
    assert all(p.requires_grad for p in build_teacher(
        TINY, trainable=True).parameters())
    with pytest.raises(ConfigError, match='model config dict'):
        build_teacher(3)


def test_teacher_lists_and_entries():
    assert as_list(None, 2) == [None, None] and as_list('a') == ['a']
    assert as_list(dict(a=1)) == [dict(a=1)]
    ts, cs = teachers_and_ckpts(TINY, 'x.pth', 'M')
    assert ts == [TINY] and cs == ['x.pth']
    with pytest.raises(ConfigError, match='2 teachers but 1 teacher_ckpts'):
        teachers_and_ckpts([TINY, TINY], ['a'], 'M')
    with pytest.raises(ConfigError, match='at least one teacher'):
        teachers_and_ckpts([], None, 'M')
    model = dict(teachers=[TINY, 'resnet18_8xb32_in1k'],
                 teacher_ckpts=['a.pth', None])
    assert [(w, k, c) for w, k, _, c in teacher_entries(model)] == [
        ('model.teachers[0]', 'model.teacher_ckpts[0]', 'a.pth'),
        ('model.teachers[1]', 'model.teacher_ckpts[1]', None)]
    clear_teacher_ckpts(model)
    assert model['teacher_ckpts'] == [None, None]
    one = dict(teacher=TINY, teacher_ckpt='t.pth')
    assert [k for _, k, _, _ in teacher_entries(one)] == ['model.teacher_ckpt']


def test_config_walkers():
    cfg = dict(dataset=dict(type='RepeatDataset', times=2,
                            dataset=dict(type='CIFAR100', pipeline=[1])))
    assert innermost_dataset(cfg)['type'] == 'CIFAR100'
    assert innermost_dataset(cfg['dataset']['dataset']) is \
        cfg['dataset']['dataset']
    model = dict(a=dict(stats_file='s1'), b=[dict(stats_file='s2'), 3])
    assert list(find_key(model, 'stats_file', 'model')) == [
        ('model.a.stats_file', 's1'), ('model.b[0].stats_file', 's2')]
    assert [p for p, _ in iter_nodes(model)][:3] == ['', 'a', 'a.stats_file']


def test_state_dict_diff():
    want = nn.Linear(2, 3).state_dict()
    have = dict(weight=torch.zeros(3, 3), other=torch.zeros(1))
    assert state_dict_diff(have, want) == (['bias'], ['other'], ['weight'])
    assert state_dict_diff(want, want) == ([], [], [])


def test_tempered_kl_by_hand():
    z_s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    z_t = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    tau = 2.0
    want = 0.0
    for s, t in zip(z_s.tolist(), z_t.tolist()):
        ps = [math.exp(v / tau) for v in s]
        pt = [math.exp(v / tau) for v in t]
        ps = [v / sum(ps) for v in ps]
        pt = [v / sum(pt) for v in pt]
        want += sum(b * math.log(b / a) for a, b in zip(ps, pt))
    want = tau**2 * want / 2
    assert float(tempered_kl(z_s, z_t, tau)) == pytest.approx(want, rel=1e-6)
