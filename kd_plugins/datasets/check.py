"""Decode every sample of a data set and list the ones that fail (the check
to run before a multi-day job: ``tools/check_data.py``)."""
from __future__ import annotations

import time
from typing import Callable, List, Optional

import torch.utils.data as tud


class _Probe(tud.Dataset):
    """Sample ``i`` of ``dataset`` through its pipeline: ``(i, None)`` when
    it decodes, ``(i, 'Error: message')`` when it does not."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            out = self.dataset[i]
        except Exception as err:  # noqa: BLE001 - every decoding failure
            return i, f'{type(err).__name__}: {err}'.splitlines()[0]
        if out is None:  # mmengine's BaseDataset gives None on a refusal
            return i, 'the pipeline returned no sample'
        return i, None


def sample_path(dataset, i: int) -> str:
    """The file behind sample ``i`` (``img_path``), or its index."""
    try:
        info = dataset.get_data_info(i)
    except Exception:  # noqa: BLE001
        return f'sample {i}'
    return str(info.get('img_path') or info.get('filename') or f'sample {i}')


def check_dataset(dataset, workers: int = 0,
                  log: Optional[Callable[[str], None]] = print,
                  every: int = 500) -> List[tuple]:
    """Decode every sample (``workers`` processes); returns the bad ones as
    ``(index, path, error)``, in index order."""
    # mmengine retries a failing sample with another index by default: a
    # check must see the failure itself
    max_refetch = getattr(dataset, 'max_refetch', None)
    if hasattr(dataset, 'max_refetch'):
        dataset.max_refetch = 0
    loader = tud.DataLoader(_Probe(dataset), batch_size=1,
                            num_workers=workers, collate_fn=lambda b: b[0])
    bad, t0, n = [], time.time(), len(dataset)
    try:
        for k, (i, err) in enumerate(loader, 1):
            if err is not None:
                bad.append((i, sample_path(dataset, i), err))
            if log and (k % every == 0 or k == n):
                log(f'[check_data] {k}/{n} samples, {len(bad)} bad, '
                    f'{time.time() - t0:.0f} s')
    finally:
        if max_refetch is not None:
            dataset.max_refetch = max_refetch
    return bad
