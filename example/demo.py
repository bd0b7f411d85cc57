"""The release story, played on the example site.

    bash dev.sh demo                     (sets everything up, then runs this)
    .venv/bin/python example/demo.py [SITE_DIRECTORY]

Copies this directory into the site directory (default: var/demo/site of
the checkout), makes it a git repository and plays, offline:

1. release 1.0 (the ZEO server and supervisord start with it); content
   and files added through HTTP;
2. a snapshot of the data; release 1.1, whose data schema change runs
   through bin/evolve-copy while the site keeps answering reads (the
   read-only window printed);
3. release 1.2, whose build fails halfway: the site never stops, current
   still points to 1.1;
4. release 1.3, which builds but is broken at runtime: the health check
   fails and current flips back to 1.1 by itself;
5. back to 1.0 with its data: the restore says how many writes it would
   discard and only proceeds when told to; the site serves 1.0's data;
6. bin/rollback --list and bin/snapshot --list.

Every claim it prints is checked; a failed check ends it with exit code 1.
Its processes (supervisord, the ZEO server, the application) are stopped
on exit, also on Ctrl-C; the site directory is left for inspection.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
VENV_SITE = os.environ.get('SAFEDEPLOY_SITE_VENV',
                           os.path.join(CHECKOUT, '.venv-site'))
BUILDOUT = os.path.join(VENV_SITE, 'bin', 'buildout')
DEFAULT_SITE = os.path.join(CHECKOUT, 'var', 'demo', 'site')
WHEELHOUSE = os.environ.get('SAFEDEPLOY_WHEELHOUSE',
                            os.path.join(CHECKOUT, 'var', 'wheelhouse'))
# the demo does not wait the configured 30 s for a broken release
HEALTH_TIMEOUT = '10'


class CheckFailed(Exception):
    pass


class Stopped(Exception):
    """SIGTERM: end like Ctrl-C."""


# -- talking to the site ------------------------------------------------

class Site:
    """The site's HTTP interface (no browser: urllib)."""

    def __init__(self, port):
        self.url = 'http://127.0.0.1:%d' % port

    def request(self, method, path, data=None, timeout=10):
        req = urllib.request.Request(self.url + path, data=data,
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def json(self, method, path, data=None):
        status, body = self.request(method, path, data)
        if status >= 300:
            raise CheckFailed('%s %s answered %d: %s' % (
                method, path, status, body.decode('utf-8', 'replace')))
        return json.loads(body)

    def info(self):
        return self.json('GET', '/')

    def items(self):
        return {i['name']: i for i in self.json('GET', '/items')}

    def add_document(self, name, title, text):
        return self.json('PUT', '/items/%s?title=%s' % (
            name, urllib.request.quote(title)), text.encode('utf-8'))

    def add_file(self, name, data):
        return self.json('PUT', '/files/%s' % name, data)

    def file(self, name):
        status, body = self.request('GET', '/files/%s' % name)
        return body if status == 200 else None

    def answers(self):
        try:
            return self.request('GET', '/', timeout=2)[0] == 200
        except OSError:
            return False


class Watcher(threading.Thread):
    """Reads the site every 50 ms while a step runs: how many reads were
    answered, and for how long it did not answer at all."""

    def __init__(self, site):
        threading.Thread.__init__(self, daemon=True)
        self.site = site
        self.answered = self.failed = 0
        self.outage = 0.0
        self._down_since = None
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            now = time.monotonic()
            if self.site.answers():
                self.answered += 1
                if self._down_since is not None:
                    self.outage += now - self._down_since
                    self._down_since = None
            else:
                self.failed += 1
                if self._down_since is None:
                    self._down_since = now
            self._halt.wait(0.05)

    def stop(self):
        self._halt.set()
        self.join()
        if self._down_since is not None:
            self.outage += time.monotonic() - self._down_since
        return self


# -- the story ------------------------------------------------------------

class Story:

    def __init__(self, site, out=sys.stdout, observer=None):
        self.site = site
        self.out = out
        self.number = 0
        self.checks = 0
        self.observer = observer   # called after each step (tests)
        self.http = None

    def say(self, text=''):
        print(text, file=self.out, flush=True)

    def step(self, title):
        self.number += 1
        self.say()
        self.say('%d. %s' % (self.number, title))
        self._started = time.monotonic()

    def done(self, stage):
        self.say('   (%.1f s)' % (time.monotonic() - self._started))
        if self.observer is not None:
            self.observer(stage, self)

    def check(self, claim, ok):
        self.checks += 1
        if not ok:
            self.say('   FAILED: %s' % claim)
            raise CheckFailed(claim)
        self.say('   ok: %s' % claim)

    def run(self, *args, check=True, show=None):
        """Run a command in the site; print its output (or the lines
        matching ``show``)."""
        env = dict(os.environ, PIP_NO_BUILD_ISOLATION='0')
        env.pop('PYTHONPATH', None)
        started = time.monotonic()
        p = subprocess.run(args, cwd=self.site, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        p.seconds = time.monotonic() - started
        for line in p.stdout.splitlines():
            if show is None or re.search(show, line):
                self.say('   | ' + line)
        if check and p.returncode:
            raise CheckFailed('%s exited with %d' % (' '.join(args),
                                                     p.returncode))
        return p

    def bin(self, name, *args, **kw):
        return self.run(os.path.join(self.site, 'bin', name), *args, **kw)

    def git(self, *args):
        return self.run('git', '-c', 'user.name=demo',
                        '-c', 'user.email=demo@example.invalid', *args)

    def release(self, tag, message, check=True):
        """Commit, tag, bin/buildout: what an operator does."""
        self.git('commit', '-qam', message)
        self.git('tag', tag)
        self.say('   $ git tag %s && bin/buildout' % tag)
        p = self.run(BUILDOUT, *offline_options(self.site), check=check,
                     show=r'current|Error|health check|flip|after-flip|'
                          r'app: |zeo: |snapshot taken')
        self.say('   (bin/buildout took %.1f s)' % p.seconds)
        return p

    def current(self):
        link = os.path.join(self.site, 'current')
        return os.readlink(link) if os.path.lexists(link) else None

    def edit(self, relpath, old, new):
        path = os.path.join(self.site, relpath)
        with open(path) as f:
            text = f.read()
        if old not in text:
            raise CheckFailed('%s does not contain %r' % (relpath, old))
        with open(path, 'w') as f:
            f.write(text.replace(old, new, 1))

    def pids(self, expected=('app', 'zeo'), timeout=20):
        """{program: pid} of what supervisord runs, once the ``expected``
        programs are RUNNING (a program is STARTING for its first
        ``startsecs``)."""
        deadline = time.monotonic() + timeout
        while True:
            p = self.run(os.path.join(self.site, 'bin', 'supervisorctl'),
                         '-c', 'supervisord.conf', 'status', check=False,
                         show='^$')
            pids = {m.group(1): int(m.group(2)) for m in re.finditer(
                r'^([\w-]+)\s+RUNNING\s+pid (\d+)', p.stdout, re.M)}
            if set(expected) <= set(pids):
                return pids
            if time.monotonic() > deadline:
                raise CheckFailed('supervisord does not run %s:\n%s' % (
                    ' and '.join(expected), p.stdout))
            time.sleep(0.2)


def offline_options(site):
    """Settings that keep the demo off the network: distributions come
    from the wheelhouse made at set-up.  The eggs unpacked from it, and
    the archives they came from, are kept beside the site directory for
    the next run."""
    empty = os.path.join(site, '.empty-index')
    os.makedirs(empty, exist_ok=True)
    # the default site keeps them in var/demo (the checkout's, made by
    # the demo); a site directory given on the command line holds its own:
    # the demo writes nothing outside it
    keep = os.path.dirname(site) if site == DEFAULT_SITE else site
    eggs = os.environ.get('SAFEDEPLOY_DEMO_EGGS') or os.path.join(
        keep, 'eggs')
    downloads = os.environ.get('SAFEDEPLOY_DEMO_DOWNLOADS') or os.path.join(
        keep, 'downloads')
    return ['buildout:find-links=%s' % WHEELHOUSE,
            'buildout:eggs-directory=%s' % eggs,
            'buildout:download-cache=%s' % downloads,
            'buildout:index=%s' % empty,
            'buildout:allow-hosts=*.example.invalid',
            'safedeploy:health-timeout=%s' % HEALTH_TIMEOUT]


def read(path):
    with open(path) as f:
        return f.read()


def wait_for(condition, timeout=20):
    """True once ``condition()`` is (clients reconnect after a restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return True
        except (OSError, CheckFailed):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def stop_processes(site, out=sys.stdout):
    """Stop supervisord and everything it runs (the ZEO server, the
    application); kill supervisord if it does not go."""
    pidfile = os.path.join(site, 'var', 'supervisord.pid')
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return False
    ctl = os.path.join(site, 'bin', 'supervisorctl')
    if os.path.exists(ctl):
        subprocess.run([ctl, '-c', os.path.join(site, 'supervisord.conf'),
                        'shutdown'], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    print('stopped supervisord, the ZEO server and the application',
          file=out, flush=True)
    return True


CONTENT = {
    'welcome': ('Welcome', 'This site is released with collective.safedeploy.'),
    'howto': ('How to release', 'Tag the checkout, run bin/buildout.'),
    'faq': ('FAQ', 'What if the build fails? Nothing changes.'),
}


def files():
    """Two files for the blob storage: a text and 200 KiB of bytes."""
    data = bytes(hashlib.sha256(b'%d' % i).digest()[i % 32]
                 for i in range(200 * 1024))
    return {'notes.txt': b'Release notes\n' * 500, 'photo.bin': data}


class NotOurs(Exception):
    """The site directory exists, is not empty and was not made by the
    demo."""


MARKER = '.safedeploy-demo'


def check_site(site):
    """Refuse a non-empty directory the demo did not create (it would
    be removed to start the story afresh)."""
    if os.path.lexists(site) and not os.path.isdir(site):
        raise NotOurs('%s exists and is not a directory; give a new or '
                      'empty directory' % site)
    if os.path.isdir(site) and os.listdir(site) and not os.path.exists(
            os.path.join(site, MARKER)):
        raise NotOurs('%s is not empty and was not made by the demo; give '
                      'a new or empty directory' % site)


def play(site, out=sys.stdout, observer=None):
    check_site(site)
    if os.path.exists(os.path.join(site, MARKER)):
        stop_processes(site, out)
        shutil.rmtree(site)
    elif os.path.isdir(site):
        os.rmdir(site)          # empty
    shutil.copytree(HERE, site, ignore=shutil.ignore_patterns(
        'demo.py', '__pycache__', '*.egg-info'))
    with open(os.path.join(site, MARKER), 'w') as f:
        f.write('made by example/demo.py; it removes this directory when '
                'it plays the story again\n')
    s = Story(site, out, observer)
    zeo_port, app_port = free_port(), free_port()
    s.edit('buildout.cfg', 'zeo = 8101', 'zeo = %d' % zeo_port)
    s.edit('buildout.cfg', 'app = 8180', 'app = %d' % app_port)
    http = s.http = Site(app_port)
    s.say('The example site: %s (application on port %d, ZEO on port %d)'
          % (site, app_port, zeo_port))
    s.git('init', '-q')
    s.git('add', '-A')

    # 1 ---------------------------------------------------------------
    s.step('Release 1.0: tag the checkout, run bin/buildout')
    s.release('1.0', 'The example site')
    s.check('current points to releases/1.0', s.current() == 'releases/1.0')
    pids = s.pids()
    s.check('supervisord runs the ZEO server and the application (%s)'
            % ', '.join('%s pid %d' % kv for kv in sorted(pids.items())),
            set(pids) == {'zeo', 'app'})
    zeo_pid = pids['zeo']
    s.check('the site answers: release 1.0, data schema 0',
            (http.info()['version'], http.info()['schema']) == ('1.0', 0))
    for name, (title, text) in CONTENT.items():
        http.add_document(name, title, text)
    for name, data in files().items():
        http.add_file(name, data)
    items = http.items()
    s.check('added through HTTP: %d documents and %d files (%s)' % (
        len(CONTENT), len(files()), ', '.join(sorted(items))),
        set(items) == set(CONTENT) | set(files()))
    s.check('the files read back byte for byte from the blob storage',
            all(http.file(n) == d for n, d in files().items()))
    s.done('1.0')

    # 2 ---------------------------------------------------------------
    s.step('A snapshot; release 1.1, whose data schema change runs through '
           'bin/evolve-copy')
    s.bin('snapshot', 'before-1.1', show='taken')
    listed = s.bin('snapshot', '--list', show='^$').stdout
    s.check('bin/snapshot --list shows snapshot before-1.1',
            re.search(r'^before-1\.1\s', listed, re.M) is not None)
    s.edit('src/demoapp/src/demoapp/__init__.py', "VERSION = '1.0'",
           "VERSION = '1.1'")
    s.edit('src/demoapp/src/demoapp/evolve/__init__.py', 'VERSION = 0',
           'VERSION = 1')
    watcher = Watcher(http)
    watcher.start()
    s.release('1.1', 'Release 1.1: data schema 1')
    watcher.stop()
    s.check('current points to releases/1.1', s.current() == 'releases/1.1')
    info = http.info()
    s.check('the site runs 1.1 (data schema 1), on data still at schema 0',
            (info['version'], info['schema'], info['database_schema']) ==
            ('1.1', 1, 0))
    s.say('   the site answered %d reads during the release; it did not '
          'answer for %.1f s while the application restarted' % (
              watcher.answered, watcher.outage))
    s.check('the site answered reads during the build and after the restart',
            watcher.answered > 0 and watcher.outage < 15)
    s.check('the release did not restart the ZEO server (pid %d)' % zeo_pid,
            s.pids().get('zeo') == zeo_pid)
    http.add_document('news', 'News', 'Written by 1.1 before the evolve.')
    s.say('   $ bin/evolve-copy')
    data_before = os.readlink(os.path.join(site, 'var', 'current'))
    watcher = Watcher(http)
    watcher.start()
    p = s.bin('evolve-copy', show=r'^\s*(prepare|freeze|catch|evolve|'
              r'verify|switch|thaw|read-only)')
    watcher.stop()
    window = re.search(r'read-only window: ([\d.]+) s', p.stdout)
    s.check('the read-only window: %s s' % (window.group(1) if window
                                            else '?'), window is not None)
    s.say('   during bin/evolve-copy the site answered %d reads and missed '
          '%d (no answer for %.1f s in all)' % (
              watcher.answered, watcher.failed, watcher.outage))
    s.check('the site kept answering reads', watcher.answered > 0 and
            watcher.outage < 10)
    data_after = os.readlink(os.path.join(site, 'var', 'current'))
    s.check('the data switched to the evolved copy (var/current: %s -> %s), '
            'recorded with release 1.1' % (data_before, data_after),
            data_after != data_before and
            '(release 1.1)' in p.stdout)
    s.check('the database is at schema 1', wait_for(
        lambda: http.info()['database_schema'] == 1))
    items = http.items()
    s.check('the documents and files are all there, the files byte for byte',
            set(items) == set(CONTENT) | set(files()) | {'news'} and
            all(http.file(n) == d for n, d in files().items()) and
            items['news']['text'] == 'Written by 1.1 before the evolve.')
    s.check('the site writes again', wait_for(lambda: http.request(
        'PUT', '/items/evolved', b'Written after the evolve.')[0] == 201))
    zeo_pid = s.pids()['zeo']
    s.done('1.1')

    # 3 ---------------------------------------------------------------
    s.step('Release 1.2, whose build fails halfway (a dependency that does '
           'not exist)')
    app_pid = s.pids()['app']
    s.edit('src/demoapp/src/demoapp/__init__.py', "VERSION = '1.1'",
           "VERSION = '1.2'")
    s.edit('buildout.cfg', 'eggs = demoapp\nscripts = demoapp-serve\n',
           'eggs = demoapp\n    demoapp-plugin-that-does-not-exist\n'
           'scripts = demoapp-serve\n')
    watcher = Watcher(http)
    watcher.start()
    p = s.release('1.2', 'Release 1.2', check=False)
    watcher.stop()
    last = p.stdout.strip().splitlines()[-1]
    s.check('bin/buildout exits non-zero', p.returncode != 0)
    s.check('its last line says "current still points to 1.1"',
            last == 'current still points to 1.1')
    s.check('the site never stopped: %d reads during the build, none '
            'failed' % watcher.answered,
            watcher.failed == 0 and watcher.answered > 0)
    s.check('the application was not restarted (pid %d)' % app_pid,
            s.pids().get('app') == app_pid)
    s.check('the site still runs 1.1', http.info()['version'] == '1.1')
    s.check('release 1.2 is marked failed, with the reason',
            'demoapp-plugin-that-does-not-exist' in read(os.path.join(
                site, 'releases', '1.2', 'safedeploy-failed.txt')))
    s.edit('buildout.cfg', '    demoapp-plugin-that-does-not-exist\n', '')
    s.done('1.2')

    # 4 ---------------------------------------------------------------
    s.step('Release 1.3, which builds but is broken at runtime (a bug in '
           'the write path)')
    s.edit('src/demoapp/src/demoapp/__init__.py', "VERSION = '1.2'",
           "VERSION = '1.3'")
    s.edit('src/demoapp/src/demoapp/app.py', 'probe.count += 1',
           "probe.count += '1'")
    p = s.release('1.3', 'Release 1.3', check=False)
    s.check('bin/buildout exits non-zero: the health check failed',
            p.returncode != 0 and 'health check' in p.stdout)
    s.check('current flipped back to 1.1 by itself',
            s.current() == 'releases/1.1' and
            'current flipped back to 1.1' in p.stdout)
    s.check('the site runs 1.1 again and writes',
            http.info()['version'] == '1.1' and
            http.add_document('after-1.3', 'After 1.3', 'Still fine.'))
    s.check('the ZEO server was not restarted (pid %d)' % zeo_pid,
            s.pids().get('zeo') == zeo_pid)
    s.done('1.3')

    # 5 ---------------------------------------------------------------
    s.step('Back to 1.0 with its data (the snapshot taken before 1.1)')
    writes = len(http.items()) - len(CONTENT) - len(files())
    s.say('   $ bin/supervisorctl stop all   (restoring data needs the '
          'site stopped)')
    stopped = time.monotonic()
    s.bin('supervisorctl', '-c', 'supervisord.conf', 'stop', 'all')
    s.say('   $ bin/rollback 1.0 --with-data')
    p = s.bin('rollback', '1.0', '--with-data', check=False,
              show='discard|error')
    m = re.search(r'would discard (\d+) transaction', p.stdout)
    s.check('without consent it refuses, and says how many writes it would '
            'discard: %s' % (m.group(1) if m else '?'),
            p.returncode != 0 and m is not None and
            int(m.group(1)) >= writes)
    s.check('nothing changed: current still points to 1.1',
            s.current() == 'releases/1.1')
    s.say('   $ bin/rollback 1.0 --with-data --discard-writes')
    p = s.bin('rollback', '1.0', '--with-data', '--discard-writes',
              show='restored|rolled back|health')
    kept = re.search(r'kept in generation (\w+)', p.stdout)
    s.check('data restored from the snapshot taken when 1.1 replaced 1.0; '
            'the discarded writes are kept in data generation %s'
            % (kept.group(1) if kept else '?'), kept is not None)
    s.say('   the site was down for %.1f s' % (time.monotonic() - stopped))
    s.check('current points to releases/1.0', s.current() == 'releases/1.0')
    s.check('the site serves 1.0 with 1.0\'s data: %d documents and %d '
            'files, not the %d writes made since' % (
                len(CONTENT), len(files()), writes),
            http.info()['version'] == '1.0' and
            set(http.items()) == set(CONTENT) | set(files()) and
            all(http.file(n) == d for n, d in files().items()))
    s.done('rollback')

    # 6 ---------------------------------------------------------------
    s.step('bin/rollback --list and bin/snapshot --list')
    p = s.bin('rollback', '--list')
    s.check('1.0 is current; 1.2 failed; 1.3 is bad',
            re.search(r'^\*\s+1\.0\s', p.stdout, re.M) is not None and
            re.search(r'^\s+1\.2\s.*failed', p.stdout, re.M) is not None and
            re.search(r'^\s+1\.3\s.*bad', p.stdout, re.M) is not None)
    p = s.bin('snapshot', '--list')
    s.check('the snapshots: one paired with each release, and before-1.1',
            all(re.search(r'^%s\s' % re.escape(n), p.stdout, re.M)
                for n in ('1.0', '1.1', 'before-1.1')))
    s.done('lists')
    s.say()
    s.say('All %d checks passed. The site is left in %s.' % (s.checks, site))
    return s


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='demo.py', description='Play the release story on the example '
        'site (see bash dev.sh demo).')
    parser.add_argument(
        'site', nargs='?', default=DEFAULT_SITE, metavar='SITE_DIRECTORY',
        help='where the site is made: an empty or missing directory, or one '
        'an earlier run made (default: var/demo/site of the checkout)')
    site = os.path.abspath(parser.parse_args(argv).site)
    try:
        check_site(site)
    except NotOurs as e:
        print('demo: %s' % e, file=sys.stderr)
        return 2

    def stop(signum, frame):
        raise Stopped()
    signal.signal(signal.SIGTERM, stop)
    started = time.monotonic()
    try:
        play(site)
    except CheckFailed as e:
        print('demo failed: %s' % e, file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Stopped):
        print('demo interrupted; the site is left in %s' % site,
              file=sys.stderr)
        return 130
    finally:
        try:
            stop_processes(site)
        except Exception as e:  # never hide how the story ended
            print('could not stop the site\'s processes: %s' % e,
                  file=sys.stderr)
        print('(%.0f s in all)' % (time.monotonic() - started))
    return 0


if __name__ == '__main__':
    sys.exit(main())
