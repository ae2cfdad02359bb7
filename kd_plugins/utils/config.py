"""Reading mmengine configs: the parts several modules look for."""
from __future__ import annotations


def innermost_dataset(ds):
    """The data set config inside its wrappers (``RepeatDataset``,
    ``ClassBalancedDataset``, ...: configs with a ``dataset`` dict), or
    ``ds`` itself; the same object, not a copy. Non-dicts are returned as
    they are."""
    while isinstance(ds, dict) and isinstance(ds.get('dataset'), dict):
        ds = ds['dataset']
    return ds


def iter_nodes(obj, path: str = ''):
    """Every node of a nested config (dicts, lists, tuples and leaves),
    depth first, as ``(path, node)``: ``model.distiller.distill_losses``,
    ``model.teachers[1]``."""
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from iter_nodes(v, f'{path}.{k}' if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from iter_nodes(v, f'{path}[{i}]')


def find_key(obj, key: str, path: str = ''):
    """``(path, value)`` of every ``key`` anywhere in ``obj``."""
    for here, node in iter_nodes(obj, path):
        if isinstance(node, dict) and key in node:
            yield f'{here}.{key}' if here else key, node[key]
