"""Teacher and student from different mmpretrain families (tiny CPU inputs):
each method trains one step, or says clearly why the pair cannot work."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmrazor.registry import MODELS

from kd_plugins.errors import ConfigError
from tests.conftest import ROOT

PRE = dict(type='mmpretrain.ClsDataPreprocessor', num_classes=10,
           mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
           to_rgb=True)


def _clf(backbone, width, neck=True, head='mmpretrain.LinearClsHead'):
    return dict(type='mmpretrain.ImageClassifier', backbone=backbone,
                neck=dict(type='mmpretrain.GlobalAveragePooling')
                if neck else None,
                head=dict(type=head, num_classes=10, in_channels=width,
                          loss=dict(type='mmpretrain.CrossEntropyLoss')),
                data_preprocessor=PRE)


R50 = _clf(dict(type='mmpretrain.ResNet', depth=50), 2048)
R18 = _clf(dict(type='mmpretrain.ResNet', depth=18), 512)
MBV2 = _clf(dict(type='mmpretrain.MobileNetV2', widen_factor=0.5), 1280)
SHV2 = _clf(dict(type='mmpretrain.ShuffleNetV2', widen_factor=0.5), 1024)
DEIT = _clf(dict(type='mmpretrain.VisionTransformer', arch='deit-tiny',
                 img_size=64, patch_size=16), 192, neck=False,
            head='mmpretrain.VisionTransformerClsHead')


def _distill(name):
    return copy.deepcopy(Config.fromfile(osp.join(
        ROOT, f'configs/_base_/distill/{name}.py'))[f'{name}_distiller']
        .to_dict())


def _batch(n=4, size=64):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(0)
    return dict(inputs=torch.randint(0, 256, (n, 3, size, size), generator=g,
                                     dtype=torch.uint8),
                data_samples=[DataSample().set_gt_label(i) for i in range(n)])


def _step(model_cfg, optim=None):
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.train()
    ow = build_optim_wrapper(model, dict(
        constructor=optim or 'DefaultOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.01)))
    before = {k: v.clone() for k, v in model.student.state_dict().items()}
    log = model.train_step(_batch(), ow)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log.values()), log
    moved = [k for k, v in model.student.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, before[k])]
    assert moved, 'the student did not learn'
    return model, log


def _fast(teacher, student, distiller):
    if teacher is DEIT:  # a ViT head's linear layer is head.layers.head
        for rec in distiller.get('teacher_recorders', {}).values():
            if rec['source'] == 'head.fc':
                rec['source'] = 'head.layers.head'
    return dict(_scope_='mmrazor', type='FastDistill', data_preprocessor=PRE,
                architecture=student, teacher=teacher, distiller=distiller)


@pytest.mark.parametrize('teacher,student', [
    (R50, MBV2), (R50, SHV2), (DEIT, R18)],
    ids=['r50-mobilenetv2', 'r50-shufflenetv2', 'deit-r18'])
def test_kd_logits_any_pair(teacher, student):
    _, log = _step(_fast(teacher, student, _distill('kd')))
    assert 'distill.loss_kd' in log


@pytest.mark.parametrize('teacher,student', [(DEIT, R18), (R50, MBV2)],
                         ids=['deit-r18', 'r50-mobilenetv2'])
def test_aekt_any_pair(teacher, student):
    student = copy.deepcopy(student)
    student['head'] = dict(type='mmpretrain.AEKTHead', num_classes=10,
                           in_channels=student['head']['in_channels'],
                           loss=dict(type='mmpretrain.CrossEntropyLoss'))
    _, log = _step(_fast(teacher, student, _distill('aekt')))
    assert 'distill.loss_aekt' in log


def _atsc(teacher, student, s_width, t_width):
    return dict(_scope_='mmrazor', type='ATSC', data_preprocessor=PRE,
                architecture=student, teachers=[teacher],
                projectors=[dict(type='ATSCProjector', in_channels=s_width,
                                 out_channels=t_width)])


def test_atsc_resnet50_to_mobilenetv2():
    # 64 px: MobileNetV2 and ResNet-50 maps are both 2x2; the projector
    # adapts 1280 -> 2048 channels into the teacher's classifier
    _, log = _step(_atsc(R50, MBV2, 1280, 2048),
                   optim='KDMultiOptimWrapperConstructor')
    assert any('mse' in k for k in log), log


def test_atsc_refuses_a_vit_teacher_clearly():
    with pytest.raises(ConfigError, match='no linear classifier at head.fc'):
        MODELS.build(_atsc(DEIT, R18, 512, 192))


def _ie(teacher, student, s_src, s_width, t_src, t_width):
    d = Config.fromfile(osp.join(ROOT, 'configs/_base_/distill/ie_kd.py'))
    conn = copy.deepcopy(d.ie_connectors.to_dict())
    rate = 0.5
    for k in ('s_inh', 's_exp'):
        conn[k].update(in_channels=s_width, out_channels=int(t_width * rate))
    conn['t_enc'].update(in_channels=t_width, rate=rate)
    distiller = dict(
        type='ConfigurableDistiller',
        student_recorders=dict(ie_feat=dict(type='ModuleOutputs',
                                            source=s_src)),
        teacher_recorders=dict(ie_feat=dict(type='ModuleOutputs',
                                            source=t_src)),
        connectors=conn, distill_losses=d.ie_losses.to_dict(),
        loss_forward_mappings=d.ie_mappings.to_dict())
    return _fast(teacher, student, distiller)


def test_ie_kd_resnet50_to_shufflenetv2_adapts_channels():
    # (the frozen stage-1 encoder comes from a checkpoint in real runs; here
    # it keeps its initial weights)
    _, log = _step(_ie(R50, SHV2, 'backbone.layers.3', 1024,
                       'backbone.layer4', 2048))
    assert 'distill.loss_inh' in log and 'distill.loss_exp' in log


def test_ie_kd_with_a_vit_teacher_says_why_not():
    with pytest.raises(ConfigError, match=r'(?s)needs \(N, C, H, W\) '
                       r'feature maps.*logit-based method \(KD, AEKT\)'):
        _step(_ie(DEIT, R18, 'backbone.layer4', 512, 'backbone.layers.11',
                  192))


def test_kd_layer_on_mobilenetv2_student_from_resnet50(tmp_path):
    from tests.test_kd_layer import _write_stats
    stats = str(tmp_path / 'stats.npz')
    _write_stats(stats, c=2048, k=8, classes=10)
    student = copy.deepcopy(MBV2)
    student['backbone'] = dict(
        type='mmpretrain.KDLayerBackbone', backbone=student['backbone'],
        kd_layers=[dict(after='conv2', in_channels=1280, num_templates=8)])
    distiller = dict(
        type='ConfigurableDistiller',
        student_recorders=dict(penult=dict(
            type='ModuleOutputs', source='backbone.kd_layers.conv2.match')),
        teacher_recorders=dict(penult=dict(type='ModuleOutputs',
                                           source='backbone.layer4')),
        distill_losses=dict(loss_penult=dict(
            type='KDLayerLoss', kind='penultimate', stats_file=stats,
            num_templates=8)),
        loss_forward_mappings=dict(loss_penult=dict(
            preds_S=dict(from_student=True, recorder='penult'),
            preds_T=dict(from_student=False, recorder='penult'))))
    _, log = _step(_fast(R50, student, distiller))
    assert 'distill.loss_penult' in log


def test_zoo_teacher_by_name_with_a_local_checkpoint(tmp_path):
    import mmpretrain
    ref = mmpretrain.get_model('resnet18_8xb32_in1k', pretrained=False)
    with torch.no_grad():
        for p in ref.parameters():
            p.uniform_(-0.1, 0.1)
    ckpt = str(tmp_path / 'r18.pth')
    torch.save(dict(state_dict=ref.state_dict()), ckpt)
    student = copy.deepcopy(MBV2)
    student['head']['num_classes'] = 1000
    model = MODELS.build(dict(
        _scope_='mmrazor', type='FastDistill',
        architecture=student, teacher='resnet18_8xb32_in1k',
        teacher_ckpt=ckpt, distiller=_distill('kd')))
    for k, v in ref.state_dict().items():
        assert torch.equal(model.teacher.state_dict()[k], v), k
    with pytest.raises(ConfigError, match="not a model of mmpretrain's zoo"):
        MODELS.build(dict(_scope_='mmrazor', type='FastDistill',
                          architecture=student, teacher='resnet19_in1k',
                          distiller=_distill('kd')))
