"""Deployable students: every method's exported student (tools/export_student
.py's code path, then mmpretrain's ``init_model``) captures with
``torch.export.export``, exports with ``torch.onnx.export`` (its default,
dynamo-based exporter) and runs in onnxruntime with PyTorch's logits (1e-4),
and compiles with ``torch.compile(fullgraph=True)`` for inference (one
graph, no break). onnx, onnxruntime and onnxscript come with the ``deploy``
extra (``make test`` installs it).
"""
import pytest
import torch

from tests.test_cuda_placement import METHODS, method_config

pytestmark = pytest.mark.e2e  # ~1 min in all: ONNX export of 12 students

# IE-KD stage 1 trains only the teacher's auto-encoder: no student to deploy
STUDENTS = sorted(n for n in METHODS if n != 'ie_kd_stage1')


@pytest.mark.parametrize('name', STUDENTS)
def test_exported_student_exports_and_compiles(name, tmp_path):
    import onnxruntime as ort
    from mmengine.config import Config
    from mmpretrain.apis import init_model
    from mmrazor.registry import MODELS

    from kd_plugins.export import export_student
    cfg = method_config(name, tmp_path)
    model = MODELS.build(cfg.model.to_dict())
    torch.manual_seed(0)
    with torch.no_grad():  # BN statistics away from their defaults
        for n, b in model.named_buffers():
            if n.endswith('running_var'):
                b.uniform_(0.5, 2.0)
    ckpt = str(tmp_path / 'run.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    cfg_path, pth = export_student(cfg, ckpt, str(tmp_path / 'exp'))
    student = init_model(Config.fromfile(cfg_path), pth, device='cpu').eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = student(x, mode='tensor')
        ep = torch.export.export(student, (x, ), kwargs=dict(mode='tensor'))
        torch.testing.assert_close(ep.module()(x, mode='tensor'), want)
        compiled = torch.compile(student, fullgraph=True, backend='eager')
        torch.testing.assert_close(compiled(x, mode='tensor'), want)
    onnx_path = str(tmp_path / 'student.onnx')
    torch.onnx.export(student, (x, ), onnx_path, kwargs=dict(mode='tensor'),
                      input_names=['inputs'])
    sess = ort.InferenceSession(onnx_path,
                                providers=['CPUExecutionProvider'])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4,
                               atol=1e-4)


def test_export_tool_writes_onnx_with_a_dynamic_batch(tmp_path):
    """tools/export_student.py --onnx: the documented command (docs/
    training.md, "Export to ONNX")."""
    import re

    import numpy as np
    import onnxruntime as ort
    from mmrazor.registry import MODELS

    from tests.conftest import run_tool
    cfg = method_config('kd', tmp_path)
    model = MODELS.build(cfg.model.to_dict())
    ckpt = str(tmp_path / 'run.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    cfg_file = str(tmp_path / 'kd.py')
    cfg.dump(cfg_file)
    out = tmp_path / 'exp'
    proc = run_tool(['tools/export_student.py', cfg_file, ckpt, str(out),
                     '--onnx'])
    diff = float(re.search(r'max \|diff\| ([0-9.e+-]+)', proc.stdout)[1])
    assert diff < 1e-4, proc.stdout
    sess = ort.InferenceSession(str(out / 'student.onnx'),
                                providers=['CPUExecutionProvider'])
    got = sess.run(None, {'inputs': np.zeros((5, 3, 32, 32), np.float32)})
    assert got[0].shape == (5, 10)  # any batch size
