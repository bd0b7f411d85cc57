"""RelStorage on a real PostgreSQL: generations are databases, switched by
rename; snapshots; evolve-copy with a writer; kills; rollback with data."""
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from collective.safedeploy.core.errors import Refused
from collective.safedeploy.data.relstorage import make_dsn
from collective.safedeploy.tests import pgsupport

HERE = os.path.dirname(os.path.abspath(__file__))


def bump(root, commit):
    """The evolve of these tests: one step."""
    root['generation'] = root.get('generation', 0) + 1
    commit('bump')


def bump_blob(root, commit):
    """An evolve that adds a blob (shared-blob-dir tests)."""
    root['generation'] = root.get('generation', 0) + 1
    root['evolved'] = pgsupport.blob(b'evolved')
    commit('bump with a blob')


def read_blob(blob):
    with blob.open() as f:
        return f.read()


def blob_files(directory):
    """The committed blob files under ``directory``, relative to it."""
    found = set()
    for top, _, files in os.walk(directory):
        found.update(os.path.relpath(os.path.join(top, f), directory)
                     for f in files if f.endswith('.blob'))
    return found


class ClusterLayer:
    """One PostgreSQL cluster for these tests (each uses databases of
    its own)."""

    cluster = None
    skip_reason = None

    @classmethod
    def setUp(cls):
        cls.skip_reason = pgsupport.missing()
        if cls.skip_reason:
            return
        cls.cluster = pgsupport.Cluster()
        try:
            cls.cluster.start()
        except BaseException:
            cls.cluster.stop()
            raise

    @classmethod
    def tearDown(cls):
        if cls.cluster is not None:
            cls.cluster.stop()
            cls.cluster = None


class RelStorageTests(unittest.TestCase):

    layer = ClusterLayer

    def setUp(self):
        if ClusterLayer.skip_reason:
            self.skipTest(ClusterLayer.skip_reason)
        self.cluster = ClusterLayer.cluster
        self.tmp = tempfile.mkdtemp(prefix='rs-')
        self.addCleanup(shutil.rmtree, self.tmp, True)

    # -- fixtures -------------------------------------------------------------

    def site(self, name, keep_history=False, objects=20, blobs=3):
        """A site database ``name`` with objects and blobs, adopted as
        generation 1; returns its RelStorageRoot."""
        import transaction
        from BTrees.OOBTree import OOBTree
        from ZODB.blob import Blob
        from collective.safedeploy.data.relstorage import RelStorageRoot
        self.caches = os.path.join(self.tmp, 'cache-' + name)
        os.mkdir(self.caches)
        root = RelStorageRoot(os.path.join(self.tmp, name),
                              self.cluster.dsn(name),
                              keep_history=keep_history,
                              blob_cache=self.blob_cache(name),
                              cache_dirs=[self.caches])
        with root.admin() as cur:
            cur.execute('CREATE DATABASE %s' % name)
        self.addCleanup(self.drop_all, root)
        db = pgsupport.open_db(root.dsn, self.blob_cache(name),
                               keep_history, create=True)
        try:
            tm = transaction.TransactionManager()
            conn = db.open(transaction_manager=tm)
            r = conn.root()
            r['writes'] = OOBTree()
            for i in range(objects):
                r['o%d' % i] = OOBTree({'i': i})
            for i in range(blobs):
                b = Blob()
                with b.open('w') as f:
                    f.write(b'blob %d ' % i * 1000)
                r['b%d' % i] = b
            tm.commit()
            conn.close()
        finally:
            db.close()
        self.assertEqual(root.adopt(), '1')
        return root

    def blob_cache(self, name):
        path = os.path.join(self.tmp, 'blobcache-' + name)
        os.makedirs(path, exist_ok=True)
        return path

    def drop_all(self, root):
        with root.admin() as cur:
            for db in root.databases(cur):
                cur.execute('SELECT pg_terminate_backend(pid) FROM '
                            'pg_stat_activity WHERE datname = %s', (db,))
                cur.execute('DROP DATABASE IF EXISTS %s' % db)

    def read(self, root, dbname, key):
        import transaction
        db = pgsupport.open_db(root.generation_dsn(dbname) if dbname.isdigit()
                               else make_dsn(root.params, dbname),
                               tempfile.mkdtemp(dir=self.tmp),
                               root.keep_history)
        try:
            tm = transaction.TransactionManager()
            conn = db.open(transaction_manager=tm)
            value = conn.root().get(key)
            if hasattr(value, 'items'):
                value = dict(value.items())
            tm.abort()
            conn.close()
            return value
        finally:
            db.close()

    def writer(self, root):
        shared = root.shared_blob_dir
        p = subprocess.Popen(
            [sys.executable, os.path.join(HERE, 'pgsupport.py'), root.dsn,
             os.path.join(shared, 'current') if shared else
             tempfile.mkdtemp(dir=self.tmp),
             'true' if root.keep_history else 'false',
             'true' if shared else 'false'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=self.env())
        self.addCleanup(lambda: p.poll() is None and p.kill())
        p.acked = []
        return p

    def stop_writer(self, p):
        out, err = p.communicate(b'', timeout=60)
        return p.acked + [int(x) for x in out.split()], err.decode()

    def wait_for_writes(self, p, n):
        # the writer commits before it prints; the first acks show it runs
        got = 0
        while got < n:
            line = p.stdout.readline()
            self.assertTrue(line, 'the writer died')
            p.acked.append(int(line))
            got += 1
        return got

    def env(self):
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(sys.path)
        return env

    def evolve_args(self, root):
        return [sys.executable, '-m', 'collective.safedeploy.evolve.command',
                '--storage', 'relstorage', '--dsn', root.dsn, '--data',
                root.path, '--evolve', __name__ + ':bump', '-q']

    # -- generations as databases ---------------------------------------------

    def test_generations_snapshot_switch_prune(self):
        root = self.site('gens')
        self.assertEqual(root.databases(), {'gens': ('1', True)})
        before = root.facts('gens')
        with root.lock():
            # nothing connected: CREATE DATABASE ... TEMPLATE
            self.assertEqual(root.new_generation(), '2')
        manifest = root.generations.manifest('2')
        self.assertEqual(manifest['copied_by'], 'template')
        self.assertEqual(manifest['database_at_build'], 'gens_g2')
        self.assertEqual((manifest['last_tid'], manifest['objects'],
                          manifest['blobs']),
                         (before['last_tid'], before['objects'], 3))
        with root.lock():
            root.switch_to('2')
        self.assertEqual(root.databases(), {'gens': ('2', True),
                                            'gens_g1': ('1', True)})
        entry = [e for e in root.generations.journal.entries()
                 if e['event'] == 'published'][-1]
        self.assertEqual(entry['databases'], {'2': 'gens', '1': 'gens_g1'})
        self.assertEqual(root.current_name(), '2')
        # a client connected: pg_dump/pg_restore, caught up
        conn = root.connect('gens')
        try:
            with root.lock():
                self.assertEqual(root.new_generation(), '3')
        finally:
            conn.close()
        self.assertEqual(root.generations.manifest('3')['copied_by'], 'dump')
        self.assertEqual(root.generations.manifest('3')['blobs'], 3)
        self.assertEqual(self.read(root, '3', 'o5'), {'i': 5})
        # bin/snapshot on the same data root
        from collective.safedeploy.data import snapshot
        options = dict(storage='relstorage', dsn=root.dsn, data=root.path,
                       keep='3')
        import contextlib
        import io
        import json
        out = io.StringIO()
        with contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(out):
            self.assertEqual(snapshot.main(['-q'], **options), 0)
            self.assertIn('gens_g4', root.databases())
            start = out.tell()
            self.assertEqual(snapshot.main(['--list', '--json'], **options),
                             0)
            listed = json.loads(out.getvalue()[start:])
            self.assertEqual([r['database'] for r in listed],
                             ['gens_g1', 'gens', 'gens_g3', 'gens_g4'])
            start = out.tell()
            self.assertEqual(snapshot.main(['--prune'], **options), 0)
            self.assertEqual(out.getvalue()[start:],
                             'pruned data generation 3\n')
            start = out.tell()
            self.assertEqual(snapshot.main(['--prune'], **options), 0)
            self.assertEqual(out.getvalue()[start:], 'nothing to prune: 3 '
                             'data generations, keep=3\n')
            self.assertEqual(snapshot.main(['mysnap'], **options), 1)
        self.assertIn('snapshots are data generations named by number',
                      out.getvalue())
        # 3 goes: 1 is the previous good one, 4 the newest
        self.assertEqual(sorted(root.databases()),
                         ['gens', 'gens_g1', 'gens_g4'])
        # removing a generation drops its database; never the current one
        with root.lock():
            root.generations.discard('1', 'no longer needed')
            self.assertRaises(Refused, root.generations.discard, '2', 'x')
        self.assertEqual(sorted(root.databases()), ['gens', 'gens_g4'])

    def test_snapshot_while_writing_history_preserving(self):
        root = self.site('hpsnap', keep_history=True)
        w = self.writer(root)
        self.wait_for_writes(w, 5)
        with root.lock():
            name = root.new_generation()
        acked, _ = self.stop_writer(w)
        m = root.generations.manifest(name)
        self.assertEqual(m['copied_by'], 'dump')
        self.assertTrue(m['keep_history'])
        copy = self.read(root, name, 'writes')
        # the copy is a consistent state: a prefix of the acknowledged
        # writes (the first five were made before it started)
        self.assertEqual(sorted(copy), list(range(len(copy))))
        self.assertGreaterEqual(len(copy), 5)
        # keep-history never changes for an existing schema
        from collective.safedeploy.core.errors import ConfigurationError
        from collective.safedeploy.data.relstorage import RelStorageRoot
        wrong = RelStorageRoot(root.path, root.dsn, keep_history=False)
        with self.assertRaises(ConfigurationError) as e:
            wrong.keep_history
        self.assertIn('database hpsnap is history-preserving', str(e.exception))
        self.assertTrue(RelStorageRoot(root.path, root.dsn).keep_history)

    # -- the snapshot paired with a release, restored --------------------------

    def test_restore_the_snapshot_of_a_release(self):
        root = self.site('rest', keep_history=True)
        with root.lock():
            taken = root.snapshot_for_release('1.1')
        self.assertEqual((taken['name'], taken['generation'],
                          taken['backend'], taken['database']),
                         ('2', '1', 'relstorage', 'rest_g2'))
        self.assertEqual(root.current_name(), '1')   # not made current
        self.assertEqual(root.generations.manifest('2')['release'], '1.1')
        snapshot = root.facts('rest_g2')
        w = self.writer(root)
        self.wait_for_writes(w, 3)
        acked, _ = self.stop_writer(w)
        cache = os.path.join(self.caches, 'client-0.rscache')
        open(cache, 'w').close()
        before = root.databases()
        # writes would be discarded: refused, counted, nothing changed
        with self.assertRaises(Refused) as e:
            root.restore('2')
        self.assertIn('restoring data generation 2 would discard %d '
                      'transaction(s) committed after it' % len(acked),
                      str(e.exception))
        self.assertIn('--discard-writes', str(e.exception))
        self.assertIn('kept in data generation 1', str(e.exception))
        self.assertEqual(root.databases(), before)
        self.assertEqual(root.current_name(), '1')
        self.assertTrue(os.path.exists(cache))
        # with consent: a copy of the snapshot is the site's database
        result = root.restore('2', discard_writes=True)
        self.assertEqual((result['generation'], result['replaced'],
                          result['discarded']), ('3', '1', len(acked)))
        self.assertEqual(root.databases(), {'rest': ('3', True),
                                            'rest_g1': ('1', True),
                                            'rest_g2': ('2', True)})
        self.assertEqual(root.current_name(), '3')
        self.assertFalse(os.path.exists(cache))
        self.assertEqual(self.read(root, '3', 'writes'), {})
        # what was discarded is kept; the snapshot is as it was taken
        self.assertEqual(set(self.read(root, '1', 'writes')), set(acked))
        self.assertEqual(root.facts('rest_g2'), snapshot)
        # ... and can be restored again (nothing written since: no
        # consent needed), by bin/snapshot too
        import contextlib
        import io
        from collective.safedeploy.data import snapshot as snapshots
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(snapshots.main(
                ['-q', '--restore', '2'], storage='relstorage', dsn=root.dsn,
                data=root.path, client_cache=self.caches), 0)
        self.assertEqual(out.getvalue(), 'restored data generation 2 as data '
                         'generation 4, database rest (generation 3 kept; 0 '
                         'client cache files removed)\n')
        self.assertEqual(root.current_name(), '4')
        with self.assertRaises(Refused) as e:
            root.restore('4')
        self.assertIn('data generation 4 is the current one',
                      str(e.exception))

    def write_retrying(self, root, key, value):
        """``root['writes'][key] = value`` on the site's database through
        RelStorage, retried for up to 20 s (a guard may need a moment to
        allow connections again after a kill)."""
        pgsupport.write_retrying(root.dsn, tempfile.mkdtemp(dir=self.tmp),
                                 key, value, root.keep_history)

    def fork(self, function):
        pid = os.fork()
        if pid == 0:       # the child
            code = 1
            try:
                function()
                code = 0
            finally:
                os._exit(code)
        return pid

    def test_restore_kills(self):
        """SIGKILL a restore at random moments: the site's database is the
        generation it was, unchanged, or a whole copy of the snapshot;
        writable at once; a re-run converges."""
        root = self.site('rkills', objects=5, blobs=1)
        rng = random.Random(int(os.environ.get('SAFEDEPLOY_SEED', '17')))
        with root.lock():
            root.snapshot_for_release('1.1')
        snapshot = self.read(root, '2', 'writes')
        written = {}            # generation: the writes acknowledged on it
        self.write_retrying(root, -1, -1)
        written['1'] = {-1}

        def restore():
            root.restore('2', discard_writes=True)

        def killed_after_create():
            # the database made, SIGKILL before it is commented on: a
            # database no generation claims
            def create_and_die(name, source_db, progress=None):
                with root.admin() as cur:
                    cur.execute('CREATE DATABASE %s TEMPLATE %s' % (
                        root.spare(name), source_db))
                os.kill(os.getpid(), signal.SIGKILL)
            root.create_copy = create_and_die
            restore()
        _, status = os.waitpid(self.fork(killed_after_create), 0)
        self.assertEqual(os.WTERMSIG(status), signal.SIGKILL)
        self.assertEqual(root.databases()['rkills_g3'], (None, True))
        started = time.monotonic()
        _, status = os.waitpid(self.fork(restore), 0)
        self.assertEqual(status, 0)
        self.assertEqual(sorted(root.databases()),
                         ['rkills', 'rkills_g1', 'rkills_g2'])
        self.assertEqual(root.current_name(), '4')
        duration = time.monotonic() - started
        print('(one restore: %.2f s)' % duration, end=' ')
        kills = 0
        for n in range(15):
            expected = root.databases()[root.site][0]
            pid = self.fork(restore)
            time.sleep(rng.uniform(0, duration))
            try:
                os.kill(pid, signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            self.write_retrying(root, n, n)     # writable at once
            now = root.databases()[root.site][0]
            if now != expected:   # a whole copy of the snapshot
                self.assertGreater(int(now), int(expected))
                self.assertEqual(root.generations.manifest(now)[
                    'restored_from'], '2')
                written[now] = set(snapshot)
            written.setdefault(now, set()).add(n)
            self.assertEqual(set(self.read(root, now, 'writes')),
                             written[now])
        self.assertGreaterEqual(kills, 10)
        # every write acknowledged is where it was written: nothing lost
        with root.lock():
            root.reconcile()
        for generation, writes in written.items():
            self.assertEqual(set(self.read(root, generation, 'writes')),
                             writes, generation)
        self.assertEqual(self.read(root, '2', 'writes'), snapshot)
        result = root.restore('2', discard_writes=True)
        self.assertEqual(root.current_name(), result['generation'])
        rows = root.history()
        self.assertFalse([r for r in rows if r['exists'] and r['state']
                          not in ('published', 'built', 'rolled back')],
                         rows)
        spare = {db for db in root.databases() if db != root.site}
        self.assertEqual(spare, {root.spare(r['name']) for r in rows
                                 if r['exists'] and not r['current']})

    # -- blobs in a shared-blob-dir -------------------------------------------

    def shared_site(self, name):
        """A history-free site whose blobs are in a shared-blob-dir (not
        large objects), adopted as generation 1."""
        import transaction
        from BTrees.OOBTree import OOBTree
        from collective.safedeploy.data.relstorage import RelStorageRoot
        shared = os.path.join(self.tmp, 'shared-' + name)
        os.mkdir(shared)
        self.caches = os.path.join(self.tmp, 'cache-' + name)
        os.mkdir(self.caches)
        root = RelStorageRoot(os.path.join(self.tmp, name),
                              self.cluster.dsn(name), keep_history=False,
                              shared_blob_dir=shared,
                              cache_dirs=[self.caches])
        with root.admin() as cur:
            cur.execute('CREATE DATABASE %s' % name)
        self.addCleanup(self.drop_all, root)
        # the site's blob-dir before it is in generations: the directory
        db = pgsupport.open_db(root.dsn, shared, create=True, shared=True)
        try:
            tm = transaction.TransactionManager()
            conn = db.open(transaction_manager=tm)
            conn.root()['writes'] = OOBTree()
            for i in range(3):
                conn.root()['b%d' % i] = pgsupport.blob(b'blob %d' % i)
            tm.commit()
            conn.close()
        finally:
            db.close()
        self.assertEqual(root.adopt(), '1')
        return root

    def shared_read(self, root, generation, check):
        """``check(root)`` on generation ``generation`` through its own
        blob directory (the current one: the clients' ``current`` link)."""
        import transaction
        shared = root.shared_blob_dir
        current = generation == root.current_name()
        db = pgsupport.open_db(
            root.dsn if current else root.generation_dsn(generation),
            os.path.join(shared, 'current' if current else generation),
            shared=True)
        try:
            tm = transaction.TransactionManager()
            conn = db.open(transaction_manager=tm)
            try:
                return check(conn.root())
            finally:
                tm.abort()
                conn.close()
        finally:
            db.close()

    def blob_of(self, root, key):
        """Where the blob at ``root[key]`` of the current generation is,
        relative to its generation's blob directory."""
        shared = os.path.realpath(os.path.join(root.shared_blob_dir,
                                               'current'))
        return self.shared_read(root, root.current_name(), lambda r: (
            os.path.relpath(os.path.realpath(r[key].committed()), shared)))

    def test_shared_blob_dir(self):
        """Snapshots, evolve-copy (with a writer committing blobs) and
        restores with blobs in a shared-blob-dir: each generation has a
        blob directory of its own, <dir>/N, behind <dir>/current."""
        from collective.safedeploy.evolve.relstorage import \
            RelStorageEvolveCopy
        root = self.shared_site('shb')
        shared = root.shared_blob_dir
        link = os.path.join(shared, 'current')
        self.assertEqual(os.readlink(link), '1')
        self.assertEqual(len(blob_files(os.path.join(shared, '1'))), 3)
        self.assertEqual(root.facts('shb')['blobs'], 3)
        conn = root.connect('shb')
        try:
            cur = conn.cursor()
            cur.execute('SELECT (SELECT count(*) FROM blob_chunk), '
                        '(SELECT count(*) FROM pg_largeobject_metadata)')
            self.assertEqual(cur.fetchone(), (0, 0))   # no large objects
        finally:
            conn.close()

        def writes(r):
            w = r['writes']
            return {i: read_blob(w[i]) for i in w}
        w = self.writer(root)
        self.wait_for_writes(w, 5)
        # a snapshot while blobs are written
        with root.lock():
            self.assertEqual(root.snapshot_for_release('1.1')['name'], '2')
        self.assertEqual(root.generations.manifest('2')['copied_by'], 'dump')
        # evolve-copy while blobs are written; the evolve adds one
        RelStorageEvolveCopy(root, __name__ + ':bump_blob',
                             say=lambda *a: None).run()
        self.assertEqual(root.current_name(), '3')
        self.assertEqual(os.readlink(link), '3')
        self.wait_for_writes(w, 5)        # writes go on, on generation 3
        acked, _ = self.stop_writer(w)
        got = self.shared_read(root, '3', writes)
        self.assertEqual(set(acked) - set(got), set(),
                         'acknowledged writes lost')
        self.assertEqual(got, {i: b'write %d' % i for i in got})
        # every blob the snapshot and the old generation name is in their
        # own directories
        snapshot = self.shared_read(root, '2', writes)
        self.assertEqual(snapshot, {i: b'write %d' % i
                                    for i in range(len(snapshot))})
        old = self.shared_read(root, '1', writes)
        self.assertEqual(old, {i: b'write %d' % i for i in range(len(old))})
        self.assertEqual(self.shared_read(root, '2', lambda r: read_blob(
            r['b2'])), b'blob 2')
        # the generations' blobs are kept apart
        evolved = self.blob_of(root, 'evolved')
        self.assertIn(evolved, blob_files(os.path.join(shared, '3')))
        for other in '12':
            self.assertNotIn(evolved, blob_files(os.path.join(shared,
                                                              other)))
        import transaction
        db = pgsupport.open_db(root.dsn, link, shared=True)
        try:
            tm = transaction.TransactionManager()
            c = db.open(transaction_manager=tm)
            c.root()['after'] = pgsupport.blob(b'after')
            tm.commit()
            c.close()
        finally:
            db.close()
        after = self.blob_of(root, 'after')
        self.assertEqual([g for g in '123' if after in blob_files(
            os.path.join(shared, g))], ['3'])
        # rollback with data to the snapshot: refused, then a copy of it
        with self.assertRaises(Refused) as e:
            root.restore('2')
        self.assertIn('would discard at least', str(e.exception))
        self.assertIn('kept in data generation 3', str(e.exception))
        self.assertEqual(os.readlink(link), '3')
        self.assertEqual(root.restore('2', discard_writes=True)[
            'generation'], '4')
        self.assertEqual(os.readlink(link), '4')
        self.assertEqual(self.shared_read(root, '4', writes), snapshot)
        self.assertIsNone(self.shared_read(root, '4', lambda r: r.get(
            'evolved')))
        self.assertNotIn(after, blob_files(os.path.join(shared, '4')))
        self.assertIn(after, blob_files(os.path.join(shared, '3')))
        # and back to the evolved generation (nothing written since)
        root.rollback('3')
        self.assertEqual(os.readlink(link), '3')
        self.assertEqual(self.shared_read(root, '3', lambda r: read_blob(
            r['after'])), b'after')
        # a link a killed switch left wrong is put right from PostgreSQL
        os.unlink(link)
        os.symlink('4', link)
        with root.lock():
            root.reconcile()
        self.assertEqual(os.readlink(link), '3')
        # removing a generation removes its blob directory
        with root.lock():
            root.generations.discard('4', 'no longer needed')
        self.assertFalse(os.path.exists(os.path.join(shared, '4')))
        self.assertNotIn('shb_g4', root.databases())

    def test_shared_blob_dir_kills(self):
        """SIGKILL evolve-copy at random moments with blobs in a
        shared-blob-dir: once the site's database takes connections again
        the blob link names its generation, and every blob written is
        readable through it."""
        import transaction
        from collective.safedeploy.evolve.relstorage import \
            RelStorageEvolveCopy
        root = self.shared_site('shkills')
        link = os.path.join(root.shared_blob_dir, 'current')
        rng = random.Random(int(os.environ.get('SAFEDEPLOY_SEED', '17')))

        def write_blob(n):
            deadline = time.monotonic() + 20
            while True:
                tm = transaction.TransactionManager()
                client = None
                try:
                    client = pgsupport.open_db(root.dsn, link, shared=True)
                    conn = client.open(transaction_manager=tm)
                    conn.root()['writes'][n] = pgsupport.blob(b'w%d' % n)
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

        def evolve_copy():
            RelStorageEvolveCopy(root, __name__ + ':bump_blob',
                                 say=lambda *a: None).run()

        def killed_after_the_link_flipped():
            # SIGKILL just after the link names the new generation, before
            # the renames commit: the guard points it back
            flip = root.point_blobs

            def flip_and_die(name):
                flip(name)
                if name != root.current_name():
                    os.kill(os.getpid(), signal.SIGKILL)
            root.point_blobs = flip_and_die
            evolve_copy()
        write_blob(-1)
        _, status = os.waitpid(self.fork(killed_after_the_link_flipped), 0)
        self.assertEqual(os.WTERMSIG(status), signal.SIGKILL)
        write_blob(-2)
        self.assertEqual(root.databases()[root.site][0], '1')
        self.assertEqual(os.readlink(link), '1')
        self.assertEqual(self.shared_read(root, '1', lambda r: read_blob(
            r['writes'][-2])), b'w-2')
        started = time.monotonic()
        _, status = os.waitpid(self.fork(evolve_copy), 0)
        self.assertEqual(status, 0)
        duration = time.monotonic() - started
        kills = 0
        for n in range(12):
            pid = self.fork(evolve_copy)
            time.sleep(rng.uniform(0, duration))
            try:
                os.kill(pid, signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            write_blob(n)        # the site's database takes connections
            truth = root.databases()[root.site][0]
            self.assertEqual(os.readlink(link), truth, n)
            got = self.shared_read(root, truth, lambda r: {
                i: read_blob(b) for i, b in r['writes'].items()})
            self.assertEqual(set(got), set(range(-2, n + 1)))
            self.assertEqual(got, {i: b'w%d' % i for i in got})
        self.assertGreaterEqual(kills, 8)

    # -- evolve-copy ----------------------------------------------------------

    def run_evolve_copy(self, root, keep_history=False):
        w = self.writer(root)
        self.wait_for_writes(w, 10)
        p = subprocess.run(self.evolve_args(root)[:-1], env=self.env(),
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr + p.stdout)
        self.wait_for_writes(w, 10)       # writes go on on the new one
        acked, err = self.stop_writer(w)
        return p.stdout, acked

    def write_after(self, root):
        """One transaction on the current generation (the writer's
        acknowledgements read so far may all predate the switch)."""
        import transaction
        db = pgsupport.open_db(root.dsn, tempfile.mkdtemp(dir=self.tmp),
                               root.keep_history)
        try:
            tm = transaction.TransactionManager()
            conn = db.open(transaction_manager=tm)
            conn.root()['after'] = 1
            tm.commit()
            conn.close()
        finally:
            db.close()

    def check_evolved(self, root, acked, generation='2'):
        self.assertEqual(root.current_name(), generation)
        self.assertEqual(root.databases()[root.site][0], generation)
        writes = self.read(root, generation, 'writes')
        missing = set(acked) - set(writes)
        self.assertEqual(missing, set(), 'acknowledged writes lost')
        self.assertEqual(self.read(root, generation, 'generation'), 1)
        # the old generation is kept, unevolved
        self.assertIsNone(self.read(root, '1', 'generation'))

    def test_evolve_copy_with_writer_history_free(self):
        root = self.site('evhf')
        out, acked = self.run_evolve_copy(root)
        self.assertIn('read-only window:', out)
        self.assertIn('freeze:', out)
        self.check_evolved(root, acked)
        # bin/rollback's data step (switch back to the release's data):
        # refused without consent, then done, then undone
        from collective.safedeploy.release.rollback import DataStep
        self.write_after(root)
        options = {'data': root.path, 'dsn': root.dsn,
                   'storage': 'relstorage', 'client-cache': self.caches}
        self.assertRaises(Refused, DataStep('switch-back', '1', options,
                                            False).run)
        self.assertEqual(root.current_name(), '2')
        step = DataStep('switch-back', '1', options, True)
        self.assertEqual(step.run()['generation'], '1')
        self.assertEqual(root.databases()[root.site][0], '1')
        self.assertIn('back on generation 2', step.undo())
        self.assertEqual(root.databases()[root.site][0], '2')
        self.assertEqual(root.current_name(), '2')

    def test_evolve_copy_with_writer_history_preserving(self):
        root = self.site('evhp', keep_history=True)
        out, acked = self.run_evolve_copy(root)
        self.check_evolved(root, acked)
        # rollback with data: writes since the switch are not discarded
        # without consent ...
        self.write_after(root)
        open(os.path.join(self.caches, 'client-0.rscache'), 'w').close()
        self.assertRaises(Refused, root.rollback)
        self.assertEqual(root.current_name(), '2')
        self.assertTrue(os.listdir(self.caches))
        # ... and kept in the generation left when given
        result = root.rollback(discard_writes=True)
        self.assertEqual((result['generation'], result['left']), ('1', '2'))
        self.assertEqual(root.databases()[root.site][0], '1')
        self.assertEqual(os.listdir(self.caches), [])
        self.assertEqual(set(acked) - set(self.read(root, '2', 'writes')),
                         set())
        self.assertIsNone(self.read(root, '1', 'generation'))

    def fork_evolve_copy(self, root):
        """evolve-copy in a forked child (no interpreter start: cheap to
        kill often); returns its pid."""
        from collective.safedeploy.evolve.relstorage import \
            RelStorageEvolveCopy
        pid = os.fork()
        if pid == 0:       # the child
            code = 1
            try:
                RelStorageEvolveCopy(root, __name__ + ':bump',
                                     say=lambda *a: None).run()
                code = 0
            finally:
                os._exit(code)
        return pid

    def test_kills(self):
        """SIGKILL evolve-copy at random moments: production is unchanged
        (or switched whole) and writable at once; a re-run converges."""
        root = self.site('kills', objects=5, blobs=1)
        rng = random.Random(int(os.environ.get('SAFEDEPLOY_SEED', '17')))

        def write(n):
            # writable at once through RelStorage (the guard may need a
            # moment to allow connections again); the client goes away
            # again, so the copies are made by template
            pgsupport.write_retrying(root.dsn, self.blob_cache('kills'), n, n)

        write(-1)
        started = time.monotonic()
        _, status = os.waitpid(self.fork_evolve_copy(root), 0)
        self.assertEqual(status, 0)
        duration = time.monotonic() - started
        print('(one evolve-copy: %.2f s)' % duration, end=' ')
        kills = 0
        for n in range(30):
            expected = int(root.databases()[root.site][0])
            pid = self.fork_evolve_copy(root)
            time.sleep(rng.uniform(0, duration))
            try:
                os.kill(pid, signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            write(n)
            # unchanged, or switched whole to the evolved copy of it
            now = int(root.databases()[root.site][0])
            if now != expected:
                self.assertGreater(now, expected)
                self.assertEqual(
                    root.generations.manifest(str(now))['source'],
                    str(expected))
        self.assertGreaterEqual(kills, 30)
        _, status = os.waitpid(self.fork_evolve_copy(root), 0)
        self.assertEqual(status, 0)
        # one bump per switched generation: each evolved exactly once
        chain, name = 0, root.current_name()
        while name != '1':
            chain += 1
            name = root.generations.manifest(name)['source']
        self.assertEqual(self.read(root, root.current_name(), 'generation'),
                         chain)
        with root.lock():
            root.generations.prune(keep=3)
        current = root.current_name()
        self.assertEqual(root.databases()[root.site][0], current)
        rows = root.history()
        self.assertFalse([r for r in rows if r['exists'] and
                          r['state'] not in ('published', 'built',
                                             'rolled back')], rows)
        # every write acknowledged meanwhile is in the current generation
        self.assertEqual(set(range(-1, 30)) - set(self.read(
            root, current, 'writes')), set())
        spare = {db for db in root.databases() if db != root.site}
        self.assertEqual(spare, {root.spare(r['name']) for r in rows
                                 if r['exists'] and not r['current']})


class RelStorageRecipeTests(unittest.TestCase):
    """storage = relstorage in the evolve-copy part, with a real
    bin/buildout: no ZEO part needed, a DSN required."""

    def test_dsn_is_required(self):
        from collective.safedeploy.tests import support
        from collective.safedeploy.tests.test_evolve_recipe import \
            has_entry_point
        if not has_entry_point():
            self.skipTest('the site environment has no zc.buildout entry '
                          'point evolve-copy (run "bash dev.sh setup")')
        sample = support.SampleBuildout()
        self.addCleanup(sample.cleanup)
        sample.write_config('''\
            parts = evolve-copy

            [evolve-copy]
            recipe = collective.safedeploy:evolve-copy
            storage = relstorage
            dsn = host=/run/postgresql
            data = var/data
            evolve = some.package
            ''')
        result = sample.buildout()
        self.assertNotEqual(result.returncode, 0)
        self.assertIn('dsn = host=/run/postgresql must name the site\'s '
                      'database with dbname=', result.output)
        self.assertNotIn('Traceback', result.output)
