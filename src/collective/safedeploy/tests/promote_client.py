"""Start or stop one WSGI client of the promote tests, as a stage's
``client-start-command`` and ``client-stop-command`` would (a
supervisorctl start/stop)::

    python promote_client.py start|stop CLIENTS.json NAME [NAME ...]

CLIENTS.json maps each client's name to its ``port``, ``zeo`` address,
``log`` and ``pidfile`` and, for a persistent ZEO cache, ``cache`` (the
client's ``client`` name) and ``var`` (its directory).  Both are
idempotent: starting a running client or stopping a stopped one does
nothing.
"""
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, 'promote_app.py')
children = {}        # pid: Popen, the clients this process started


def running(spec):
    try:
        with open(spec['pidfile']) as f:
            pid = int(f.read())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid):
    """Running, not a zombie (a process that ended whose parent, maybe
    the test, did not reap it yet)."""
    if pid in children and children[pid].poll() is not None:
        return False
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def start(spec):
    if running(spec):
        return
    args = [sys.executable, APP, str(spec['port']), spec['zeo']]
    if spec.get('cache'):
        args += ['127.0.0.1', spec['cache'], spec['var']]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in sys.path if p))
    with open(spec['log'], 'ab') as log:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log,
                                   start_new_session=True, env=env)
    line = process.stdout.readline().strip()
    process.stdout.close()
    if line != b'listening':
        process.kill()
        process.wait()
        sys.exit('client did not start; see %s' % spec['log'])
    children[process.pid] = process
    with open(spec['pidfile'] + '.tmp', 'w') as f:
        f.write(str(process.pid))
    os.rename(spec['pidfile'] + '.tmp', spec['pidfile'])


def stop(spec, timeout=10):
    pid = running(spec)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            break
        time.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)
    if pid in children:
        children.pop(pid).wait()
    os.unlink(spec['pidfile'])
    # those another process (a promotion's stop command) stopped
    for pid, process in list(children.items()):
        if process.poll() is not None:
            del children[pid]


def main(argv):
    action, path, names = argv[0], argv[1], argv[2:]
    with open(path) as f:
        specs = json.load(f)
    for name in names:
        {'start': start, 'stop': stop}[action](specs[name])


if __name__ == '__main__':
    main(sys.argv[1:])
