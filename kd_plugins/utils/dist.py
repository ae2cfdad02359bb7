"""Batch statistics across data-parallel ranks (used by the algorithms;
the DDP wrappers and hooks are in ``kd_plugins.engine.dist``)."""
from __future__ import annotations

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_world_size


def global_batch_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over dim 0 of ``x`` (N, ...) across the batches of all ranks.

    For a batch statistic that is not a mean of per-sample losses (IE-DML's
    factor spread): its value is the one-process value on the global batch,
    and its gradient is scaled so that, once :func:`all_reduce_grads`
    averages the ranks' gradients, the update equals the one-process
    update. A rank's samples enter the global mean with weight
    1 / N_global; the gradient flows through them with W / N_global, and
    the average over W ranks restores 1 / N_global.
    """
    world = get_world_size()
    if world == 1 or not torch_dist.is_initialized():
        return x.mean(0)
    local_sum = x.sum(0)
    dtype = torch.promote_types(x.dtype, torch.float32)  # float64 stays
    stats = torch.cat([local_sum.detach().flatten().to(dtype),
                       local_sum.new_tensor([x.shape[0]], dtype=dtype)])
    torch_dist.all_reduce(stats)
    n_global = stats[-1]
    mean = (stats[:-1] / n_global).view_as(local_sum).to(x.dtype)
    return mean + (local_sum - local_sum.detach()) * (world / n_global)
