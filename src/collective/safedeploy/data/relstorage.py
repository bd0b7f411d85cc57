"""A data root on RelStorage/PostgreSQL: generations are databases.

::

    DATA/generations/1/safedeploy-manifest.json   (what generation 1 is)
    DATA/generations/2/...
    DATA/current -> generations/2

    PostgreSQL:  site      generation 2 (what the clients' DSN names)
                 site_g1   generation 1

Generation N is the database ``<site>_gN`` while it is not current; the
current one is ``<site>``, the database name in the clients' DSN.  Making
another generation current renames both in one transaction (after
disallowing connections to them and terminating their sessions), so a
client that reconnects finds the new one under the old name.

Which database is which generation is recorded twice: in PostgreSQL
itself, as a comment on each database (``COMMENT ON DATABASE``, kept
through renames and in the same catalogue), and in the data root's one
journal (:class:`~collective.safedeploy.core.store.Store`), whose
``published`` entries name the physical database of each generation.
The comments are the truth; :meth:`RelStorageRoot.reconcile` brings the
``current`` link and the journal in line with them after a killed run.

A database disallowing connections is what a run killed inside a switch
could leave: a guard process (:func:`guard`) started before the switch
allows connections again on every generation when its parent is gone.

A snapshot is a generation that is not made current (the one taken
before a flip is paired with the release left); restoring it
(:meth:`RelStorageRoot.restore`) makes a copy of it the site's database,
so that it stays as it was taken.  With a ``shared-blob-dir`` each
generation has a blob directory of its own, ``<dir>/N``, behind the
``<dir>/current`` link the clients name, flipped with the renames.

Removing a generation drops its database (``DROP DATABASE``; a
``TRUNCATE`` would leak the blobs' large objects).

(One module on purpose: :class:`RelStorageRoot` is the one type of a
data root on PostgreSQL, and every SQL statement that creates, renames,
comments on or drops a generation's database is here, so that what the
catalogue says and what the journal says cannot be changed apart.  The
part's options and the commands' steps on it are in
:mod:`.relstorage_options`.)
"""
import contextlib
import logging
import os
import re
import tempfile
import time

from ..core import commands
from ..core import fsutil
from ..core.errors import ConfigurationError
from ..core.errors import NotFound
from ..core.errors import Refused
from ..core.errors import SafeDeployError
from ..core.store import DATA_GENERATION
from ..core.store import Store

logger = logging.getLogger('collective.safedeploy')

GENERATIONS = 'generations'
CURRENT = 'current'
COMMENT = 'collective.safedeploy generation %s of %s'
COMMENT_RE = re.compile(r'collective\.safedeploy generation (\d+) of (.+)\Z')
SITE = re.compile(r'[a-z_][a-z0-9_]{0,50}\Z')
# RelStorage's commit lock on PostgreSQL: pg_advisory_xact_lock(-1) in
# lock_and_choose_tid (history-free and history-preserving alike)
COMMIT_LOCK = -1


class RelStorageError(SafeDeployError):
    pass


def _pg():
    try:
        import psycopg2
        import psycopg2.extensions
    except ImportError:
        raise ConfigurationError(
            'storage = relstorage needs psycopg2: install '
            'collective.safedeploy[relstorage]')
    return psycopg2


def parse_dsn(dsn):
    psycopg2 = _pg()
    try:
        params = psycopg2.extensions.parse_dsn(dsn or '')
    except psycopg2.ProgrammingError as e:
        raise ConfigurationError('dsn %r is not a libpq connection string '
                                 '(%s); e.g. dsn = dbname=site host=/run/'
                                 'postgresql' % (dsn, str(e).strip()))
    site = params.get('dbname')
    if not site or not SITE.match(site):
        raise ConfigurationError(
            'dsn %r must name the site\'s database with dbname= (lower-case '
            'letters, digits and "_", at most 51), e.g. dbname=site' % dsn)
    return params


def make_dsn(params, dbname):
    return _pg().extensions.make_dsn(**dict(params, dbname=dbname))


def ident(name):
    if not re.match(r'[a-z_][a-z0-9_]*\Z', name):
        raise ConfigurationError('invalid database name %r' % name)
    return '"%s"' % name


class RelStorageRoot:
    """The generations of one site's RelStorage database."""

    kind = 'relstorage'

    def __init__(self, path, dsn, keep_history=None, blob_cache=None,
                 shared_blob_dir=None, cache_dirs=()):
        """``path``: the data root's directory (manifests, journal, lock);
        ``dsn``: the clients' DSN (its dbname is the site's database);
        ``blob_cache``: the blob cache directory of the clients (blobs in
        the database) -- or ``shared_blob_dir``, blobs kept in a shared
        directory (then a directory per generation, ``<dir>/<N>``, behind
        a ``<dir>/current`` link); ``cache_dirs``: the clients' persistent
        cache directories (``cache-local-dir``), emptied by a rollback."""
        self.path = os.path.abspath(path)
        self.dsn = dsn
        self.params = parse_dsn(dsn)
        self.site = self.params['dbname']
        self.configured_history = keep_history
        self._keep_history = None
        self.blob_cache = blob_cache
        self.shared_blob_dir = shared_blob_dir
        self.cache_dirs = list(cache_dirs)
        self.generations = Store(
            os.path.join(self.path, GENERATIONS), DATA_GENERATION,
            current=os.path.join(self.path, CURRENT), remove=self._remove)

    @property
    def keep_history(self):
        """Whether the site's schema is history-preserving, as the schema
        says (``keep-history`` never changes for an existing schema); a
        configured value that differs is refused.  Before a schema
        exists: the configured value (default false)."""
        if self._keep_history is None:
            found = self.schema_history(self.site)
            wanted = self.configured_history
            if found is not None and wanted is not None and \
                    found != bool(wanted):
                raise ConfigurationError(
                    'keep-history = %s, but database %s is history-%s; '
                    'keep-history never changes for an existing schema: '
                    'set keep-history = %s (or convert into a new database '
                    'with zodbconvert)' % (
                        'true' if wanted else 'false', self.site,
                        'preserving' if found else 'free',
                        'true' if found else 'false'))
            if found is None:
                return bool(wanted)
            self._keep_history = found
        return self._keep_history

    def schema_history(self, db):
        """True (history-preserving), False (history-free) or None (no
        RelStorage schema, or no database yet)."""
        try:
            conn = self.connect(db)
        except RelStorageError:
            return None
        try:
            cur = conn.cursor()
            cur.execute("SELECT to_regclass('object_state') IS NOT NULL, "
                        "to_regclass('transaction') IS NOT NULL")
            has_schema, has_transactions = cur.fetchone()
        finally:
            conn.close()
        return has_transactions if has_schema else None

    # -- the server ---------------------------------------------------------

    def connect(self, dbname='postgres', autocommit=True):
        psycopg2 = _pg()
        try:
            conn = psycopg2.connect(make_dsn(self.params, dbname))
        except psycopg2.OperationalError as e:
            raise RelStorageError('cannot connect to database %s: %s' % (
                dbname, str(e).strip().splitlines()[0]))
        conn.autocommit = autocommit
        return conn

    @contextlib.contextmanager
    def admin(self):
        conn = self.connect()
        try:
            yield conn.cursor()
        finally:
            conn.close()

    def databases(self, cur=None):
        """{datname: (generation or None, allows connections)} of this
        site's databases."""
        if cur is None:
            with self.admin() as cur:
                return self.databases(cur)
        cur.execute("SELECT datname, shobj_description(oid, 'pg_database'),"
                    " datallowconn FROM pg_database")
        result = {}
        for name, comment, allow in cur.fetchall():
            m = COMMENT_RE.match(comment or '')
            if m and m.group(2) == self.site:
                result[name] = (m.group(1), allow)
            elif name == self.site or name.startswith(self.site + '_g'):
                result[name] = (None, allow)
        return result

    def physical(self):
        """{generation: database} as PostgreSQL says."""
        return {g: n for n, (g, _) in self.databases().items() if g}

    def database_of(self, name):
        db = self.physical().get(name)
        if db is None:
            raise NotFound('data generation %s has no database (%s shows '
                           'the ones there are)' % (name,
                                                    'bin/snapshot --list'))
        return db

    def sessions(self, cur, names, keep=0):
        cur.execute('SELECT count(*) FROM pg_stat_activity WHERE datname = '
                    'ANY(%s) AND pid <> pg_backend_pid() AND pid <> %s',
                    (list(names), keep))
        return cur.fetchone()[0]

    def terminate(self, cur, names, keep=0, timeout=30):
        """End every session on ``names`` (but the backend ``keep``) and
        wait until they are gone."""
        deadline = time.monotonic() + timeout
        while True:
            cur.execute('SELECT pg_terminate_backend(pid) FROM '
                        'pg_stat_activity WHERE datname = ANY(%s) AND pid <> '
                        'pg_backend_pid() AND pid <> %s', (list(names), keep))
            if not self.sessions(cur, names, keep):
                return
            if time.monotonic() > deadline:
                raise RelStorageError('sessions on %s did not end within '
                                      '%d s' % (', '.join(names), timeout))
            time.sleep(0.01)

    def set_allow(self, cur, names, allow):
        for n in names:
            cur.execute('ALTER DATABASE %s ALLOW_CONNECTIONS %s' % (
                ident(n), 'true' if allow else 'false'))

    # -- where things are ---------------------------------------------------

    def current_name(self):
        return self.generations.current_name()

    def lock(self, what='a snapshot, switch or rollback of this data'):
        return self.generations.lock(what)

    def next_name(self):
        numbers = [0]
        names = set(self.generations.on_disk()) | set(
            e.get('name') for e in self.generations.journal.entries()
            if e.get('name')) | set(self.physical())
        for name in names:
            if str(name).isdigit():
                numbers.append(int(name))
        return str(max(numbers) + 1)

    def spare(self, name):
        return '%s_g%s' % (self.site, name)

    def generation_dsn(self, name):
        return make_dsn(self.params, self.database_of(name))

    # -- keeping the records in line with PostgreSQL -------------------------

    def reconcile(self):
        """After a killed run (call under the lock): every generation
        allows connections again, the ``current`` link names the
        generation the site's database is, copies a killed run left are
        dropped."""
        gens = self.generations
        gens.recover()
        with self.admin() as cur:
            self.drop_killed_copies(cur)
            dbs = self.databases(cur)
            self.align_blobs(dbs)
            self.set_allow(cur, [n for n, (g, a) in dbs.items()
                                 if g and not a], True)
        truth = dbs.get(self.site, (None, True))[0]
        if truth is not None and truth != gens.current_name() and \
                gens.is_complete(truth):
            gens.flip(truth, via='recover', databases=self.physical())
        for name in gens.on_disk():
            if gens.entry(name) == 'staging':
                gens.discard(name, 'incomplete copy')

    def drop_killed_copies(self, cur):
        """What a run killed inside :meth:`create_copy` left in PostgreSQL
        (call under the lock: no live run is copying): a ``CREATE
        DATABASE`` its backend still runs is ended, a database it made
        but did not get to comment on (no generation) is dropped."""
        pattern = '^CREATE DATABASE "%s_g[0-9]+"' % self.site
        deadline = time.monotonic() + 30
        while True:
            cur.execute('SELECT pg_terminate_backend(pid) FROM '
                        'pg_stat_activity WHERE pid <> pg_backend_pid() AND '
                        "state = 'active' AND query ~ %s", (pattern,))
            if not cur.fetchall():
                break
            if time.monotonic() > deadline:
                raise RelStorageError('a CREATE DATABASE of a killed run did '
                                      'not end within 30 s')
            time.sleep(0.05)
        spare = re.compile(re.escape(self.site) + r'_g\d+\Z')
        for name, (generation, _) in self.databases(cur).items():
            if generation is None and spare.match(name):
                logger.info('dropping database %s, a copy a killed run '
                            'left', name)
                self.set_allow(cur, [name], False)
                self.terminate(cur, [name])
                cur.execute('DROP DATABASE %s' % ident(name))

    def _remove(self, path):
        """Store's removal of a generation: its database, then its
        directory.  Never the site's database."""
        name = os.path.basename(path)
        if name.isdigit():
            db = self.spare(name)
            with self.admin() as cur:
                dbs = self.databases(cur)
                if db in dbs and dbs[db][0] in (None, name):
                    self.set_allow(cur, [db], False)
                    self.terminate(cur, [db])
                    cur.execute('DROP DATABASE %s' % ident(db))
            if self.shared_blob_dir:
                fsutil.remove_tree(os.path.join(self.shared_blob_dir, name))
        fsutil.remove_tree(path)

    # -- adopting ------------------------------------------------------------

    def adopt(self):
        """Make the site's existing database generation 1."""
        with self.lock():
            gens = self.generations
            if gens.current_name() is not None:
                raise Refused('%s is already in generations (current is %s);'
                              ' nothing to adopt' % (self.path,
                                                     gens.current_name()))
            dbs = self.databases()
            if self.site not in dbs:
                raise NotFound('there is no database %s to adopt; create it '
                               '(RelStorage creates its schema on first '
                               'open)' % self.site)
            name = dbs[self.site][0] or self.next_name()
            if not gens.is_complete(name):
                gens.stage(name, adopted_from=self.site)
                with self.admin() as cur:
                    cur.execute('COMMENT ON DATABASE %s IS %%s' % ident(
                        self.site), (COMMENT % (name, self.site),))
                self.adopt_shared_blobs(name)
                gens.complete(name, self.describe(self.site, name))
            self.point_blobs(name)
            gens.flip(name, via='adopt', databases={name: self.site})
            return name

    def adopt_shared_blobs(self, name):
        """A shared-blob-dir that holds the site's blobs itself (the site
        stopped): they move into ``<dir>/<name>``, which ``<dir>/current``
        will name -- the clients' ``blob-dir`` from now on."""
        top = self.shared_blob_dir
        if not top:
            return
        target = self.shared_blob_path(name)
        os.makedirs(top, mode=0o700, exist_ok=True)
        if os.path.islink(os.path.join(top, CURRENT)):
            return              # in generations already
        os.makedirs(target, mode=0o700, exist_ok=True)
        for entry in os.listdir(top):
            if entry == name or entry == CURRENT:
                continue
            os.rename(os.path.join(top, entry), os.path.join(target, entry))
        fsutil.fsync_directory(top)

    def describe(self, db, name):
        facts = self.facts(db)
        return dict(storage='relstorage', database_at_build=db,
                    keep_history=self.keep_history, **facts)

    def facts(self, db):
        """last_tid, objects, blobs, missing large objects of ``db``."""
        conn = self.connect(db)
        try:
            cur = conn.cursor()
            cur.execute("SELECT to_regclass('object_state') IS NOT NULL")
            if not cur.fetchone()[0]:
                return dict(last_tid=None, objects=0, blobs=0)
            if self.keep_history:
                cur.execute('SELECT max(tid) FROM transaction')
                last = cur.fetchone()[0]
                cur.execute('SELECT count(DISTINCT zoid) FROM '
                            'current_object')
            else:
                cur.execute('SELECT max(tid) FROM object_state')
                last = cur.fetchone()[0]
                cur.execute('SELECT count(*) FROM object_state')
            objects = cur.fetchone()[0]
            if self.shared_blob_dir:
                blobs = self.shared_blob_count(db)
            else:
                cur.execute('SELECT count(*) FROM blob_chunk WHERE '
                            'chunk_num = 0')
                blobs = cur.fetchone()[0]
            cur.execute('SELECT count(*) FROM blob_chunk b WHERE NOT EXISTS '
                        '(SELECT 1 FROM pg_largeobject_metadata m WHERE '
                        'm.oid = b.chunk)')
            lost = cur.fetchone()[0]
        finally:
            conn.close()
        if lost:
            raise RelStorageError('database %s lacks %d of its blobs\' large '
                                  'objects' % (db, lost))
        return dict(last_tid=last, objects=objects, blobs=blobs)

    def transactions_after(self, db, tid):
        """``(count, exact)``: the transactions committed to ``db`` after
        ``tid`` (None: all of them).  History-free keeps no transaction
        log: then ``count`` is the transactions whose changes are still the
        newest state of some object -- at least one whenever anything was
        committed after ``tid`` -- and ``exact`` is False."""
        conn = self.connect(db)
        try:
            cur = conn.cursor()
            cur.execute("SELECT to_regclass('object_state') IS NOT NULL")
            if not cur.fetchone()[0]:
                return 0, True
            if self.keep_history:
                cur.execute('SELECT count(*) FROM transaction WHERE tid > %s',
                            (tid if tid is not None else -1,))
            else:
                cur.execute('SELECT count(DISTINCT tid) FROM object_state '
                            'WHERE tid > %s', (tid if tid is not None
                                               else -1,))
            return cur.fetchone()[0], bool(self.keep_history)
        finally:
            conn.close()

    # -- blobs in a shared-blob-dir ---------------------------------------------

    def shared_blob_path(self, name):
        """Generation ``name``'s blob directory (``shared-blob-dir``)."""
        return os.path.join(self.shared_blob_dir, name)

    def shared_blob_count(self, db):
        """The committed blob files in the blob directory of the
        generation database ``db`` is."""
        gen = self.databases().get(db, (None,))[0]
        path = self.shared_blob_path(gen) if gen else None
        count = 0
        if path and os.path.isdir(path):
            for _, _, files in os.walk(path):
                count += sum(1 for f in files if f.endswith('.blob'))
        return count

    def point_blobs(self, name):
        """``<shared-blob-dir>/current`` -> generation ``name``'s blob
        directory (what the clients' ``blob-dir`` names)."""
        if self.shared_blob_dir and name:
            fsutil.atomic_symlink(name, os.path.join(self.shared_blob_dir,
                                                     CURRENT))

    def align_blobs(self, dbs):
        """The blob link names the generation the site's database is
        (after a run killed between flipping the link and committing the
        renames)."""
        if not self.shared_blob_dir:
            return
        truth = dbs.get(self.site, (None,))[0]
        link = os.path.join(self.shared_blob_dir, CURRENT)
        now = os.readlink(link) if os.path.islink(link) else None
        if truth and now != truth:
            self.point_blobs(truth)

    # -- copies ----------------------------------------------------------------

    def create_copy(self, name, source_db, progress=None):
        """Make the database of generation ``name`` (``<site>_gN``) a copy
        of ``source_db``: by ``CREATE DATABASE ... TEMPLATE`` when nothing
        is connected to it, else by ``pg_dump``/``pg_restore`` while it
        runs.  Returns 'template' or 'dump' (the caller catches a dump up
        with :meth:`catch_up`)."""
        target = self.spare(name)
        with self.admin() as cur:
            if target in self.databases(cur):
                cur.execute('DROP DATABASE %s' % ident(target))
            if not self.sessions(cur, [source_db]):
                try:
                    cur.execute('CREATE DATABASE %s TEMPLATE %s' % (
                        ident(target), ident(source_db)))
                    how = 'template'
                except _pg().Error as e:     # somebody connected meanwhile
                    logger.debug('template copy refused: %s', e)
                    how = None
            else:
                how = None
            if how is None:
                cur.execute('CREATE DATABASE %s' % ident(target))
            cur.execute('COMMENT ON DATABASE %s IS %%s' % ident(target),
                        (COMMENT % (name, self.site),))
        if how is None:
            self.dump_restore(source_db, target)
            how = 'dump'
        return how

    def libpq_env(self):
        """pg_dump and pg_restore connect by these (no password on a
        command line)."""
        env = dict(os.environ)
        for key, var in (('host', 'PGHOST'), ('port', 'PGPORT'),
                         ('user', 'PGUSER'), ('password', 'PGPASSWORD'),
                         ('sslmode', 'PGSSLMODE')):
            if key in self.params:
                env[var] = str(self.params[key])
        return env

    def dump_restore(self, source_db, target_db):
        """A consistent copy of a running database (pg_dump takes one
        snapshot, large objects included)."""
        env = self.libpq_env()
        with tempfile.TemporaryDirectory(dir=self.path) as tmp:
            dump = os.path.join(tmp, 'dump')
            commands.run(['pg_dump', '-Fc', '-Z0', '-f', dump, '-d',
                          source_db], what='pg_dump of %s' % source_db,
                         env=env)
            commands.run(['pg_restore', '--no-owner', '-d', target_db, dump],
                         what='pg_restore into %s' % target_db, env=env)

    def zconfig(self, db, read_only=False, create=False, blob_dir=None):
        lines = ['%import relstorage', '<relstorage>',
                 '  keep-history %s' % ('true' if self.keep_history
                                        else 'false'),
                 '  read-only %s' % ('true' if read_only else 'false'),
                 '  create-schema %s' % ('true' if create else 'false'),
                 '  pack-gc false']
        if blob_dir:
            lines.append('  blob-dir %s' % blob_dir)
            lines.append('  shared-blob-dir %s' % (
                'true' if self.shared_blob_dir else 'false'))
        lines += ['  <postgresql>',
                  "    dsn %s" % make_dsn(self.params, db),
                  '  </postgresql>', '</relstorage>']
        return '\n'.join(lines) + '\n'

    def catch_up(self, source_db, target_db):
        """``zodbconvert --incremental``: the transactions of
        ``source_db`` after the copy's last one (the copy is complete:
        never after an interrupted copy, zodb/relstorage #205).  Returns
        False when there was nothing to catch up."""
        if self.facts(source_db)['last_tid'] == self.facts(
                target_db)['last_tid']:
            return False
        with tempfile.TemporaryDirectory(dir=self.path) as tmp:
            src_blobs = self.blob_dir_for(source_db, tmp, 'src')
            dst_blobs = self.blob_dir_for(target_db, tmp, 'dst')
            conf = os.path.join(tmp, 'convert.conf')
            with open(conf, 'w') as f:
                f.write(self.zconfig(source_db, read_only=True,
                                     blob_dir=src_blobs).replace(
                    '<relstorage>', '<relstorage source>', 1))
                f.write(self.zconfig(target_db, blob_dir=dst_blobs).replace(
                    '<relstorage>', '<relstorage destination>', 1))
            # in this process: no interpreter start in the window
            from relstorage import zodbconvert
            try:
                zodbconvert.main(['zodbconvert', '--incremental', conf])
            except SystemExit as e:
                raise RelStorageError('zodbconvert --incremental into %s '
                                      'failed: %s' % (target_db, e.code))
        return True

    def blob_dir_for(self, db, tmp, which):
        if self.shared_blob_dir:
            gen = self.databases().get(db, (None,))[0]
            return os.path.join(self.shared_blob_dir, gen)
        path = os.path.join(tmp, which + '-blobs')
        os.mkdir(path)
        return path

    # -- generations ------------------------------------------------------------

    def new_generation(self, flip=False, via='snapshot', **info):
        """A new complete generation copied from the current one (which
        may be in use); with ``flip``, made current.  Call under
        :meth:`lock`.  Returns its name."""
        self.reconcile()
        gens = self.generations
        source = gens.current_name()
        if source is None:
            raise NotFound('%s has no current data generation; adopt the '
                           'site\'s database first (bin/snapshot --adopt)'
                           % self.path)
        name = self.next_name()
        gens.stage(name, source=source, **info)
        try:
            how = self.create_copy(name, self.site)
            # after the database copy: every blob it names is there
            self.copy_shared_blobs(source, name)
            if how == 'dump':
                self.catch_up(self.site, self.spare(name))
            manifest = self.describe(self.spare(name), name)
        except BaseException as e:
            gens.mark_failed(name, str(e) or e.__class__.__name__)
            raise
        gens.complete(name, dict(info, source=source, copied_by=how,
                                 **manifest))
        if flip:
            self.switch_to(name, via=via)
        return name

    def copy_shared_blobs(self, source, name):
        """Generation ``name``'s blob directory: hard links to the
        committed blob files of ``source``'s (a blob file is never changed
        once committed; a new revision is a new file), so the generations'
        blobs stay apart.  Call after the database copy."""
        if not self.shared_blob_dir:
            return 0
        from . import copy as fscopy
        src = self.shared_blob_path(source)
        if not os.path.isdir(src):
            os.makedirs(src, mode=0o700)
        return fscopy.link_blobs(src, self.shared_blob_path(name))

    def switch_to(self, name, via='switch', hold=None, guard=None,
                  **fields):
        """Make the complete generation ``name`` the site's database: two
        renames in one transaction, after disallowing connections to both
        and terminating their sessions.  ``hold`` (a connection holding
        the commit lock of the site's database) is closed only once every
        other session there has ended, so no writer that waited for it
        commits on the old generation.  ``guard``: a :func:`guarded`
        block the caller entered already.  Call under :meth:`lock`."""
        gens = self.generations
        gens.resolve(name)
        old = gens.current_name()
        if old == name:
            return old
        new_db = self.database_of(name)
        with (contextlib.nullcontext() if guard else guarded(self)), \
                self.admin() as cur:
            self.set_allow(cur, [self.site, new_db], False)
            # writers waiting for the held commit lock end before it is
            # let go: none of them commits late on the old generation
            self.terminate(cur, [self.site, new_db], keep=(
                hold.get_backend_pid() if hold is not None else 0))
            if hold is not None:
                hold.close()
                self.terminate(cur, [self.site])
            cur.execute('BEGIN')
            cur.execute('ALTER DATABASE %s RENAME TO %s' % (
                ident(self.site), ident(self.spare(old))))
            cur.execute('ALTER DATABASE %s RENAME TO %s' % (
                ident(new_db), ident(self.site)))
            self.set_allow(cur, [self.site, self.spare(old)], True)
            # nobody is connected: the blob link goes with the renames (a
            # kill before the COMMIT is put right by the guard)
            self.point_blobs(name)
            try:
                cur.execute('COMMIT')
            except BaseException:
                self.point_blobs(old)
                raise
        gens.flip(name, via=via, databases={name: self.site,
                                            old: self.spare(old)}, **fields)
        return old

    def drop_client_caches(self):
        """Every client's persistent cache and blob cache: a client
        refuses a database older than its cache."""
        removed = []
        for d in self.cache_dirs + ([self.blob_cache] if self.blob_cache
                                    else []):
            if d and os.path.isdir(d):
                for n in os.listdir(d):
                    p = os.path.join(d, n)
                    if os.path.isdir(p) and not os.path.islink(p):
                        fsutil.remove_tree(p)
                    else:
                        os.unlink(p)
                    removed.append(p)
        return removed

    def rollback(self, target=None, discard_writes=False):
        """Make the previous good generation (or ``target``) current
        again; refused when the current one has transactions the target
        lacks, unless ``discard_writes`` (they stay in the generation
        left, kept).  Drops the clients' caches."""
        with self.lock('a rollback of %s' % self.path):
            self.reconcile()
            gens = self.generations
            current = gens.current_name()
            target = target or self.previous_current(current)
            if target is None:
                raise NotFound('there is no earlier data generation to roll '
                               'back to')
            gens.resolve(target)
            now = self.facts(self.site)['last_tid']
            manifest = gens.manifest(current) or {}
            since = manifest.get('switch_tid', manifest.get('last_tid'))
            if now is not None and since is not None and now > since and \
                    not discard_writes:
                raise Refused(
                    'data generation %s has transactions committed after it '
                    'became current (last %s, switched at %s); rolling back '
                    'to %s would discard them: add --discard-writes (they '
                    'are kept in generation %s)' % (
                        current, now, since, target, current))
            self.switch_to(target, via='rollback', left=current)
            dropped = self.drop_client_caches()
        return dict(generation=target, left=current, caches=len(dropped))

    def previous_current(self, current):
        """The generation that was current before ``current`` became so
        (a snapshot, never current, is restored by :meth:`restore`)."""
        for entry in reversed(list(self.generations.journal.entries())):
            if entry['event'] == 'published' and \
                    entry.get('name') == current:
                previous = entry.get('previous')
                if previous and self.generations.is_complete(previous):
                    return previous
        return None

    def snapshot_for_release(self, tag):
        """A snapshot paired with release ``tag``: a new generation, a
        copy of the current one (taken while the site runs), not made
        current.  Returns what the release journal records.  Call under
        :meth:`lock`."""
        source = self.generations.current_name()
        name = self.new_generation(release=tag, snapshot_for=tag)
        m = self.generations.manifest(name)
        return dict(name=name, backend='relstorage', time=m.get('built') or
                    time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                    last_tid=m['last_tid'], generation=source,
                    database=self.spare(name))

    def restore(self, name, discard_writes=False):
        """Make a copy of generation ``name`` (a snapshot; it stays as it
        was taken, to be restored again) the site's database: a new
        generation.  Refused, nothing changed, when the current generation
        has transactions committed after the snapshot, unless
        ``discard_writes``: they stay in the generation replaced, kept.
        Drops the clients' caches."""
        with self.lock('a restore of %s' % self.path):
            self.reconcile()
            gens = self.generations
            gens.resolve(name)
            current = gens.current_name()
            if name == current:
                raise Refused('data generation %s is the current one '
                              '(database %s); nothing to restore' % (
                                  name, self.site))
            source_db = self.database_of(name)
            snap = gens.manifest(name) or {}
            count, exact = self.transactions_after(self.site,
                                                   snap.get('last_tid'))
            if count and not discard_writes:
                raise Refused(
                    'restoring data generation %s would discard %s%d '
                    'transaction(s) committed after it (data generation %s, '
                    'database %s); run again with --discard-writes to '
                    'restore anyway (they are kept in data generation %s)'
                    % (name, '' if exact else 'at least ', count, current,
                       self.site, current))
            new = self.next_name()
            gens.stage(new, source=name, restored_from=name)
            try:
                how = self.create_copy(new, source_db)
                self.copy_shared_blobs(name, new)
                if how == 'dump':
                    self.catch_up(source_db, self.spare(new))
                manifest = self.describe(self.spare(new), new)
                if manifest['last_tid'] != snap.get('last_tid') or \
                        manifest['blobs'] < snap.get('blobs', 0):
                    raise RelStorageError(
                        'the copy of data generation %s ends with '
                        'transaction %s and has %d blobs, the snapshot %s '
                        'and %s' % (name, manifest['last_tid'],
                                    manifest['blobs'], snap.get('last_tid'),
                                    snap.get('blobs')))
            except BaseException as e:
                gens.mark_failed(new, str(e) or e.__class__.__name__)
                raise
            gens.complete(new, dict(manifest, source=name, copied_by=how,
                                    restored_from=name,
                                    switch_tid=manifest['last_tid']))
            # before the switch as well: a kill between the switch and
            # the second leaves no cache of the replaced generation
            dropped = self.drop_client_caches()
            self.switch_to(new, via='restore', snapshot=name,
                           replaced=current, discarded=count)
            dropped += self.drop_client_caches()
        # the result: bin/snapshot --restore and bin/rollback say it
        logger.debug('restored data generation %s as data generation %s '
                     '(generation %s kept, %d transaction(s) in it after '
                     'the snapshot)', name, new, current, count)
        return dict(name=name, backend='relstorage', generation=new,
                    replaced=current, left=current, discarded=count,
                    caches=len(dropped), last_tid=snap.get('last_tid'))

    def history(self):
        rows = self.generations.history(strict=False)
        physical = self.physical()
        for r in rows:
            r['database'] = physical.get(r['name'])
        return rows


@contextlib.contextmanager
def guarded(root):
    """A guard process for the length of the block: when the block ends,
    or the process running it is killed, the guard allows connections on
    every generation again (an ALTER DATABASE a kill interrupted).

    Forked (no interpreter to start) into a session of its own; it waits
    for the end of a pipe only this process holds open."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:            # the guard
        code = 1
        try:
            os.close(write)
            os.setsid()
            code = guard(root, read)
        finally:
            os._exit(code)
    os.close(read)
    try:
        yield pid
    finally:
        os.close(write)
        os.waitpid(pid, 0)


def guard(root, fd):
    """Wait until ``fd`` ends, then allow connections to the site's
    generations (see :func:`guarded`)."""
    while os.read(fd, 1024):
        pass
    for attempt in range(50):
        try:
            with root.admin() as cur:
                dbs = root.databases(cur)
                root.align_blobs(dbs)
                root.set_allow(cur, [n for n, (g, a) in dbs.items()
                                     if g and not a], True)
            return 0
        except Exception as e:        # the server restarting
            logger.warning('guard: %s', e)
            time.sleep(0.2)
    return 1
