"""Test-only: start the project's tools without paying their imports.

A tool run costs about 4 s of imports (torch, mmengine, mmpretrain, mmrazor,
kd_plugins) before it does anything; the end-to-end tests start over a
hundred. The zygote is one Python process that imports all of that once,
computes nothing, and forks a child per run: the child takes the run's
working directory, environment, stdout/stderr and ``sys.argv``, and runs the
script as ``python SCRIPT ARGS`` would (``runpy``, ``__name__ ==
'__main__'``, the script's folder first on ``sys.path``). The fork sits
before any computation, as a DataLoader worker's does after one.

Each run is a connection on a UNIX socket: the test sends the request and
its two pipe ends; an intermediate child forks the run, sends its pid, waits
for it and sends its wait status, so a test can kill the run (SIGKILL,
SIGTERM) by pid and read its output as it comes, as with ``Popen``.

A run whose environment differs from the zygote's in what is read at import
(``PYTHONPATH``, thread counts, ...) or that is not a ``.py`` script goes
through a plain subprocess (:func:`compatible`); ``KD_PLUGINS_NO_ZYGOTE=1``
sends every run there. One ``PYTHONPATH`` change is emulated: added entries
that are the checkout (on every run's path already) or *site folders*
(holding only a ``sitecustomize.py``, as tests/paper_data.py writes): the
child puts them on ``sys.path`` and runs their ``sitecustomize``, as the
interpreter does at start-up.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

# read at start-up (interpreter, torch, OpenMP, CUDA, the import path):
# a run that sets one of them differently gets a fresh interpreter
IMPORT_TIME = ('PYTHONPATH', 'PYTHONHOME', 'PYTHONHASHSEED',
               'OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS',
               'CUDA_VISIBLE_DEVICES', 'TORCH_HOME', 'LD_PRELOAD',
               'LD_LIBRARY_PATH')


def _send(sock, obj) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack('!I', len(data)) + data)


def _recv(sock):
    head = b''
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (n, ), data = struct.unpack('!I', head), b''
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return json.loads(data)


# ---------------------------------------------------------------- server
def _run_child(req: dict) -> None:
    """In the forked run: become ``python SCRIPT ARGS`` and exit."""
    import runpy
    import signal
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT,
                signal.SIGUSR1, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(req['cwd'])
    os.environ.clear()
    os.environ.update(req['env'])
    try:
        import numpy as np
        np.random.seed()  # as a fresh interpreter: not the zygote's state
    except ImportError:
        pass
    script = os.path.abspath(req['args'][0])
    sys.argv = [script] + req['args'][1:]
    sys.path[0] = os.path.dirname(script)
    for k, folder in enumerate(req.get('site', [])):  # see site_folders
        sys.path.insert(1 + k, folder)
        runpy.run_path(os.path.join(folder, 'sitecustomize.py'),
                       run_name='sitecustomize')
    code = 0
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - as the interpreter reports it
        import traceback
        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        import atexit
        atexit._run_exitfuncs()  # as the interpreter does at exit
        os._exit(code)


def _handle(conn) -> None:
    """In the intermediate child: fork the run, report pid and status."""
    import signal
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 2)
    (n, ) = struct.unpack('!I', msg[:4])
    while len(msg) < 4 + n:
        msg += conn.recv(4 + n - len(msg))
    req = json.loads(msg[4:4 + n])
    pid = os.fork()
    if pid == 0:
        conn.close()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in (devnull, *fds):
            if fd > 2:
                os.close(fd)
        _run_child(req)
    for fd in fds:
        os.close(fd)
    _send(conn, {'pid': pid})
    _, status = os.waitpid(pid, 0)
    _send(conn, {'status': status})
    conn.close()
    os._exit(0)


def serve(path: str) -> None:
    """The zygote: import everything a tool imports, then fork per run."""
    import importlib
    import signal

    # kd_plugins first: its compat fixes come before mmrazor's imports
    for name in ('kd_plugins', 'mmengine.runner', 'mmpretrain.apis'):
        importlib.import_module(name)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, 'tools'))
    import _common  # noqa: F401
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # reap the handlers
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    print('ready', flush=True)
    sys.stdout.flush()
    while True:
        conn, _ = server.accept()
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            server.close()
            _handle(conn)
        conn.close()


# ---------------------------------------------------------------- client
class Run:
    """A tool run in the zygote, with the parts of ``Popen`` the tests use:
    ``pid``, ``stdout``/``stderr`` (text pipes), ``wait``, ``kill``,
    ``returncode``."""

    def __init__(self, conn, pid: int, stdout, stderr) -> None:
        self._conn, self.pid = conn, pid
        self.stdout, self.stderr = stdout, stderr
        self.returncode = None

    def wait(self, timeout=None):
        if self.returncode is None:
            self._conn.settimeout(timeout)
            try:
                reply = _recv(self._conn)
            except socket.timeout as err:
                raise subprocess.TimeoutExpired(['zygote'], timeout) from err
            self._conn.close()
            status = reply['status'] if reply else 255 << 8
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self):
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass


class Zygote:
    """The test session's zygote (started on first use)."""

    def __init__(self) -> None:
        self.proc = None
        self.env = None
        self.path = None

    def start(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.path = os.path.join(tempfile.mkdtemp(prefix='kd_zygote_'), 's')
        self.env = dict(os.environ, PYTHONUNBUFFERED='1')
        self.proc = subprocess.Popen(
            [sys.executable, '-u', '-c',
             f'import sys; sys.path.insert(0, {root!r}); '
             f'from tests.zygote import serve; serve({self.path!r})'],
            cwd=root, env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)
        ready = self.proc.stdout.readline().strip() == 'ready'
        if not ready:
            self.proc.kill()
        return ready

    def compatible(self, args, env) -> bool:
        if os.environ.get('KD_PLUGINS_NO_ZYGOTE') or not args or \
                not str(args[0]).endswith('.py'):
            return False
        base = self.env or dict(os.environ)  # what the zygote imported with
        return self.site_folders(env) is not None and all(
            env.get(k) == base.get(k) for k in IMPORT_TIME
            if k != 'PYTHONPATH')

    def site_folders(self, env):
        """The site folders ``env``'s PYTHONPATH adds to the zygote's (a
        list, maybe empty), or None when it changes it otherwise."""
        base = self.env or dict(os.environ)
        have = [p for p in base.get('PYTHONPATH', '').split(os.pathsep) if p]
        want = [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
        if [p for p in want if p in have] != have:
            return None
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        site = []
        for p in want:
            if p in have or os.path.abspath(p) == root:
                continue
            names = set(os.listdir(p)) if os.path.isdir(p) else set()
            if 'sitecustomize.py' not in names or \
                    names - {'sitecustomize.py', '__pycache__'}:
                return None
            site.append(os.path.abspath(p))
        return site

    def popen(self, args, cwd, env, merge_stderr: bool):
        """A :class:`Run` of ``python *args`` (stdout, stderr as pipes)."""
        out_r, out_w = os.pipe()
        if merge_stderr:
            err_r, err_w = None, os.dup(out_w)
        else:
            err_r, err_w = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        for _ in range(50):
            try:
                conn.connect(self.path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                time.sleep(0.1)
        req = json.dumps(dict(args=[str(a) for a in args], cwd=str(cwd),
                              env=dict(env),
                              site=self.site_folders(env) or [])).encode()
        socket.send_fds(conn, [struct.pack('!I', len(req)) + req],
                        [out_w, err_w])
        os.close(out_w)
        os.close(err_w)
        reply = _recv(conn)
        stdout = os.fdopen(out_r, 'r', errors='replace')
        stderr = (os.fdopen(err_r, 'r', errors='replace')
                  if err_r is not None else None)
        return Run(conn, reply['pid'], stdout, stderr)

    def run(self, args, cwd, env, timeout):
        """Like ``subprocess.run(capture_output=True, text=True)``."""
        import threading
        run = self.popen(args, cwd, env, merge_stderr=False)
        chunks = {}

        def read(name, f):
            chunks[name] = f.read()
            f.close()
        readers = [threading.Thread(target=read, args=(n, f), daemon=True)
                   for n, f in (('out', run.stdout), ('err', run.stderr))]
        for t in readers:
            t.start()
        try:
            code = run.wait(timeout)
        except subprocess.TimeoutExpired:
            run.kill()
            raise
        for t in readers:
            t.join()
        return subprocess.CompletedProcess(
            [sys.executable, *args], code, chunks.get('out', ''),
            chunks.get('err', ''))

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


ZYGOTE = Zygote()
