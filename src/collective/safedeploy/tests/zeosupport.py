"""Real ZEO servers and clients for the evolve-copy tests.

A data root with one complete generation holding the example site
(:mod:`.evolve_example.model`), a ZEO server on it started through
:mod:`collective.safedeploy.zeo`, and client processes (with
``read-only-fallback``) that commit while a test works.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collective.safedeploy.evolve import state
from collective.safedeploy.evolve import guard
from collective.safedeploy.core import fsutil
from collective.safedeploy.zeo import server as zeoserver
from collective.safedeploy.zeo import control as zeocontrol
from collective.safedeploy.tests import zodbsupport

EXAMPLE = 'collective.safedeploy.tests.evolve_example'
GENERATIONS = EXAMPLE + '.generations:manager'
FUNCTION = EXAMPLE + '.function:evolve'


def make_data_root(root, documents=5, history=0):
    """``root/generations/1`` (complete, current) with the example site;
    returns the DataRoot."""
    import transaction
    from collective.safedeploy.tests.evolve_example import model
    data = state.DataRoot(root)
    gens = data.generations
    gens.stage('1')
    os.makedirs(os.path.dirname(data.fs('1')))
    db = zodbsupport.open_db(data.fs('1'), data.blobs('1'))
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        model.make_site(conn.root(), documents)
        # installed at generation 0 of the zope.generations example
        from persistent.mapping import PersistentMapping
        conn.root()['zope.generations'] = PersistentMapping({EXAMPLE: 0})
        tm.commit()
        for i in range(history):
            conn.root()['site'].add(1000 + i, 'h %d' % i, b'history')
            tm.commit()
        conn.close()
    finally:
        db.close()
    gens.complete('1', dict(source='test'))
    gens.flip('1')
    return data


def read_site(fs_path, blob_dir):
    """{docid: (title, body)} of the example site in a FileStorage."""
    db = zodbsupport.open_db(fs_path, blob_dir, read_only=True)
    try:
        conn = db.open()
        result = {}
        for docid, doc in conn.root()['site'].documents.items():
            with doc.body.open('r') as f:
                result[docid] = (doc.title, f.read())
        conn.close()
        return result
    finally:
        db.close()


def production_fingerprint(data, name):
    """sha256, size, mtime and inode of every file of generation ``name``
    (index and lock files aside: the server maintains them)."""
    result = {}
    base = data.dir(name)
    for directory, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if d != 'tmp']
        for n in files:
            if n.endswith(('.index', '.lock', '.tmp')) or \
                    n.startswith('safedeploy-'):
                continue
            p = os.path.join(directory, n)
            st = os.stat(p)
            result[os.path.relpath(p, base)] = (
                zodbsupport.hash_file(p), st.st_size, st.st_mtime_ns,
                st.st_ino)
    return result


class Server:
    """A ZEO server on the current generation of ``data``."""

    def __init__(self, data, state_dir=None, address=None):
        self.data = data
        self.state_dir = state_dir or os.path.join(data.path, 'zeo')
        self.address = address or '127.0.0.1:%d' % zeoserver.free_port()
        self.zeo = zeoserver.ZEOServer(self.address, self.state_dir)
        self.control = zeocontrol.DataServer(self.zeo, state.FS,
                                         state.BLOBS)
        self.control.thaw(data.dir(data.current()))

    def stop(self):
        self.zeo.stop()

    def serving(self):
        return self.control.serving()

    def wait_writable_on_current(self, timeout=30):
        """Wait until the server runs writable on ``current`` and nothing
        is left to thaw (a guard process may still be at it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            serving = self.serving()
            if (not os.path.exists(guard.guard_path(self.data)) and serving and
                    not serving[1] and os.path.realpath(serving[0]) ==
                    os.path.realpath(self.data.fs(self.data.current())) and
                    zeoserver.listening(self.zeo.address)):
                return True
            time.sleep(0.05)
        return False


CLIENT = textwrap.dedent('''\
    import json, sys, time
    import transaction, ZODB
    from ZEO.ClientStorage import ClientStorage
    from ZODB.POSException import ReadOnlyError, ConflictError
    from ZEO.Exceptions import ClientDisconnected
    host, port = sys.argv[1].rsplit(':', 1)
    kw = json.loads(sys.argv[2])
    if 'blob_dir' not in kw:
        import tempfile
        kw['blob_dir'] = tempfile.mkdtemp(prefix='zeo-client-blobs-')
    storage = ClientStorage((host, int(port)), read_only_fallback=True,
                            wait_timeout=60, **kw)
    db = ZODB.DB(storage)
    conn = db.open()
    print('ready', flush=True)
    i = 0
    for line in sys.stdin:
        command = line.split()
        if command[0] == 'write':
            i += 1
            try:
                transaction.begin()
                site = conn.root()['site']
                site.add(10000 + i, 'written %d' % i, b'written')
                transaction.commit()
                print('ok %d' % (10000 + i), flush=True)
            except (ReadOnlyError, ConflictError, ClientDisconnected) as e:
                transaction.abort()
                print('refused %s' % type(e).__name__, flush=True)
        elif command[0] == 'wait':
            # until connected (and writable, with 'wait writable')
            deadline = time.time() + 30
            while time.time() < deadline:
                if storage.is_connected() and (
                        command[1:] != ['writable'] or
                        not storage.isReadOnly()):
                    break
                time.sleep(0.01)
            print('connected %s' % ('read-only' if storage.isReadOnly()
                                    else 'writable'), flush=True)
        elif command[0] == 'read':
            transaction.begin()
            site = conn.root()['site']
            print('read %d' % len(site.documents), flush=True)
        elif command[0] == 'titles':
            transaction.begin()
            docs = conn.root()['site'].documents
            print('titles ' + json.dumps(sorted(
                set(d.title for d in docs.values()))), flush=True)
    ''')


class Client:
    """A ZEO client process (read-only-fallback) driven line by line."""

    def __init__(self, address, stderr=subprocess.DEVNULL,
                 **storage_options):
        self.process = subprocess.Popen(
            [sys.executable, '-c', CLIENT, address,
             json.dumps(storage_options)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=stderr, text=True)
        if self.process.stdout.readline().strip() != 'ready':
            self.stop()
            raise RuntimeError('the ZEO client did not connect')

    def ask(self, command):
        self.process.stdin.write(command + '\n')
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for f in (self.process.stdin, self.process.stdout):
            try:
                f.close()
            except OSError:
                pass


def evolve_copy(data, server, *args, env=None, evolve=EXAMPLE,
                context='site', timeout=120, wait=True):
    """Run ``evolve-copy`` as a real process (so it can be killed)."""
    argv = [sys.executable, '-m', 'collective.safedeploy.evolve.command',
            '--data', data.path, '--evolve', evolve,
            '--zeo-address', server.address,
            '--zeo-state', server.state_dir] + list(args)
    if context:
        argv += ['--evolve-context', context]
    full_env = dict(os.environ)
    full_env.update(env or {})
    process = subprocess.Popen(argv, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               env=full_env)
    if not wait:
        return process
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def temporary_directory(test, prefix='safedeploy-evolve-'):
    path = tempfile.mkdtemp(prefix=prefix)
    test.addCleanup(fsutil.remove_tree, path)   # read-only blobs too
    return path


def kill(process):
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.communicate()


LOOP_WRITER = textwrap.dedent('''\
    import os, sys, time
    import transaction, ZODB
    from ZEO.ClientStorage import ClientStorage
    from ZEO.Exceptions import ClientDisconnected
    from ZODB.POSException import ReadOnlyError, ConflictError
    import tempfile
    host, port = sys.argv[1].rsplit(':', 1)
    stop, base = sys.argv[2], int(sys.argv[3])
    storage = ClientStorage((host, int(port)), read_only_fallback=True,
                            wait_timeout=60,
                            blob_dir=tempfile.mkdtemp(prefix='zeo-w-'))
    db = ZODB.DB(storage)
    conn = db.open()
    print('ready', flush=True)
    i = 0
    while not os.path.exists(stop):
        i += 1
        try:
            transaction.begin()
            conn.root()['site'].add(base + i, 'written %d' % i, b'w%d' % i)
            transaction.commit()
            print('ok %d' % (base + i), flush=True)
        except (ReadOnlyError, ConflictError, ClientDisconnected) as e:
            transaction.abort()
            print('refused %d %s' % (base + i, type(e).__name__),
                  flush=True)
        time.sleep(0.01)
    ''')


class LoopWriter:
    """A ZEO client process (read-only-fallback) committing a new
    document every 10 ms; it reports each commit as committed or refused.
    """

    def __init__(self, address, directory, base=100000):
        self.stopfile = os.path.join(directory, 'stop-writer-%d' % base)
        self.process = subprocess.Popen(
            [sys.executable, '-c', LOOP_WRITER, address, self.stopfile,
             str(base)], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)
        if self.process.stdout.readline().strip() != 'ready':
            self.stop()
            raise RuntimeError('the ZEO writer did not connect')

    def stop(self):
        """Stop; returns (committed docids, refused docids)."""
        with open(self.stopfile, 'w'):
            pass
        try:
            out, _ = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        ok, refused = [], []
        for line in out.splitlines():
            words = line.split()
            if words and words[0] == 'ok':
                ok.append(int(words[1]))
            elif words and words[0] == 'refused':
                refused.append(int(words[1]))
        return ok, refused
