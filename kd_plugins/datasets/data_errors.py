"""What a run does with a sample that cannot be read: the ``data_errors``
policy of a config.

    data_errors = dict(policy='raise')                  # the default
    data_errors = dict(policy='skip', max_skipped=100)  # long runs

The training loops of kd_plugins (``ResumableEpochBasedTrainLoop``,
``ResumableIterBasedTrainLoop``: ``tools/train.py`` uses them) build the
training set inside :class:`DataErrorGuard`:

- ``raise``: the first unreadable sample ends the run with one
  ``kd_plugins:`` line that names the file, the error and the fixes;
- ``skip``: the sample is replaced by the next readable index (the batch
  keeps its size, so DDP ranks stay in step), a warning names it, and its
  path is appended to ``WORK_DIR/skipped_samples.txt`` (once: a file
  skipped again in a later epoch is not listed twice). Past ``max_skipped``
  distinct files the run stops, listing them. The count is read from that
  file, so it holds across data-loader workers, ranks and restarts.
"""
from __future__ import annotations

import os
import os.path as osp

from mmengine.logging import print_log
from mmpretrain.registry import DATASETS

from ..errors import ConfigError, DataError

POLICIES = ('raise', 'skip')
FIX = ('find every bad file at once with `python tools/check_data.py '
       'CONFIG` and replace or remove them; or let the run go on without '
       "them: data_errors=dict(policy='skip', max_skipped=N) in the config "
       "(or --cfg-options data_errors.policy=skip)")


def check_policy(data_errors: dict | None) -> dict:
    """The policy with its defaults, or a ConfigError that names the key."""
    policy = dict(policy='raise', max_skipped=100)
    policy.update(data_errors or {})
    unknown = set(policy) - {'policy', 'max_skipped'}
    if unknown:
        raise ConfigError(f'data_errors has unknown keys {sorted(unknown)}.'
                          "\n  Fix: use data_errors=dict(policy='raise'|"
                          "'skip', max_skipped=N).")
    if policy['policy'] not in POLICIES:
        raise ConfigError(f"data_errors.policy={policy['policy']!r} is not "
                          "one of 'raise', 'skip'.\n  Fix: set one of them.")
    n = policy['max_skipped']
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ConfigError(f'data_errors.max_skipped={n!r} must be an '
                          'integer >= 0.\n  Fix: e.g. max_skipped=100.')
    return policy


@DATASETS.register_module()
class DataErrorGuard:
    """A data set wrapper that applies a ``data_errors`` policy.

    Args:
        dataset: the data set (or its config).
        policy: ``'raise'`` or ``'skip'``.
        max_skipped: the most distinct files ``skip`` may leave out.
        log_file: where ``skip`` appends the skipped paths (one per line).
    """

    def __init__(self, dataset, policy: str = 'raise',
                 max_skipped: int = 100,
                 log_file: str | None = None) -> None:
        check_policy(dict(policy=policy, max_skipped=max_skipped))
        self.dataset = (DATASETS.build(dataset) if isinstance(dataset, dict)
                        else dataset)
        self.policy = policy
        self.max_skipped = max_skipped
        self.log_file = log_file

    # -- what the loops, samplers and hooks read --------------------------
    @property
    def metainfo(self) -> dict:
        return self.dataset.metainfo

    def full_init(self) -> None:
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()

    def get_data_info(self, idx: int) -> dict:
        return self.dataset.get_data_info(idx)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):
        if name == 'dataset':  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    # -- the policy -------------------------------------------------------
    def _where(self, idx: int) -> str:
        try:
            info = self.dataset.get_data_info(idx)
        except Exception:  # noqa: BLE001 - only for the message
            info = {}
        path = info.get('img_path') if isinstance(info, dict) else None
        return path or f'sample {idx} of {type(self.dataset).__name__}'

    def _skipped(self) -> list:
        if not self.log_file or not osp.isfile(self.log_file):
            return []
        with open(self.log_file, encoding='utf-8') as f:
            return list(dict.fromkeys(line.rstrip('\n') for line in f
                                      if line.strip()))

    def _skip(self, where: str, err: Exception) -> None:
        skipped = self._skipped() if self.log_file else []
        if self.log_file and where not in skipped:  # each file listed once
            os.makedirs(osp.dirname(osp.abspath(self.log_file)),
                        exist_ok=True)
            # one short O_APPEND write: whole lines even from many processes
            with open(self.log_file, 'a', encoding='utf-8') as f:
                f.write(where + '\n')
        if where not in skipped:
            skipped.append(where)
        print_log(f'kd_plugins: skipped {where} ({type(err).__name__}: '
                  f'{err}); {len(skipped)} file(s) skipped so far'
                  + (f', listed in {self.log_file}' if self.log_file else ''),
                  logger='current', level=30)
        if len(skipped) > self.max_skipped:
            listed = '\n    '.join(skipped)
            raise DataError(
                f'{len(skipped)} unreadable files, more than data_errors.'
                f'max_skipped={self.max_skipped}:\n    {listed}\n  Fix: '
                'replace or remove them (python tools/check_data.py CONFIG '
                'lists every one), or raise max_skipped.')

    def __getitem__(self, idx: int):
        n = len(self.dataset)
        for step in range(n):
            i = (idx + step) % n
            try:
                return self.dataset[i]
            except DataError:
                raise
            except Exception as err:  # noqa: BLE001 - any decoder's error
                where = self._where(i)
                if self.policy == 'raise':
                    raise DataError(
                        f'{where} cannot be read: {type(err).__name__}: '
                        f'{err}.\n  Fix: {FIX}.') from err
                self._skip(where, err)
        raise DataError(f'no sample of {type(self.dataset).__name__} can be '
                        'read.\n  Fix: check the data root and the files.')


def guard_loader(dataloader, data_errors: dict | None, work_dir: str):
    """A training data loader config whose data set is wrapped in
    :class:`DataErrorGuard` with the ``data_errors`` policy (the resumable
    training loops call it before they build the loader, so the config the
    run dumps stays the one the user wrote). A built loader, or one whose
    data set is guarded already, is returned as it is."""
    if not isinstance(dataloader, dict) or 'dataset' not in dataloader:
        return dataloader
    policy = check_policy(data_errors)
    dataset = dataloader['dataset']
    if isinstance(dataset, dict) and dataset.get('type') in (
            'DataErrorGuard', DataErrorGuard):
        return dataloader
    loader = dict(dataloader)
    loader['dataset'] = dict(
        type='DataErrorGuard', dataset=dataset, **policy,
        log_file=osp.join(work_dir, 'skipped_samples.txt'))
    return loader
