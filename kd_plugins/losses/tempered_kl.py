"""Hinton's tempered KL (Hinton, Vinyals, Dean 2015, arXiv 1503.02531):

    L = tau^2 * (1/N) * sum_n KL(softmax(z_t,n / tau) || softmax(z_s,n / tau))

the tau^2 keeps the gradient's size independent of tau. Used by ATSC's
optional KD term and by IE-DML's mutual term (as a function: they weight it
themselves); config-built KD uses mmrazor's ``KLDivergence``, the same
formula.
"""
import torch
import torch.nn.functional as F

from ..utils.precision import at_least_float32


def tempered_kl(z_s: torch.Tensor, z_t: torch.Tensor,
                tau: float) -> torch.Tensor:
    """z_s, z_t: (N, C) logits (the target's gradient is not stopped here:
    detach ``z_t`` if it must not learn). Computed in float32 (float64 for
    float64 logits). Returns a scalar."""
    return tau**2 * F.kl_div(F.log_softmax(at_least_float32(z_s) / tau, dim=1),
                             F.softmax(at_least_float32(z_t) / tau, dim=1),
                             reduction='batchmean')
