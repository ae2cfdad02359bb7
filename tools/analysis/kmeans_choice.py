"""Which k-means for the KD layer's penultimate statistics? A measurement.

    python tools/analysis/kmeans_choice.py [--n 3200000 --dim 64 --k 4096]

The official letKD statistics run 20 Lloyd iterations of full k-means (faiss,
random initial centres) over every location of the teacher's last map on the
training set: CIFAR-100 with resnet56 is 50,000 images x 64 locations =
3.2 M vectors of 64 channels, K = 4096. This script draws data of that size
from a Gaussian mixture (100 classes x 8 modes, anisotropic, as clustered as
real features) and fits, on the same data:

- ``MiniBatchKMeans`` (what kd_plugins used before: n_init=3,
  batch max(1024, 3K));
- full ``KMeans`` (Lloyd), k-means++ initial centres, 20 iterations (the
  official iteration count; k-means++ instead of faiss' random init).

It prints the time and the inertia (sum of squared distances to the nearest
centre) of each, divided by the number of points. The result is quoted in
``kd_plugins/kd_layer_stats.py``.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def mixture(n: int, dim: int, classes: int = 100, modes: int = 8,
            seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4.0, (classes * modes, dim)).astype(np.float32)
    scales = rng.uniform(0.5, 2.0, (classes * modes, dim)).astype(np.float32)
    comp = rng.integers(0, classes * modes, n)
    x = np.empty((n, dim), np.float32)
    step = 200_000
    for s in range(0, n, step):
        c = comp[s:s + step]
        x[s:s + step] = centres[c] + scales[c] * rng.standard_normal(
            (len(c), dim), dtype=np.float32)
    return np.maximum(x, 0)  # post-ReLU features are non-negative


def main(argv=None) -> dict:
    from sklearn.cluster import KMeans, MiniBatchKMeans
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--n', type=int, default=3_200_000)
    p.add_argument('--dim', type=int, default=64)
    p.add_argument('--k', type=int, default=4096)
    p.add_argument('--json', help='write the results here')
    args = p.parse_args(argv)
    x = mixture(args.n, args.dim)
    print(f'{args.n} x {args.dim} points, K = {args.k}', flush=True)
    res = {}
    for name, km in [
        ('MiniBatchKMeans', MiniBatchKMeans(
            n_clusters=args.k, random_state=0, n_init=3,
            batch_size=max(1024, 3 * args.k))),
        ('KMeans (Lloyd, k-means++, 20 iterations)', KMeans(
            n_clusters=args.k, random_state=0, n_init=1, max_iter=20,
            tol=0.0, algorithm='lloyd')),
    ]:
        t0 = time.time()
        km.fit(x)
        fit_s = time.time() - t0
        # inertia of the final centres over all points, same for both
        inertia = float(-km.score(x)) / len(x)
        res[name] = dict(seconds=round(fit_s, 1), inertia_per_point=inertia)
        print(f'{name}: {fit_s:.0f} s, inertia/point {inertia:.4f}',
              flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(vars(args), results=res), f, indent=2)
    return res


if __name__ == '__main__':
    main()
