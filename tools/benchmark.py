"""Training throughput of a distillation config, side by side with
mmrazor's KD.

    python tools/benchmark.py configs/kd_r34_r18_in1k.py --batch 256 --amp bf16
    python tools/benchmark.py configs/aekt_r34_r18_in1k.py --compile \
        --json out.json
    python tools/benchmark.py configs/demo/kd_digits.py --device cpu \
        --batch 32 --size 32

Rows, all in one process on the same synthetic batches (uint8 images already
on the device, so no data loading is timed), full training steps (forward,
backward, optimizer step):

* ``student``: the config's student alone (mmpretrain, plain SGD step);
* ``mmrazor-kd``: mmrazor's own ``SingleTeacherDistill`` + ``KLDivergence``
  (tau 4) on the same teacher and student (``teacher_trainable=True`` when
  the method trains its teacher, e.g. ATSC) - the yardstick;
* the config's model as configured (e.g. ``FastDistill`` + AEKT);
* with ``--compile``: the config's model with ``compile=True`` as well;
* when the config names a teacher cache (``model.teacher_cache=DIR``, in the
  file or through ``--cfg-options``; or, with ``--synthetic-cache``, a cache
  of random logits made for the run, no data needed; ``make gpu-check``
  uses it): ``<model> (cache)``, the same model
  trained from that cache (no teacher; the batch carries stored logits of
  the cache's images, as ``KDCachedViews`` gives them), beside the live rows
  (the config's teacher, random weights). The cache's size per view, the
  time to read a batch's logits from it and the teacher forward per view
  (what a build costs, without data loading) go into ``meta.cache``.

Columns: images/s, ms/step, speed-up over mmrazor-kd, step time relative to
the student alone, peak GPU memory (CUDA only). Printed as a table and
written as JSON with ``--json``, with the throughput targets checked
(``targets``): frozen-teacher methods >= 2.0x mmrazor-kd (>= 2.6x with
compile), a distillation step <= 1.45x the student's (<= 1.10x from a
cache), peak memory <= (student
alone + teacher weights + one no-grad teacher forward) x 1.1; ATSC >= 2.0x
mmrazor-kd with a trainable teacher. Teacher weights are random (no
checkpoint is read): throughput does not depend on them. Files a method needs
and that a throughput run does not (KD-layer statistics, the IE-KD stage-1
encoder) are replaced by synthetic ones of the right shapes when missing, and
the output says so. ``--budget-s``: rows that would start after that many
seconds are skipped (said in the output), so a GPU check has a bounded time.
"""
from __future__ import annotations

import argparse
import copy
import json
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

import kd_plugins  # noqa: E402,F401
from _common import (add_cfg_options, load_config_with_options,  # noqa: E402
                     out_file, run_main)
from kd_plugins.errors import ArgumentError, ConfigError
from kd_plugins.utils.teacher import clear_teacher_ckpts, first_teacher

AMP = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--baseline', default='mmrazor-kd',
                   choices=['mmrazor-kd', 'none'])
    p.add_argument('--batch', type=int, default=256)
    p.add_argument('--size', type=int, default=None,
                   help='image side (default: 224, or 32 for CIFAR/Digits '
                   'configs)')
    p.add_argument('--amp', choices=['bf16', 'fp16'], default=None)
    p.add_argument('--compile', action='store_true',
                   help='add a row with compile=True')
    p.add_argument('--iters', type=int, default=20)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--device', default=None,
                   help='cuda or cpu (default: cuda if available)')
    p.add_argument('--json', default=None, help='write the rows here')
    p.add_argument('--synthetic-cache', action='store_true',
                   help='no model.teacher_cache given: time the cached row '
                   'on a cache of random logits made here for the config\'s '
                   'teacher(s) (no data needed; a step costs the same)')
    p.add_argument('--budget-s', type=float, default=None,
                   help='skip rows that would start after this many seconds')
    add_cfg_options(p)
    return p.parse_args(argv)


def _strip(model_cfg: dict) -> dict:
    """The distiller config with random teachers (no checkpoint read)."""
    cfg = copy.deepcopy(model_cfg)
    clear_teacher_ckpts(cfg)
    return cfg


def mmrazor_kd_cfg(model_cfg: dict, trains_teacher: bool) -> dict:
    """mmrazor's SingleTeacherDistill + KLDivergence on the same pair."""
    teacher = first_teacher(model_cfg)
    if teacher is None:
        raise ConfigError('this config has no teacher to compare with '
                          'mmrazor KD.\n  Fix: --baseline none.')
    return dict(
        _scope_='mmrazor', type='SingleTeacherDistill',
        data_preprocessor=copy.deepcopy(model_cfg.get('data_preprocessor')),
        architecture=copy.deepcopy(model_cfg['architecture']),
        teacher=copy.deepcopy(teacher), teacher_trainable=trains_teacher,
        distiller=kd_distiller())


def kd_distiller() -> dict:
    """The baseline's distiller: configs/_base_/distill/kd.py, the file
    the KD configs use (mmrazor's recorders and KLDivergence, tau 4)."""
    from mmengine.config import Config
    path = osp.join(ROOT, 'configs', '_base_', 'distill', 'kd.py')
    return Config.fromfile(path).kd_distiller.to_dict()


def _trains_teacher(model_cfg: dict) -> bool:
    """Whether the method trains its teacher(s) (ATSC, a trainable
    SingleTeacherDistill): read from a built model, so that the baseline
    gets the same (trainable or frozen) teacher."""
    from mmrazor.registry import MODELS
    probe = MODELS.build(copy.deepcopy(model_cfg))
    return any(p.requires_grad for n, p in probe.named_parameters()
               if n.startswith(('teacher.', 'teachers.')))


def student_cfg(model_cfg: dict) -> dict:
    student = copy.deepcopy(model_cfg['architecture'])
    if model_cfg.get('data_preprocessor') is not None:
        student['data_preprocessor'] = copy.deepcopy(
            model_cfg['data_preprocessor'])
    return student


def _optim_wrapper(model, cfg, amp):
    from mmengine.optim import build_optim_wrapper
    ow = copy.deepcopy(cfg.get('optim_wrapper') or {})
    ow.setdefault('optimizer', dict(type='SGD', lr=0.01, momentum=0.9))
    ow.pop('clip_grad', None)
    ow.pop('paramwise_cfg', None)
    if not hasattr(model, 'optim_param_groups'):  # one optimizer
        ow.pop('constructor', None)
    if amp:
        ow['type'] = 'AmpOptimWrapper'
        ow['dtype'] = 'bfloat16' if amp == 'bf16' else 'float16'
    return build_optim_wrapper(model, ow)


def _batch(n, size, num_classes, device):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 256, (n, 3, size, size), generator=g,
                           dtype=torch.uint8).to(device)
    labels = torch.randint(0, num_classes, (n, ), generator=g)
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    return dict(inputs=inputs, data_samples=samples)


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def measure(name, model, cfg, data, args, device) -> dict:
    """Time ``args.iters`` full training steps after ``args.warmup``."""
    model = model.to(device)
    model.train()
    ow = _optim_wrapper(model, cfg, args.amp)
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        model.train_step(data, ow)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(args.iters):
        model.train_step(data, ow)
    _sync(device)
    dt = (time.perf_counter() - t0) / args.iters
    row = dict(name=name, img_per_s=len(data['inputs']) / dt,
               ms_per_step=1000 * dt,
               peak_mem_mb=(torch.cuda.max_memory_allocated(device) / 2**20
                            if device.type == 'cuda' else None),
               params_m=sum(p.numel() for p in model.parameters()) / 1e6)
    print(f'[benchmark] {name}: {row["img_per_s"]:.1f} img/s, '
          f'{row["ms_per_step"]:.1f} ms/step', flush=True)
    return row


def synthetic_method_files(model_cfg: dict, cfg, size: int) -> list:
    """Missing KD-layer statistics / IE-KD stage-1 checkpoints -> synthetic
    stand-ins (random contents, right shapes); returns what was replaced."""
    import os.path as osp
    import tempfile

    from kd_plugins.kd_layer_stats import synthetic_stats
    notes = []
    dist = model_cfg.get('distiller') or {}
    losses = dist.get('distill_losses') or {}
    missing = {v.get('stats_file') for v in losses.values()
               if isinstance(v, dict) and 'stats_file' in v
               and not (v.get('stats_file') and osp.isfile(v['stats_file']))}
    if missing:
        path = osp.join(tempfile.mkdtemp(prefix='kd_bench_'), 'stats.npz')
        synthetic_stats(cfg, path, size=size)
        for v in losses.values():
            if isinstance(v, dict) and v.get('stats_file') in missing:
                v['stats_file'] = path
        notes.append(f'KD-layer statistics {sorted(map(str, missing))} '
                     'missing: synthetic statistics of the right shapes')
    for name, conn in (dist.get('connectors') or {}).items():
        ckpt = conn.get('stage1_ckpt') if isinstance(conn, dict) else None
        if ckpt and not osp.isfile(ckpt):
            conn['stage1_ckpt'] = None
            notes.append(f'IE-KD stage-1 checkpoint {ckpt!r} missing: '
                         f'connector {name} uses a randomly initialised '
                         'frozen encoder')
    for note in notes:
        print(f'[benchmark] note: {note}', flush=True)
    return notes


def teacher_reference(model_cfg: dict, data, device) -> dict | None:
    """Teacher weights and the memory of one no-grad teacher forward (MB),
    for the memory target (CUDA only)."""
    from mmrazor.registry import MODELS
    t_cfg = first_teacher(model_cfg)
    if t_cfg is None or device.type != 'cuda':
        return None
    teacher = MODELS.build(copy.deepcopy(t_cfg)).to(device).eval()
    weights = sum(p.numel() * p.element_size()
                  for p in teacher.parameters()) / 2**20
    pre = MODELS.build(copy.deepcopy(model_cfg['data_preprocessor'])).to(
        device)
    x = pre(dict(data), False)['inputs']
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with torch.no_grad():
        teacher(x, mode='tensor')
    _sync(device)
    fwd = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    del teacher
    torch.cuda.empty_cache()
    return dict(teacher_weights_mb=weights, teacher_forward_mb=fwd)


def check_targets(rows: list, ref: dict | None, trains_teacher: bool
                  ) -> list:
    """The throughput issue's targets, each with the measured value."""
    by = {r['name']: r for r in rows}
    out = []
    for r in rows:
        if r['name'] in ('student', 'mmrazor-kd'):
            continue
        compiled = r['name'].endswith('+compile')
        x = r.get('speedup_vs_mmrazor_kd')
        if x is not None:
            want = 2.0 if trains_teacher or not compiled else 2.6
            out.append(dict(row=r['name'], target=f'>= {want}x mmrazor-kd',
                            value=round(x, 2), ok=x >= want))
        if not trains_teacher:
            bound = 1.10 if r['name'].endswith(CACHE_ROW) else 1.45
            out.append(dict(row=r['name'], target=f'step <= {bound:.2f}x '
                            'student', value=round(r['step_vs_student'], 2),
                            ok=r['step_vs_student'] <= bound))
            if ref and r.get('peak_mem_mb') and 'student' in by:
                bound = 1.1 * (by['student']['peak_mem_mb'] +
                               ref['teacher_weights_mb'] +
                               ref['teacher_forward_mb'])
                out.append(dict(row=r['name'],
                                target=f'peak memory <= {bound:.0f} MB',
                                value=round(r['peak_mem_mb']),
                                ok=r['peak_mem_mb'] <= bound))
    return out


CACHE_ROW = ' (cache)'


def cached_batch(cache, data: dict) -> tuple[dict, dict]:
    """The benchmark batch with stored logits on its samples (image i of
    the batch takes cache image i mod length, its view 0; a list of caches,
    one per teacher: their logits stacked), and what the cache costs: size
    per view, read time per image."""
    from kd_plugins.teacher_cache import LOGITS_KEY
    from kd_plugins.teacher_cache.dataset import as_caches
    from kd_plugins.teacher_cache.store import (CacheReader, bytes_per_view,
                                                read_complete_index,
                                                total_bytes)
    caches = as_caches(cache)
    indexes = [read_complete_index(c) for c in caches]
    reader = CacheReader(caches, indexes)
    length = min(x['length'] for x in indexes)
    samples = [s.clone() for s in data['data_samples']]
    t0 = time.perf_counter()
    for i, ds in enumerate(samples):
        ds.set_field(reader.logits(i % length, 0), LOGITS_KEY)
    read_s = time.perf_counter() - t0
    first = indexes[0]
    info = dict(dir=caches[0] if len(caches) == 1 else caches,
                images=first['length'],
                views_per_image=first['views_per_sample'],
                views=first['views'], topk=first['topk'],
                teachers=sum(len(x['teachers']) for x in indexes),
                bytes_per_view=sum(bytes_per_view(x) for x in indexes),
                total_bytes=sum(total_bytes(x) for x in indexes),
                read_us_per_image=1e6 * read_s / len(samples))
    return dict(data, data_samples=samples), info


@torch.no_grad()
def teacher_forward_ms(model_cfg: dict, data: dict, args, device) -> float:
    """ms per view of the teacher's no-grad eval forward (as a cache build
    runs it, data loading aside), on the benchmark batch."""
    from mmrazor.registry import MODELS

    from kd_plugins.algorithms.fast_distill import FastDistill
    model = MODELS.build(copy.deepcopy(model_cfg)).to(device).eval()
    x = model.data_preprocessor(dict(data), True)
    for i in range(args.warmup + args.iters):
        if i == args.warmup:
            _sync(device)
            t0 = time.perf_counter()
        FastDistill._teacher_forward(model, x['inputs'], x['data_samples'])
    _sync(device)
    return 1000 * (time.perf_counter() - t0) / args.iters / len(
        data['inputs'])


def _default_size(cfg) -> int:
    text = str(cfg.get('train_dataloader', {}).get('dataset', {}))
    return 32 if any(k in text for k in ('CIFAR', 'Digits')) else 224


def run(args) -> list[dict]:
    from mmengine.registry import init_default_scope
    from mmrazor.registry import MODELS
    cfg = load_config_with_options(args.config, args.cfg_options)
    if args.json:
        out_file(args.json, '--json')
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    device = torch.device(args.device or (
        'cuda' if torch.cuda.is_available() else 'cpu'))
    if args.amp and device.type != 'cuda':
        raise ArgumentError('--amp needs a CUDA device.\n  Fix: drop --amp '
                            'on a CPU-only machine.')
    size = args.size or _default_size(cfg)
    cached_cfg = cfg.model.to_dict()  # with its checkpoints: the cache's
    cache_dir = cached_cfg.get('teacher_cache')
    model_cfg = _strip(cached_cfg)
    model_cfg.pop('teacher_cache', None)  # the live rows: the live teacher
    if 'architecture' not in model_cfg:
        raise ConfigError('this is not a distillation config (no '
                          'model.architecture).\n  Fix: benchmark a config '
                          'of configs/ with a teacher and a student.')
    algo = MODELS.get(str(model_cfg['type']).split('.')[-1])
    notes = synthetic_method_files(model_cfg, cfg, size)
    trains_teacher = _trains_teacher(model_cfg)  # needs the files above
    t_start = time.time()
    torch.manual_seed(0)
    student = MODELS.build(student_cfg(model_cfg))
    num_classes = student.head.num_classes
    data = _batch(args.batch, size, num_classes, device)
    rows = [measure('student', student, cfg, data, args, device)]
    del student
    name = str(model_cfg['type']).split('.')[-1]
    if args.compile and 'compile' not in algo.__init__.__code__.co_varnames:
        raise ArgumentError(f'{name} has no compile option.\n  Fix: drop '
                            '--compile for this method.')
    plan = []
    if args.baseline == 'mmrazor-kd':
        plan.append(('mmrazor-kd', lambda: MODELS.build(
            mmrazor_kd_cfg(model_cfg, trains_teacher))))
    plan.append((name, lambda: MODELS.build(model_cfg)))
    if 'reuse_teacher_features' in algo.__init__.__code__.co_varnames \
            and not model_cfg.get('reuse_teacher_features'):
        # what the second teacher forward of the official step 2 costs
        plan.append((f'{name} (reuse_teacher_features)', lambda: MODELS.build(
            dict(model_cfg, reuse_teacher_features=True))))
    if args.compile:
        plan.append((f'{name}+compile', lambda: MODELS.build(
            dict(model_cfg, compile=True))))
    cache = None
    if not cache_dir and args.synthetic_cache:
        import tempfile

        from kd_plugins.cache_teacher import synthetic_cache
        cache_dir = synthetic_cache(cfg, tempfile.mkdtemp(
            prefix='kd_bench_cache_'), images=args.batch)
        cached_cfg['teacher_cache'] = cache_dir
        notes.append('teacher cache: synthetic (random logits, made for '
                     'this run)')
        print(f'[benchmark] note: {notes[-1]}', flush=True)
    if cache_dir:
        if 'teacher_cache' not in algo.__init__.__code__.co_varnames:
            raise ConfigError(f'{name} takes no teacher_cache.\n  Fix: '
                              'drop model.teacher_cache (FastDistill and '
                              'MultiTeacherDistill train from a cache).')
        cached_data, cache = cached_batch(cache_dir, data)
        plan.append((name + CACHE_ROW, lambda: MODELS.build(cached_cfg),
                     cached_data))
    for row_name, build, *batch in plan:
        if args.budget_s and time.time() - t_start > args.budget_s:
            notes.append(f'{row_name}: skipped, the time budget of '
                         f'{args.budget_s:.0f} s was spent')
            print(f'[benchmark] note: {notes[-1]}', flush=True)
            continue
        rows.append(measure(row_name, build(), cfg, batch[0] if batch
                            else data, args, device))
    if cache is not None:
        cache['teacher_forward_ms_per_view'] = teacher_forward_ms(
            model_cfg, data, args, device)
        print(f"[benchmark] cache {cache_dir}: {cache['images']} images x "
              f"{cache['views_per_image']} views, {cache['bytes_per_view']} "
              f"B per view, {cache['read_us_per_image']:.0f} us to read one "
              "image's logits; a build's teacher forward: "
              f"{cache['teacher_forward_ms_per_view']:.2f} ms per view",
              flush=True)
    by_name = {r['name']: r for r in rows}
    for r in rows:
        r['speedup_vs_mmrazor_kd'] = (
            r['img_per_s'] / by_name['mmrazor-kd']['img_per_s']
            if 'mmrazor-kd' in by_name else None)
        r['step_vs_student'] = (r['ms_per_step'] /
                                by_name['student']['ms_per_step'])
    ref = teacher_reference(model_cfg, data, device)
    targets = check_targets(rows, ref, trains_teacher)
    meta = dict(config=args.config, device=(
        torch.cuda.get_device_name(device) if device.type == 'cuda' else
        'cpu'), batch=args.batch, size=size, amp=args.amp or 'fp32',
        iters=args.iters, warmup=args.warmup, torch=torch.__version__,
        date=time.strftime('%Y-%m-%d'), notes=notes, reference=ref,
        cache=cache)
    print(table(rows, meta))
    for t in targets:
        print(f"[benchmark] target {t['row']}: {t['target']}: {t['value']} "
              f"{'OK' if t['ok'] else 'MISSED'}")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(meta=meta, rows=rows, targets=targets), f,
                      indent=2)
    return rows


def table(rows, meta) -> str:
    head = ('| model | img/s | ms/step | x mmrazor-kd | step / student '
            '| peak mem (MB) | params (M) |\n'
            '| --- | ---: | ---: | ---: | ---: '
            '| ---: | ---: |')
    lines = [f'{meta["config"]}: {meta["device"]}, batch {meta["batch"]}, '
             f'{meta["size"]} px, {meta["amp"]}, {meta["iters"]} steps after '
             f'{meta["warmup"]} warm-up'
             + ''.join(f'; {n}' for n in meta.get('notes') or []), head]

    def fmt(v, spec):
        return 'n/a' if v is None else format(v, spec)

    for r in rows:
        lines.append(
            f'| {r["name"]} | {r["img_per_s"]:.1f} | {r["ms_per_step"]:.1f} '
            f'| {fmt(r["speedup_vs_mmrazor_kd"], ".2f")} '
            f'| {r["step_vs_student"]:.2f} | {fmt(r["peak_mem_mb"], ".0f")} '
            f'| {r["params_m"]:.2f} |')
    return '\n'.join(lines)


if __name__ == '__main__':
    run_main(lambda argv: run(parse_args(argv)))
