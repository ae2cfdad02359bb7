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
