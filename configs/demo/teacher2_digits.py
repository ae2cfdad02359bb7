# A second Digits teacher (same network, another seed) for two-teacher demos.
_base_ = ['./teacher_digits.py']
randomness = dict(seed=1)
