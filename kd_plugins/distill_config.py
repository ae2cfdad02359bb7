"""One step from any mmpretrain classifier config to a distillation config.

    python tools/distill_config.py STUDENT --method kd \\
        --teacher resnet50_8xb32_in1k -o work/kd_r50_r18.py

``STUDENT`` is an mmpretrain classifier config (a file, ``mmpretrain::
resnet/resnet18_8xb32_in1k.py`` or a model-zoo name); a teacher is the name of
a model of mmpretrain's zoo (weights: the zoo's checkpoint unless
``--teacher-ckpt`` says otherwise) or a classifier config file (then
``--teacher-ckpt`` is required). The written config inherits the student's
file (``_base_``): data, schedule and runtime stay the user's; only ``model``
(and, for ATSC, the optimizer constructor) changes. What a user would
otherwise write by hand (docs/training.md, "Add a method to any mmpretrain
config") is worked out from one forward pass of each network on PyTorch's
``meta`` device (no memory, no weights):

* the classifier: the one ``nn.Linear`` of the head that outputs the class
  scores (``head.fc``; ``head.layers.head`` in a ViT head);
* the last feature map: the shallowest module whose output is the
  backbone's final output (``backbone.layer4``; ``backbone.conv2`` in a
  MobileNetV2), its channels and size;
* per method: the AEKT head, where the KD layer goes, the IE-KD encoders'
  widths, the ATSC projector's sizes;
* the teacher's normalisation and input size when they differ from the
  student's (``teacher_input``, :mod:`kd_plugins.algorithms.teacher_input`).

Where a choice is ambiguous the tool refuses and names the option that
settles it (``--student-logits``, ``--teacher-feature``, ...).
"""
from __future__ import annotations

import keyword
import os
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict

from .errors import ArgumentError, ConfigError

METHODS = {
    'kd': 'Hinton KD: KL divergence of the logits at temperature 4',
    'aekt': 'AEKT (Park & Lee 2024): student head with a serialization '
            'layer, adaptive KD on the logits',
    'kd_layer': 'KD layer, letKD-1 (Gorgun et al., BMVC 2023): a KD layer '
                'after the student\'s last map, teacher templates from '
                'offline statistics',
    'ie_kd': 'IE-KD (Huang et al., CVPR 2021): stage 1 trains the teacher '
             'factor encoder, stage 2 inheritance + exploration losses',
    'atsc': 'ATSC (Jang et al. 2024): the student predicts through the '
            'teacher\'s classifier, the teacher adapts (anchored)',
    'mt_kd': 'multi-teacher KD: KD from the mean of the teachers\' logits',
}
FEATURE_METHODS = ('kd_layer', 'ie_kd', 'atsc')
# methods that read the hard labels: no Mixup / CutMix (soft labels)
LABEL_METHODS = ('aekt', 'atsc')
DEFAULT_SIZE = 224


class Code(str):
    """Python source written as it is (``_base_.model``), not repr'd."""


# ----------------------------------------------------------------------------
# Where the student and teachers come from
def mim_configs() -> str:
    import mmpretrain
    return osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'configs')


def _zoo_entry(name: str):
    from mmpretrain.apis import ModelHub
    ModelHub._register_mmpretrain_models()
    return ModelHub._models_dict.get(name.lower())


def _zoo_near(name: str) -> List[str]:
    import mmpretrain
    return mmpretrain.list_models(f'*{name.split("_")[0]}*')[:8]


def resolve_student(arg: str, out_dir: str) -> Tuple[Config, str]:
    """(config, what ``_base_`` says) of a student argument: a file,
    ``mmpretrain::path`` or the name of a model of mmpretrain's zoo."""
    path = None
    if arg.startswith('mmpretrain::'):
        path = osp.join(mim_configs(), arg.split('::', 1)[1])
    elif osp.isfile(arg):
        path = osp.abspath(arg)
    else:
        entry = _zoo_entry(arg)
        if entry is not None:
            path = entry.config
    if path is None or not osp.isfile(path):
        raise ArgumentError(
            f'student {arg!r} is neither a config file, an mmpretrain:: '
            f'config path nor a model of mmpretrain\'s zoo (similar names: '
            f'{_zoo_near(osp.basename(arg))}).\n  Fix: give the path of '
            'your classifier config, e.g. configs/my_resnet18.py, or '
            'mmpretrain::resnet/resnet18_8xb32_in1k.py.')
    root = mim_configs()
    if osp.abspath(path).startswith(root + os.sep):
        base = 'mmpretrain::' + osp.relpath(path, root)
    else:  # relative when near (a project's configs/), else absolute
        base = osp.relpath(osp.abspath(path), osp.abspath(out_dir))
        if base.startswith(osp.join('..', '..', '..')):
            base = osp.abspath(path)
    cfg = Config.fromfile(path)
    model = cfg.get('model') or {}
    kind = str(model.get('type', '')).split('.')[-1]
    if kind != 'ImageClassifier' and 'architecture' in model:
        raise ConfigError(
            f'{arg} is already a distillation config (model.type={kind!r}).'
            '\n  Fix: give the student\'s own classifier config.')
    if 'head' not in model or 'backbone' not in model:
        raise ConfigError(
            f'{arg}: model has no backbone / head; distill_config wraps an '
            'mmpretrain ImageClassifier config.')
    return cfg, base


@dataclass
class Teacher:
    """A teacher: what the config says (``spec``), where its weights are
    and the config its preprocessing is read from."""
    arg: str
    spec: object          # zoo name (str) or model dict
    ckpt: Optional[str]
    cfg: Config
    zoo: bool
    net: Optional['Net'] = None
    teacher_input: Optional[dict] = None


def resolve_teacher(arg: str, ckpt: Optional[str]) -> Teacher:
    """A teacher argument: a zoo name (default weights: the zoo's URL) or a
    config file (``ckpt`` required; ``'none'``: random weights)."""
    none = ckpt is not None and ckpt.lower() == 'none'
    if osp.isfile(arg):
        cfg = Config.fromfile(arg)
        if 'model' not in cfg:
            raise ConfigError(f'teacher config {arg} has no model.')
        if ckpt is None:
            raise ArgumentError(
                f'teacher {arg} is a config file: its weights are not known.'
                '\n  Fix: add --teacher-ckpt /path/to/teacher.pth (one per '
                '--teacher, in order; "none" for random weights, a smoke '
                'test only).')
        spec = dict(cfg.model.to_dict(), _scope_='mmpretrain')
        return Teacher(arg, spec, None if none else ckpt, cfg, zoo=False)
    entry = _zoo_entry(arg)
    if entry is None:
        raise ArgumentError(
            f'teacher {arg!r} is neither a config file nor a model of '
            f'mmpretrain\'s zoo (similar names: {_zoo_near(arg)}).\n  Fix: '
            'a name from mmpretrain.list_models(), or the teacher\'s config '
            'with --teacher-ckpt.')
    cfg = Config.fromfile(entry.config)
    weights = None if none else (ckpt or entry.weights)
    return Teacher(entry.name, entry.name, weights, cfg, zoo=True)


def preprocessing(cfg: Config) -> dict:
    """mean / std / to_rgb (pixel units) and the training input side."""
    from .export import training_size
    pre = cfg.get('data_preprocessor') or \
        (cfg.get('model') or {}).get('data_preprocessor') or {}
    mean, std = pre.get('mean'), pre.get('std')
    return dict(mean=None if mean is None else [float(v) for v in mean],
                std=None if std is None else [float(v) for v in std],
                to_rgb=bool(pre.get('to_rgb') or pre.get('bgr_to_rgb')),
                size=training_size(cfg))


def teacher_input(student: dict, teacher: dict) -> Optional[dict]:
    """``FastDistill.teacher_input`` for a teacher whose preprocessing
    differs from the student's; None when it is the same."""
    out = {}
    norm = ('mean', 'std', 'to_rgb')
    if any(student[k] != teacher[k] for k in norm) and (
            teacher['mean'] is not None or student['mean'] is not None):
        out.update({k: teacher[k] for k in norm})
        if teacher['mean'] is None:  # the teacher takes raw pixels
            out.update(mean=[0.0] * 3, std=[1.0] * 3)
    if teacher['size'] and teacher['size'] != (student['size']
                                               or teacher['size']):
        out['size'] = teacher['size']
    return out or None


# ----------------------------------------------------------------------------
# One meta-device forward pass per network
@dataclass
class Net:
    """What a forward pass tells about a classifier.

    ``logits``: module path of the classifier layer (an ``nn.Linear``,
    ``logits_in`` -> ``num_classes``); ``feature``: module path of the last
    map, ``feature_shape`` its per-sample shape ((C, H, W) for a map)."""
    who: str
    kind: str
    num_classes: int
    logits: str
    logits_in: int
    head_type: str
    feature: Optional[str]
    feature_shape: Optional[tuple]
    final_shape: tuple
    size: int

    @property
    def has_map(self) -> bool:
        return self.feature_shape is not None and len(self.feature_shape) == 3

    @property
    def channels(self) -> int:
        return int(self.feature_shape[0])

    def describe(self) -> str:
        s = (f'{self.kind}, {self.num_classes} classes, logits {self.logits} '
             f'({self.logits_in} -> {self.num_classes})')
        if self.has_map:
            s += (f', last map {self.feature} '
                  f'{tuple(self.feature_shape)} at {self.size} px')
        else:
            s += (f', backbone output {tuple(self.final_shape)} (not a '
                  'feature map)')
        return s


def _build(spec, who: str) -> Tuple[nn.Module, torch.device]:
    """``spec`` built as the preflight builds it (meta device, else CPU:
    :func:`~kd_plugins.engine.pair_checks.build_meta`); the device it is
    on. Where it cannot be built, the CPU build's own error says why."""
    from .engine.pair_checks import build_meta
    model = build_meta(spec)
    if model is None:
        from mmrazor.registry import MODELS

        from .utils.teacher import zoo_model
        try:
            zoo_model(spec) if isinstance(spec, str) else MODELS.build(spec)
        except Exception as err:  # noqa: BLE001 - the user's config
            raise ConfigError(f'could not build the {who}: '
                              f'{type(err).__name__}: {err}') from err
    device = next((p.device for p in model.parameters()),
                  torch.device('cpu'))
    return model, device


def _records(model: nn.Module, size: int, device: str):
    recs: Dict[str, object] = {}
    hooks = [m.register_forward_hook(
        lambda mod, inp, out, name=name: recs.__setitem__(name, out))
        for name, m in model.named_modules() if name]
    try:
        model.eval()
        x = torch.zeros(2, 3, size, size, device=device)
        with torch.no_grad():
            out = model(x, mode='tensor')
    finally:
        for h in hooks:
            h.remove()
    return recs, out


def _shape(t) -> tuple:
    return tuple(t.shape[1:])


def inspect_net(spec, size: Optional[int], who: str,
                logits: Optional[str] = None,
                feature: Optional[str] = None) -> Net:
    """Build ``spec`` (a classifier config dict or zoo name) on the meta
    device, run one batch of ``size`` px and find its classifier layer and
    last feature map (or take ``logits`` / ``feature`` as given)."""
    opt = '--student' if who == 'student' else '--teacher'
    size = size or DEFAULT_SIZE
    model, device = _build(spec, who)
    try:
        recs, out = _records(model, size, device)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f'the {who} ({type(model).__name__}) does not run '
                          f'on a {size} x {size} batch: {err}') from err
    names = [n for n, _ in model.named_modules() if n]
    head = getattr(model, 'head', None)
    num_classes = getattr(head, 'num_classes', None)
    if not isinstance(num_classes, int):
        raise ConfigError(f'the {who} head ({type(head).__name__}) has no '
                          'num_classes: not an mmpretrain classifier head.')
    # the classifier layer: a Linear of the head giving the class scores
    if logits is None:
        linear = [n for n, m in model.named_modules()
                  if n.startswith('head.') and isinstance(m, nn.Linear)
                  and m.out_features == num_classes]
        if len(linear) > 1:  # the one whose output is the model's
            linear = [n for n in linear if recs.get(n) is out] or linear
        if len(linear) != 1:
            raise ConfigError(
                f'the {who} head ({type(head).__name__}) has '
                f'{"no" if not linear else len(linear)} linear layers giving '
                f'its {num_classes} class scores {linear or ""}.\n  Fix: name '
                f'the classifier layer with {opt}-logits MODULE (one of '
                f'{[n for n in names if n.startswith("head.")][:8]}).')
        logits = linear[0]
    mod = dict(model.named_modules()).get(logits)
    if not isinstance(mod, nn.Linear):
        raise ConfigError(
            f'{opt}-logits {logits!r} is not a linear layer of the {who} '
            f'(its head modules: {[n for n in names if n.startswith("head")]}'
            ').')
    final = recs.get('backbone')
    if isinstance(final, (tuple, list)):
        final = final[-1]
    if not torch.is_tensor(final):
        raise ConfigError(f'the {who} backbone returns '
                          f'{type(final).__name__}, not tensors.')
    if feature is None:
        same = [n for n in names if n.startswith('backbone.')
                and recs.get(n) is final]
        feature = min(same, key=lambda n: n.count('.')) if same else None
        shape = _shape(final) if feature else None
    else:
        if feature not in recs or not torch.is_tensor(recs[feature]):
            raise ConfigError(
                f'{opt}-feature {feature!r}: the {who} has no module of that '
                f'name with a tensor output (backbone modules: '
                f'{[n for n in names if n.count(".") == 1][:12]}).')
        shape = _shape(recs[feature])
    return Net(who=who, kind=type(model.backbone).__name__,
               num_classes=num_classes, logits=logits,
               logits_in=mod.in_features, head_type=type(head).__name__,
               feature=feature, feature_shape=shape,
               final_shape=_shape(final), size=size)


# ----------------------------------------------------------------------------
# Config text
def py(obj, indent: int = 0, lead: int = 0) -> str:
    """``obj`` as config source: ``dict(a=1, ...)``, one item per line where
    it would not fit in 79 columns (``indent``: the line's indentation,
    ``lead``: what precedes ``obj`` on its first line)."""
    if isinstance(obj, Code):
        return str(obj)
    if isinstance(obj, ConfigDict):
        obj = obj.to_dict()
    pad = ' ' * (indent + 4)
    if isinstance(obj, dict):
        plain = all(isinstance(k, str) and k.isidentifier()
                    and not keyword.iskeyword(k) for k in obj)
        items = [f'{k}={py(v, indent + 4, len(k) + 1)}' if plain else
                 f'{k!r}: {py(v, indent + 4, len(repr(k)) + 2)}'
                 for k, v in obj.items()]
        open_, close = ('dict(', ')') if plain else ('{', '}')
    elif isinstance(obj, (list, tuple)):
        items = [py(v, indent + 4) for v in obj]
        open_, close = ('[', ']') if isinstance(obj, list) else ('(', ')')
        if isinstance(obj, tuple) and len(obj) == 1:
            items[0] += ','
    else:
        return repr(obj)
    one = open_ + ', '.join(items) + close
    if indent + lead + len(one) <= 76 and '\n' not in one:
        return one
    return open_ + '\n' + ',\n'.join(pad + it for it in items) + close


def _template(name: str) -> dict:
    """A distiller dict of configs/_base_/distill/ (the one source of each
    method's wiring)."""
    path = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                    'configs', '_base_', 'distill', f'{name}.py')
    if not osp.isfile(path):
        raise ConfigError(f'{path} is missing: distill_config reads the '
                          'method wiring from the kd_plugins checkout '
                          '(pip install -e .).')
    return Config.fromfile(path)


def recorder(source: str, kind: str = 'ModuleOutputs', **extra) -> dict:
    return dict(type=kind, source=source, **extra)


# ----------------------------------------------------------------------------
@dataclass
class Request:
    student: str
    method: str
    teachers: List[str]
    out: str
    teacher_ckpts: List[Optional[str]] = field(default_factory=list)
    student_logits: Optional[str] = None
    teacher_logits: Optional[str] = None
    student_feature: Optional[str] = None
    teacher_feature: Optional[str] = None
    num_templates: Optional[int] = None
    stage1_epochs: int = 10
    no_batch_augments: bool = False
    command: str = ''


@dataclass
class Plan:
    """Everything a method writes: assignments after the shared prelude,
    the header's notes and commands, other files (IE-KD stage 1)."""
    req: Request
    cfg: Config
    base: str
    student: Net
    teachers: List[Teacher]
    batch_augments: bool
    # the student's variant (AEKT head, KD-layer backbone): (comment,
    # name, value) lines between the prelude and ``model``
    before: List[Tuple[str, str, object]] = field(default_factory=list)
    # top-level assignments after ``model`` (optimizer constructor, ...)
    assign: Dict[str, object] = field(default_factory=dict)
    stage1: Optional[dict] = None  # IE-KD stage 1's model
    notes: List[str] = field(default_factory=list)
    steps: List[str] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return osp.splitext(osp.basename(self.req.out))[0]


def _refuse_maps(plan: Plan) -> None:
    """Feature methods need (N, C, H, W) maps from both networks."""
    for net in [plan.student] + [t.net for t in plan.teachers]:
        if not net.has_map:
            opt = '--student' if net.who == 'student' else '--teacher'
            raise ConfigError(
                f'{plan.req.method} needs (N, C, H, W) feature maps, but the '
                f'{net.who} ({net.kind}) backbone ends in '
                f'{("(N, " + ", ".join(map(str, net.final_shape)) + ")")} '
                'outputs (a transformer\'s tokens are not feature maps).\n  '
                'Fix: a logit-based method (kd, aekt, mt_kd) works for this '
                f'pair; or name a module with a map output, {opt}-feature '
                'MODULE.')


def _teacher_fields(plan: Plan, t: Teacher) -> dict:
    spec = t.spec if t.zoo else dict(t.spec, data_preprocessor=Code('_pre'))
    out = dict(teacher=spec, teacher_ckpt=t.ckpt)
    if t.teacher_input:
        out['teacher_input'] = t.teacher_input
    return out


def _student(plan: Plan, **changes) -> Code:
    """The ``_student = dict(_base_.model, ...)`` line."""
    fields = dict(_scope_='mmpretrain', data_preprocessor=Code('_pre'))
    if plan.cfg.model.get('train_cfg') and plan.req.no_batch_augments:
        fields['train_cfg'] = None
    fields.update(changes)
    items = ['_base_.model'] + [f'{k}={py(v, 4, len(k) + 1)}'
                                for k, v in fields.items()]
    one = 'dict(' + ', '.join(items) + ')'
    if len(one) <= 60 and '\n' not in one:
        return Code(one)
    return Code('dict(\n' + ',\n'.join('    ' + i for i in items) + ')')


def plan_kd(plan: Plan) -> dict:
    t = plan.teachers[0]
    d = _template('kd').kd_distiller.to_dict()
    d['student_recorders']['fc']['source'] = plan.student.logits
    d['teacher_recorders']['fc']['source'] = t.net.logits
    return dict(type='FastDistill', architecture=Code('_student'),
                **_teacher_fields(plan, t), distiller=d)


def plan_mt_kd(plan: Plan) -> dict:
    sources = {t.net.logits for t in plan.teachers}
    if len(sources) > 1:
        raise ConfigError(
            'mt_kd records one module path in every teacher, but the '
            f'teachers\' classifiers are at {sorted(sources)}.\n  Fix: '
            'teachers whose classifier has the same path (e.g. all CNNs with '
            'a LinearClsHead: head.fc).')
    inputs = {repr(t.teacher_input) for t in plan.teachers}
    if len(inputs) > 1:
        raise ConfigError(
            'mt_kd gives every teacher one input, but the teachers were '
            'trained with different normalisation or input size: '
            + '; '.join(f'{t.arg}: {t.teacher_input or "as the student"}'
                        for t in plan.teachers)
            + '.\n  Fix: teachers with the same preprocessing.')
    d = _template('kd').kd_distiller.to_dict()
    d['student_recorders']['fc']['source'] = plan.student.logits
    d['teacher_recorders']['fc']['source'] = sources.pop()
    fields = [_teacher_fields(plan, t) for t in plan.teachers]
    out = dict(type='MultiTeacherDistill', architecture=Code('_student'),
               teachers=[f['teacher'] for f in fields],
               teacher_ckpts=[f['teacher_ckpt'] for f in fields],
               combine='mean_logits', distiller=d)
    if plan.teachers[0].teacher_input:
        out['teacher_input'] = plan.teachers[0].teacher_input
    return out


def _aekt_head(plan: Plan) -> dict:
    s, head = plan.student, plan.cfg.model.head
    kind = str(head.get('type', '')).split('.')[-1]
    simple = kind in ('LinearClsHead', 'AEKTHead') or (
        kind == 'VisionTransformerClsHead' and not head.get('hidden_dim'))
    if not simple:
        raise ConfigError(
            f'aekt replaces the student head by an AEKTHead (one linear '
            f'classifier + the serialization layer); the student head is a '
            f'{kind} with more than a linear layer.\n  Fix: kd keeps your '
            'head; or give the student a LinearClsHead.')
    out = dict(type='mmpretrain.AEKTHead', num_classes=s.num_classes,
               in_channels=s.logits_in, order='classify_first')
    for key in ('loss', 'topk', 'cal_acc'):
        if key in head:
            out[key] = Code(f'_base_.model.head.{key}')
    return out


def plan_aekt(plan: Plan) -> dict:
    t = plan.teachers[0]
    d = _template('aekt').aekt_distiller.to_dict()
    d['teacher_recorders']['fc']['source'] = t.net.logits
    # the ImageNet paper config's loss settings (configs/aekt_r34_r18_in1k.py)
    d['distill_losses']['loss_aekt'].update(
        tau=1.0, alpha=1.0, beta=0.5, ratio_max=2.0, loss_weight=1.0)
    plan.notes.append('the student head is an AEKTHead (serialization layer '
                      'on the logits); the exported student is a plain '
                      'LinearClsHead classifier')
    plan.before.append((
        'the student with the AEKT head (serialization layer on the logits)',
        '_student_aekt', _student(plan, head=_aekt_head(plan))))
    return dict(type='FastDistill', architecture=Code('_student_aekt'),
                **_teacher_fields(plan, t), distiller=d)


def plan_kd_layer(plan: Plan) -> dict:
    s, t = plan.student, plan.teachers[0]
    k = plan.req.num_templates or (4096 if s.num_classes >= 100 else 64)
    after = s.feature[len('backbone.'):]
    stats = f'work_dirs/kd_layer_stats_{plan.stem}.npz'
    d = dict(
        type='ConfigurableDistiller',
        student_recorders=dict(penult=recorder(
            f'backbone.kd_layers.{after.replace(".", "_")}.match')),
        teacher_recorders=dict(penult=recorder(t.net.feature)),
        distill_losses=dict(loss_penult=dict(
            type='KDLayerLoss', kind='penultimate', stats_file=stats,
            num_templates=k, tau=1.0, loss_weight=1.0)),
        loss_forward_mappings=dict(loss_penult=dict(
            preds_S=dict(from_student=True, recorder='penult'),
            preds_T=dict(from_student=False, recorder='penult'))))
    plan.notes.append(f'a KD layer ({k} templates) after the student\'s '
                      f'{after}; the teacher\'s templates come from its '
                      f'{t.net.feature} maps (statistics file {stats})')
    ckpt = t.ckpt or 'TEACHER_CKPT'
    plan.steps.append(f'python tools/kd_layer_stats.py {plan.req.out} {ckpt} '
                      f'{stats}')
    plan.assign['kd_layer_stats'] = dict(
        penultimate=dict(teacher_layer=t.net.feature, num_templates=k),
        max_memory_gb=8.0, min_per_class=1000, kmeans_iters=20, seed=0)
    plan.before += [
        ('the student backbone with a KD layer after its last map',
         '_backbone', dict(type='mmpretrain.KDLayerBackbone',
                           backbone=Code('_base_.model.backbone'),
                           kd_layers=[dict(after=after,
                                           in_channels=s.channels,
                                           num_templates=k)])),
        (None, '_student_kd_layer', _student(plan,
                                             backbone=Code('_backbone')))]
    return dict(type='FastDistill', architecture=Code('_student_kd_layer'),
                **_teacher_fields(plan, t), distiller=d)


IE_RATE = 0.5


def plan_ie_kd(plan: Plan) -> dict:
    s, t = plan.student, plan.teachers[0]
    base = _template('ie_kd')
    stage1_name = f'{plan.stem}_stage1'
    epochs = plan.req.stage1_epochs
    stage1_ckpt = f'work_dirs/{stage1_name}/epoch_{epochs}.pth'
    conn = base.ie_connectors.to_dict()
    for key in ('s_inh', 's_exp'):
        conn[key].update(in_channels=s.channels,
                         out_channels=int(t.net.channels * IE_RATE))
    conn['t_enc'].update(in_channels=t.net.channels, rate=IE_RATE,
                         stage1_ckpt=stage1_ckpt)
    d = dict(type='ConfigurableDistiller',
             student_recorders=dict(ie_feat=recorder(s.feature)),
             teacher_recorders=dict(ie_feat=recorder(t.net.feature)),
             connectors=conn, distill_losses=base.ie_losses.to_dict(),
             loss_forward_mappings=base.ie_mappings.to_dict())
    # stage 1: the teacher factor auto-encoder, L1 reconstruction
    s1 = base.ie_stage1_distiller.to_dict()
    s1['teacher_recorders']['feat']['source'] = t.net.feature
    s1['connectors']['t_ae'].update(in_channels=t.net.channels, rate=IE_RATE)
    plan.stage1 = dict(
        _delete_=True, _scope_='mmrazor', type='FastDistill',
        data_preprocessor=Code('_pre'), architecture=Code('_student'),
        **_teacher_fields(plan, t), student_trainable=False,
        calculate_student_loss=False, distiller=s1)
    out_dir = osp.dirname(plan.req.out)
    s1_path = osp.join(out_dir, stage1_name + '.py')
    plan.steps.append(f'python tools/train.py {s1_path}   # stage 1, '
                      f'{epochs} epochs: {stage1_ckpt}')
    plan.notes.append(
        f'stage 1 ({s1_path}) trains the teacher factor encoder on the '
        f'teacher\'s {t.net.feature} ({t.net.channels} channels, rate '
        f'{IE_RATE}); stage 2 splits the student\'s {s.feature} '
        f'({s.channels} channels) into inheritance / exploration parts')
    return dict(type='FastDistill', architecture=Code('_student'),
                **_teacher_fields(plan, t), distiller=d)


def plan_atsc(plan: Plan) -> dict:
    s = plan.student
    for t in plan.teachers:
        if t.net.logits != 'head.fc':
            raise ConfigError(
                f'atsc shares the teacher\'s classifier, which must be a '
                f'linear head.fc; teacher {t.arg} classifies with '
                f'{t.net.logits} ({t.net.head_type}).\n  Fix: a teacher with '
                'an mmpretrain LinearClsHead, or kd / aekt for this pair.')
        if t.net.channels != t.net.logits_in:
            raise ConfigError(
                f'atsc pools the teacher\'s last map into its classifier, but '
                f'teacher {t.arg} maps have {t.net.channels} channels and its '
                f'head.fc takes {t.net.logits_in} (a neck or pre-logits '
                'layer between).\n  Fix: --teacher-feature MODULE naming the '
                'map head.fc reads.')
        if t.teacher_input:
            raise ConfigError(
                f'atsc trains the teacher on the student\'s inputs, but '
                f'teacher {t.arg} was trained with other preprocessing '
                f'({t.teacher_input}).\n  Fix: a teacher trained with the '
                'student\'s normalisation and input size, or kd / aekt.')
    if plan.req.student_feature:
        raise ConfigError('atsc projects the student backbone\'s final map '
                          '(extract_feat); --student-feature does not apply.')
    anchor = 10.0 if s.num_classes >= 1000 else 1.0
    plan.notes.append(
        f'ATSC projects the student\'s last map ({s.channels} channels) to '
        'each teacher\'s classifier width; anchor weight w = '
        f'{anchor:g} (the paper: 10 on ImageNet, 1 on CIFAR)')
    optim = dict(constructor='KDMultiOptimWrapperConstructor')
    if (plan.cfg.get('optim_wrapper') or {}).get('paramwise_cfg'):
        optim['paramwise_cfg'] = None
        plan.notes.append('the student config\'s optim_wrapper.paramwise_cfg '
                          'is dropped (ATSC builds one optimizer per step)')
    plan.assign['optim_wrapper'] = optim
    plan.assign['model_wrapper_cfg'] = dict(type='KDModelWrapper')
    return dict(type='ATSC', architecture=Code('_student'),
                teachers=[_teacher_fields(plan, t)['teacher']
                          for t in plan.teachers],
                teacher_ckpts=[t.ckpt for t in plan.teachers],
                projectors=[dict(type='ATSCProjector', in_channels=s.channels,
                                 out_channels=t.net.logits_in)
                            for t in plan.teachers],
                anchor_weight=anchor)


PLANNERS = dict(kd=plan_kd, aekt=plan_aekt, kd_layer=plan_kd_layer,
                ie_kd=plan_ie_kd, atsc=plan_atsc, mt_kd=plan_mt_kd)


# ----------------------------------------------------------------------------
def _prelude(plan: Plan) -> List[str]:
    lines = [f'_base_ = {plan.base!r}']
    imports = list((plan.cfg.get('custom_imports') or {}).get('imports')
                   or [])
    imports = [m for m in imports if m != 'kd_plugins'] + ['kd_plugins']
    lines.append(f'custom_imports = dict(imports={imports!r}, '
                 'allow_failed_imports=False)')
    lines.append('# the student\'s normalisation (mmpretrain keeps it at the '
                 'top level, where a')
    lines.append('# distiller would not see it), for distiller, student and '
                 'teacher alike')
    top = 'data_preprocessor' in plan.cfg
    src = '_base_.data_preprocessor' if top else \
        '_base_.model.data_preprocessor'
    pre = (f"_pre = dict({src}, type='mmpretrain.ClsDataPreprocessor'"
           if top or plan.cfg.model.get('data_preprocessor') else
           "_pre = dict(type='mmpretrain.ClsDataPreprocessor'")
    if plan.batch_augments:
        lines.append('# the student\'s batch augments (Mixup / CutMix): '
                     'teacher and student see the same mixed images')
        pre += (",\n            batch_augments=_base_.model.train_cfg, "
                "_scope_='mmpretrain'")
    lines.append(pre + ')')
    if not plan.before:  # a variant replaces the plain student
        lines.append(f'_student = {_student(plan)}')
    return lines


def _header(plan: Plan, stage: str = '') -> List[str]:
    from .version import __version__
    req = plan.req
    lines = [f'# Written by tools/distill_config.py (kd_plugins {__version__},'
             f' {time.strftime("%Y-%m-%d")}){stage}:',
             f'#   {req.command}',
             f'# Method: {req.method}: {METHODS[req.method]}.',
             f'# Student: {req.student}: {plan.student.describe()}.']
    for t in plan.teachers:
        where = 'mmpretrain model zoo' if t.zoo else 'config'
        lines.append(f'# Teacher: {t.arg} ({where}): {t.net.describe()}; '
                     f'weights: {t.ckpt or "random (no checkpoint)"}.')
        if t.teacher_input:
            lines.append(f'#   it was trained with other preprocessing: '
                         f'teacher_input={t.teacher_input} re-normalises / '
                         'resizes the student\'s batch for it.')
    for note in plan.notes:
        lines.append(f'# Note: {note}.')
    if plan.batch_augments:
        lines.append('# Note: the student config\'s batch augments (model.'
                     'train_cfg.augments) run in the distiller\'s data '
                     'preprocessor.')
    epochs = (plan.cfg.get('train_cfg') or {}).get('max_epochs')
    ckpt = f'epoch_{epochs}.pth' if epochs else 'CHECKPOINT.pth'
    lines.append('# Run (the train step also with mmpretrain\'s '
                 'tools/train.py or mim train mmpretrain):')
    for step in plan.steps + [
            f'python tools/train.py {req.out}',
            f'python tools/export_student.py {req.out} '
            f'work_dirs/{plan.stem}/{ckpt} work_dirs/{plan.stem}/'
            'export   # the student alone']:
        lines.append(f'#   {step}')
    return [_wrap_comment(line) for line in lines]


def _wrap_comment(line: str, width: int = 79) -> str:
    if len(line) <= width or line.startswith('#   '):
        return line  # commands stay on one line: they are copied
    import textwrap
    return '\n'.join(textwrap.wrap(line[2:].lstrip(), width=width,
                                   initial_indent='# ',
                                   subsequent_indent='#     ',
                                   break_on_hyphens=False,
                                   break_long_words=False))


# kd_plugins' hooks, as configs/_base_/default_runtime.py lists them (a test
# checks that the two agree): a written config runs like a shipped one
RUN_HOOKS = [
    dict(type='EpochSeedHook', priority='VERY_HIGH'),
    dict(type='NonFiniteLossHook', priority='ABOVE_NORMAL'),
    dict(type='ReplicaCheckHook', interval=None),
    dict(type='StudentCheckpointHook'),
    dict(type='PreemptionHook'),
]


def _run_lines(plan: Plan, train_cfg: Optional[dict] = None) -> List[str]:
    """kd_plugins' training loop (resumes mid-epoch; builds the train set
    with model.teacher_cache and data_errors) and hooks, so that
    mmpretrain's own tools/train.py runs the written config as ours does.
    ``train_cfg``: the loop's settings (default: the student config's)."""
    from .engine.preemption import resumable_train_cfg
    if train_cfg is None:
        train_cfg = dict(plan.cfg.get('train_cfg') or {})
    loop = dict(_delete_=True, **resumable_train_cfg(train_cfg))
    own = list(plan.cfg.get('custom_hooks') or [])
    have = {str(h.get('type')).split('.')[-1] for h in own}
    hooks = [h for h in RUN_HOOKS if h['type'] not in have]
    lines = ['# kd_plugins\' loop (mid-epoch resume; the train set with '
             'model.teacher_cache',
             '# and data_errors) and hooks (per-epoch seeds, NaN guard, '
             'student copies,',
             '# preemption): mmpretrain\'s own tools/train.py runs them too',
             'train_cfg = ' + py(loop, 0, 12)]
    if hooks:
        lines.append('custom_hooks = ' + ('_base_.custom_hooks + ' if own
                                          else '') + py(hooks, 0, 15))
    return lines


def render(plan: Plan, model: dict) -> str:
    lines = _header(plan) + _prelude(plan)
    for comment, name, value in plan.before:
        if comment:
            lines.append(f'# {comment}')
        lines.append(f'{name} = {py(value)}')
    body = dict(_delete_=True, _scope_='mmrazor', type=model.pop('type'),
                data_preprocessor=Code('_pre'), **model)
    lines.append(f'model = {py(body)}')
    for key, value in plan.assign.items():
        lines.append(f'{key} = {py(value)}')
    lines += _run_lines(plan)
    return '\n'.join(lines) + '\n'


def render_stage1(plan: Plan) -> str:
    e = plan.req.stage1_epochs
    lines = _header(plan, ', IE-KD stage 1') + _prelude(plan)  # _student
    lines += [
        f'model = {py(plan.stage1)}',
        '# DDP: the student runs (no grad) but is not trained in stage 1',
        'find_unused_parameters = True',
        '# only the auto-encoder learns (configs/ie_kd/stage1_r34_in1k.py\'s '
        'schedule)',
        'optim_wrapper = ' + py(dict(_delete_=True, optimizer=dict(
            type='SGD', lr=0.2, momentum=0.9, weight_decay=1e-4)), 0, 16),
        'param_scheduler = ' + py(dict(
            _delete_=True, type='CosineAnnealingLR', by_epoch=True, T_max=e),
            0, 18),
        '# no accuracy to validate or test (mmengine needs each loader, '
        'its loop and its',
        '# evaluator all set or all None)',
        'val_dataloader = None', 'val_cfg = None', 'val_evaluator = None',
        'test_dataloader = None', 'test_cfg = None', 'test_evaluator = None',
        'default_hooks = dict(checkpoint=dict(interval=1, save_best=None))']
    lines += _run_lines(plan, dict(max_epochs=e, val_interval=1000))
    return '\n'.join(lines) + '\n'


def make_plan(req: Request) -> Plan:
    if req.method not in METHODS:
        raise ArgumentError(f'--method {req.method!r}: one of '
                            f'{sorted(METHODS)}.')
    n = len(req.teachers)
    if n == 0:
        raise ArgumentError('--teacher NAME_OR_CONFIG is required.')
    if req.method == 'mt_kd' and n < 2:
        raise ArgumentError('mt_kd distils from several teachers: give '
                            '--teacher twice or more.')
    if req.method not in ('mt_kd', 'atsc') and n > 1:
        raise ArgumentError(f'{req.method} takes one teacher, got {n}; for '
                            'several teachers use --method mt_kd (or atsc).')
    ckpts = list(req.teacher_ckpts)
    if len(ckpts) > n:
        raise ArgumentError(f'{len(ckpts)} --teacher-ckpt for {n} teachers.')
    ckpts += [None] * (n - len(ckpts))
    out_dir = osp.dirname(osp.abspath(req.out))
    cfg, base = resolve_student(req.student, out_dir)
    s_pre = preprocessing(cfg)
    student = inspect_net(dict(cfg.model.to_dict(), _scope_='mmpretrain',
                               data_preprocessor=None),
                          s_pre['size'], 'student', req.student_logits,
                          req.student_feature)
    teachers = []
    for arg, ckpt in zip(req.teachers, ckpts):
        t = resolve_teacher(arg, ckpt)
        t_pre = preprocessing(t.cfg)
        t.teacher_input = teacher_input(s_pre, t_pre)
        size = (t.teacher_input or {}).get('size') or s_pre['size']
        t.net = inspect_net(t.spec if t.zoo else dict(
            t.spec, data_preprocessor=None), size, f'teacher {t.arg}',
            req.teacher_logits, req.teacher_feature)
        if t.net.num_classes != student.num_classes:
            raise ConfigError(
                f'teacher {t.arg} predicts {t.net.num_classes} classes, the '
                f'student {student.num_classes}: distillation compares their '
                'class scores one to one.\n  Fix: a teacher trained on the '
                'student\'s classes (or set the student config\'s '
                'model.head.num_classes).')
        teachers.append(t)
    augments = bool((cfg.model.get('train_cfg') or {}).get('augments'))
    plan = Plan(req, cfg, base, student, teachers,
                batch_augments=augments and not req.no_batch_augments)
    if req.method in FEATURE_METHODS:
        _refuse_maps(plan)
    if augments and req.method in LABEL_METHODS and not req.no_batch_augments:
        raise ConfigError(
            f'{req.method} reads the hard labels, but the student config '
            'mixes images and labels in the batch (model.train_cfg.augments: '
            'Mixup / CutMix).\n  Fix: add --no-batch-augments (train '
            'without them), or use kd / mt_kd, which keep them.')
    return plan


def write(req: Request, keep_same: bool = False) -> List[str]:
    """Write the config(s) of ``req``; return their paths. With
    ``keep_same`` (``tools/train.py --distill``), a file already there must
    hold what would be written (the command line changed, or the user
    edited it: refused, not overwritten)."""
    plan = make_plan(req)
    model = PLANNERS[req.method](plan)
    out_dir = osp.dirname(osp.abspath(req.out))
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    if req.method == 'ie_kd':
        files[osp.join(out_dir, f'{plan.stem}_stage1.py')] = \
            render_stage1(plan)
    files[req.out] = render(plan, model)
    for path, text in files.items():
        _write(path, text, keep_same)
    return list(files)


def _body(text: str) -> str:
    """A written config without its header (which has the date)."""
    return '\n'.join(line for line in text.splitlines()
                     if not line.startswith('#'))


def _write(path: str, text: str, keep_same: bool = False) -> None:
    compile(text, path, 'exec')  # a generator bug fails here, not later
    if keep_same and osp.isfile(path):
        with open(path) as f:
            if _body(f.read()) == _body(text):
                return
        raise ArgumentError(
            f'{path} exists and differs from the config these options write '
            '(edited, or other options).\n  Fix: train it as it is: python '
            f'tools/train.py {path} [--resume]; or another --work-dir.')
    tmp = f'{path}.tmp{os.getpid()}'  # atomic: ranks may write at once
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


__all__ = ['METHODS', 'Request', 'write', 'make_plan', 'inspect_net', 'Net',
           'preprocessing', 'teacher_input', 'resolve_student',
           'resolve_teacher', 'py']
