"""Test-only hooks and wrappers imported by the configs of
tests/test_distributed.py."""
import torch
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm


@HOOKS.register_module()
class FreezeAllNormsHook(Hook):
    """Every batch-norm layer normalises with its running statistics (eval
    mode) at every step, connectors' included: with per-rank batch statistics
    a 2-process run could not equal a 1-process run on the same batch."""

    priority = 'LOWEST'

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        for m in runner.model.modules():
            if isinstance(m, _BatchNorm):
                m.eval()


@HOOKS.register_module()
class CachedLogitsCheckHook(Hook):
    """A cached run (model.teacher_cache): every batch's stored teacher
    logits are the live teacher's on the batch's own images (fp16 storage
    tolerance), on every rank; logs how many samples it checked."""

    def before_train(self, runner) -> None:
        from kd_plugins.utils.teacher import build_teacher
        cfg = runner.cfg.model
        self.teacher = build_teacher(cfg.teacher, cfg.teacher_ckpt).eval()
        self.checked = 0

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        from mmengine.model import is_model_wrapper

        from kd_plugins.teacher_cache import LOGITS_KEY
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        data = model.data_preprocessor(data_batch, True)
        inputs = data['inputs']
        with torch.no_grad():  # the run's dtype (float64 runs: float64)
            live = self.teacher.to(inputs.dtype)(inputs, mode='tensor')
        stored = torch.stack([ds.get(LOGITS_KEY)[0]
                              for ds in data['data_samples']])
        # fp16 storage: a relative error up to 2**-11 per logit (rtol), and
        # logits near 0 rounded to fp16's absolute step there (atol)
        torch.testing.assert_close(stored.double(), live.double(),
                                   rtol=2e-3, atol=2e-2)
        self.checked += len(stored)

    def after_train(self, runner) -> None:
        print(f'CachedLogitsCheckHook: rank {runner.rank}: {self.checked} '
              'samples match the live teacher', flush=True)  # every rank


# -- float64 runs: 1 and 2 processes then differ by rounding of ~1e-12 ----
@HOOKS.register_module()
class Float64Hook(Hook):
    """A 1-process run in float64 (``model.double()`` before the first
    step; the optimizer keeps the same Parameter objects). The data
    preprocessor's float64 mean/std promote every batch to float64."""

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        from mmengine.model import is_model_wrapper
        if not is_model_wrapper(runner.model):
            runner.model.double()
        assert all(p.dtype == torch.float64
                   for p in runner.model.parameters())


def _float64_wrapper(base):
    """``base`` (a DDP wrapper class) that turns the model to float64 before
    it builds its gradient buckets."""

    class Float64(base):

        def __init__(self, module, **kwargs):
            module.double()
            super().__init__(module=module, **kwargs)

    Float64.__name__ = f'Float64{base.__name__}'
    return Float64


def _register_float64_wrappers():
    from mmengine.model import MMDistributedDataParallel
    from mmengine.registry import MODEL_WRAPPERS

    from kd_plugins.engine.dist import KDModelWrapper
    for base in (MMDistributedDataParallel, KDModelWrapper):
        MODEL_WRAPPERS.register_module(module=_float64_wrapper(base),
                                       force=True)


_register_float64_wrappers()
