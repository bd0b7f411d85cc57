"""A PostgreSQL cluster of a test's own: ``initdb`` into a temporary
directory (as the postgres user when run as root), a Unix socket only, a
free port; stopped and removed in cleanup."""
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile


def _bindir():
    found = shutil.which('initdb')
    if found:
        return os.path.dirname(found)
    candidates = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'))
    return os.path.dirname(candidates[-1]) if candidates else None


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def missing():
    """Why a cluster cannot be started here, or None."""
    bindir = _bindir()
    if bindir is None or not os.path.exists(os.path.join(bindir, 'pg_ctl')):
        return 'initdb/pg_ctl not installed (Debian package postgresql)'
    if os.getuid() == 0:
        try:
            pwd.getpwnam('postgres')
        except KeyError:
            return 'running as root without a postgres user for initdb'
    try:
        import psycopg2  # noqa: F401
        import relstorage  # noqa: F401
    except ImportError as e:
        return 'RelStorage/psycopg2 not installed (%s)' % e
    return None


class Cluster:

    def __init__(self):
        self.bindir = _bindir()
        self.tmp = tempfile.mkdtemp(prefix='pgcluster-')
        os.chmod(self.tmp, 0o755)
        self.data = os.path.join(self.tmp, 'data')
        self.socket = os.path.join(self.tmp, 'sock')
        os.mkdir(self.socket)
        self.port = free_port()
        self.user = None
        if os.getuid() == 0:
            self.user = 'postgres'
            pw = pwd.getpwnam('postgres')
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
            os.chown(self.socket, pw.pw_uid, pw.pw_gid)
        self.running = False

    def _as(self, args):
        if self.user:
            return ['runuser', '-u', self.user, '--'] + args
        return args

    def start(self):
        subprocess.run(self._as([
            os.path.join(self.bindir, 'initdb'), '-D', self.data, '-A',
            'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            cwd=self.tmp)
        with open(os.path.join(self.data, 'postgresql.conf'), 'a') as f:
            f.write("listen_addresses = ''\nunix_socket_directories = '%s'\n"
                    "port = %d\nfsync = off\nsynchronous_commit = off\n"
                    "full_page_writes = off\nmax_connections = 60\n"
                    % (self.socket, self.port))
        subprocess.run(self._as([
            os.path.join(self.bindir, 'pg_ctl'), '-D', self.data, '-w',
            '-l', os.path.join(self.tmp, 'log'), 'start']),
            check=True, stdout=subprocess.DEVNULL, cwd=self.tmp)
        self.running = True
        return self

    def stop(self):
        if self.running:
            subprocess.run(self._as([
                os.path.join(self.bindir, 'pg_ctl'), '-D', self.data, '-m',
                'immediate', '-w', 'stop']), stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, cwd=self.tmp)
            self.running = False
        shutil.rmtree(self.tmp, ignore_errors=True)

    def dsn(self, dbname='site'):
        return 'host=%s port=%d user=postgres dbname=%s' % (
            self.socket, self.port, dbname)

    def tool_env(self):
        env = dict(os.environ)
        env['PATH'] = self.bindir + os.pathsep + env.get('PATH', '')
        return env


def start_cluster(test):
    """A running cluster for ``test`` (a TestCase), stopped in cleanup;
    skips with the reason when there is none to be had."""
    reason = missing()
    if reason:
        test.skipTest(reason)
    cluster = Cluster()
    test.addCleanup(cluster.stop)
    cluster.start()
    return cluster


def open_db(dsn, blob_dir, keep_history=False, create=False, shared=False):
    """A ZODB.DB over RelStorage on ``dsn`` (blobs in the database,
    ``blob_dir`` their cache; with ``shared``, blobs in the shared
    directory ``blob_dir``)."""
    import ZODB
    import ZODB.config
    return ZODB.DB(ZODB.config.storageFromString(
        '%%import relstorage\n<relstorage>\n keep-history %s\n'
        ' create-schema %s\n blob-dir %s\n shared-blob-dir %s\n'
        ' <postgresql>\n  dsn %s\n </postgresql>\n</relstorage>\n' % (
            'true' if keep_history else 'false',
            'true' if create else 'false', blob_dir,
            'true' if shared else 'false', dsn)))


def write_retrying(dsn, blob_dir, key, value, keep_history=False,
                   timeout=20):
    """``root['writes'][key] = value`` on ``dsn`` through RelStorage,
    retried for up to ``timeout`` seconds (a guard may need a moment to
    allow connections again after a kill); each attempt its own client."""
    import time
    import transaction
    deadline = time.monotonic() + timeout
    while True:
        tm = transaction.TransactionManager()
        client = None
        try:
            client = open_db(dsn, blob_dir, keep_history)
            conn = client.open(transaction_manager=tm)
            conn.root()['writes'][key] = value
            tm.commit()
            conn.close()
            return
        except Exception:
            tm.abort()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
        finally:
            if client is not None:
                client.close()


def blob(data):
    from ZODB.blob import Blob
    b = Blob()
    with b.open('w') as f:
        f.write(data)
    return b


def writer(dsn, blob_dir, keep_history, shared='false'):
    """Commit ``root['writes'][i] = i`` for i = 0, 1, ... until standard
    input closes; print each i once its commit returned (acknowledged).
    A failed commit is retried with the same i (never acknowledged).
    With ``shared`` (blobs in the shared directory ``blob_dir``) each
    write is a blob holding ``b'write <i>'``."""
    import sys
    import threading
    import time
    import transaction
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()),
                     daemon=True).start()
    db = None
    i = 0
    while not stop.is_set():
        try:
            if db is None:
                db = open_db(dsn, blob_dir, keep_history == 'true',
                             shared=shared == 'true')
            tm = transaction.TransactionManager()
            conn = db.open(transaction_manager=tm)
            try:
                conn.root()['writes'][i] = blob(
                    b'write %d' % i) if shared == 'true' else i
                tm.commit()
            finally:
                tm.abort()
                conn.close()
        except Exception as e:
            sys.stderr.write('write %d failed: %s\n' % (i, e))
            time.sleep(0.02)
            continue
        sys.stdout.write('%d\n' % i)
        sys.stdout.flush()
        i += 1
        time.sleep(0.005)
    if db is not None:
        db.close()


if __name__ == '__main__':
    import sys
    writer(*sys.argv[1:])
