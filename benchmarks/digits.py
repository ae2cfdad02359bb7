"""The Digits benchmark behind ``tools/demo.py``: rows, regimes, statistics,
verdicts, table and chart.

Protocol (every row the same):

* teachers are trained on the whole Digits train split (1,437 images), the
  student rows on the regime's data: ``full`` (the whole train split) or
  ``few-labels`` (15 images per class, a fixed stratified subset);
* learning rates are tuned (``tools/demo.py --tune``) on a validation split of
  28 images per class carved out of the train split
  (``Digits(val_per_class=28)``; the few-label subset is drawn from the rest),
  with the same grid for every row, one seed; the student alone also chooses
  the number of epochs (E or 2E), which every row then uses; the test split is
  never used for a choice; the choices of the committed run are written into
  the rows' configs (``configs/demo/`` for the full regime,
  ``configs/demo/few_labels/``), so that each config trains as the benchmark
  did with no options;
* each row is then trained with its chosen learning rate on the regime's data
  with N seeds and evaluated once, at the end, on the 360-image test split;
* verdicts compare a row's test top-1 over seeds with the student alone's and
  with KD's by Welch's t-test (two-sided, 5 %): better / within noise / worse.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

VAL_PER_CLASS = 28
FEW_PER_CLASS = 15
LR_GRID = (0.1, 0.2, 0.4)
ALPHA = 0.05

REGIMES = {
    # data options of the train set (final runs: what the regime's configs
    # set) and epochs E (student alone also tries 2E when tuning)
    'full': dict(final={}, tune={'val_per_class': VAL_PER_CLASS},
                 epochs=12),
    'few-labels': dict(final={'val_per_class': VAL_PER_CLASS,
                              'num_per_class': FEW_PER_CLASS},
                       tune={'val_per_class': VAL_PER_CLASS,
                             'num_per_class': FEW_PER_CLASS},
                       epochs=60),
}
TEACHER_EPOCHS = 20
DEFAULT_LR = 0.2

T = (('model.teacher_ckpt', 'teacher'), )
TT = (('model.teacher_ckpts', ('teacher', 'teacher2')), )


@dataclass
class Row:
    """One benchmark row. ``needs`` maps config keys to the step(s) whose
    final checkpoint they take (a tuple of steps gives a list value)."""
    name: str
    config: str
    label: str
    kind: str = 'student'  # 'teacher' | 'prep' (IE stage 1) | 'student'
    needs: tuple = T
    options: tuple = ()  # extra --cfg-options
    stats_keys: tuple = ()  # keys that take the KD-layer statistics file
    adapted_teachers: int = 0  # ATSC: evaluate the adapted teacher(s)
    variant: bool = False  # a variant of a method above: benchmark only
    # trains from a teacher cache of this many views per image ('all': the
    # 25 of RandomCrop 32, padding 2), built from the teacher by the
    # benchmark (tools/cache_teacher.py) for the row's data
    cache_views: str = ''

    def config_for(self, regime: str) -> str:
        """The config this row trains in ``regime``: a student row's
        few-labels config is ``configs/demo/few_labels/<its full config>``
        (the same method on the few-label subset, with the schedule the
        benchmark chose for that regime); teachers and stage 1 have one."""
        if self.kind != 'student' or regime != 'few-labels':
            return self.config
        head, name = self.config.rsplit('/', 1)
        return f'{head}/few_labels/{name}'

    @property
    def depends_on(self) -> set:
        deps = set()
        for _, steps in self.needs:
            deps.update((steps, ) if isinstance(steps, str) else steps)
        if self.stats_keys:
            deps.add('teacher')
        return deps


KDL_STATS = ('model.distiller.distill_losses.loss_penult.stats_file',
             'model.distiller.distill_losses.loss_inter.stats_file')

ROWS: List[Row] = [
    Row('teacher', 'configs/demo/teacher_digits.py',
        'Teacher: ResNet-18 (CIFAR stem, width 16)', kind='teacher',
        needs=()),
    Row('teacher2', 'configs/demo/teacher2_digits.py',
        'Second teacher (same network, seed 1)', kind='teacher', needs=()),
    Row('ie_stage1', 'configs/demo/ie_kd_stage1_digits.py',
        'IE-KD stage 1 (teacher auto-encoder)', kind='prep'),
    Row('student', 'configs/demo/student_digits.py',
        'Student alone: ResNet-10 (3 stages, width 8)', needs=()),
    Row('kd', 'configs/demo/kd_digits.py', 'KD (Hinton, tau 4)'),
    Row('aekt', 'configs/demo/aekt_digits.py', 'AEKT (reconstruction)'),
    Row('atsc', 'configs/demo/atsc_digits.py',
        'ATSC (official: BN of the teacher not anchored)',
        needs=(('model.teacher_ckpts', ('teacher', )), ),
        adapted_teachers=1),
    Row('atsc_anchor_norm', 'configs/demo/atsc_anchor_norm_digits.py',
        'ATSC + anchor_norm (ours: BN anchored too)',
        needs=(('model.teacher_ckpts', ('teacher', )), ),
        adapted_teachers=1, variant=True),
    Row('ie_kd', 'configs/demo/ie_kd_digits.py', 'IE-KD (CE + IE)',
        needs=T + (('model.distiller.connectors.t_enc.stage1_ckpt',
                    'ie_stage1'), )),
    Row('ie_kd_kd', 'configs/demo/ie_kd_kd_digits.py',
        'IE-KD on KD (CE + KD + IE)',
        needs=T + (('model.distiller.connectors.t_enc.stage1_ckpt',
                    'ie_stage1'), ), variant=True),
    Row('ie_dml', 'configs/demo/ie_dml_digits.py',
        'IE-DML (two students, no teacher; student A)', needs=()),
    Row('kd_layer', 'configs/demo/kd_layer_digits.py',
        'KD layer (letKD-2)', stats_keys=KDL_STATS),
    Row('mt_kd', 'configs/demo/mt_kd_digits.py',
        'KD, two teachers (mean of logits)', needs=TT),
    Row('mt_aekt', 'configs/demo/mt_aekt_digits.py',
        'AEKT, two teachers (confidence-weighted)', needs=TT, variant=True),
]
# Teacher-cache rows (#23; docs/methods/teacher_cache.md): KD and AEKT
# trained from stored teacher logits of 1, 5 or all 25 views per image, with
# the live rows' configs (their lr and epochs) plus model.teacher_cache. Not
# in ROWS (the committed benchmark): run by name, e.g. tools/demo.py --only
# kd_cache_all ..., reported with the live KD and AEKT of the same run.
CACHE_VIEWS = (('1', '1 view per image'), ('5', '5 views per image'),
               ('all', 'all 25 views'))
CACHE_ROWS: List[Row] = [
    Row(f'{m}_cache_{v}', f'configs/demo/{m}_digits.py',
        f'{label} from a teacher cache ({what})', cache_views=v, variant=True)
    for m, label in (('kd', 'KD'), ('aekt', 'AEKT'))
    for v, what in CACHE_VIEWS]
BY_NAME = {r.name: r for r in ROWS + CACHE_ROWS}


def select(names: Optional[Sequence[str]], variants: bool = True
           ) -> List[Row]:
    """The rows ``names`` (all when None; without ``variants``, one row per
    method: the demo's set) plus what they depend on, in benchmark order;
    the student alone is always included (the baseline)."""
    if not names:
        if variants:
            return list(ROWS)
        names = [r.name for r in ROWS if not r.variant]
    wanted = set(names) | {'student'}
    for row in reversed(ROWS + CACHE_ROWS):
        if row.name in wanted:
            wanted |= row.depends_on
    return [r for r in ROWS + CACHE_ROWS if r.name in wanted]


def data_options(opts: Dict[str, object], prefix='train_dataloader.dataset'
                 ) -> List[str]:
    return [f'{prefix}.{k}={v}' for k, v in opts.items()]


# ------------------------------------------------------------- statistics
def summarize(values: Sequence[float]) -> dict:
    """mean, sample standard deviation (ddof 1; 0 for one value), n."""
    n = len(values)
    mean = sum(values) / n if n else float('nan')
    std = (math.sqrt(sum((v - mean)**2 for v in values) / (n - 1))
           if n > 1 else 0.0)
    return dict(mean=mean, std=std, n=n, values=list(values))


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Welch's two-sided t-test: (t, p). Zero variance in both samples: p
    is 1 when the means are equal, 0 otherwise."""
    from scipy import stats
    sa, sb = summarize(a), summarize(b)
    if sa['std'] == 0 and sb['std'] == 0:
        same = sa['mean'] == sb['mean']
        return (0.0 if same else math.copysign(math.inf, sa['mean'] -
                                               sb['mean'])), \
            (1.0 if same else 0.0)
    import warnings
    with warnings.catch_warnings():  # nearly equal samples: scipy warns
        warnings.simplefilter('ignore', RuntimeWarning)
        res = stats.ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def verdict(a: Sequence[float], b: Sequence[float],
            alpha: float = ALPHA) -> dict:
    """Is ``a`` better than / within noise of / worse than ``b``?"""
    diff = summarize(a)['mean'] - summarize(b)['mean']
    if len(a) < 2 or len(b) < 2:
        return dict(verdict='n/a (1 seed)', p=None, diff=diff)
    t, p = welch(a, b)
    word = 'within noise' if p >= alpha else ('better' if diff > 0 else
                                              'worse')
    return dict(verdict=word, p=p, diff=diff, t=t)


# ------------------------------------------------------------ reporting
def _fmt(s: dict) -> str:
    if s['n'] > 1:
        return f"{s['mean']:.2f} ± {s['std']:.2f}"
    return f"{s['mean']:.2f}"


def markdown(regime: str, rows: List[dict]) -> str:
    """One regime's table: method, lr, epochs, test top-1 (mean ± std over
    seeds), difference to the student alone, verdicts."""
    lines = [
        f'**{regime}** — test top-1 (%), mean ± std over seeds; verdicts: '
        f"Welch's t-test, two-sided, {int(ALPHA * 100)} %",
        '',
        '| method | lr | epochs | top-1 (%) | Δ vs student | vs student '
        '| vs KD |',
        '| --- | ---: | ---: | ---: | ---: | --- | --- |']
    for r in rows:
        s = r['test']
        vs = r.get('vs_student') or {}
        vk = r.get('vs_kd') or {}
        lines.append(
            f"| {r['label']} | {r['lr']:g} | {r['epochs']} | {_fmt(s)} "
            f"(n={s['n']}) | "
            + (f"{vs['diff']:+.2f}" if vs else '') + ' | '
            + (vs.get('verdict', '') + (f" (p={vs['p']:.3f})"
                                        if vs.get('p') is not None else ''))
            + ' | '
            + (vk.get('verdict', '') + (f" (p={vk['p']:.3f})"
                                        if vk.get('p') is not None else ''))
            + ' |')
    return '\n'.join(lines)


def summary_table(results: Dict[str, List[dict]]) -> str:
    """Both regimes side by side: test top-1 (mean ± std) and the verdicts
    against the student alone and KD, one line per method."""
    regimes = list(results)
    names, labels = [], {}
    for rows in results.values():
        for r in rows:
            if r['name'] not in labels:
                names.append(r['name'])
                labels[r['name']] = r['label']
    head = '| method |' + ''.join(
        f' {g} top-1 (%) | vs student | vs KD |' for g in regimes)
    lines = [head, '| --- |' + ' ---: | --- | --- |' * len(regimes)]
    for name in names:
        cells = []
        for g in regimes:
            r = next((x for x in results[g] if x['name'] == name), None)
            if r is None:
                cells += ['', '', '']
                continue
            cells += [_fmt(r['test']),
                      (r.get('vs_student') or {}).get('verdict', ''),
                      (r.get('vs_kd') or {}).get('verdict', '')]
        lines.append(f'| {labels[name]} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def chart(results: Dict[str, List[dict]], path: str,
          title: str = '') -> str:
    """Bar chart, one panel per regime: mean test top-1 with the standard
    deviation over seeds as error bars; the student alone dashed."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    regimes = list(results)
    fig, axes = plt.subplots(1, len(regimes), figsize=(7 * len(regimes), 5),
                             squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        rows = results[regime]
        names = [r['name'] for r in rows]
        means = [r['test']['mean'] for r in rows]
        stds = [r['test']['std'] for r in rows]
        colors = ['#999999' if r['name'].startswith('teacher') else
                  '#4c72b0' if r['name'] == 'student' else
                  ('#55a868' if (r.get('vs_student') or {}).get(
                      'verdict') == 'better' else
                   '#c44e52' if (r.get('vs_student') or {}).get(
                       'verdict') == 'worse' else '#dd8452')
                  for r in rows]
        x = range(len(rows))
        ax.bar(x, means, yerr=stds, capsize=3, color=colors)
        base = [r for r in rows if r['name'] == 'student']
        if base:
            ax.axhline(base[0]['test']['mean'], ls='--', c='#4c72b0', lw=1)
        lo = min(m - s for m, s in zip(means, stds))
        ax.set_ylim(max(0, lo - 5), 100)
        ax.set_xticks(list(x), names, rotation=60, ha='right')
        ax.set_ylabel('test top-1 (%)')
        ax.set_title(regime)
    sep = ' ' if len(regimes) > 1 else '\n'  # one panel: two lines fit
    fig.suptitle(title or 'Digits benchmark' + sep + '(green: better than '
                 'the student alone, red: worse, orange: within noise)')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
