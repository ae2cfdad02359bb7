"""Tolerances for comparing two computations of the same quantity.

Two float computations that differ only in the order of their sums (memory
layout, the CPU's vector width that torch's kernel dispatch picks,
``ATEN_CPU_CAPABILITY``; a compiler's fusion; the number of processes that
share a batch) differ by rounding, and by nothing else. A sum of ``n`` terms
computed in a dtype of unit roundoff ``u`` is within ``n * u * sum|terms|``
of the exact sum (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., eq. 3.4 and Lemma 3.1: ``gamma_n = n u / (1 - n u)``).
A network composes such sums, one per layer; to first order their errors
add, so the bound of a ``layers``-deep network is ``layers`` times that of
its widest reduction.

A test that compares two ways of computing one thing takes its tolerance
from :func:`rounding_tol` (or runs in float64, where that bound is ~1e-12 and
a real mistake is visible at once), never from what one machine printed.
"""
import torch

# unit roundoff u = 2**-(mantissa bits + 1)
UNIT_ROUNDOFF = {
    torch.float64: 2.0**-53,
    torch.float32: 2.0**-24,
    torch.float16: 2.0**-11,
    torch.bfloat16: 2.0**-8,
}
# the widest reduction of the test networks: a 3x3 convolution over 128
# channels (the Digits teacher's last stage; the students are narrower)
CONV_TERMS = 128 * 9
# their depth in reductions: ResNet-18 (17 convolutions, the classifier, the
# softmax of the losses), rounded up
DEPTH = 20


def rounding_tol(dtype: torch.dtype, terms: int = CONV_TERMS,
                 layers: int = DEPTH) -> float:
    """The worst-case relative rounding difference of two summation orders
    of ``layers`` composed sums of ``terms`` terms each, in ``dtype``:
    ``layers * terms * u`` (float64: 2.6e-12 with the defaults; float32:
    1.4e-3)."""
    return layers * terms * UNIT_ROUNDOFF[dtype]
