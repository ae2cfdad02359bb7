"""The documentation cannot rot silently: links resolve, every command names
tools and configs that exist, nothing cites files a clone does not have, and
the "After make demo" commands of docs/training.md run as written after a
(two-epoch) demo."""
import glob
import os.path as osp
import re
import subprocess

import pytest

from tests.conftest import ROOT

DOCS = [osp.join(ROOT, 'README.md')] + sorted(
    glob.glob(osp.join(ROOT, 'docs', '**', '*.md'), recursive=True))


def _blocks(path):
    """Fenced code blocks: (language, text)."""
    text = open(path, encoding='utf-8').read()
    return re.findall(r'```(\w*)\n(.*?)```', text, re.S)


def _commands(text):
    """Shell commands of a block, continuation lines joined."""
    joined = re.sub(r'\\\n\s*', ' ', text)
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith('#')]


@pytest.mark.parametrize('path', DOCS, ids=lambda p: osp.relpath(p, ROOT))
def test_links_resolve(path):
    text = open(path, encoding='utf-8').read()
    for target in re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', text):
        if '://' in target or target.startswith('mailto:'):
            continue
        assert osp.exists(osp.join(osp.dirname(path), target)), \
            f'{osp.relpath(path, ROOT)} links to {target!r}'


@pytest.mark.parametrize('path', DOCS, ids=lambda p: osp.relpath(p, ROOT))
def test_commands_name_existing_tools_and_configs(path):
    checked = 0
    for lang, block in _blocks(path):
        if lang not in ('bash', 'sh', ''):
            continue
        for cmd in _commands(block):
            for tool in re.findall(r'(?:python|bash)\s+(tools/\S+)', cmd):
                assert osp.isfile(osp.join(ROOT, tool)), (path, cmd)
                checked += 1
            for cfg in re.findall(r'(configs/\S+?\.py)', cmd):
                assert osp.isfile(osp.join(ROOT, cfg)), (path, cmd)
    if osp.basename(path) in ('training.md', 'distributed.md', 'speed.md'):
        assert checked, f'{path}: no command found (fences changed?)'


def _code_text(path):
    """Everything a reader may copy: fenced blocks and inline code spans."""
    text = open(path, encoding='utf-8').read()
    fenced = [b for _, b in _blocks(path)]
    rest = re.sub(r'```\w*\n.*?```', '', text, flags=re.S)
    return fenced + re.findall(r'`([^`\n]+)`', rest)


PATH_RE = re.compile(r'(?<![\w/.])((?:tools|configs|docs|kd_plugins|tests)/'
                     r'[\w/.-]*\w\.(?:py|sh|md|json|png))(?![\w*<])')


@pytest.mark.parametrize('path', DOCS, ids=lambda p: osp.relpath(p, ROOT))
def test_paths_in_commands_and_inline_code_exist(path):
    """Paths in inline code (`tools/x.py`) as well as in fenced blocks: the
    guides without a fenced block are checked too."""
    missing = [p for text in _code_text(path) for p in PATH_RE.findall(text)
               if not osp.exists(osp.join(ROOT, p))]
    assert not missing, f'{osp.relpath(path, ROOT)} names {missing}'


def test_no_reference_to_files_outside_the_project():
    files = DOCS + glob.glob(osp.join(ROOT, 'kd_plugins', '**', '*.py'),
                             recursive=True) + glob.glob(
        osp.join(ROOT, 'configs', '**', '*.py'), recursive=True) + glob.glob(
        osp.join(ROOT, 'tools', '*.py'))
    bad = [osp.relpath(f, ROOT) for f in files
           if 'shared/specs' in open(f, encoding='utf-8').read()]
    assert not bad, f'cite docs/methods/*.md instead: {bad}'


def test_readme_is_a_short_index():
    text = open(osp.join(ROOT, 'README.md'), encoding='utf-8').read()
    assert len(text.splitlines()) <= 220
    for guide in ('docs/training.md', 'docs/distributed.md', 'docs/speed.md',
                  'docs/troubleshooting.md', 'docs/configs.md',
                  'docs/benchmark.md', 'docs/methods/aekt.md',
                  'docs/methods/atsc.md', 'docs/methods/ie_kd.md',
                  'docs/methods/kd_layer.md',
                  'docs/methods/multi_teacher.md'):
        assert f']({guide}' in text, guide
    # the test command the README gives is the one CI runs
    assert 'make test' in text and 'make test' in open(
        osp.join(ROOT, '.ci', 'run')).read()


def _after_demo_block():
    text = open(osp.join(ROOT, 'docs', 'training.md'), encoding='utf-8').read()
    section = text.split('## After `make demo`', 1)[1]
    return re.search(r'```bash\n(.*?)```', section, re.S).group(1)


def test_after_make_demo_commands_run_as_written(demo_scratch):
    """After the short demo of tests/conftest.py (in a scratch copy of the
    project layout), the block line by line."""
    root, env, _ = demo_scratch
    for cmd in _commands(_after_demo_block()):
        proc = subprocess.run(['bash', '-c', cmd], cwd=root, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (cmd, proc.stdout[-2000:],
                                      proc.stderr[-3000:])
    assert (root / 'work_dirs/demo/aekt_serialization.png').is_file()
    assert (root / 'work_dirs/kd_digits_export/student.pth').is_file()
