"""Distilled checkpoint -> plain mmpretrain student (config + weights).

The exported student needs no teacher and no mmrazor: its config is an
mmpretrain ``ImageClassifier`` (plus ``custom_imports=['kd_plugins']`` when it
uses one of our registered parts, e.g. a CIFAR backbone or a head that a
method keeps at inference) with the run's data preprocessor and test/val
pipelines, so mmpretrain's ``init_model``, ``ImageClassificationInferencer``
and ``tools/test.py`` work on it.

A head class may define ``deploy(head_cfg, state, prefix)`` returning the
deployed head config and weights (e.g. ``AEKTHead`` drops its serialization
layer in the ``classify_first`` wiring); an algorithm class may define
``deploy_student(model_cfg, state)`` for the whole student (e.g. ATSC:
backbone + projectors + adapted teacher classifiers).
"""
from __future__ import annotations

import copy
import os
import os.path as osp

import torch
from mmengine.config import Config, ConfigDict

from .errors import CheckpointError, ConfigError
from .utils.checkpoint import load_local_checkpoint, state_dict_diff
from .utils.config import innermost_dataset, iter_nodes

STUDENT_PREFIX = 'architecture.'


def _to_dict(cfg):
    return cfg.to_dict() if isinstance(cfg, (Config, ConfigDict)) else \
        copy.deepcopy(cfg)


def _registered_class(type_name: str):
    from mmpretrain.registry import MODELS
    return MODELS.get(type_name.split('.')[-1])


def check_exportable(model_cfg) -> None:
    """Refuse a config that trains no student (before any work)."""
    model_cfg = _to_dict(model_cfg)
    if 'architecture' in model_cfg and \
            model_cfg.get('student_trainable', True) is False:
        raise ConfigError(
            'this config does not train its student (student_trainable='
            'False: e.g. IE-KD stage 1, which trains only the teacher\'s '
            'auto-encoder), so there is no student to export.\n  Fix: export '
            'the run of the config that trains the student (IE-KD: stage 2, '
            'e.g. configs/ie_kd_r56_r20_cifar100.py).')


def student_config_and_state(cfg: Config, state: dict,
                             what: str = '') -> tuple[dict, dict]:
    """Split the student (model config, state dict) out of a run.

    Works for mmrazor distillers (``model.architecture``) and for plain
    classifiers (the model itself). ``what``: what the checkpoint is
    (:func:`~kd_plugins.utils.file_kinds.checkpoint_kind`), for the
    message when it holds no student.
    """
    model_cfg = _to_dict(cfg.model)
    from mmrazor.registry import MODELS as RAZOR_MODELS
    algo = RAZOR_MODELS.get(str(model_cfg.get('type', '')).split('.')[-1])
    if algo is not None and hasattr(algo, 'deploy_student'):
        # the method knows what its deployed student keeps (e.g. ATSC)
        try:
            return algo.deploy_student(model_cfg, state)
        except KeyError as err:  # a checkpoint of another method
            raise ConfigError(
                f'the checkpoint{" is " + what + " and" if what else ""} '
                f'does not hold the parts a {algo.__name__} student is '
                f'exported from (no {err}).\n  Fix: pass the config the '
                'checkpoint was trained with.') from err
    check_exportable(model_cfg)
    if 'architecture' in model_cfg:
        student = model_cfg['architecture']
        sd = {k[len(STUDENT_PREFIX):]: v for k, v in state.items()
              if k.startswith(STUDENT_PREFIX)}
    else:
        student, sd = model_cfg, dict(state)
    if not sd:
        raise ConfigError(f'the checkpoint{" is " + what if what else ""}'
                          ' holds no student weights (keys starting with '
                          f'{STUDENT_PREFIX!r}), which this distillation '
                          'config exports.\n  Fix: pass a checkpoint of a '
                          'distillation run of this config.')
    student = copy.deepcopy(student)
    student.pop('data_preprocessor', None)
    sd = {k: v for k, v in sd.items() if not k.startswith('data_preprocessor')}
    head = student.get('head')
    if isinstance(head, dict):
        cls = _registered_class(head['type'])
        if cls is not None and hasattr(cls, 'deploy'):
            head_sd = {k: v for k, v in sd.items() if k.startswith('head.')}
            rest = {k: v for k, v in sd.items() if not k.startswith('head.')}
            student['head'], head_sd = cls.deploy(head, head_sd, 'head.')
            sd = {**rest, **head_sd}
    return student, sd


def _kd_plugins_type(type_name: str) -> bool:
    """Is ``type_name`` registered by kd_plugins in one of mmpretrain's
    registries (models, data sets, transforms, metrics, hooks)?"""
    from mmpretrain import registry as reg
    name = type_name.split('.')[-1]
    for r in (reg.MODELS, reg.DATASETS, reg.TRANSFORMS, reg.METRICS,
              reg.HOOKS):
        cls = r.module_dict.get(name)
        if cls is not None and cls.__module__.startswith('kd_plugins'):
            return True
    return False


def _uses_kd_plugins(obj) -> bool:
    """True if any ``type`` in the config is registered by kd_plugins."""
    return any(isinstance(node, dict) and isinstance(node.get('type'), str)
               and _kd_plugins_type(node['type'])
               for _, node in iter_nodes(obj))


def export_student(config: str | Config, checkpoint: str,
                   out_dir: str) -> tuple[str, str]:
    """Write ``out_dir/student.py`` and ``out_dir/student.pth``.

    Returns:
        (config path, checkpoint path). The exported model is built and the
        weights are loaded strictly before anything is written.
    """
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    # a training run's checkpoint (not an export, a stage-1 file...)
    ckpt = load_local_checkpoint(checkpoint, map_location='cpu',
                                 role='export')
    return write_student(cfg, ckpt, osp.join(out_dir, 'student.py'),
                         osp.join(out_dir, 'student.pth'),
                         source=osp.abspath(checkpoint))


def training_size(cfg: Config) -> int | None:
    """The side of the images the student was trained on: the data set's
    ``img_size`` (Digits) or the train pipeline's crop; None if unknown."""
    train = _to_dict(cfg.get('train_dataloader') or {})
    ds = train.get('dataset') or {}
    ds = innermost_dataset(ds)
    if ds.get('img_size'):
        return int(ds['img_size'])
    for t in ds.get('pipeline') or []:
        for key in ('crop_size', 'scale'):
            v = t.get(key)
            if 'Crop' in str(t.get('type')) and v:
                return int(v[0] if isinstance(v, (list, tuple)) else v)
    return None


def with_resize(pipeline: list, size: int | None) -> list:
    """``pipeline`` with a ``Resize`` to ``size`` x ``size`` before packing
    when it neither resizes nor crops: an image of another size (e.g. a
    native 8x8 digit) then reaches the model at the size it was trained on
    instead of being classified, wrongly, at its own size."""
    if size is None or any(('Resize' in str(t.get('type')) or 'Crop' in
                            str(t.get('type'))) for t in pipeline):
        return pipeline
    at = next((i for i, t in enumerate(pipeline)
               if 'Pack' in str(t.get('type'))), len(pipeline))
    return (pipeline[:at] + [dict(type='Resize', scale=(size, size))]
            + pipeline[at:])


def student_run_config(cfg: Config, student: dict) -> dict:
    """A plain mmpretrain config for ``student`` with the run's data
    preprocessor, val/test data and evaluators; a test pipeline that does
    not resize gets a ``Resize`` to the training size (any image size works,
    e.g. with ``ImageClassificationInferencer``)."""
    out = dict(model=student, default_scope='mmpretrain')
    if cfg.get('data_preprocessor') is not None:
        out['data_preprocessor'] = _to_dict(cfg.data_preprocessor)
        out['model']['data_preprocessor'] = _to_dict(cfg.data_preprocessor)
    size = training_size(cfg)
    for key in ('val_dataloader', 'val_evaluator', 'test_dataloader',
                'test_evaluator', 'val_cfg', 'test_cfg'):
        if cfg.get(key) is not None:
            out[key] = _to_dict(cfg[key])
            ds = out[key].get('dataset') if key.endswith('dataloader') \
                else None
            if isinstance(ds, dict) and ds.get('pipeline') is not None:
                ds['pipeline'] = with_resize(list(ds['pipeline']), size)
    if _uses_kd_plugins(out):
        out['custom_imports'] = dict(imports=['kd_plugins'],
                                     allow_failed_imports=False)
    return out


def write_student(cfg: Config, ckpt: dict, cfg_path: str | None,
                  pth_path: str, source: str = '') -> tuple[str, str]:
    """Split the student out of a loaded distiller checkpoint ``ckpt`` and
    write its config (unless ``cfg_path`` is None) and weights."""
    from mmpretrain.registry import MODELS

    from .utils.checkpoint import atomic_write
    from .utils.file_kinds import checkpoint_kind, marker, run_method
    state = ckpt.get('state_dict', ckpt)
    what = checkpoint_kind(ckpt)[1]
    have = run_method(ckpt.get('meta'))
    want = str(_to_dict(cfg.model).get('type', '')).split('.')[-1]
    if have and want and have != want:
        raise ConfigError(
            f'the checkpoint {source or "given"} is {what}, but this config '
            f'trains {want}.\n  Fix: pass the config the checkpoint was '
            'trained with.')
    student, sd = student_config_and_state(cfg, state, what)
    model = MODELS.build(copy.deepcopy(student))
    missing, unexpected, shapes = state_dict_diff(sd, model.state_dict())
    if missing or unexpected or shapes:
        raise CheckpointError(
            f'the checkpoint {source or "given"} does not hold the student '
            f'of this config: {len(missing)} missing keys {missing[:4]}, '
            f'{len(unexpected)} unexpected {unexpected[:4]}, '
            f'{len(shapes)} shape mismatches {shapes[:4]}.\n  Fix: pass '
            'the config the checkpoint was trained with.')
    model.load_state_dict(sd, strict=True)
    if cfg_path is not None:
        os.makedirs(osp.dirname(osp.abspath(cfg_path)), exist_ok=True)
        Config(student_run_config(cfg, student)).dump(cfg_path)
    meta = dict(marker('student_export'), exported_from=source)
    old_meta = ckpt.get('meta') or {}
    for key in ('dataset_meta', 'epoch', 'iter'):
        if old_meta.get(key) is not None:  # class names for the inferencer
            meta[key] = old_meta[key]
    import io
    buf = io.BytesIO()
    torch.save(dict(meta=meta, state_dict=sd), buf)
    atomic_write(buf.getvalue(), pth_path)
    return cfg_path, pth_path


class _Logits(torch.nn.Module):
    """A classifier's ``mode='tensor'`` forward as a one-input module (what
    ONNX graphs take): (N, 3, H, W) -> (N, num_classes)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs, mode='tensor')


def export_onnx(cfg_path: str, pth_path: str, onnx_path: str,
                size: int | None = None, check: bool = True) -> float | None:
    """The exported student (``student.py`` + ``student.pth``) as ONNX, with
    ``torch.onnx.export``'s default (dynamo) exporter: input ``inputs``
    (N, 3, size, size) normalised images (the student's data preprocessor
    is not part of the graph), output (N, num_classes) logits; the batch
    dimension is dynamic. ``size``: the training size by default. With
    ``check`` (and onnxruntime installed) the ONNX logits are compared with
    PyTorch's on a random batch; returns the largest difference."""
    from mmpretrain.apis import init_model
    cfg = Config.fromfile(cfg_path)
    size = size or training_size(cfg)
    if not size:
        raise ConfigError('the input size of the student is not known from '
                          'its config.\n  Fix: pass --onnx-size N.')
    student = _Logits(init_model(cfg, pth_path, device='cpu')).eval()
    x = torch.randn(2, 3, size, size)
    batch = torch.export.Dim('batch', min=1)
    try:
        torch.onnx.export(student, (x, ), onnx_path, input_names=['inputs'],
                          output_names=['logits'],
                          dynamic_shapes=({0: batch}, ))
    except ImportError as err:  # onnxscript, the dynamo exporter's backend
        raise ConfigError(f'ONNX export needs onnx and onnxscript ({err}).\n'
                          "  Fix: pip install -e '.[deploy]'") from err
    if not check:
        return None
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    with torch.no_grad():
        want = student(x).numpy()
    sess = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    got = sess.run(None, {'inputs': x.numpy()})[0]
    return float(abs(got - want).max())
