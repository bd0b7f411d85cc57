"""What the test machines of the multi-host rollout tests run (the
inventory's restart and check commands, and the load generator):

    python machine_commands.py restart-client SITE HOST:PORT
    python machine_commands.py check-client SITE HOST:PORT [SECONDS]
    python machine_commands.py check-zeo HOST:PORT
    python machine_commands.py load URL

``restart-client`` stops the site's WSGI client (its pid in
``SITE/var/client.pid``) and starts ``promote_app.py`` from the site's
current release, on the ZEO address that release's ``client`` part
wrote; it returns once the client answers.  ``check-client`` asks
``/ok`` and ``/release`` until the client is healthy and runs the
current release, and fails with one line.  ``load`` sends writes and
reads until its standard input closes, then prints what happened as
JSON.
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, 'promote_app.py')


def alive(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return APP.encode() in f.read().split(b'\0')
    except OSError:
        return False


def get(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ''
    except OSError as e:
        return None, str(e)


def restart_client(site, listen):
    release = os.path.realpath(os.path.join(site, 'current'))
    with open(os.path.join(release, 'parts', 'client', 'content')) as f:
        zeo = f.read().strip()
    var = os.path.join(site, 'var')
    os.makedirs(var, exist_ok=True)
    pidfile = os.path.join(var, 'client.pid')
    try:
        with open(pidfile) as f:
            pid = int(f.read())
    except (OSError, ValueError):
        pid = None
    if pid and alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
    host, _, port = listen.rpartition(':')
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in sys.path if p)
    with open(os.path.join(var, 'client.log'), 'ab') as log:
        # the client writes its own pid file: a restart killed after the
        # fork still leaves it known to the next one
        subprocess.Popen(
            ['sh', '-c', 'echo $$ > "$0.new" && mv "$0.new" "$0" && '
             'exec "$@"', pidfile, sys.executable, APP, port, zeo, host],
            cwd=release, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, env=env)
    deadline = time.monotonic() + 30
    while get('http://%s/release' % listen)[0] != 200:
        if time.monotonic() > deadline:
            sys.exit('the client of %s did not answer on %s within 30 s' % (
                site, listen))
        time.sleep(0.05)
    print('client of %s restarted on %s' % (os.path.basename(release), zeo))
    return 0


def check_client(site, listen, seconds='5'):
    want = os.path.basename(os.path.realpath(os.path.join(site, 'current')))
    deadline = time.monotonic() + float(seconds)
    while True:
        ok = get('http://%s/ok' % listen)
        release = get('http://%s/release' % listen)
        if ok[0] == 200 and release == (200, want):
            print('%s: healthy, runs %s' % (listen, want))
            return 0
        if time.monotonic() > deadline:
            sys.exit('%s: /ok answered %s, /release %s; current is %s' % (
                listen, ok[0] or ok[1], release[1] or release[0], want))
        time.sleep(0.1)


def check_zeo(address):
    import ZEO
    host, _, port = address.rpartition(':')
    try:
        db = ZEO.DB((host, int(port)), wait_timeout=5)
    except Exception as e:
        sys.exit('the ZEO server on %s does not answer: %s' % (address, e))
    try:
        with db.transaction() as conn:
            print('ZEO on %s: %d keys written' % (
                address, len(conn.root().get('writes') or ())))
    finally:
        db.close()
    return 0


def load(url):
    from collective.safedeploy.tests.promotesupport import Load
    # a steady load that leaves the machine's two cores to the rollout
    generator = Load(url, writers=1, readers=1, pause=0.05)
    sys.stdin.read()
    generator.stop()
    status, body = get(url + '/dump', timeout=30)
    stored = json.loads(body) if status == 200 else {}
    json.dump(dict(requests=len(generator.latencies),
                   acked=len(generator.acked),
                   failed=generator.failed[:20],
                   failures=len(generator.failed),
                   lost=[k for k in generator.acked if k not in stored][:20],
                   dump=status), sys.stdout)
    return 0


COMMANDS = {'restart-client': restart_client, 'check-client': check_client,
            'check-zeo': check_zeo, 'load': load}

if __name__ == '__main__':
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
