"""Every file kd_plugins reads is recognised before use (issue #39, point 6).

Each reader -- a checkpoint for each of its uses (teacher, --resume, export,
IE-KD stage 1, the RepDistiller converter, tools/test.py), the KD layer's
statistics, the Digits benchmark's results JSON -- is fed a file of every
other kind, a truncated file, an unreadable one and, where the kind has a
format version, a newer version. Each must end in one KDPluginsError whose
message names the file, what it is, what was expected and the fix; never a
KeyError or a torch / numpy traceback. Files written before the
``kd_plugins_kind`` marker existed stay readable.

The files are small stand-ins with the keys of the real ones (the key
layouts are those the Digits configs' models have, checked in
``test_the_stand_ins_have_the_keys_of_real_checkpoints``). Tests that go
through the tools run their ``main`` in this process (``run_main`` turns a
KDPluginsError into ``SystemExit('kd_plugins: ...')``; any other exception
fails the test); the last ones start the tools as a user would.
"""
import json
import os
import os.path as osp
import shutil

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, load_tool, run_tool

KD = 'configs/demo/kd_digits.py'
TEACHER = 'configs/demo/teacher_digits.py'
STAGE1 = 'configs/demo/ie_kd_stage1_digits.py'
KD_CFG = ("model = dict(\n    _scope_='mmrazor',\n    type='FastDistill',\n"
          "    teacher_ckpt=None)\n")
ATSC_CFG = "model = dict(\n    type='ATSC',\n    teacher_ckpts=None)\n"


def _t(*shape):
    return torch.ones(*shape)


def _training(state, cfg=None):
    """What mmengine's CheckpointHook writes: meta, weights, optimizer and
    loop state."""
    meta = dict(epoch=2, iter=20, seed=0)
    if cfg:
        meta['cfg'] = cfg
    return dict(meta=meta, state_dict=state, message_hub={},
                optimizer={'state': {}, 'param_groups': []})


CLS = {'backbone.conv1.weight': _t(4, 3, 3, 3), 'head.fc.weight': _t(10, 4),
       'head.fc.bias': _t(10)}
DISTILL = {**{f'architecture.{k}': v for k, v in CLS.items()},
           **{f'teacher.{k}': v for k, v in CLS.items()}}
STAGE1_SD = {**DISTILL,
             'distiller.connectors.t_ae.encoder.1.weight': _t(2, 4, 3, 3),
             'distiller.connectors.t_ae.decoder.1.weight': _t(4, 2, 3, 3)}
STAGE2_SD = {**DISTILL,
             'distiller.connectors.t_enc.encoder.1.weight': _t(2, 4, 3, 3),
             'distiller.connectors.s_inh.encoder.1.weight': _t(2, 2, 3, 3)}
UPSTREAM = {'conv1.weight': _t(4, 3, 3, 3), 'fc.weight': _t(100, 4)}
EXPORT_META = dict(kd_plugins_kind='student_export', format_version=1,
                   exported_from='/runs/kd/epoch_2.pth')

# name -> (object torch.save writes, kind checkpoint_kind must find)
CHECKPOINTS = {
    'kd_run.pth': (_training(DISTILL, KD_CFG), 'distillation'),
    'teacher_run.pth': (_training(CLS), 'classifier'),
    'zoo.pth': (dict(meta=dict(mmpretrain_version='1.2.0'),
                     state_dict=CLS), 'classifier'),
    'ddp.pth': (dict(state_dict={f'module.{k}': v for k, v in CLS.items()}),
                'classifier'),
    'stage1.pth': (_training(STAGE1_SD, KD_CFG), 'ie_kd_stage1'),
    'stage2.pth': (_training(STAGE2_SD, KD_CFG), 'distillation'),
    'export.pth': (dict(meta=EXPORT_META, state_dict=CLS), 'student_export'),
    # exported before the marker: recognised by meta.exported_from
    'export_old.pth': (dict(meta=dict(exported_from='x.pth'),
                            state_dict=CLS), 'student_export'),
    'converted.pth': (dict(meta=dict(
        kd_plugins_kind='converted_teacher', format_version=1, arch='r8',
        converted_by='tools/convert_repdistiller_ckpt.py'),
        state_dict=CLS), 'converted_teacher'),
    'upstream.pth': (dict(model=UPSTREAM, epoch=240, accuracy=79.4,
                          optimizer={'state': {}, 'param_groups': []}),
                     'repdistiller'),
    # torch's legacy (non-zip) format, as older releases wrote
    'legacy.pth': (dict(meta={}, state_dict=CLS), 'classifier'),
    'tensor.pth': (_t(3), 'not_a_dict'),
    'no_weights.pth': (dict(meta={}, state_dict={}), 'no_weights'),
}
# files that are not torch checkpoints: name -> what sniff must call them
OTHERS = {
    'stats.npz': 'a KD-layer statistics file (.npz)',
    'arrays.npz': 'a numpy .npz archive',
    'metrics.json': "a JSON file (keys ['accuracy/top1'",
    'results.json': 'a Digits benchmark results file (JSON',
    'cut.json': 'a truncated or malformed JSON file',
    'config.py': 'a Python config file',
    'page.html': 'an HTML page',
    'empty.pth': 'an empty file (0 bytes)',
    'cut.pth': 'a truncated or corrupt torch checkpoint',
    'cut.npz': 'a truncated or corrupt numpy .npz archive',
    'cut_legacy.pth': 'a truncated or corrupt pickle file',
    'garbage.bin': 'binary data of no kind kd_plugins reads',
}


def _stats_arrays():
    rng = np.random.default_rng(0)
    return dict(penult_centers=rng.normal(size=(4, 8)),
                inter_mean=np.zeros(8), inter_proj=rng.normal(size=(8, 3)),
                inter_centers=rng.normal(size=(20, 3)),
                inter_s_t=np.eye(20))


STATS_META = dict(kinds=['penultimate', 'intermediate'], num_classes=10,
                  subclasses=2, classes=[str(i) for i in range(10)])


def _report():
    row = dict(name='student', label='student alone', lr=0.1, epochs=2,
               test=dict(mean=95.0, std=0.5, n=2, values=[94.5, 95.5]))
    return dict(date='2026-12-07', command='python tools/demo.py',
                machine='x86_64', seconds=60, jobs=2, choices_source='x',
                results={'full': [row]})


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """name -> path of one file of every kind."""
    from kd_plugins.utils.stats_file import save_stats
    d = tmp_path_factory.mktemp('kinds')
    out = {}
    for name, (obj, _) in CHECKPOINTS.items():
        torch.save(obj, d / name,
                   _use_new_zipfile_serialization=name != 'legacy.pth')
    save_stats(str(d / 'stats.npz'), STATS_META, _stats_arrays())
    np.savez(d / 'arrays.npz', x=np.ones(3), y=np.zeros(2))
    (d / 'metrics.json').write_text(json.dumps({'accuracy/top1': 91.0}))
    (d / 'results.json').write_text(json.dumps(
        dict(kd_plugins_kind='digits_benchmark', format_version=1,
             **_report())))
    (d / 'cut.json').write_text(json.dumps(_report())[:80])
    (d / 'config.py').write_text(f"_base_ = ['{ROOT}/{KD}']\n")
    (d / 'page.html').write_text('<!DOCTYPE html><html>Sign in</html>')
    (d / 'empty.pth').write_bytes(b'')
    for src, dst in (('zoo.pth', 'cut.pth'), ('stats.npz', 'cut.npz')):
        data = (d / src).read_bytes()
        (d / dst).write_bytes(data[:len(data) // 2])
    # cut inside a pickled class name: torch's safe unpickler then reports
    # a reference outside its allow-list, as if the file were malicious
    data = (d / 'legacy.pth').read_bytes()
    (d / 'cut_legacy.pth').write_bytes(data[:data.index(b'torch._utils') + 8])
    (d / 'garbage.bin').write_bytes(bytes(range(256)) * 8)
    for name in os.listdir(d):
        out[name] = str(d / name)
    return out


# ------------------------------------------------------------ recognition
@pytest.mark.parametrize('name', sorted(OTHERS))
def test_sniff_says_what_a_file_is(files, name):
    from kd_plugins.utils.file_kinds import sniff
    assert sniff(files[name]).what.startswith(OTHERS[name])


@pytest.mark.parametrize('name', sorted(CHECKPOINTS))
def test_checkpoint_kind_recognises_each_checkpoint(files, name):
    from kd_plugins.utils.file_kinds import checkpoint_kind, sniff
    assert sniff(files[name]).kind == ('pickle' if name == 'legacy.pth'
                                       else 'torch')
    obj = torch.load(files[name], weights_only=True)
    assert checkpoint_kind(obj)[0] == CHECKPOINTS[name][1]


def test_the_stand_ins_have_the_keys_of_real_checkpoints():
    """The key patterns the stand-ins use are those of the Digits configs'
    models (so what is recognised here is what real files hold)."""
    from mmengine.config import Config
    from mmrazor.registry import MODELS

    from kd_plugins.utils.file_kinds import checkpoint_kind
    for config, kind in ((TEACHER, 'classifier'), (KD, 'distillation'),
                         (STAGE1, 'ie_kd_stage1'),
                         ('configs/demo/ie_kd_digits.py', 'distillation'),
                         ('configs/demo/atsc_digits.py', 'distillation'),
                         ('configs/demo/ie_dml_digits.py', 'distillation')):
        cfg = Config.fromfile(osp.join(ROOT, config)).model.to_dict()
        for key in ('teacher_ckpt', 'teacher_ckpts'):
            if key in cfg:
                cfg[key] = None if key == 'teacher_ckpt' else \
                    [None] * len(cfg['teachers'])
        conns = (cfg.get('distiller') or {}).get('connectors') or {}
        for c in conns.values():
            c.pop('stage1_ckpt', None)  # the stage-1 file: not needed here
        model = MODELS.build(cfg)
        assert checkpoint_kind(dict(state_dict=model.state_dict()))[0] \
            == kind, config


# ----------------------------------------------------------- checkpoints
# what each use accepts (every other file must be refused)
ACCEPTS = {
    None: {'kd_run.pth', 'teacher_run.pth', 'zoo.pth', 'ddp.pth', 'legacy.pth',
           'stage1.pth', 'stage2.pth', 'export.pth', 'export_old.pth',
           'converted.pth', 'upstream.pth', 'tensor.pth', 'no_weights.pth'},
    'teacher': {'kd_run.pth', 'teacher_run.pth', 'zoo.pth', 'ddp.pth',
                'legacy.pth',
                'stage2.pth', 'export.pth', 'export_old.pth',
                'converted.pth'},
    'resume': {'kd_run.pth', 'teacher_run.pth', 'stage1.pth', 'stage2.pth'},
    'export': {'kd_run.pth', 'teacher_run.pth', 'zoo.pth', 'ddp.pth',
               'legacy.pth',
               'stage2.pth', 'converted.pth'},
    'stage1': {'stage1.pth'},
    'upstream': {'upstream.pth'},
    'test_distiller': {'kd_run.pth', 'stage2.pth'},
    'test_classifier': {'teacher_run.pth', 'zoo.pth', 'ddp.pth', 'legacy.pth',
                        'export.pth', 'export_old.pth', 'converted.pth'},
}


def _what(files, name):
    """What a message must say the file is."""
    from kd_plugins.utils.file_kinds import checkpoint_kind
    if name in OTHERS:
        return OTHERS[name]
    return checkpoint_kind(CHECKPOINTS[name][0])[1]


def _bytes_what(name):
    """What a reader of another format must say the file is."""
    if name == 'legacy.pth':
        return "a pickle file (torch's legacy format"
    return 'a torch checkpoint' if name in CHECKPOINTS else OTHERS[name]


def _one_message(msg: str) -> None:
    """One problem line and one fix line, nothing of torch's own text."""
    lines = msg.splitlines()
    assert len(lines) == 2 and lines[1].startswith('  Fix: '), msg
    assert 'Traceback' not in msg and 'PytorchStreamReader' not in msg
    assert 'Weights only load failed' not in msg


@pytest.mark.parametrize('role', list(ACCEPTS), ids=str)
def test_each_use_of_a_checkpoint_refuses_every_other_kind(files, role):
    from kd_plugins.errors import CheckpointError
    from kd_plugins.utils.checkpoint import load_local_checkpoint
    from kd_plugins.utils.file_kinds import ROLES
    refused = []
    for name, path in sorted(files.items()):
        if name in ACCEPTS[role]:
            load_local_checkpoint(path, role=role)  # no error
            continue
        with pytest.raises(CheckpointError) as err:
            load_local_checkpoint(path, role=role)
        msg = str(err.value)
        _one_message(msg)
        assert repr(path) in msg
        what = _what(files, name)
        # a broken checkpoint: unreadable (the fix: write it again)
        cut = name in ('cut.pth', 'cut_legacy.pth', 'empty.pth',
                       'garbage.bin')
        if cut:
            assert 'is unreadable - truncated or corrupt' in msg, msg
        assert what in msg, (what, msg)
        if role is not None:  # what this use expected
            assert ROLES[role].who in msg
            assert cut or ROLES[role].expected in msg, msg
        refused.append(name)
    assert refused  # every use refuses something


def test_the_fix_names_the_tool_that_writes_the_right_file(files):
    """The fix of a few (use, file) pairs names the tool to run."""
    from kd_plugins.errors import CheckpointError
    from kd_plugins.utils.checkpoint import load_local_checkpoint
    for role, name, fix in (
            ('teacher', 'upstream.pth', 'tools/convert_repdistiller_ckpt.py'),
            ('teacher', 'stage1.pth', "stage 2's stage1_ckpt"),
            ('stage1', 'zoo.pth', 'configs/demo/ie_kd_stage1_digits.py'),
            ('upstream', 'zoo.pth', 'it needs no conversion'),
            ('export', 'export.pth', 'it is exported already'),
            ('resume', 'export.pth', 'load_from=PATH'),
            ('test_classifier', 'kd_run.pth', 'tools/export_student.py'),
            ('test_distiller', 'export.pth', 'OUT_DIR/student.py')):
        with pytest.raises(CheckpointError) as err:
            load_local_checkpoint(files[name], role=role)
        assert fix in str(err.value).splitlines()[1], (role, name, err.value)


@pytest.mark.parametrize('meta', [
    dict(EXPORT_META, format_version=2),
    dict(kd_plugins_kind='converted_teacher', format_version=7),
    dict(kd_plugins_kind='teacher_snapshot', format_version=1)],
    ids=['export v2', 'converted v7', 'unknown kind'])
def test_a_newer_kd_plugins_file_is_refused_by_every_reader(tmp_path, meta):
    """Also by mmengine's own loader (load_from, mmpretrain's init_model)."""
    from mmengine.runner.checkpoint import _load_checkpoint
    from mmpretrain.apis import init_model

    from kd_plugins.errors import CheckpointError
    from kd_plugins.utils.checkpoint import load_local_checkpoint
    path = str(tmp_path / 'new.pth')
    torch.save(dict(meta=meta, state_dict=CLS), path)
    for load in [lambda: _load_checkpoint(path, map_location='cpu'),
                 lambda: init_model(osp.join(ROOT, TEACHER), path)] + [
            lambda r=r: load_local_checkpoint(path, role=r) for r in ACCEPTS]:
        with pytest.raises(CheckpointError) as err:
            load()
        msg = str(err.value)
        _one_message(msg)
        assert 'a newer kd_plugins wrote it' in msg
        assert 'upgrade kd_plugins' in msg
        if meta['kd_plugins_kind'] != 'teacher_snapshot':
            assert f"of format version {meta['format_version']}" in msg
            assert 'reads up to version 1' in msg


def test_an_unreadable_checkpoint(files, tmp_path, monkeypatch):
    from kd_plugins.errors import CheckpointError
    from kd_plugins.utils.checkpoint import load_local_checkpoint
    path = str(tmp_path / 'locked.pth')
    shutil.copy(files['zoo.pth'], path)
    os.chmod(path, 0)
    if os.geteuid() == 0:  # root reads any file: as a user would see it
        monkeypatch.setattr(os, 'access', lambda p, mode: p != path)
    with pytest.raises(CheckpointError) as err:
        load_local_checkpoint(path, role='teacher')
    _one_message(str(err.value))
    assert f"teacher checkpoint {path!r} is not readable (permission " \
        'denied).\n  Fix: make it readable' in str(err.value)


def test_a_folder_given_as_checkpoint(tmp_path):
    from kd_plugins.errors import CheckpointError
    from kd_plugins.utils.checkpoint import load_local_checkpoint
    with pytest.raises(CheckpointError, match='is a folder, not a checkpoint'
                       ' file.\n  Fix: pass the teacher'):
        load_local_checkpoint(str(tmp_path), role='teacher')


# -------------------------------------------------- the files we write
def test_an_export_is_marked_and_refused_where_a_run_is_needed(tmp_path):
    """tools/export_student.py's student.pth carries the marker; exporting
    it again, or a checkpoint of another method, is refused."""
    from mmengine.config import Config
    from mmrazor.registry import MODELS

    from kd_plugins.errors import CheckpointError, ConfigError
    from kd_plugins.export import export_student
    from kd_plugins.utils.file_kinds import checkpoint_kind
    cfg = Config.fromfile(osp.join(ROOT, KD))
    cfg.model.teacher_ckpt = None
    run = str(tmp_path / 'epoch_2.pth')
    torch.save(_training(MODELS.build(cfg.model.to_dict()).state_dict(),
                         cfg.pretty_text), run)
    _, pth = export_student(cfg, run, str(tmp_path / 'exp'))
    out = torch.load(pth, weights_only=True)
    assert out['meta']['kd_plugins_kind'] == 'student_export'
    assert out['meta']['format_version'] == 1
    assert checkpoint_kind(out)[0] == 'student_export'
    with pytest.raises(CheckpointError, match='is a student-only export'):
        export_student(cfg, pth, str(tmp_path / 'again'))
    # the KD run's checkpoint with the ATSC config: the method differs
    atsc = Config.fromfile(osp.join(ROOT, 'configs/demo/atsc_digits.py'))
    with pytest.raises(ConfigError, match=r"is a distillation run's "
                       r'checkpoint \(FastDistill\), but this config trains '
                       'ATSC'):
        export_student(atsc, run, str(tmp_path / 'atsc'))
    # a checkpoint without meta.cfg: ATSC's export needs its teachers
    torch.save(dict(meta={}, state_dict=DISTILL), run)
    with pytest.raises(ConfigError, match='does not hold the parts a ATSC '
                       "student is exported from .*teachers.0.head"):
        export_student(atsc, run, str(tmp_path / 'atsc'))


def test_a_classifier_given_to_a_distillation_export(files, tmp_path):
    from mmengine.config import Config

    from kd_plugins.errors import ConfigError
    from kd_plugins.export import export_student
    cfg = Config.fromfile(osp.join(ROOT, KD))
    with pytest.raises(ConfigError, match=r'the checkpoint is a classifier '
                       r'checkpoint \(weights only\) holds no student'):
        export_student(cfg, files['zoo.pth'], str(tmp_path / 'e'))


def test_a_stage1_file_is_not_exported_or_tested_as_a_student(files):
    from kd_plugins.errors import CheckpointError
    from kd_plugins.utils.checkpoint import load_local_checkpoint
    for role in ('export', 'test_distiller', 'teacher'):
        with pytest.raises(CheckpointError, match='its student is '
                           'untrained'):
            load_local_checkpoint(files['stage1.pth'], role=role)


# ------------------------------------------------------- IE-KD stage 1
@pytest.mark.parametrize('name', ['zoo.pth', 'kd_run.pth', 'stage2.pth',
                                  'export.pth', 'upstream.pth', 'stats.npz',
                                  'metrics.json', 'cut.pth', 'empty.pth'])
def test_stage2_refuses_anything_but_a_stage1_checkpoint(files, name):
    from mmrazor.registry import MODELS

    from kd_plugins.errors import CheckpointError
    with pytest.raises(CheckpointError) as err:
        MODELS.build(dict(type='IETeacherEncoder', in_channels=4,
                          stage1_ckpt=files[name]))
    msg = str(err.value)
    _one_message(msg)
    assert f"IE-KD stage-1 checkpoint {files[name]!r} is" in msg
    assert _what(files, name) in msg
    assert 'ie_kd_stage1' in msg  # the fix: run stage 1


def test_stage2_reads_a_stage1_checkpoint(tmp_path):
    from mmrazor.registry import MODELS
    ae = MODELS.build(dict(type='IEAutoEncoder', in_channels=4))
    with torch.no_grad():
        ae.encoder[1].weight.fill_(0.25)
    path = str(tmp_path / 'stage1.pth')
    torch.save(_training({**DISTILL, **{
        f'distiller.connectors.t_ae.{k}': v
        for k, v in ae.state_dict().items()}}, KD_CFG), path)
    enc = MODELS.build(dict(type='IETeacherEncoder', in_channels=4, rate=0.5,
                            stage1_ckpt=path))
    assert torch.equal(enc.encoder[1].weight, ae.encoder[1].weight)


# ---------------------------------------------------- KD-layer statistics
def _save_npz(path, meta, arrays):
    """An .npz as np.savez writes it (no marker added)."""
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    return str(path)


def test_statistics_are_marked_and_old_files_stay_readable(files, tmp_path):
    from kd_plugins.utils.stats_file import load_stats
    arrays, meta = load_stats(files['stats.npz'])
    assert (meta['kd_plugins_kind'], meta['format_version']) == \
        ('kd_layer_stats', 1)
    assert sorted(arrays) == sorted(_stats_arrays())
    # written before the marker: recognised by meta.kinds and its arrays
    old = _save_npz(tmp_path / 'old.npz', STATS_META, _stats_arrays())
    assert load_stats(old)[1]['kinds'] == STATS_META['kinds']


@pytest.mark.parametrize('name', sorted(set(CHECKPOINTS) | set(OTHERS)
                                        - {'stats.npz'}))
def test_statistics_reader_refuses_every_other_file(files, name):
    from kd_plugins.errors import ConfigError
    from kd_plugins.utils.stats_file import load_stats
    with pytest.raises(ConfigError) as err:
        load_stats(files[name])
    msg = str(err.value)
    _one_message(msg)
    assert f'KD-layer statistics file {files[name]!r} is' in msg
    what = _bytes_what(name)
    assert f'is {what}' in msg, msg
    if name in ('cut.npz', 'empty.pth'):
        assert 'unreadable - truncated or corrupt' in msg
    assert 'tools/kd_layer_stats.py' in msg.splitlines()[1]


def _bad_stats(tmp_path):
    a = _stats_arrays()
    cases = {
        'no meta entry': (None, a, "without kd_plugins' meta entry"),
        'meta not JSON': ('not json {', a, 'unreadable - truncated or '
                          'corrupt (JSONDecodeError'),
        'newer version': (dict(STATS_META, kd_plugins_kind='kd_layer_stats',
                               format_version=2), a,
                          'KD-layer statistics file of format version 2'),
        'another kind': (dict(STATS_META, kd_plugins_kind='student_export'),
                         a, 'is a student-only export'),
        'no kinds': ({'num_classes': 10}, a, 'lists no kinds'),
        'arrays missing': (STATS_META, {'penult_centers': a['penult_centers']},
                           'intermediate statistics without their arrays'),
        'wrong rank': (STATS_META, dict(a, penult_centers=np.ones(4)),
                       'penult_centers (4,)'),
        'S != classes x subclasses': (dict(STATS_META, subclasses=3), a,
                                      'num_classes=10 subclasses=3'),
        'projection does not fit': (STATS_META, dict(
            a, inter_proj=np.ones((7, 3))), 'inter_proj (7, 3)'),
    }
    for name, (meta, arrays, needle) in cases.items():
        path = tmp_path / (name.replace(' ', '_') + '.npz')
        if meta is None:
            np.savez(path, **arrays)
        elif isinstance(meta, str):
            np.savez(path, meta=np.array(meta), **arrays)
        else:
            _save_npz(path, meta, arrays)
        yield name, str(path), needle


def test_statistics_of_another_layout_or_version(tmp_path):
    """An .npz without meta, with broken meta, of a newer version or
    another kind, without its arrays or with arrays that do not fit each
    other: one ConfigError each (no KeyError / numpy error in the loss)."""
    from kd_plugins.errors import ConfigError
    from kd_plugins.utils.stats_file import load_stats
    for name, path, needle in _bad_stats(tmp_path):
        with pytest.raises(ConfigError) as err:
            load_stats(path)
        msg = str(err.value)
        _one_message(msg)
        assert needle in msg, (name, msg)


def test_the_kd_layer_loss_refuses_a_checkpoint_as_statistics(files):
    from kd_plugins.errors import ConfigError
    from kd_plugins.losses.kd_layer import KDLayerLoss
    with pytest.raises(ConfigError, match='is not a KD-layer statistics file'
                       ': it is a torch checkpoint'):
        KDLayerLoss(stats_file=files['zoo.pth'], kind='penultimate')


def test_statistics_are_written_to_exactly_the_path_given(tmp_path):
    """np.savez appends .npz to a path without it; the config names the
    path the tool was given."""
    from kd_plugins.utils.stats_file import load_stats, save_stats
    path = str(tmp_path / 'stats')
    save_stats(path, STATS_META, _stats_arrays())
    assert os.listdir(tmp_path) == ['stats']
    assert load_stats(path)[1]['num_classes'] == 10


# ------------------------------------------------------- results JSON
def _demo():
    return load_tool('demo')


def test_the_committed_results_json_is_read_without_a_marker():
    demo = _demo()
    path = osp.join(ROOT, 'docs/results/digits_benchmark.json')
    report = demo.read_report(path, '--report-from')
    assert 'kd_plugins_kind' not in report and report['results']


def test_a_written_report_is_marked_and_read_back(tmp_path):
    from kd_plugins.utils.file_kinds import marker
    demo = _demo()
    assert demo.REPORT_MARK == marker('digits_benchmark')
    demo.write_report(_report(), str(tmp_path))
    path = str(tmp_path / 'results.json')
    written = json.loads(open(path).read())
    assert (written['kd_plugins_kind'], written['format_version']) == \
        ('digits_benchmark', 1)
    assert demo.read_report(path, '--report-from')['results'] == \
        _report()['results']


@pytest.mark.parametrize('name', sorted(set(CHECKPOINTS) | set(OTHERS)
                                        - {'results.json'}))
def test_report_from_refuses_every_other_file(files, name, tmp_path):
    """tools/demo.py --report-from FILE: one kd_plugins line."""
    demo = _demo()
    with pytest.raises(SystemExit) as err:
        demo.main(['--report-from', files[name], '--work-dir',
                   str(tmp_path)])
    msg = str(err.value.code)
    assert msg.startswith(f'kd_plugins: --report-from {files[name]!r} is ')
    _one_message(msg)
    what = _bytes_what(name)
    assert what in msg, msg
    assert 'not a Digits benchmark results file' in msg
    assert 'tools/demo.py' in msg.splitlines()[1]
    assert not os.listdir(tmp_path)


def test_report_from_a_newer_version_or_an_incomplete_report(tmp_path):
    demo = _demo()
    cases = {
        'newer': (dict(_report(), kd_plugins_kind='digits_benchmark',
                       format_version=3), 'of format version 3'),
        'another kind': (dict(_report(), kd_plugins_kind='kd_layer_stats',
                              format_version=1),
                         'is a KD-layer statistics file'),
        'a row without its test': (dict(_report(), kd_plugins_kind=(
            'digits_benchmark'), results={'full': [{'name': 's'}]}),
            "results['full'][0] has no ['label', 'lr', 'epochs', 'test']"),
        'old, no date': ({k: v for k, v in _report().items()
                          if k != 'date'}, 'not a Digits benchmark'),
    }
    for name, (obj, needle) in cases.items():
        path = tmp_path / 'r.json'
        path.write_text(json.dumps(obj))
        with pytest.raises(SystemExit) as err:
            demo.main(['--report-from', str(path), '--work-dir',
                       str(tmp_path / 'out')])
        msg = str(err.value.code)
        _one_message(msg)
        assert needle in msg, (name, msg)


# ----------------------------------------------------------- the tools
def _tool_fails(tool: str, argv: list, *needles) -> str:
    """Run a tool's main in this process: it must end in one kd_plugins
    line (a KDPluginsError through run_main), not another exception."""
    from _common import run_main  # noqa: F401  (tools/ on sys.path)
    module = load_tool(tool)
    with pytest.raises(SystemExit) as err:
        run_main(module.main, argv)
    msg = str(err.value.code)
    assert msg.startswith('kd_plugins: '), msg
    _one_message(msg)
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def test_tools_test_refuses_a_checkpoint_its_config_would_not_load(files,
                                                                   tmp_path):
    """mmengine loads load_from with strict=False: an export tested with the
    distillation config (or a distillation checkpoint with a classifier
    config) would evaluate an untrained model."""
    wd = ['--work-dir', str(tmp_path)]
    _tool_fails('test', [KD, files['export.pth'], *wd],
                f"checkpoint {files['export.pth']!r} is a student-only "
                'export', 'OUT_DIR/student.py OUT_DIR/student.pth')
    _tool_fails('test', [TEACHER, files['kd_run.pth'], *wd],
                "is a distillation run's checkpoint (FastDistill)",
                'tools/export_student.py')
    _tool_fails('test', [TEACHER, files['metrics.json'], *wd],
                'is not a torch checkpoint: it is a JSON file')


def test_export_tool_with_files_of_other_kinds(files, tmp_path):
    out = str(tmp_path / 'exp')
    _tool_fails('export_student', [KD, files['export.pth'], out],
                'is a student-only export', 'it is exported already')
    _tool_fails('export_student', [KD, files['stats.npz'], out],
                'is not a torch checkpoint: it is a KD-layer statistics')
    _tool_fails('export_student', ['configs/demo/ie_kd_digits.py',
                                   files['stage1.pth'], out],
                'is an IE-KD stage-1 checkpoint', 'export the IE-KD stage-2')


def test_converter_refuses_a_file_in_mmpretrains_layout(files, tmp_path):
    out = str(tmp_path / 'o.pth')
    for name in ('zoo.pth', 'converted.pth', 'export.pth'):
        _tool_fails('convert_repdistiller_ckpt',
                    [files[name], out, '--arch', 'resnet8x4'],
                    f"upstream checkpoint {files[name]!r} is",
                    'it needs no conversion')
    assert not osp.exists(out)


def test_converter_marks_its_output_and_refuses_it_back(tmp_path):
    from mmpretrain.registry import MODELS

    from kd_plugins.models.backbones.cifar_zoo import (UPSTREAM_CLASSIFIER,
                                                       cifar_classifier)
    from kd_plugins.utils.file_kinds import checkpoint_kind
    model = MODELS.build(cifar_classifier('resnet8x4', 100))
    head = UPSTREAM_CLASSIFIER['resnet8x4'] + '.'
    up = {(head + k[len('head.fc.'):] if k.startswith('head.fc.') else
           k[len('backbone.'):]): v for k, v in model.state_dict().items()}
    src, dst = str(tmp_path / 'ckpt_epoch_240.pth'), str(tmp_path / 'o.pth')
    torch.save(dict(model=up, epoch=240), src)
    convert = load_tool('convert_repdistiller_ckpt')
    convert.main([src, dst, '--arch', 'resnet8x4'])
    out = torch.load(dst, weights_only=True)
    assert out['meta']['kd_plugins_kind'] == 'converted_teacher'
    assert checkpoint_kind(out)[0] == 'converted_teacher'
    _tool_fails('convert_repdistiller_ckpt',
                [dst, str(tmp_path / 'again.pth'), '--arch', 'resnet8x4'],
                'is a RepDistiller/mdistiller teacher converted',
                'it needs no conversion')


# ------------------------------------------- as a user runs them (e2e)
@pytest.mark.parametrize('args,needle', [
    (['tools/train.py', 'configs/demo/kd_layer_digits.py', '--cfg-options',
      'model.teacher_ckpt=None',
      'model.distiller.distill_losses.loss_penult.stats_file={zoo.pth}',
      'model.distiller.distill_losses.loss_inter.stats_file={zoo.pth}'],
     'is not a KD-layer statistics file: it is a torch checkpoint'),
    (['tools/train.py', TEACHER, '--resume', '{export.pth}'],
     "--resume checkpoint '{export.pth}' is a student-only export"),
    (['tools/kd_layer_stats.py', 'configs/demo/kd_layer_digits.py',
      '{results.json}', '{{tmp}}/s.npz'],
     "teacher checkpoint '{results.json}' is not a torch checkpoint: it is "
     'a Digits benchmark results file'),
    (['tools/demo.py', '--report-from', '{cut.json}'],
     "--report-from '{cut.json}' is a truncated or malformed JSON file"),
], ids=['train: checkpoint as statistics', 'train: resume an export',
        'kd_layer_stats: JSON as teacher', 'demo: cut JSON'])
def test_a_file_of_another_kind_ends_the_tool_in_one_line(files, tmp_path,
                                                          args, needle):
    def fill(text):
        for name, path in files.items():
            text = text.replace('{' + name + '}', path)
        return text.replace('{{tmp}}', str(tmp_path))
    args = [fill(a) for a in args]
    if args[0] == 'tools/train.py':
        args += ['--work-dir', str(tmp_path / 'wd')]
    if args[0] == 'tools/demo.py':
        args += ['--work-dir', str(tmp_path / 'demo')]
    proc = run_tool(args, check=False, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert 'Traceback' not in out, out[-3000:]
    line = [x for x in proc.stderr.splitlines() if x.startswith(
        'kd_plugins: ')]
    assert len(line) == 1, proc.stderr[-3000:]
    assert fill(needle) in line[0], proc.stderr[-3000:]


def test_troubleshooting_lists_every_kind_and_its_tool():
    """docs/troubleshooting.md names each kind kd_plugins writes with the
    command that writes it (KINDS), and the messages it quotes are the
    code's."""
    from kd_plugins.utils.file_kinds import KINDS
    text = open(osp.join(ROOT, 'docs', 'troubleshooting.md'),
                encoding='utf-8').read()
    section = text.split('## Files of the wrong kind', 1)[1].split('\n## ')[0]
    for kind in KINDS.values():
        assert kind.made_by in section, kind.made_by
        assert kind.what.split(' (')[0] in section, kind.what
    for quoted in ('is not a torch checkpoint: it is a JSON file',
                   'is unreadable - truncated or corrupt (a truncated or '
                   'corrupt torch checkpoint (its zip directory is missing))',
                   'reads up to version 1: a newer kd_plugins',
                   'it needs no conversion'):
        assert quoted.replace('\n', ' ') in ' '.join(section.split()), \
            quoted
