"""The precision of a loss: at least float32, never lower than the input's.

Losses are computed in float32 when the network runs in float16 / bfloat16
(AMP), as ``x.float()`` does; unlike ``x.float()``, a float64 input stays in
float64, so a float64 run (the tests that compare a training step with the
official code's, ``tests/tolerance.py``) is float64 throughout.
"""
import torch


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if its dtype is narrower, else unchanged (float32,
    float64). Any shape."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
