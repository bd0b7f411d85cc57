"""Real ZODB data for tests: a FileStorage with blobs and history, a
writer process committing (with blobs) while a test works, tree hashes.

Everything here uses ZODB itself; nothing is faked.
"""
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

from collective.safedeploy.core.fsutil import sha256

FS = os.path.join('filestorage', 'Data.fs')
BLOBS = 'blobstorage'


def open_db(fs_path, blob_dir, read_only=False):
    import ZODB
    from ZODB.FileStorage import FileStorage
    storage = FileStorage(fs_path, blob_dir=blob_dir, read_only=read_only)
    return ZODB.DB(storage)


def make_site_data(root, transactions=20, blobs=10, blob_size=2048,
                   history=2, fs=FS, blob_dir=BLOBS):
    """Create ``root/filestorage/Data.fs`` and ``root/blobstorage`` with
    ``transactions`` commits (objects rewritten ``history`` times) and
    ``blobs`` blobs.  Returns (fs_path, blob_dir, last_tid)."""
    import transaction
    from BTrees.OOBTree import OOBTree
    from ZODB.blob import Blob
    fs_path = os.path.join(root, fs)
    blob_path = os.path.join(root, blob_dir)
    os.makedirs(os.path.dirname(fs_path), exist_ok=True)
    db = open_db(fs_path, blob_path)
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        r = conn.root()
        r['items'] = OOBTree()
        r['blobs'] = OOBTree()
        tm.commit()
        for i in range(transactions):
            for h in range(history):
                r['items']['k%d' % i] = 'value %d/%d ' % (i, h) + 'x' * 200
            tm.get().note('commit %d' % i)
            tm.commit()
        for i in range(blobs):
            b = Blob()
            with b.open('w') as f:
                f.write(os.urandom(blob_size))
            r['blobs']['b%d' % i] = b
            tm.commit()
        conn.close()
        last = db.storage.lastTransaction()
    finally:
        db.close()
    return fs_path, blob_path, last


def commit(fs_path, blob_dir, n=1, blob=True):
    """Commit ``n`` transactions (each with a new blob when ``blob``)."""
    import transaction
    from ZODB.blob import Blob
    db = open_db(fs_path, blob_dir)
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        r = conn.root()
        for i in range(n):
            key = 'c%d-%d' % (time.time_ns(), i)
            r['items'][key] = key
            if blob:
                b = Blob()
                with b.open('w') as f:
                    f.write(key.encode() * 10)
                r['blobs'][key] = b
            tm.commit()
        conn.close()
        return db.storage.lastTransaction()
    finally:
        db.close()


def read_all(fs_path, blob_dir):
    """{key: value} of items and {key: blob bytes}: what a snapshot holds."""
    db = open_db(fs_path, blob_dir, read_only=True)
    try:
        conn = db.open()
        r = conn.root()
        items = dict(r['items'].items())
        blobs = {}
        for k, b in r['blobs'].items():
            with b.open('r') as f:
                blobs[k] = f.read()
        conn.close()
        return items, blobs
    finally:
        db.close()


def transaction_ids(fs_path):
    """All transaction ids of a FileStorage file, oldest first."""
    from ZODB.FileStorage import FileIterator
    it = FileIterator(fs_path)
    try:
        return [t.tid for t in it]
    finally:
        it.close()


WRITER = textwrap.dedent('''\
    import os, sys, time
    import transaction, ZODB
    from ZODB.FileStorage import FileStorage
    from ZODB.blob import Blob
    fs, blobs, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    db = ZODB.DB(FileStorage(fs, blob_dir=blobs))
    conn = db.open()
    r = conn.root()
    print('ready', flush=True)
    i = 0
    while True:
        i += 1
        key = 'w%d-%d' % (os.getpid(), i)
        r['items'][key] = key * 50
        b = Blob()
        with b.open('w') as f:
            f.write(os.urandom(4096))
        r['blobs'][key] = b
        transaction.commit()
        if delay:
            time.sleep(delay)
    ''')


class Writer:
    """A separate process committing transactions with blobs in a loop
    (it holds Data.fs.lock, like a running site)."""

    def __init__(self, fs_path, blob_dir, delay=0.0):
        self.script = tempfile.NamedTemporaryFile(
            'w', suffix='.py', delete=False)
        self.script.write(WRITER)
        self.script.close()
        self.process = subprocess.Popen(
            [sys.executable, self.script.name, fs_path, blob_dir,
             str(delay)], stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if line.strip() != 'ready':
            self.stop()
            raise RuntimeError('the writer process did not start')

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process.stdout.close()
        if os.path.exists(self.script.name):
            os.unlink(self.script.name)


HOLDER = textwrap.dedent('''\
    import sys, time
    from ZODB.FileStorage import FileStorage
    s = FileStorage(sys.argv[1], blob_dir=sys.argv[2])
    print('ready', flush=True)
    sys.stdin.read()
    s.close()
    ''')


class Holder:
    """A process that keeps the FileStorage open (holds Data.fs.lock)."""

    def __init__(self, fs_path, blob_dir):
        self.process = subprocess.Popen(
            [sys.executable, '-c', HOLDER, fs_path, blob_dir],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != 'ready':
            self.stop()
            raise RuntimeError('the process holding Data.fs did not start')

    def stop(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()


def hash_file(path):
    return sha256(path)


def hash_tree(root, ignore=('tmp', 'Data.fs.index', 'Data.fs.lock',
                            'Data.fs.tmp')):
    """{relative path: sha256 (files) or '->target' (links)} of a tree;
    names in ``ignore`` are skipped."""
    result = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in ignore]
        for name in dirs + files:
            p = os.path.join(directory, name)
            rel = os.path.relpath(p, root)
            if name in ignore:
                continue
            if os.path.islink(p):
                result[rel] = '->' + os.readlink(p)
            elif os.path.isfile(p):
                result[rel] = hash_file(p)
    return result
