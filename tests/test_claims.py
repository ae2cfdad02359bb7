"""Claims = files: every number README.md and docs/ report is read against
the committed file or the test it comes from.

* the result tables (Digits benchmark, teacher-cache rows, step times) cell by
  cell against docs/results/**.json, as the tool wrote them;
* the numbers quoted in prose (ranges, differences, counts, p-values) and the
  comparisons ("beat the student alone", "none beats KD", "the only ones")
  recomputed from the same files;
* the other tables with numbers against the code (parameter counts, versions,
  option values) and the tolerances quoted against the tests that use them;
* every table with a number in a data cell has a check here, or is listed in
  ``UNBACKED`` with the reason; every test a guide names by its function name
  exists in tests/.

A check fails when a number in a document changes (each prose claim is a
pattern whose numbers must equal the file's, rounded as printed). In-process,
no training: the data set and models are built, never trained.
"""
import glob
import json
import math
import os.path as osp
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pytest

from tests.conftest import ROOT

DOCS = [osp.join(ROOT, 'README.md')] + sorted(
    glob.glob(osp.join(ROOT, 'docs', '**', '*.md'), recursive=True))
RESULTS = osp.join(ROOT, 'docs', 'results')
DIGITS_JSON = osp.join(RESULTS, 'digits_benchmark.json')
CACHE_JSON = osp.join(RESULTS, 'teacher_cache', 'digits_benchmark.json')
SPEED_JSON = sorted(glob.glob(osp.join(RESULTS, 'teacher_cache',
                                       'speed_*.json')))


def _rel(path: str) -> str:
    return osp.relpath(path, ROOT)


def _load(path: str) -> dict:
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def _read(rel: str) -> str:
    with open(osp.join(ROOT, rel), encoding='utf-8') as f:
        return f.read()


# --------------------------------------------------------------------------
# markdown tables


class Table:
    """One markdown table: its file, line, the line before it (a caption
    such as ``**full** - ...``), its header cells and rows of cells."""

    def __init__(self, path: str, line: int, caption: str,
                 header: List[str], rows: List[List[str]]):
        self.path, self.line, self.caption = path, line, caption
        self.header, self.rows = header, rows

    @property
    def where(self) -> str:
        return f'{_rel(self.path)}:{self.line}'

    def column(self, *names: str) -> int:
        """Index of the first header cell equal to one of ``names``."""
        for name in names:
            if name in self.header:
                return self.header.index(name)
        raise AssertionError(f'{self.where}: no column {names} in '
                             f'{self.header}')


def _cells(line: str) -> List[str]:
    return [c.strip() for c in line.strip().strip('|').split('|')]


def tables(path: str) -> List[Table]:
    lines = open(path, encoding='utf-8').read().splitlines()
    out, i = [], 0
    while i < len(lines):
        if (lines[i].startswith('|') and i + 1 < len(lines)
                and re.match(r'^\|[\s:|-]+\|$', lines[i + 1])):
            j = i + 2
            while j < len(lines) and lines[j].startswith('|'):
                j += 1
            caption = next((lines[k] for k in range(i - 1, -1, -1)
                            if lines[k].strip()), '')
            out.append(Table(path, i + 1, caption, _cells(lines[i]),
                             [_cells(r) for r in lines[i + 2:j]]))
            i = j
        else:
            i += 1
    return out


def _find_tables(rel: str, first_header: str) -> List[Table]:
    found = [t for t in tables(osp.join(ROOT, rel))
             if t.header[0] == first_header]
    assert found, f'{rel}: no table starting with | {first_header} |'
    return found


NUMBER_CELL = re.compile(r'^\**[-+±−]?\d')


def _has_numbers(table: Table) -> bool:
    """A data cell (after the first column) that starts with a number,
    code spans left out."""
    return any(NUMBER_CELL.match(re.sub(r'`[^`]*`', '', c).strip())
               for row in table.rows for c in row[1:])


# --------------------------------------------------------------------------
# numbers as printed


def num(text: str) -> float:
    """'1,437' / '−4.6' / '**0.99×**' / '17 µs' -> float."""
    m = re.search(r'[-−+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?',
                  text.replace('\u2212', '-'))
    assert m, f'no number in {text!r}'
    return float(m.group(0).replace(',', '').replace('−', '-'))


def _decimals(token: str) -> int:
    token = token.split('e')[0]
    return len(token.split('.')[1]) if '.' in token else 0


def assert_printed(printed: str, value: float, what: str) -> None:
    """``printed`` is ``value`` rounded to the digits it shows: within half
    a unit of its last digit (a change of that digit fails)."""
    token = re.search(r'[-−+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?',
                      printed.replace('\u2212', '-')).group(0)
    shown = num(token)
    if 'e' in token:
        mant, exp = token.split('e')
        half = 0.5 * 10**(int(exp) - _decimals(mant))
    else:
        half = 0.5 * 10**-_decimals(token)
    assert abs(shown - value) <= half * (1 + 1e-9), \
        f'{what}: the document says {printed!r}, the file gives {value!r}'


def fmt_test(test: dict, n: bool = False) -> str:
    """A top-1 summary as benchmarks/digits.py prints it."""
    text = (f"{test['mean']:.2f} ± {test['std']:.2f}" if test['n'] > 1 else
            f"{test['mean']:.2f}")
    return text + (f" (n={test['n']})" if n else '')


def fmt_verdict(vs: Optional[dict], p: bool = False) -> str:
    if not vs:
        return ''
    return vs['verdict'] + (f" (p={vs['p']:.3f})"
                            if p and vs.get('p') is not None else '')


# --------------------------------------------------------------------------
# the Digits benchmark tables (README, docs/benchmark.md, the tool's own .md)


def _rows_by_label(results: dict, regime: str) -> Dict[str, dict]:
    return {r['label']: r for r in results['results'][regime]}


def _check_summary(table: Table, results: dict, json_path: str) -> None:
    """``| method | <regime> top-1 (%) | vs student | vs KD | ...``: one group
    of three columns per regime; every row of the file, none other."""
    groups = [(i, h[:-len(' top-1 (%)')]) for i, h in enumerate(table.header)
              if h.endswith(' top-1 (%)')]
    assert groups, table.where
    for col, regime in groups:
        by_label = _rows_by_label(results, regime)
        assert [r[0] for r in table.rows] == [
            r['label'] for r in results['results'][regime]], \
            f'{table.where}: rows differ from {_rel(json_path)} ({regime})'
        for cells in table.rows:
            row = by_label[cells[0]]
            got = cells[col:col + 3]
            want = [fmt_test(row['test']), fmt_verdict(row.get('vs_student')),
                    fmt_verdict(row.get('vs_kd'))]
            assert got == want, (f'{table.where} {cells[0]!r} ({regime}): '
                                 f'{got} but {_rel(json_path)} gives {want}')


def _check_regime(table: Table, results: dict, json_path: str) -> None:
    """``| method | lr | epochs | top-1 (%) | Δ vs student | vs student |
    vs KD |`` under a ``**<regime>** - ...`` caption."""
    regime = re.match(r'\*\*([\w-]+)\*\*', table.caption)
    assert regime, f'{table.where}: no **regime** caption above the table'
    regime = regime.group(1)
    rows = results['results'][regime]
    assert [r[0] for r in table.rows] == [r['label'] for r in rows], \
        f'{table.where}: rows differ from {_rel(json_path)} ({regime})'
    for cells, row in zip(table.rows, rows):
        vs = row.get('vs_student')
        want = [row['label'], f"{row['lr']:g}", str(row['epochs']),
                fmt_test(row['test'], n=True),
                f"{vs['diff']:+.2f}" if vs else '',
                fmt_verdict(vs, p=True), fmt_verdict(row.get('vs_kd'), p=True)]
        assert cells == want, (f'{table.where} ({regime}): {cells} but '
                               f'{_rel(json_path)} gives {want}')


DIGITS_TABLES = [  # (document, the result file its tables show)
    ('README.md', DIGITS_JSON),
    ('docs/benchmark.md', DIGITS_JSON),
    ('docs/results/digits_benchmark.md', DIGITS_JSON),
    ('docs/results/teacher_cache/digits_benchmark.md', CACHE_JSON),
]


@pytest.mark.parametrize('doc,json_path', DIGITS_TABLES,
                         ids=[d for d, _ in DIGITS_TABLES])
def test_digits_tables_equal_the_result_file(doc, json_path):
    results = _load(json_path)
    checked = 0
    for table in tables(osp.join(ROOT, doc)):
        if table.header[0] != 'method':
            continue
        if any(h.endswith(' top-1 (%)') for h in table.header):
            _check_summary(table, results, json_path)
        elif table.header[1:4] == ['lr', 'epochs', 'top-1 (%)']:
            _check_regime(table, results, json_path)
        else:
            continue
        checked += 1
    assert checked, f'{doc}: no Digits table found'


# --------------------------------------------------------------------------
# the teacher-cache accuracy tables (README, docs/methods/teacher_cache.md)

VIEWS_ROW = {'live teacher': '', '1': '_cache_1', '5': '_cache_5',
             'all 25 (exact)': '_cache_all'}


@pytest.mark.parametrize('doc', ['README.md', 'docs/methods/teacher_cache.md'])
def test_teacher_cache_accuracy_tables_equal_the_result_file(doc):
    results = _load(CACHE_JSON)
    by_name = {r['name']: r for r in results['results']['few-labels']}
    for table in [t for t in tables(osp.join(ROOT, doc))
                  if t.header[0].startswith('views per image')]:
        methods = [h.split(' top-1')[0].lower() for h in table.header[1:]]
        for cells in table.rows:
            assert cells[0] in VIEWS_ROW, \
                f'{table.where}: row {cells[0]!r} has no result row here'
            for method, cell in zip(methods, cells[1:]):
                row = by_name[method + VIEWS_ROW[cells[0]]]
                assert cell == fmt_test(row['test']), \
                    f'{table.where} {cells[0]!r} {method}: {cell!r} but ' \
                    f"{_rel(CACHE_JSON)} gives {fmt_test(row['test'])!r}"
        break
    else:
        raise AssertionError(f'{doc}: no teacher-cache accuracy table')


# --------------------------------------------------------------------------
# step times from a teacher cache (README, docs/speed.md)

SPEED_PAIRS = {  # a pair as the documents name it -> its config
    'resnet32x4 → resnet8x4': 'configs/aekt_r32x4_r8x4_cifar100.py',
    'ResNet-34 → ResNet-18': 'configs/kd_r34_r18_in1k.py',
    'ResNet-50 → MobileNetV2': 'configs/kd_r50_mbv2_in1k.py',
}


def _speed_files() -> Dict[str, dict]:
    files = {}
    for path in SPEED_JSON:
        data = _load(path)
        files[data['meta']['config']] = data
    return files


def _speed_rows(data: dict) -> Dict[str, dict]:
    rows = {r['name']: r for r in data['rows']}
    live = next(n for n in rows if n not in ('student', 'mmrazor-kd')
                and not n.endswith('(cache)'))
    return dict(student=rows['student'], mmrazor=rows['mmrazor-kd'],
                live=rows[live], cache=rows[live + ' (cache)'])


def _assert_ms_and_ratio(cell: str, row: dict, what: str) -> None:
    """'760.4 (2.39×)' or '314.9 (**0.99×**)' or '317.6'."""
    parts = re.findall(r'[\d,]+(?:\.\d+)?', cell)
    assert_printed(parts[0], row['ms_per_step'], what + ' ms/step')
    if len(parts) > 1:
        assert_printed(parts[1], row['step_vs_student'], what + ' ×')


@pytest.mark.parametrize('doc', ['README.md', 'docs/speed.md'])
def test_teacher_cache_step_times_equal_the_result_files(doc):
    files = _speed_files()
    found = [t for t in tables(osp.join(ROOT, doc))
             if t.header[0].startswith('pair') and 'from the cache' in
             ' '.join(t.header)]
    assert found, f'{doc}: no step-time table'
    for table in found:
        cols = {i: h for i, h in enumerate(table.header)}
        for cells in table.rows:
            pair = next((p for p in SPEED_PAIRS if cells[0].startswith(p)),
                        None)
            assert pair, f'{table.where}: pair {cells[0]!r} has no file'
            data = files[SPEED_PAIRS[pair]]
            meta, rows = data['meta'], _speed_rows(data)
            where = f'{table.where} {pair}'
            batch_size = re.search(r'(\d+), (\d+) px', ' '.join(cells[:2]))
            assert batch_size and (int(batch_size.group(1)), int(
                batch_size.group(2))) == (meta['batch'], meta['size']), where
            for i, cell in cols.items():
                if i == 0 or not cells[i] or cell in ('batch, size', 'target'):
                    continue
                h = cell.lower()
                if h.startswith('student'):
                    _assert_ms_and_ratio(cells[i], rows['student'], where)
                elif h.startswith('mmrazor'):
                    _assert_ms_and_ratio(cells[i], rows['mmrazor'], where)
                elif 'live teacher' in h:
                    _assert_ms_and_ratio(cells[i], rows['live'], where)
                elif h.endswith('from the cache'):
                    _assert_ms_and_ratio(cells[i], rows['cache'], where)
                elif h == 'cache / student':
                    assert_printed(cells[i], rows['cache']['step_vs_student'],
                                   where + ' cache / student')
                elif h.startswith('teacher forward per view'):
                    assert_printed(cells[i], meta['cache'][
                        'teacher_forward_ms_per_view'], where + ' forward')
                elif h == 'bytes per view':
                    assert_printed(cells[i], meta['cache']['bytes_per_view'],
                                   where + ' bytes')
                elif h == 'read per image':
                    assert_printed(cells[i], meta['cache'][
                        'read_us_per_image'], where + ' read')
                else:
                    raise AssertionError(f'{where}: column {cell!r} unchecked')
            if 'target' in table.header:
                cell = cells[table.column('target')]
                ok = rows['cache']['step_vs_student'] <= 1.10
                assert cell.startswith('≤ 1.10×') and cell.endswith(
                    'met' if ok else 'missed'), where


# --------------------------------------------------------------------------
# other tables with numbers


def test_cifar_network_parameter_counts_are_the_published_or_built_ones():
    """docs/configs.md 'params (CIFAR-100)': the published count where
    tests/test_cifar_backbones.py holds one (that test checks the built
    network against it), else the network built as the configs build it
    (classifier of 100 classes included)."""
    from mmpretrain.registry import MODELS

    from kd_plugins.models.backbones.cifar_zoo import (CIFAR_ZOO,
                                                       cifar_classifier)
    from tests.test_cifar_backbones import PUBLISHED_M
    table = _find_tables('docs/configs.md', 'name (RepDistiller)')[0]
    seen = set()
    for cells in table.rows:
        stem = cells[0].split(' (')[0]
        parts = [p.strip() for p in stem.split('/')]
        names = [parts[0]] + [
            (re.match(r'^[a-z]+', parts[0]).group(0) + p
             if p.isdigit() else p) for p in parts[1:]]
        counts = [c.strip() for c in cells[2].rstrip(' M').split('/')]
        assert len(names) == len(counts), table.where
        for name, count in zip(names, counts):
            assert name in CIFAR_ZOO, f'{table.where}: {name} not in CIFAR_ZOO'
            if name in PUBLISHED_M:
                n = PUBLISHED_M[name]
            else:
                model = MODELS.build(cifar_classifier(name, 100))
                n = sum(p.numel() for p in model.parameters()) / 1e6
            assert_printed(count, n, f'{table.where} {name}')
            seen.add(name)
    assert seen == set(CIFAR_ZOO), sorted(set(CIFAR_ZOO) - seen)


def test_compatibility_versions_table_is_version_check_and_the_makefile():
    from kd_plugins.version_check import SUPPORTED
    table = _find_tables('docs/compatibility.md', 'package')[0]
    all_pins = _makefile_pins()
    pins = dict(all_pins['all'], **all_pins['x86_64'])
    for cells in table.rows:
        package = cells[0].split(' ')[0]
        if package in SUPPORTED:
            spec = re.sub(r'\s|\(.*\)', '', cells[1])
            assert spec == SUPPORTED[package], (table.where, cells)
        first = re.search(r'\d+\.\d+\.\d+', cells[2])
        if package == 'mmcv':
            assert 'mmcv-lite ' + pins['mmcv-lite'] in cells[2], table.where
        elif package in pins:
            assert first.group(0) == pins[package], (table.where, cells)
        elif package == 'torch':
            assert cells[2].startswith(
                f"{pins['torch']} / {pins['torchvision']}"), table.where


def _makefile_pins() -> Dict[str, Dict[str, str]]:
    """{'x86_64' / 'aarch64' / 'all': {package: version}} of the Makefile."""
    text = _read('Makefile')
    arm = re.search(r'ifeq.*aarch64.*?\n(.*?)\nelse\n(.*?)\nendif', text,
                    re.S)
    assert arm, 'Makefile: no aarch64 branch for the torch pins'
    pins = dict(aarch64=dict(re.findall(r'([\w-]+)==([\d.]+)', arm.group(1))),
                x86_64=dict(re.findall(r'([\w-]+)==([\d.]+)', arm.group(2))))
    rest = text.replace(arm.group(0), '')
    pins['all'] = dict(re.findall(r'([\w-]+)==([\d.]+)', rest))
    return pins


def test_stated_versions_are_the_makefiles():
    """README's 'Installed versions' and compatibility.md's set-up line are
    what make install installs."""
    pins = _makefile_pins()
    x86, arm, rest = pins['x86_64'], pins['aarch64'], pins['all']
    readme = (f"Installed versions: torch {x86['torch']} on x86-64 "
              f"({arm['torch']} on aarch64), mmcv-lite {rest['mmcv-lite']}, "
              f"mmengine {rest['mmengine']}, mmpretrain {rest['mmpretrain']}, "
              f"mmrazor {rest['mmrazor']}.")
    assert readme in _flat('README.md'), readme
    compat = (f"torch {x86['torch']} + torchvision {x86['torchvision']} "
              f"(aarch64: {arm['torch']} + {arm['torchvision']}), mmcv-lite "
              f"{rest['mmcv-lite']} when no `mmcv` distribution is installed "
              f"there, mmengine {rest['mmengine']}, mmpretrain "
              f"{rest['mmpretrain']}, mmrazor {rest['mmrazor']}")
    assert compat in _flat('docs/compatibility.md'), compat


def test_aekt_choices_table_is_the_configs():
    """docs/methods/aekt.md: ratio_max in every AEKT config (the method
    wiring in _base_ sets none: each config does), the head's gradient
    scale."""
    from mmengine.config import Config
    table = _find_tables('docs/methods/aekt.md', 'choice')[0]
    cells = {r[0]: r[1] for r in table.rows}
    ratio = num(cells['`ratio_max`'])
    scale = num(cells["serialization layer's gradient"])
    configs = [p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                                    recursive=True)
               if 'aekt' in osp.basename(p) and '_base_' not in p]
    assert configs
    for path in configs:
        text = Config.fromfile(path).pretty_text
        found = [float(v) for v in re.findall(r'ratio_max=([\d.]+)', text)]
        assert found and set(found) == {ratio}, \
            f'{_rel(path)}: ratio_max {found}, docs/methods/aekt.md {ratio}'
        assert all(float(v) == scale for v in re.findall(
            r'serialization_grad_scale=([\d.]+)', text)), path
    import inspect

    from kd_plugins.models.heads.aekt_head import AEKTHead
    assert inspect.signature(AEKTHead.__init__).parameters[
        'serialization_grad_scale'].default == scale


def test_published_numbers_the_configs_cite_are_the_guides():
    """Every config's ``paper_top1`` (what tools/reproduce.py prints beside
    a run) is a number its method guide quotes (IE-KD's as an error)."""
    from mmengine.config import Config
    guides = {osp.basename(p)[:-3]: _flat(osp.relpath(p, ROOT)) for p in
              glob.glob(osp.join(ROOT, 'docs', 'methods', '*.md'))}
    checked = 0
    for path in sorted(glob.glob(osp.join(ROOT, 'configs', '*.py'))):
        cited = Config.fromfile(path).get('paper_top1')
        if not cited:
            continue
        name = osp.basename(path)
        guide = next((g for g in sorted(guides, key=len, reverse=True)
                      if name.startswith(g)), 'aekt')  # KD: DKD's table
        v = cited['top1']
        forms = (f'{v:.2f}', f'{100 - v:.2f}')
        assert any(re.search(rf'(?<![\d.]){re.escape(x)}(?![\d])',
                             guides[guide]) for x in forms), \
            f'{name}: paper_top1 {v} is not in docs/methods/{guide}.md'
        checked += 1
    assert checked >= 8, checked


UNBACKED = {
    # (document, first header cell): why no file backs it
    ('docs/speed.md', 'config (CPU)'):
        'measured 2026-11-26 before tools/benchmark.py --json existed; no '
        'result file was committed',
}


def test_every_table_with_numbers_is_checked():
    """A table whose data cells hold numbers has a check in this file (or
    is listed in UNBACKED with the reason)."""
    checked = {  # (document, first header cell)
        ('README.md', 'method'), ('docs/benchmark.md', 'method'),
        ('docs/results/digits_benchmark.md', 'method'),
        ('docs/results/teacher_cache/digits_benchmark.md', 'method'),
        ('README.md', 'views per image (RandomCrop 32, padding 2)'),
        ('docs/methods/teacher_cache.md', 'views per image'),
        ('README.md', 'pair'), ('docs/speed.md', 'pair (config)'),
        ('docs/configs.md', 'name (RepDistiller)'),
        ('docs/compatibility.md', 'package'),
        ('docs/methods/aekt.md', 'choice'),
    }
    missing = [t.where for path in DOCS for t in tables(path)
               if _has_numbers(t) and (_rel(path), t.header[0])
               not in checked | set(UNBACKED)]
    assert not missing, f'tables with numbers and no check: {missing}'


# --------------------------------------------------------------------------
# numbers and comparisons in prose


def _flat(rel: str) -> str:
    """The document's text with line breaks and runs of spaces as one
    space (a claim may wrap)."""
    return re.sub(r'\s+', ' ', _read(rel))


class Facts:
    """What the committed result files say, as the claims need it."""

    def __init__(self):
        self.digits = _load(DIGITS_JSON)
        self.cache = _load(CACHE_JSON)

    def row(self, regime: str, name: str, data: Optional[dict] = None):
        data = data or self.digits
        return next(r for r in data['results'][regime] if r['name'] == name)

    def runs(self, regime: str, name: str, data=None) -> List[dict]:
        return self.row(regime, name, data)['runs']

    def term(self, regime: str, name: str, key: str, data=None) -> List:
        return [r['last_terms'][key] for r in self.runs(regime, name, data)]

    def tail(self, regime: str, name: str, which: str) -> List[float]:
        return [r['loss_tail'][which] for r in self.runs(regime, name)]

    def tuned(self, regime: str, name: str, lr: float,
              epochs: Optional[int] = None) -> float:
        (top1, ) = [t['top1'] for t in self.digits['tuning']
                    if t['regime'] == regime and t['row'] == name
                    and t['lr'] == lr
                    and (epochs is None or t['epochs'] == epochs)]
        return top1

    def names(self, regime: str, key: str, verdict: str, data=None) -> set:
        data = data or self.digits
        return {r['name'] for r in data['results'][regime]
                if r.get(key, {}).get('verdict') == verdict}

    def logged_hours(self) -> float:
        """Every training's logged seconds, each once (the teachers appear
        in both regimes)."""
        runs = {(r['name'], run['seed'], regime if r['name'][:7] != 'teacher'
                 else 'teacher'): run['seconds']
                for regime in ('full', 'few-labels')
                for r in self.digits['results'][regime] for run in r['runs']}
        return (sum(runs.values()) + sum(
            t['seconds'] for t in self.digits['tuning'])) / 3600

    def final_runs(self) -> int:
        return sum(len(r['runs']) for regime in ('full', 'few-labels')
                   for r in self.digits['results'][regime]
                   if r['name'][:7] != 'teacher')


def _span(values: Sequence[float]) -> List[float]:
    return [min(values), max(values)]


# (document, pattern: each group a number as printed, the numbers it must be)
CLAIMS: List[Tuple[str, str, Callable[[Facts], Sequence[float]]]] = [
    # README: Results
    ('README.md', r'their logged times add up to ([\d.]+) h, i\.e\. about '
     r'(\d) h (\d+) min of wall time',
     lambda f: [f.logged_hours()] + f.wall(f.logged_hours())),
    ('README.md', r'which read the (\d+) runs already finished',
     lambda f: [f.digits['reused_runs']]),
    ('README.md', r'\((\d+) trainings, (\d) at a time',
     lambda f: [len(f.digits['tuning']) + f.final_runs() + 2 + 1,
                f.digits['jobs']]),
    ('README.md', r'beat the student alone by ([\d.]+)–([\d.]+) points',
     lambda f: _span([f.row('few-labels', n)['vs_student']['diff']
                      for n in f.names('few-labels', 'vs_student',
                                       'better')])),
    ('README.md', r'train CE ([\d.]+)–([\d.]+) at the end, against '
     r'([\d.]+)–([\d.]+) with `anchor_norm`',
     lambda f: _span(f.term('full', 'atsc', 'teacher_ce')
                     + f.term('few-labels', 'atsc', 'teacher_ce'))
     + _span(f.term('full', 'atsc_anchor_norm', 'teacher_ce')
             + f.term('few-labels', 'atsc_anchor_norm', 'teacher_ce'))),
    ('README.md', r'the KD layer on full data \(below KD by ([\d.]+) points',
     lambda f: [-f.row('full', 'kd_layer')['vs_kd']['diff']]),
    # docs/benchmark.md: protocol
    ('docs/benchmark.md', r'handwritten digits: ([\d,]+) training and (\d+) '
     r'test images, (\d+) classes', lambda f: f.digits_sizes),
    ('docs/benchmark.md', r'Teachers: ResNet-18 \(CIFAR stem, width 16, '
     r'([\d.]+) M parameters.*?student: ResNet-10 \(3 stages, width 8, '
     r'([\d.]+) M parameters\)', lambda f: f.digits_params),
    ('docs/benchmark.md', r'the student alone gets ([\d.]+) %, the teachers '
     r'([\d.]+) %', lambda f: [f.row('full', 'student')['test']['mean'],
                               f.row('full', 'teacher')['test']['mean']]),
    ('docs/benchmark.md', r'\((\d+) images per class carved out of the '
     r'training split', lambda f: [f.val_per_class]),
    ('docs/benchmark.md', r'(\d+) epochs\. In each regime',
     lambda f: [f.digits['choices']['teacher']['teacher']['epochs']]),
    ('docs/benchmark.md', r'\(E or 2E: full (\d+) / (\d+), few-labels (\d+) '
     r'/ (\d+)\)', lambda f: f.regime_epochs),
    ('docs/benchmark.md', r'\*\*the same grid\*\* \(([\d.]+), ([\d.]+), '
     r'([\d.]+)\)', lambda f: f.digits['lr_grid']),
    # docs/benchmark.md: the run
    ('docs/benchmark.md', r'(\d+) trainings \((\d+) to choose learning rates '
     r'and epochs, (\d) of them for the teachers; the (\d) teachers; IE-KD\'s '
     r'stage 1; (\d+) final runs\); their logged times add up to ([\d.]+) h',
     lambda f: [len(f.digits['tuning']) + 2 + 1 + f.final_runs(),
                len(f.digits['tuning']),
                sum(t['regime'] == 'teacher' for t in f.digits['tuning']),
                2, f.final_runs(), f.logged_hours()]),
    ('docs/benchmark.md', r'cut off by a machine restart after (\d+) '
     r'finished runs.*?trained the other (\d+) \((\d+) min\)',
     lambda f: [f.digits['reused_runs'],
                len(f.digits['tuning']) + 2 + 1 + f.final_runs()
                - f.digits['reused_runs'], f.digits['seconds'] / 60]),
    # docs/benchmark.md: choices
    ('docs/benchmark.md', r'Teachers: lr ([\d.]+) \(val ([\d.]+) %; ([\d.]+) '
     r'and ([\d.]+): ([\d.]+) %\), (\d+) epochs, test ([\d.]+) %',
     lambda f: [0.4, f.tuned('teacher', 'teacher', 0.4), 0.1, 0.2,
                f.tuned('teacher', 'teacher', 0.1),
                f.digits['choices']['teacher']['teacher']['epochs'],
                f.row('full', 'teacher')['test']['mean']]
     if f.tuned('teacher', 'teacher', 0.1) == f.tuned(
         'teacher', 'teacher', 0.2) and f.digits['choices']['teacher'][
             'teacher']['lr'] == 0.4 else [math.nan]),
    ('docs/benchmark.md', r'\(full: (\d+) epochs, val ([\d.]+) %; '
     r'few-labels: (\d+) epochs, val ([\d.]+) %\)',
     lambda f: [24, f.tuned('full', 'student', 0.4, 24),
                120, f.tuned('few-labels', 'student', 0.4, 120)]
     if f.student_chose_the_longest_largest else [math.nan]),
    ('docs/benchmark.md', r'full ([\d.]+) / ([\d.]+) / ([\d.]+) against '
     r'([\d.]+) / ([\d.]+) / ([\d.]+); few-labels ([\d.]+) / ([\d.]+) / '
     r'([\d.]+) against ([\d.]+) / ([\d.]+) / ([\d.]+)\)',
     lambda f: (f.tail('full', 'student', 'last')
                + f.tail('full', 'student', 'prev')
                + f.tail('few-labels', 'student', 'last')
                + f.tail('few-labels', 'student', 'prev'))),
    # docs/benchmark.md: rows that lose
    ('docs/benchmark.md', r'\(full ([\d.]+) ± ([\d.]+), few-labels ([\d.]+) ± '
     r'([\d.]+)\)\. The method trains the teacher',
     lambda f: f.mean_std('atsc')),
    ('docs/benchmark.md', r'train CE at the end is ([\d.]+) / ([\d.]+) / '
     r'([\d.]+) \(full\) and ([\d.]+) / ([\d.]+) / ([\d.]+) \(few-labels\)',
     lambda f: f.term('full', 'atsc', 'teacher_ce')
     + f.term('few-labels', 'atsc', 'teacher_ce')),
    ('docs/benchmark.md', r'own test top-1 falls from ([\d.]+) % to ([\d.]+) '
     r'/ ([\d.]+) / ([\d.]+) % \(full\) and ([\d.]+) / ([\d.]+) / ([\d.]+) % '
     r'\(few-labels\)',
     lambda f: [f.row('full', 'teacher')['test']['mean']]
     + f.row('full', 'atsc')['adapted_teacher_top1']
     + f.row('few-labels', 'atsc')['adapted_teacher_top1']),
    ('docs/benchmark.md', r"the teacher's train CE ends at ([\d.]+)–([\d.]+), "
     r'it keeps ([\d.]+) % in every run, and the student reaches ([\d.]+) ± '
     r'([\d.]+) / ([\d.]+) ± ([\d.]+)',
     lambda f: _span(f.term('full', 'atsc_anchor_norm', 'teacher_ce')
                     + f.term('few-labels', 'atsc_anchor_norm', 'teacher_ce'))
     + f.same(f.row('full', 'atsc_anchor_norm')['adapted_teacher_top1']
              + f.row('few-labels', 'atsc_anchor_norm')[
                  'adapted_teacher_top1'])
     + f.mean_std('atsc_anchor_norm')),
    ('docs/benchmark.md', r'worse than KD \(full ([\d.]+) ± ([\d.]+), '
     r'few-labels ([\d.]+) ± ([\d.]+)\)\. It has no pretrained teacher',
     lambda f: f.mean_std('ie_dml')),
    ('docs/benchmark.md', r"student A's train CE is ([\d.]+)–([\d.]+) "
     r'\(full\) against ([\d.]+)–([\d.]+) for the student alone',
     lambda f: _span(f.term('full', 'ie_dml', 'loss_ce_a'))
     + _span(f.term('full', 'student', 'loss'))),
    ('docs/benchmark.md', r'exploration terms \(weight (\d+)\) are −([\d.]+) '
     r'to −([\d.]+)',
     lambda f: [f.ie_lambda] + [-v for v in reversed(_span(
         f.both('ie_dml', 'loss_exp_a') + f.both('ie_dml', 'loss_exp_b')))]),
    ('docs/benchmark.md', r'inheritance spreads ([\d.]+)–([\d.]+) ≥ ([\d.]+)',
     lambda f: _span(f.both('ie_dml', 'inh_spread_a')
                     + f.both('ie_dml', 'inh_spread_b')) + [f.min_spread]
     if max(f.both('ie_dml', 'loss_spread_a')
            + f.both('ie_dml', 'loss_spread_b')) == 0 else [math.nan]),
    ('docs/benchmark.md', r'below KD by ([\d.]+) points \(([\d.]+) ± ([\d.]+) '
     r'against ([\d.]+) ± ([\d.]+), p = ([\d.]+); ([\d.]+) of (\d+) test '
     r'images\)',
     lambda f: [-f.row('full', 'kd_layer')['vs_kd']['diff']]
     + f.mean_std('kd_layer', regimes=('full', ))
     + f.mean_std('kd', regimes=('full', ))
     + [f.row('full', 'kd_layer')['vs_kd']['p'],
        -f.row('full', 'kd_layer')['vs_kd']['diff'] * f.digits_sizes[1]
        / 100, f.digits_sizes[1]]),
    ('docs/benchmark.md', r'on few labels within noise of KD \(([\d.]+) ± '
     r'([\d.]+)\)', lambda f: f.mean_std('kd_layer', regimes=('few-labels', ))
     if f.row('few-labels', 'kd_layer')['vs_kd']['verdict'] == 'within noise'
     else [math.nan]),
    ('docs/benchmark.md', r'\(penultimate ([\d.]+)–([\d.]+), intermediate '
     r'([\d.]+)–([\d.]+)\)',
     lambda f: _span(f.term('full', 'kd_layer', 'distill.loss_penult'))
     + _span(f.term('full', 'kd_layer', 'distill.loss_inter'))),
    ('docs/benchmark.md', r'\(loss tail ([\d.]+) → ([\d.]+), ([\d.]+) → '
     r'([\d.]+), ([\d.]+) → ([\d.]+)\)',
     lambda f: [v for p, last in zip(f.tail('full', 'kd_layer', 'prev'),
                                     f.tail('full', 'kd_layer', 'last'))
                for v in (p, last)]),
    ('docs/benchmark.md', r'while its CE is already ([\d.]+)–([\d.]+)',
     lambda f: _span(f.term('full', 'kd_layer', 'student.loss'))),
    # docs/benchmark.md: rows without a significant gain
    ('docs/benchmark.md', r'\*\*IE-KD \(CE \+ IE\), few labels\*\*: '
     r'\+([\d.]+) points, within noise \(p = ([\d.]+)\): its seeds spread '
     r'from ([\d.]+) to ([\d.]+) %',
     lambda f: [f.row('few-labels', 'ie_kd')['vs_student']['diff'],
                f.row('few-labels', 'ie_kd')['vs_student']['p']]
     + _span(f.row('few-labels', 'ie_kd')['test']['values'])),
    ('docs/benchmark.md', r'\*\*IE-KD on KD\*\*\) gains \+([\d.]+)',
     lambda f: [f.row('few-labels', 'ie_kd_kd')['vs_student']['diff']]),
    ('docs/benchmark.md', r'AEKT chose lr ([\d.]+) in both regimes\. At the '
     r"baseline's lr ([\d.]+) .*? validation ([\d.]+) % \(full\) and ([\d.]+) "
     r'% \(few labels\)',
     lambda f: [f.digits['choices']['full']['aekt']['lr'],
                f.digits['choices']['full']['student']['lr'],
                f.tuned('full', 'aekt', 0.4), f.tuned('few-labels', 'aekt',
                                                      0.4)]
     if f.digits['choices']['few-labels']['aekt']['lr'] == f.digits[
         'choices']['full']['aekt']['lr'] else [math.nan]),
    ('docs/benchmark.md', r'KD at lr ([\d.]+): validation ([\d.]+) % \(full\) '
     r'and ([\d.]+) % \(few labels\)',
     lambda f: [0.4, f.tuned('full', 'kd', 0.4),
                f.tuned('few-labels', 'kd', 0.4)]),
    ('docs/benchmark.md', r'\(another teacher training on this machine: '
     r'([\d.]+) against ([\d.]+);',
     lambda f: [f.row('few-labels', 'teacher', f.cache)['test']['mean'],
                f.row('few-labels', 'teacher')['test']['mean']]),
    # docs/methods/aekt.md
    ('docs/methods/aekt.md', r'AEKT chose lr ([\d.]+) in both regimes; at '
     r'([\d.]+) its validation top-1 was ([\d.]+) % \(full data\) and '
     r'([\d.]+) % \(few labels\), KD\'s ([\d.]+) % and ([\d.]+) %',
     lambda f: [f.digits['choices']['full']['aekt']['lr'], 0.4,
                f.tuned('full', 'aekt', 0.4), f.tuned('few-labels', 'aekt',
                                                      0.4),
                f.tuned('full', 'kd', 0.4), f.tuned('few-labels', 'kd', 0.4)]
     if f.digits['choices']['few-labels']['aekt']['lr'] == f.digits[
         'choices']['full']['aekt']['lr'] else [math.nan]),
    # docs/methods/atsc.md
    ('docs/methods/atsc.md', r'the two rows differ in this option and in the '
     r'lr each chose, ([\d.]+) and ([\d.]+)\)',
     lambda f: f.same([f.digits['choices'][g]['atsc']['lr']
                       for g in ('full', 'few-labels')])
     + f.same([f.digits['choices'][g]['atsc_anchor_norm']['lr']
               for g in ('full', 'few-labels')])),
    ('docs/methods/atsc.md', r"the adapted teacher's own test top-1 fell from "
     r'([\d.]+) % to ([\d.]+)–([\d.]+) % \(full\) and ([\d.]+)–([\d.]+) % '
     r'\(few labels\), its train CE ended at ([\d.]+)–([\d.]+); with '
     r'`anchor_norm=True` it kept ([\d.]+) % in every run \(train CE '
     r'([\d.]+)–([\d.]+)\)',
     lambda f: [f.row('full', 'teacher')['test']['mean']]
     + _span(f.row('full', 'atsc')['adapted_teacher_top1'])
     + _span(f.row('few-labels', 'atsc')['adapted_teacher_top1'])
     + _span(f.both('atsc', 'teacher_ce'))
     + f.same(f.row('full', 'atsc_anchor_norm')['adapted_teacher_top1']
              + f.row('few-labels', 'atsc_anchor_norm')[
                  'adapted_teacher_top1'])
     + _span(f.both('atsc_anchor_norm', 'teacher_ce'))),
    # docs/methods/ie_kd.md
    ('docs/methods/ie_kd.md', r'min_spread − spread\(E_inh\(F\)\)\) +'
     r'\(([\d.]+), weight (\d+)\)', lambda f: f.ie_hinge),
    ('docs/methods/ie_kd.md', r'Every IE-DML run of the committed Digits '
     r'benchmark ends with spreads of ([\d.]+)–([\d.]+) \(`min_spread` '
     r'([\d.]+)\)',
     lambda f: _span(f.both('ie_dml', 'inh_spread_a')
                     + f.both('ie_dml', 'inh_spread_b')) + [f.min_spread]),
    # docs/configs.md: the schedules and the data set
    ('docs/configs.md', r'`digits_cosine\.py`: SGD nesterov lr ([\d.]+), '
     r'(\d+) epochs, one warm-up epoch, cosine\)',
     lambda f: f.schedule('digits_cosine.py', warmup_end=1,
                          last='CosineAnnealingLR')),
    ('docs/configs.md', r'`configs/_base_/schedules/cifar100_kd_240e\.py` '
     r'\(SGD ([\d.]+), momentum ([\d.]+), wd ([\d.e-]+), x([\d.]+) at '
     r'(\d+)/(\d+)/(\d+)\)',
     lambda f: (lambda c: [c.optim_wrapper.optimizer.lr,
                           c.optim_wrapper.optimizer.momentum,
                           c.optim_wrapper.optimizer.weight_decay,
                           c.param_scheduler.gamma,
                           *c.param_scheduler.milestones])(
         f.config('configs/_base_/schedules/cifar100_kd_240e.py'))),
    ('docs/configs.md', r'\(random crop (\d+) pad (\d+), flip, batch (\d+)\)',
     lambda f: (lambda c: [c.train_pipeline[0].crop_size,
                           c.train_pipeline[0].padding,
                           c.train_dataloader.batch_size])(
         f.config('configs/_base_/datasets/cifar100_kd.py'))),
    ('docs/configs.md', r'handwritten digits \(([\d,]+) real 8×8 images, '
     r'(\d+) classes\),.*?train/test split \(([\d,]+) / (\d+)\)',
     lambda f: [f.digits_sizes[0] + f.digits_sizes[1], f.digits_sizes[2],
                f.digits_sizes[0], f.digits_sizes[1]]),
    # README / teacher_cache.md / speed.md: the cached rows
    ('README.md', r'Student alone ([\d.]+) ± ([\d.]+)\. Every cached row',
     lambda f: [f.row('few-labels', 'student', f.cache)['test']['mean'],
                f.row('few-labels', 'student', f.cache)['test']['std']]),
    ('README.md', r'Cached runs took (\d+)–(\d+) s against (\d+)–(\d+) s '
     r'live \(student alone (\d+)–(\d+) s\)', lambda f: f.cache_seconds),
    ('docs/methods/teacher_cache.md', r'a cached run took (\d+)–(\d+) s '
     r'against (\d+)–(\d+) s with the live teacher \(student alone '
     r'(\d+)–(\d+) s\)', lambda f: f.cache_seconds),
    ('docs/methods/teacher_cache.md', r'a step from the cache was '
     r'([\d.]+)–([\d.]+)× the student-alone step, against ([\d.]+)×, '
     r'([\d.]+)× and ([\d.]+)× with the live teacher',
     lambda f: _span([_speed_rows(d)['cache']['step_vs_student']
                      for d in f.speed])
     + [_speed_rows(d)['live']['step_vs_student'] for d in f.speed]),
    ('docs/methods/teacher_cache.md', r'\((\d+), (\d+) and (\d+) ms per '
     r'view on that CPU\)',
     lambda f: [d['meta']['cache']['teacher_forward_ms_per_view']
                for d in f.speed]),
    ('docs/speed.md', r'Reading the logits is (\d+)–(\d+) µs per image',
     lambda f: _span([d['meta']['cache']['read_us_per_image']
                      for d in f.speed])),
]


def _facts() -> Facts:
    f = Facts()
    from benchmarks.digits import REGIMES, VAL_PER_CLASS
    from kd_plugins.datasets import Digits
    train, test = Digits(split='train', pipeline=[]), Digits(
        split='test', pipeline=[])
    f.digits_sizes = [len(train), len(test), len(train.metainfo['classes'])]
    f.val_per_class = VAL_PER_CLASS
    f.regime_epochs = [REGIMES['full']['epochs'],
                       2 * REGIMES['full']['epochs'],
                       REGIMES['few-labels']['epochs'],
                       2 * REGIMES['few-labels']['epochs']]
    f.digits_params = _digits_params()
    # the speed files in the order the documents list the pairs
    files = _speed_files()
    f.speed = [files[c] for c in SPEED_PAIRS.values()]
    cache_runs = [run['seconds'] for r in f.cache['results']['few-labels']
                  if '_cache_' in r['name'] for run in r['runs']]
    live_runs = [run['seconds'] for name in ('kd', 'aekt')
                 for run in f.runs('few-labels', name, f.cache)]
    f.cache_seconds = (_span(cache_runs) + _span(live_runs) + _span(
        [run['seconds'] for run in f.runs('few-labels', 'student',
                                          f.cache)]))
    ie = _ie_dml_options()
    f.ie_lambda, f.min_spread = ie['loss_weight'], ie['min_spread']
    f.ie_hinge = ie['defaults']
    f.both = lambda name, key: (f.term('full', name, key)
                                + f.term('few-labels', name, key))
    f.same = lambda values: [values[0]] if len(set(values)) == 1 else [
        math.nan]
    f.mean_std = lambda name, regimes=('full', 'few-labels'): [
        v for g in regimes for v in (f.row(g, name)['test']['mean'],
                                     f.row(g, name)['test']['std'])]
    # wall time of `jobs` trainings at a time: hours and minutes (to 5)
    f.wall = lambda hours: [int(hours / f.digits['jobs']), round(
        hours / f.digits['jobs'] % 1 * 60 / 5) * 5]
    f.config = lambda rel: __import__('mmengine').Config.fromfile(
        osp.join(ROOT, rel))

    def schedule(name, warmup_end, last):
        c = f.config(f'configs/_base_/schedules/{name}')
        opt, sched = c.optim_wrapper.optimizer, c.param_scheduler
        ok = (opt.nesterov and sched[0].end == warmup_end
              and sched[-1].type == last)
        return [opt.lr, c.train_cfg.max_epochs] if ok else [math.nan] * 2
    f.schedule = schedule
    tune = [t for t in f.digits['tuning'] if t['row'] == 'student']
    f.student_chose_the_longest_largest = all(
        f.digits['choices'][g]['student'] == dict(
            lr=max(f.digits['lr_grid']),
            epochs=max(t['epochs'] for t in tune if t['regime'] == g))
        for g in ('full', 'few-labels'))
    return f


def _digits_params() -> List[float]:
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    out = []
    for name in ('teacher', 'student'):
        cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo',
                                       f'{name}_digits.py'))
        model = MODELS.build(cfg.model)
        out.append(sum(p.numel() for p in model.parameters()) / 1e6)
    return out


def _ie_dml_options() -> dict:
    """The demo config's IE weight and the hinge's min_spread (the
    algorithm's default unless the config sets it)."""
    import inspect

    from mmengine.config import Config

    from kd_plugins.algorithms.ie_dml import IEDML
    model = Config.fromfile(osp.join(ROOT, 'configs', 'demo',
                                     'ie_dml_digits.py')).model
    weights = {model.inherit_loss.loss_weight, model.explore_loss.loss_weight}
    assert len(weights) == 1, weights
    defaults = inspect.signature(IEDML.__init__).parameters
    return dict(loss_weight=weights.pop(),
                min_spread=model.get('min_spread',
                                     defaults['min_spread'].default),
                defaults=[defaults['min_spread'].default,
                          defaults['spread_weight'].default])


@pytest.fixture(scope='module')
def facts():
    return _facts()


@pytest.mark.parametrize('doc,pattern,values', CLAIMS,
                         ids=[f'{d}:{i}' for i, (d, _, _) in
                              enumerate(CLAIMS)])
def test_prose_numbers_equal_the_files(facts, doc, pattern, values):
    m = re.search(pattern, _flat(doc))
    assert m, f'{doc}: the sentence {pattern!r} is not there (changed?)'
    want = list(values(facts))
    assert len(want) == len(m.groups()), (pattern, want)
    for printed, value in zip(m.groups(), want):
        assert not math.isnan(value), f'{doc}: {pattern!r}: the premise ' \
            'of the sentence does not hold in the file'
        assert_printed(printed, value, f'{doc}: {m.group(0)!r}')


def test_readme_comparisons_are_the_verdicts(facts):
    """'KD, AEKT, ATSC with anchor_norm, IE-KD on KD and both two-teacher
    rows beat the student alone', 'none beats KD', 'no method helps' on full
    data, and the rows that lose."""
    text = _flat('README.md')
    few, full = 'few-labels', 'full'
    assert ('with 15 labels per class KD, AEKT, ATSC with `anchor_norm`, '
            'IE-KD on KD and both two-teacher rows beat the student alone'
            in text)
    assert facts.names(few, 'vs_student', 'better') == {
        'kd', 'aekt', 'atsc_anchor_norm', 'ie_kd_kd', 'mt_kd', 'mt_aekt'}
    assert 'none beats KD significantly' in text
    assert not facts.names(few, 'vs_kd', 'better')
    assert 'no method helps' in text
    assert not facts.names(full, 'vs_student', 'better')
    assert 'Rows that lose: official ATSC' in text
    for regime in (full, few):
        assert 'atsc' in facts.names(regime, 'vs_student', 'worse')
        assert 'atsc' in facts.names(regime, 'vs_kd', 'worse')
        # IE-DML: below KD only
        assert 'ie_dml' in facts.names(regime, 'vs_kd', 'worse')
        assert 'ie_dml' in facts.names(regime, 'vs_student', 'within noise')
    assert 'kd_layer' in facts.names(full, 'vs_kd', 'worse')


def test_benchmark_comparisons_are_the_verdicts(facts):
    text = _flat('docs/benchmark.md')
    assert ('**ATSC (official behaviour)** — worse than the student alone '
            'and KD in both regimes') in text
    assert ('better than the student alone on few labels, level with KD'
            in text)
    assert 'atsc_anchor_norm' in facts.names('few-labels', 'vs_student',
                                             'better')
    assert all('atsc_anchor_norm' in facts.names(g, 'vs_kd', 'within noise')
               for g in ('full', 'few-labels'))
    assert ('**IE-DML** — within noise of the student alone, worse than KD'
            in text)
    assert ('within noise of the student alone; on few labels within noise '
            'of KD') in text
    assert 'kd_layer' in facts.names('full', 'vs_student', 'within noise')
    assert 'better than the student alone, level with KD' in text
    assert 'ie_kd_kd' in facts.names('few-labels', 'vs_student', 'better')
    assert 'ie_kd_kd' in facts.names('few-labels', 'vs_kd', 'within noise')


def test_teacher_cache_comparisons_are_the_verdicts(facts):
    """README: 'Every cached row is within noise of live KD' and which rows
    are not better than the student alone."""
    cache = facts.cache
    cached = {r['name'] for r in cache['results']['few-labels']
              if '_cache_' in r['name']}
    assert 'Every cached row is within noise of live KD' in _flat('README.md')
    assert cached <= facts.names('few-labels', 'vs_kd', 'within noise', cache)


# --------------------------------------------------------------------------
# tolerances and test names the guides quote


TOLERANCES = [  # (document, pattern, test module, its constant)
    ('docs/methods/atsc.md', r'agree in float64 within ([\d.e-]+) relative',
     'tests.test_atsc', 'STEP_TOL'),
    ('docs/methods/ie_kd.md', r'agree in float64 within ([\d.e-]+) relative',
     'tests.test_ie_kd', 'STEP_TOL'),
    ('docs/methods/kd_layer.md', r'agrees in float64 within ([\d.e-]+) '
     r'relative', 'tests.test_kd_layer', 'STEP_TOL'),
    ('docs/distributed.md', r'compared at ([\d.e-]+) relative',
     'tests.test_distributed', 'F64_TOL'),
]


@pytest.mark.parametrize('doc,pattern,module,name', TOLERANCES,
                         ids=[t[0] for t in TOLERANCES])
def test_quoted_tolerances_are_the_tests(doc, pattern, module, name):
    import importlib
    m = re.search(pattern, _flat(doc))
    assert m, f'{doc}: {pattern!r} is not there'
    assert_printed(m.group(1), getattr(importlib.import_module(module), name),
                   f'{doc}: {m.group(0)!r} ({module}.{name})')


def _test_functions() -> Dict[str, set]:
    out = {}
    for path in glob.glob(osp.join(ROOT, 'tests', 'test_*.py')):
        out[_rel(path)] = set(re.findall(r'^def (test_\w+)',
                                         open(path).read(), re.M))
    return out


@pytest.mark.parametrize('path', DOCS, ids=_rel)
def test_named_tests_exist(path):
    """A test a guide names (`test_x`, `tests/test_y.py::test_x`) is a test
    function of tests/: in the test file named in the same paragraph when
    there is one."""
    functions = _test_functions()
    everywhere = set().union(*functions.values())
    text = open(path, encoding='utf-8').read()
    for paragraph in re.split(r'\n\s*\n', text):
        files = ['tests/' + f for f in re.findall(
            r'(?<![\w.])(?:tests/)?(test_\w+\.py)', paragraph)
            if 'tests/' + f in functions]
        for name in re.findall(r'(?<![\w/])(test_\w+)(?!\.py|\w)',
                               paragraph):
            pool = (set().union(*(functions[f] for f in files))
                    if files else everywhere)
            assert name in pool, (f'{_rel(path)} names {name}, not a '
                                  f'test in {files or "tests/"}')


def test_method_table_configs_exist():
    """README's Methods table names configs relative to configs/
    (`{,1}` and `*` expanded)."""
    table = _find_tables('README.md', 'method')
    table = next(t for t in table if 'configs (Digits / CIFAR-100 / ImageNet)'
                 in t.header)
    col = table.column('configs (Digits / CIFAR-100 / ImageNet)')
    count = 0
    for cells in table.rows:
        for name in re.findall(r'`([^`]+\.py)`', cells[col]):
            options = re.match(r'(.*)\{(.*)\}(.*)', name)
            names = ([options.group(1) + o + options.group(3)
                      for o in options.group(2).split(',')]
                     if options else [name])
            for n in names:
                assert glob.glob(osp.join(ROOT, 'configs', n)), \
                    f'README Methods table: configs/{n} does not exist'
                count += 1
    assert count > 20
