"""A writer: a ZEO client process committing numbered transactions, each
with a blob, the whole time a test works, and logging every commit the
server acknowledged with its transaction id.

    writer = Writer(address, directory)     # connected, committing
    ...                                     # evolve-copy, kills, restarts
    log = writer.stop()                     # a WriterLog
    missing = log.missing_from(fs_path)     # acknowledged, not in Data.fs

The process commits ``root[key][n] = PersistentMapping(n=n,
blob=Blob(b'write n'))`` for n = 1, 2, ...
(``key`` default ``'writer'``, an OOBTree it creates), one transaction
each, ``interval`` seconds apart.  ReadOnlyError (a frozen or read-only
server), ClientDisconnected (a restart) and ConflictError are retried
with the same n.  Its log file has one line per attempt::

    ok N TID TIME           the server acknowledged the commit of n
    refused N ERROR TIME    not committed; n is tried again
    error N ERROR WHAT TIME anything else (the process goes on; its
                            traceback is appended to the log's ``.tb``)

TIME is ``time.time()``; TID the transaction id in hex.  A commit whose
acknowledgement was lost with the connection is not "ok": only what a
client was told had committed is checked.
"""
import os
import re
import subprocess
import sys
import time

from collective.safedeploy.tests import zodbsupport

WRITER = '''\
import os, sys, time, tempfile, traceback
import transaction, ZODB
from BTrees.OOBTree import OOBTree
from ZEO.ClientStorage import ClientStorage
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import ReadOnlyError, ConflictError
from ZODB.blob import Blob
from persistent.mapping import PersistentMapping
address, log_path, stop, key, interval = sys.argv[1:6]
host, port = address.rsplit(':', 1)
interval = float(interval)
storage = ClientStorage((host, int(port)), read_only_fallback=True,
                        wait_timeout=120,
                        blob_dir=tempfile.mkdtemp(prefix='zeo-writer-'))
db = ZODB.DB(storage)
tm = transaction.TransactionManager()
conn = db.open(tm)
log = open(log_path, 'a')
def say(*words):
    log.write(' '.join(str(w) for w in words) + ' %.6f\\n' % time.time())
    log.flush()
say('ready', 0)
n = 1
while not os.path.exists(stop):
    try:
        tm.begin()
        root = conn.root()
        if key not in root:
            root[key] = OOBTree()
        # the record's serial is the commit's tid (a committed blob is
        # ghosted: its own serial is not kept)
        record = PersistentMapping(n=n, blob=Blob(b'write %d' % n))
        root[key][n] = record
        tm.get().note('writer %d' % n)
        tm.commit()
        say('ok', n, record._p_serial.hex())
        n += 1
    except (ReadOnlyError, ClientDisconnected, ConflictError) as e:
        tm.abort()
        say('refused', n, type(e).__name__)
    except Exception as e:
        with open(log_path + '.tb', 'a') as tb:
            tb.write('attempt %d at %.6f:\\n' % (n, time.time()))
            traceback.print_exc(file=tb)
        try:
            tm.abort()
        except Exception:
            pass
        say('error', n, type(e).__name__, str(e)[:200].replace(' ', '_')
            or '-')
    time.sleep(interval)
'''


class WriterLog:
    """What a writer's log file says."""

    def __init__(self, path):
        self.acknowledged = {}   # n -> tid (hex)
        self.attempts = []       # (time, n, 'ok' / 'refused' / 'error')
        self.errors = []
        self.path = path
        with open(path) as f:
            for line in f:
                words = line.split()
                if len(words) < 3 or words[0] == 'ready':
                    continue
                kind, n, stamp = words[0], int(words[1]), float(words[-1])
                self.attempts.append((stamp, n, kind))
                if kind == 'ok':
                    self.acknowledged[n] = words[2]
                elif kind == 'error':
                    self.errors.append(words[2])

    def around_errors(self, lines=8):
        """The log lines around the first error (for a test's message)."""
        with open(self.path) as f:
            text = f.read().splitlines()
        first = [i for i, line in enumerate(text) if line.startswith('error')]
        if not first:
            return ''
        around = '\n'.join(text[max(0, first[0] - lines):first[0] + lines])
        try:
            with open(self.path + '.tb') as f:
                around += '\n-- the first traceback:\n' + f.read(6000)
        except OSError:
            pass
        return around

    def tracebacks(self):
        """The traceback of each failed attempt, oldest first."""
        try:
            with open(self.path + '.tb') as f:
                text = f.read()
        except OSError:
            return []
        return re.split(r'^attempt \d+ at [\d.]+:\n', text, flags=re.M)[1:]

    def tids(self):
        return set(self.acknowledged.values())

    def missing_from(self, fs_path):
        """The numbers of acknowledged writes whose transaction is not in
        the FileStorage ``fs_path``, sorted."""
        present = set(t.hex() for t in zodbsupport.transaction_ids(fs_path))
        return sorted(n for n, tid in self.acknowledged.items()
                      if tid not in present)

    def longest_refusal(self):
        """The longest time (s) from a refused attempt following a
        commit to the next acknowledged commit: how long the writer could
        not write (0.0 when nothing was refused)."""
        longest, since = 0.0, None
        for stamp, n, kind in self.attempts:
            if kind == 'ok':
                if since is not None:
                    longest = max(longest, stamp - since)
                since = None
            elif since is None:
                since = stamp
        return longest


class Writer:
    """A writer process on the ZEO server at ``address`` (``host:port``),
    its log in ``directory``."""

    def __init__(self, address, directory, key='writer', interval=0.03,
                 timeout=60):
        os.makedirs(directory, exist_ok=True)
        self.log_path = os.path.join(directory, '%s.log' % key)
        self.stopfile = os.path.join(directory, '%s.stop' % key)
        for p in (self.log_path, self.log_path + '.tb', self.stopfile):
            if os.path.exists(p):
                os.unlink(p)
        self.interval = interval
        self.process = subprocess.Popen(
            [sys.executable, '-c', WRITER, address, self.log_path,
             self.stopfile, key, str(interval)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        # connected and one write acknowledged
        deadline = time.monotonic() + timeout
        while not self.log().acknowledged:
            if self.process.poll() is not None or \
                    time.monotonic() > deadline:
                self.stop()
                raise RuntimeError('the ZEO writer did not commit')
            time.sleep(0.01)

    def log(self):
        """The log so far (the process goes on)."""
        try:
            return WriterLog(self.log_path)
        except OSError:
            return WriterLog(os.devnull)

    def wait_acknowledged(self, count=1, timeout=60):
        """Wait for ``count`` more acknowledged writes; False on timeout."""
        target = len(self.log().acknowledged) + count
        deadline = time.monotonic() + timeout
        while len(self.log().acknowledged) < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self, timeout=60):
        """Stop the process (after its current attempt); the WriterLog."""
        with open(self.stopfile, 'w'):
            pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.log()
