"""The paper path as a user runs it: every top-level config in configs/,
configs/ie_kd/ and configs/teachers/ through ``tools/train.py``,
``tools/test.py`` and ``tools/export_student.py``, on data in the real
on-disk formats (tests/paper_data.py: CIFAR-100's python pickles, an
ImageNet folder tree of 1,000 ``train/<wnid>`` and ``val/<wnid>`` folders
with ``meta/*.txt``), with the steps a config depends on run first by the
project's tools:

- a CIFAR teacher: ``configs/teachers/<name>.py`` trained, its last
  checkpoint copied to the ``work_dirs/teachers/<name>.pth`` the configs name
  (what tools/reproduce.py does); an ImageNet teacher: a checkpoint file of
  the config's architecture given by ``--cfg-options model.teacher_ckpt=``
  (the zoo weights cannot be downloaded here);
- KD-layer statistics: ``tools/kd_layer_stats.py``;
- IE-KD stage 1 (``configs/ie_kd/``), then stage 2 with its encoder.

Each run is one short epoch on a tiny subset: CIFAR at its 32 px, ImageNet
at 64 px (the ResNets take it). The exported student loads with mmpretrain's
``init_model`` and classifies a batch into the config's classes. Teachers,
statistics and stage-1 encoders are made once and shared.
"""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
import shutil

import pytest
import torch

from tests.conftest import ROOT, run_tool

pytestmark = pytest.mark.e2e

SUITES = {'_cifar100.py': 'cifar100', '_in1k.py': 'imagenet'}
LOADERS = ('train', 'val', 'test')


def _paper_configs() -> list:
    top = sorted(glob.glob(osp.join(ROOT, 'configs', '*.py')))
    return [osp.relpath(p, ROOT) for p in
            top + sorted(glob.glob(osp.join(ROOT, 'configs', 'ie_kd', '*.py')))
            + sorted(glob.glob(osp.join(ROOT, 'configs', 'teachers',
                                        '*.py')))]


def _suite(config: str) -> str:
    for suffix, suite in SUITES.items():
        if config.endswith(suffix):
            return suite
    raise AssertionError(f'{config}: a paper config ends in one of '
                         f'{sorted(SUITES)}; add its data set to this tier')


def _opt(value) -> str:
    if isinstance(value, (list, tuple)):
        return '[' + ','.join(_opt(v) for v in value) + ']'
    return str(value)


class Workspace:
    """A user's checkout-like working directory (``data/``, ``work_dirs/``
    relative to it, as the configs read them), the steps made so far, and
    the options of a tiny run."""

    def __init__(self, root) -> None:
        from tests.paper_data import site_dir, write_cifar100, write_imagenet
        self.root = str(root)
        write_cifar100(osp.join(self.root, 'data', 'cifar100'),
                       n_train=128, n_test=64)  # every class in train
        write_imagenet(osp.join(self.root, 'data', 'imagenet'))
        self.env = {'PYTHONPATH': site_dir(osp.join(self.root, 'site'))
                    + os.pathsep + ROOT}  # drops CIFAR's md5 check
        self.made = {}  # path -> (made or the error of the step)

    def path(self, *parts) -> str:
        return osp.join(self.root, *parts)

    def tool(self, name: str, *args, check: bool = True):
        return run_tool([osp.join(ROOT, 'tools', name), *map(str, args)],
                        cwd=self.root, env=self.env, check=check)

    def once(self, key: str, make):
        """Run ``make`` the first time ``key`` is asked for; a failure is
        reported again to every config that needs it."""
        if key not in self.made:
            try:
                make()
                self.made[key] = None
            except BaseException as err:  # noqa: BLE001 - reported later
                self.made[key] = err
        if self.made[key] is not None:
            raise AssertionError(f'{key} could not be made') from \
                self.made[key]

    # --------------------------------------------------------- options
    def options(self, config: str, **extra) -> list:
        """``--cfg-options`` of a tiny run of ``config``."""
        from mmengine.config import Config
        cfg = Config.fromfile(osp.join(ROOT, config))
        suite = _suite(config)
        opts = {'train_cfg.max_epochs': 1}
        if (cfg.get('train_cfg') or {}).get('val_interval', 1) <= 1000 and \
                cfg.get('val_dataloader'):
            opts['train_cfg.val_interval'] = 1
        for name in LOADERS:
            if not cfg.get(f'{name}_dataloader'):
                continue  # IE-KD stage 1 has no val/test loader
            key = f'{name}_dataloader'
            opts[f'{key}.num_workers'] = 0
            if name == 'train':
                opts[f'{key}.batch_size'] = 64 if suite == 'cifar100' else 4
            if suite == 'imagenet':
                opts[f'{key}.dataset.indices'] = 8
                opts.update(self._imagenet_size(cfg, key))
        opts.update(extra)
        return ['--cfg-options'] + [f'{k}={_opt(v)}' for k, v in opts.items()]

    @staticmethod
    def _imagenet_size(cfg, key: str) -> dict:
        """The pipeline's 224 px crops at 64 px (resize edge 256 -> 73)."""
        out = {}
        for i, t in enumerate(cfg[key]['dataset']['pipeline']):
            if t['type'] == 'RandomResizedCrop':
                out[f'{key}.dataset.pipeline.{i}.scale'] = 64
            elif t['type'] == 'ResizeEdge':
                out[f'{key}.dataset.pipeline.{i}.scale'] = 73
            elif t['type'] == 'CenterCrop':
                out[f'{key}.dataset.pipeline.{i}.crop_size'] = 64
        return out

    # ------------------------------------------------------- the steps
    def train(self, config: str, work_dir: str, **extra) -> str:
        """``tools/train.py``; returns its last checkpoint."""
        proc = self.tool('train.py', osp.join(ROOT, config), '--work-dir',
                         work_dir, *self.options(config, **extra))
        final = osp.join(self.root, work_dir, 'epoch_1.pth')
        assert osp.isfile(final), proc.stdout[-4000:]
        return final

    def cifar_teacher(self, ckpt: str) -> None:
        """``work_dirs/teachers/<name>.pth`` from configs/teachers/."""
        name = osp.splitext(osp.basename(ckpt))[0]

        def make():
            final = self.train(f'configs/teachers/{name}.py',
                               f'work_dirs/teachers/{name}')
            shutil.copyfile(final, self.path(ckpt))
        self.once(ckpt, make)

    def imagenet_teacher(self, teacher_cfg: dict) -> str:
        """A checkpoint of the teacher's architecture (random weights, the
        format of mmpretrain's checkpoints)."""
        backbone = teacher_cfg['backbone']
        name = f"{backbone['type'].split('.')[-1]}{backbone['depth']}"
        path = self.path('checkpoints', f'{name.lower()}_in1k.pth')

        def make():
            from mmpretrain.registry import MODELS
            model = MODELS.build(teacher_cfg)
            os.makedirs(osp.dirname(path), exist_ok=True)
            torch.save({'state_dict': model.state_dict(),
                        'meta': {'note': 'random weights (a test teacher)'}},
                       path)
        self.once(path, make)
        return path


@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp('paper_path'))


def _teacher_options(ws: Workspace, cfg) -> dict:
    """Make the config's teachers; the options that point at them."""
    from kd_plugins.utils.teacher import teacher_entries
    extra = {}
    for _, key, spec, ckpt in teacher_entries(cfg.model):
        if ckpt and '://' in ckpt:  # a zoo URL: a local file instead
            local = ws.imagenet_teacher(spec)
            if key.endswith(']'):  # model.teacher_ckpts[i]
                ckpts = extra.setdefault('model.teacher_ckpts',
                                         list(cfg.model['teacher_ckpts']))
                ckpts[int(key[key.index('[') + 1:-1])] = local
            else:
                extra[key] = local
        elif ckpt:
            ws.cifar_teacher(ckpt)
    return extra


def _option_key(path: str) -> str:
    """find_key's ``a.b[0].c`` as --cfg-options writes it: ``a.b.0.c``."""
    return path.replace('[', '.').replace(']', '')


def _kd_layer_smaller(tree: dict, suite: str) -> dict:
    """The KD-layer model with fewer templates, every place the config sets
    them: 512 penultimate templates instead of 4,096 (k-means++ with 4,096
    centres alone takes ~17 s here); on ImageNet, where 1,000 tiny images
    give 4 locations a class at 64 px, also 2 subclasses a class instead of
    8 (2,000 intermediate templates, not 8,000)."""
    from kd_plugins.utils.config import find_key
    smaller = {4096: 512}
    if suite == 'imagenet':
        smaller[8000] = 2000
    out = {_option_key(k): smaller[v]
           for k, v in find_key(tree, 'num_templates')
           if k.startswith(('model.', 'kd_layer_stats.')) and v in smaller}
    if suite == 'imagenet' and \
            (tree.get('kd_layer_stats') or {}).get('intermediate'):
        out['kd_layer_stats.intermediate.subclasses'] = 2
    return out


def _dependencies(ws: Workspace, config: str, cfg) -> dict:
    """Make what ``config`` needs (teachers, KD-layer statistics, the IE-KD
    stage-1 encoder); the options of its runs."""
    from kd_plugins.utils.config import find_key
    tree = cfg.to_dict()
    extra = _teacher_options(ws, cfg)
    if tree.get('kd_layer_stats'):
        extra.update(_kd_layer_smaller(tree, _suite(config)))
    stats = [v for k, v in find_key(tree, 'stats_file')
             if k.startswith('model.') and v]
    if stats:
        teacher = extra.get('model.teacher_ckpt', cfg.model.teacher_ckpt)
        # every training image: each class needs locations
        opts = [o for o in ws.options(config, **extra)
                if not o.startswith('train_dataloader.dataset.indices=')]
        ws.once(stats[0], lambda: ws.tool(
            'kd_layer_stats.py', osp.join(ROOT, config), teacher, stats[0],
            *opts))
    for key, s1 in find_key(tree, 'stage1_ckpt'):
        if not key.startswith('model.') or not s1:
            continue
        s1_cfg = f'configs/ie_kd/{osp.basename(osp.dirname(s1))}.py'
        s1_dir = osp.dirname(s1)
        ws.once(s1_cfg, lambda: ws.train(s1_cfg, s1_dir, **_teacher_options(
            ws, _load(s1_cfg))))
        # a one-epoch stage 1 ends in epoch_1.pth, not the config's
        extra[_option_key(key)] = osp.join(s1_dir, 'epoch_1.pth')
    return extra


def _load(config: str):
    from mmengine.config import Config
    return Config.fromfile(osp.join(ROOT, config))


def _check_export(ws: Workspace, config: str, out_dir: str, cfg) -> None:
    """The exported student: a plain mmpretrain model (init_model) with no
    teacher, classifying a batch into the config's classes."""
    from mmpretrain.apis import init_model
    model = init_model(osp.join(out_dir, 'student.py'),
                       osp.join(out_dir, 'student.pth'), device='cpu')
    assert not any(k.startswith(('teacher', 'architecture'))
                   for k in model.state_dict()), config
    size = 32 if _suite(config) == 'cifar100' else 64
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size), mode='tensor')
    classes = cfg.get('data_preprocessor', {}).get('num_classes') or \
        cfg.model.get('data_preprocessor', {}).get('num_classes')
    assert tuple(logits.shape) == (2, classes), (config, logits.shape)
    assert torch.isfinite(logits).all()


def test_the_tier_covers_every_paper_config():
    configs = _paper_configs()
    assert len(configs) >= 20 and {_suite(c) for c in configs} == {
        'cifar100', 'imagenet'}


@pytest.mark.parametrize('config', _paper_configs())
def test_paper_config_trains_tests_and_exports(ws, config):
    cfg = _load(config)
    name = osp.splitext(osp.basename(config))[0]
    if config.startswith('configs/teachers/'):
        ckpt = f'work_dirs/teachers/{name}.pth'
        ws.cifar_teacher(ckpt)
        work_dir, extra = f'work_dirs/teachers/{name}', {}
        final = ws.path(work_dir, 'epoch_1.pth')
    elif config.startswith('configs/ie_kd/'):
        extra = _teacher_options(ws, cfg)
        named = [osp.dirname(s1) for _, s1 in find_stage1(config)]
        assert named, f'no stage-2 config names {config} as its stage 1'
        work_dir = named[0]  # where stage 2 looks for it
        ws.once(config, lambda: ws.train(config, work_dir, **extra))
        final = ws.path(work_dir, 'epoch_1.pth')
    else:
        extra = _dependencies(ws, config, cfg)
        work_dir = f'work_dirs/{name}'
        final = ws.train(config, work_dir, **extra)
    opts = ws.options(config, **extra)
    metrics = ws.path(work_dir, 'test_metrics.json')
    test = ['test.py', osp.join(ROOT, config), final, '--work-dir',
            osp.join(work_dir, 'test'), '--dump-metrics', metrics, *opts]
    out_dir = ws.path(work_dir, 'export')
    export = ['export_student.py', osp.join(ROOT, config), final, out_dir,
              *opts]
    if cfg.get('test_dataloader') is None:  # IE-KD stage 1: no classifier
        for args, says in ((test, 'has no test_dataloader'),
                           (export, 'does not train its student')):
            proc = ws.tool(*args, check=False)
            assert proc.returncode == 1 and says in proc.stderr, (
                args[0], proc.stdout[-2000:], proc.stderr[-2000:])
            assert 'Traceback' not in proc.stderr
        assert not osp.exists(metrics) and not osp.exists(out_dir)
        return
    ws.tool(*test)
    with open(metrics) as f:
        top1 = json.load(f)['accuracy/top1']
    assert 0 <= top1 <= 100
    ws.tool(*export)
    _check_export(ws, config, out_dir, cfg)


def find_stage1(config):
    """(key, stage1_ckpt) of the stage-2 configs that name ``config``."""
    from kd_plugins.utils.config import find_key
    name = osp.splitext(osp.basename(config))[0]
    for path in _paper_configs():
        for key, s1 in find_key(_load(path).to_dict(), 'stage1_ckpt'):
            if key.startswith('model.') and s1 and \
                    osp.basename(osp.dirname(s1)) == name:
                yield key, s1
