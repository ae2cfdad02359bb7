"""Benchmark harnesses (not part of the kd_plugins library): the Digits
benchmark protocol, its report, chart and verdicts (benchmarks/digits.py),
run by tools/demo.py."""
