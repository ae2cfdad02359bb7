"""tests/zygote.py runs a script as a fresh ``python SCRIPT ARGS`` does:
same argv, working directory, environment, ``__name__``, import path, exit
codes, output streams, signals; a run with another import-time environment
gets a real interpreter."""
import json
import os
import signal
import sys

import pytest

from tests.conftest import _run_and_kill
from tests.zygote import ZYGOTE

PROBE = r'''
import json, os, sys
print(json.dumps(dict(argv=sys.argv[1:], cwd=os.getcwd(), name=__name__,
                      path0=sys.path[0], x=os.environ.get('ZYGOTE_X'),
                      stdin=sys.stdin.read())))
print('to stderr', file=sys.stderr)
mode = sys.argv[1]
if mode == 'exit3':
    sys.exit(3)
if mode == 'message':
    raise SystemExit('kd_plugins: a message')
if mode == 'raise':
    raise ValueError('boom')
if mode == 'wait':
    import time
    print('waiting', flush=True)
    time.sleep(60)
'''


@pytest.fixture
def probe(tmp_path):
    path = tmp_path / 'probe.py'
    path.write_text(PROBE)
    return str(path)


def _plain(args, cwd, env):
    import subprocess
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize('mode', ['ok', 'exit3', 'message', 'raise'])
def test_a_zygote_run_is_a_fresh_interpreter_run(probe, tmp_path, mode):
    env = dict(os.environ, ZYGOTE_X='42', PYTHONUNBUFFERED='1')
    assert ZYGOTE.compatible([probe], env) and ZYGOTE.start()
    args = [probe, mode, 'a b']
    got = ZYGOTE.run(args, str(tmp_path), env, timeout=60)
    want = _plain(args, str(tmp_path), env)
    assert got.returncode == want.returncode
    assert json.loads(got.stdout.splitlines()[0]) == json.loads(
        want.stdout.splitlines()[0])
    assert json.loads(got.stdout.splitlines()[0])['x'] == '42'
    # stderr: the same lines (a traceback's last line for an exception)
    assert got.stderr.splitlines()[0] == 'to stderr'
    assert got.stderr.splitlines()[-1] == want.stderr.splitlines()[-1]


def test_a_zygote_run_can_be_killed_by_pid(probe, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    proc = _run_and_kill([sys.executable, probe, 'wait'], str(tmp_path), env,
                         timeout=60, kill_at='waiting')
    assert proc.returncode == -signal.SIGKILL
    proc = _run_and_kill([sys.executable, probe, 'wait'], str(tmp_path), env,
                         timeout=60, kill_at='waiting', sig=signal.SIGTERM)
    assert proc.returncode == -signal.SIGTERM


def test_import_time_environment_gets_a_real_interpreter(probe):
    env = dict(os.environ)
    assert ZYGOTE.compatible([probe], env)
    assert not ZYGOTE.compatible([probe], dict(env, OMP_NUM_THREADS='7'))
    assert not ZYGOTE.compatible([probe], dict(env, PYTHONPATH='/x'))
    assert not ZYGOTE.compatible(['-m', 'pytest'], env)


def test_a_site_folder_on_pythonpath_runs_its_sitecustomize(tmp_path):
    """The paper-path tests' case (tests/paper_data.py): a PYTHONPATH that
    adds a folder with only a sitecustomize.py (and the checkout) stays in
    the zygote, which runs it as the interpreter would at start-up."""
    from tests.conftest import ROOT
    site = tmp_path / 'site'
    site.mkdir()
    (site / 'sitecustomize.py').write_text(
        'import builtins\nbuiltins.SITE_RAN = __name__\n')
    script = tmp_path / 'show.py'
    script.write_text('import builtins, sys\n'
                      'print(getattr(builtins, "SITE_RAN", None), '
                      'sys.path.index(sys.argv[1]) > 0)\n')
    base = os.environ.get('PYTHONPATH', '')
    env = dict(os.environ, PYTHONUNBUFFERED='1', PYTHONPATH=os.pathsep.join(
        p for p in (str(site), ROOT, base) if p))
    assert ZYGOTE.compatible([str(script)], env) and ZYGOTE.start()
    args = [str(script), str(site)]
    got = ZYGOTE.run(args, str(tmp_path), env, timeout=60)
    want = _plain(args, str(tmp_path), env)
    assert got.stdout == want.stdout == 'sitecustomize True\n', (
        got.stdout, got.stderr)
    # anything else on the added path: a real interpreter
    (site / 'other.py').write_text('')
    assert not ZYGOTE.compatible([str(script)], env)
