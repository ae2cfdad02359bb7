"""Test-only hook imported by the configs of tests/test_distributed.py."""
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
        import torch
        from mmengine.model import is_model_wrapper

        from kd_plugins.teacher_cache import LOGITS_KEY
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        data = model.data_preprocessor(data_batch, True)
        with torch.no_grad():
            live = self.teacher(data['inputs'], mode='tensor')
        stored = torch.stack([ds.get(LOGITS_KEY)[0]
                              for ds in data['data_samples']])
        torch.testing.assert_close(stored, live, rtol=2e-3, atol=2e-2)
        self.checked += len(stored)

    def after_train(self, runner) -> None:
        print(f'CachedLogitsCheckHook: rank {runner.rank}: {self.checked} '
              'samples match the live teacher', flush=True)  # every rank
