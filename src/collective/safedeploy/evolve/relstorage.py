"""bin/evolve-copy on a RelStorage/PostgreSQL data root
(:mod:`collective.safedeploy.data.relstorage`)::

    prepare   while the site runs: database <site>_gN, a copy of <site>
              (CREATE DATABASE ... TEMPLATE when nothing is connected,
              else pg_dump/pg_restore); with a shared-blob-dir, the
              generation's blob directory (hard links)
    freeze    hold RelStorage's own commit lock on <site> (the advisory
              lock lock_and_choose_tid takes): writers wait, reads go on
    catch_up  zodbconvert --incremental <site> -> <site>_gN
    evolve    the configured evolve on the copy, one commit per step
    verify    the copy is at least as new as the frozen state, has every
              blob's large object, reached its target version
    switch    writers that waited are terminated (their commits fail,
              none lands late on the old generation), then two renames
              in one transaction: <site> is the evolved generation
    thaw      the commit lock went with the old generation's sessions

The commit lock is held by a session of this process: a SIGKILL ends the
session and PostgreSQL lets the lock go, so production is writable again
by itself.  The connections a kill inside the switch leaves disallowed
are allowed again by the switch's guard process.  A re-run starts on a
fresh copy (the killed run's database is dropped).
"""
import logging
import tempfile
import time

from ..core.errors import SafeDeployError
from ..data.relstorage import COMMIT_LOCK
from ..data.relstorage import RelStorageError
from ..data.relstorage import guarded
from ..release import pairing
from . import runners

logger = logging.getLogger('collective.safedeploy')


class EvolveCopyFailed(SafeDeployError):
    """A step failed; production is writable on its old data."""


class RelStorageEvolveCopy:

    def __init__(self, root, evolve, evolve_context=None, evolve_key=None,
                 release=None, releases=None, say=print):
        self.root = root
        self.evolve_spec = evolve
        self.evolve_context = evolve_context
        self.evolve_key = evolve_key
        self.release = release
        self.releases = releases
        self.say = say
        self.times = {}
        self.hold = None
        self.guard = None
        self.name = None
        self.window = None

    def timed(self, name, method):
        started = time.monotonic()
        result = method()
        self.times[name] = time.monotonic() - started
        self.say('%-9s %s (%.3f s)' % (name.replace('_', '-') + ':', result,
                                       self.times[name]))

    def run(self):
        self.runner = runners.runner_for(
            self.evolve_spec, self.evolve_context, self.evolve_key)
        root = self.root
        with root.lock('an evolve-copy or rollback of %s' % root.path):
            root.reconcile()
            self.source = root.current_name()
            if self.source is None:
                raise RelStorageError(
                    '%s has no current data generation; adopt the site\'s '
                    'database first (bin/snapshot --adopt)' % root.path)
            try:
                for step in ('prepare', 'freeze', 'catch_up', 'evolve',
                             'verify', 'switch', 'thaw'):
                    self.timed(step, getattr(self, step))
            except BaseException as e:
                self.fail(e)
                raise
        self.say('read-only window: %.3f s (catch-up %.3f s, evolve %.3f s)'
                 % (self.window, self.times['catch_up'],
                    self.times['evolve']))
        return 0

    # 1. prepare
    def prepare(self):
        # what the window uses, imported before it
        import ZODB.config  # noqa: F401
        import relstorage.storage  # noqa: F401
        import relstorage.zodbconvert  # noqa: F401
        root = self.root
        self.name = root.next_name()
        root.generations.stage(self.name, source=self.source,
                               evolve=self.evolve_spec)
        self.how = root.create_copy(self.name, root.site)
        # a shared-blob-dir: the generation's own blob directory, linked
        # after the database copy (every blob it names is there); the
        # catch-up adds the blobs committed since
        root.copy_shared_blobs(self.source, self.name)
        # started before the window: allows connections again should a
        # kill interrupt the switch
        self.guard = guarded(self.root)
        self.guard.__enter__()
        return 'data generation %s (database %s) from %s by %s' % (
            self.name, root.spare(self.name), self.source,
            'CREATE DATABASE ... TEMPLATE' if self.how == 'template'
            else 'pg_dump/pg_restore')

    # 2. freeze
    def freeze(self):
        self.hold = self.root.connect(self.root.site)
        cur = self.hold.cursor()
        cur.execute('SELECT pg_advisory_lock(%s)', (COMMIT_LOCK,))
        self.frozen_at = time.monotonic()
        return 'commit lock of %s held' % self.root.site

    # 3. catch up
    def catch_up(self):
        root = self.root
        self.frozen = root.facts(root.site)
        if not root.catch_up(root.site, root.spare(self.name)):
            return 'nothing committed since prepare'
        return 'zodbconvert --incremental to transaction %s' % (
            self.frozen['last_tid'],)

    def open_copy(self, read_only=False):
        import ZODB
        import ZODB.config
        self.tmp = tempfile.TemporaryDirectory(dir=self.root.path)
        storage = ZODB.config.storageFromString(self.root.zconfig(
            self.root.spare(self.name), read_only=read_only,
            blob_dir=self.root.blob_dir_for(
                self.root.spare(self.name), self.tmp.name, 'copy')))
        return ZODB.DB(storage)

    def close_copy(self, db):
        db.close()
        self.tmp.cleanup()

    # 4. evolve
    def evolve(self):
        db = self.open_copy()
        try:
            before = runners.status(db, self.runner)
            runner, steps = runners.evolve(db, self.runner)
        finally:
            self.close_copy(db)
        self.steps = [s.as_dict() for s in steps]
        return '%s: %d steps, version %s -> %s' % (
            self.runner.describe(), len(steps), before['version'],
            self.runner.target())

    # 5. verify
    def verify(self):
        root = self.root
        facts = root.facts(root.spare(self.name))   # large objects present
        frozen = self.frozen['last_tid']
        if frozen is not None and (facts['last_tid'] is None or
                                   facts['last_tid'] < frozen):
            raise RelStorageError(
                'the copy ends with transaction %s, older than production\'s '
                'frozen %s' % (facts['last_tid'], frozen))
        if facts['blobs'] < self.frozen['blobs']:
            raise RelStorageError(
                'the copy has %d blobs, production %d' % (
                    facts['blobs'], self.frozen['blobs']))
        db = self.open_copy(read_only=True)
        try:
            status = runners.status(db, self.runner)
        finally:
            self.close_copy(db)
        if not status['reached']:
            raise RelStorageError('the evolve stopped at version %s, not %s'
                                  % (status['version'], status['target']))
        self.facts = facts
        return '%d objects, %d blobs, version %s' % (
            facts['objects'], facts['blobs'], status['version'])

    # 6. switch
    def switch(self):
        root = self.root
        gens = root.generations
        gens.complete(self.name, dict(
            root.describe(root.spare(self.name), self.name),
            source=self.source, evolve=self.evolve_spec,
            frozen_tid=self.frozen['last_tid'], steps=self.steps,
            release=self.release, copied_by=self.how,
            switch_tid=self.facts['last_tid']))
        hold, self.hold = self.hold, None
        root.switch_to(self.name, via='evolve-copy', hold=hold, guard=True,
                       release=self.release, evolve=self.evolve_spec,
                       source=self.source)
        if self.releases:
            pairing.record(self.releases, self.release, 'evolve-copy',
                           generation=self.name, source=self.source)
        return 'database %s is data generation %s (release %s)' % (
            root.site, self.name, self.release or '-')

    # 7. thaw
    def thaw(self):
        self.window = time.monotonic() - self.frozen_at
        self.end_guard()
        return 'production writable on data generation %s' % (
            self.root.current_name())

    def end_guard(self):
        guard, self.guard = self.guard, None
        if guard is not None:
            guard.__exit__(None, None, None)

    def fail(self, error):
        self.end_guard()
        if self.hold is not None:
            try:
                self.hold.close()
            except Exception:
                pass
            self.hold = None
            self.say('production writable again on data generation %s' %
                     self.root.current_name())
        gens = self.root.generations
        if self.name and not gens.is_complete(self.name):
            reason = str(error) or type(error).__name__
            gens.mark_failed(self.name, reason)
            if isinstance(error, Exception):
                try:
                    gens.discard(self.name, 'failed evolve-copy')
                except Exception as e:
                    logger.warning('could not drop the copy: %s', e)
                raise EvolveCopyFailed(
                    '%s; production is writable on its old data (generation '
                    '%s, unchanged); fix it and run bin/evolve-copy again' % (
                        reason, self.source)) from error


def main(option, release=None, releases=None):
    """bin/evolve-copy with ``storage = relstorage``."""
    from ..data.relstorage_options import root_from_options
    return RelStorageEvolveCopy(
        root_from_options(option), option('evolve'),
        evolve_context=option('evolve-context'),
        evolve_key=option('evolve-key'), release=release,
        releases=releases).run()
