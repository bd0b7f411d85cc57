"""bin/evolve-copy: evolve a copy of the database, switch to it only when
it succeeded.

Evolve scripts never run against live data.  The site stays readable
throughout and is read-only only while the writes made since the copy are
caught up and the evolve runs on the copy.  :meth:`EvolveCopy.run` is the
procedure, each step a method named after it::

    prepare   while the site runs: data generation N+1 from the current
              one (Data.fs up to its last committed transaction, blobs
              hard-linked)
    freeze    production read-only: the ZEO server safedeploy runs
              refuses new transactions in place (one with a custom runzeo
              is restarted read-only), or the freeze-command runs
    catch_up  the copied prefix is still production's: append only the new
              tail, link the new blobs (a pack since prepare: copy again)
    evolve    the configured evolve on the copy, one commit per step
    verify    the copy opens, is at least as new as production's frozen
              state, reached its target version, has every new blob
    switch    data ``current`` flipped to the copy; the pair (release,
              generation) recorded
    thaw      production writable again (on the new generation)

After a successful run the data generations beyond ``keep-generations``
are pruned (:func:`prune_after`), still under the data root's lock.

A failure, or a SIGKILL, in prepare .. verify leaves production on its old
data, byte for byte, and writable again: from ``freeze`` on, a guard
process (:mod:`.guard`) outlives this one and thaws production if it
dies.  The copy is kept with a report; ``bin/evolve-copy --resume``
continues on it from the last committed evolve step (:mod:`.state`).

(One module on purpose: :class:`EvolveCopy` is the procedure, its
methods the steps in run order, so that prepare .. thaw read top to
bottom; resuming is in :mod:`.state`, the guard in :mod:`.guard`, the
runners in :mod:`.runners`.)
"""
import logging
import os
import sys
import time

from ..core import cli
from ..core import fsutil
from ..core.errors import Refused
from ..core.errors import SafeDeployError
from ..data import copy as fscopy
from ..data import filestorage
from ..data import layout
from ..data import verify as fsverify
from . import runners
from ..zeo.control import check_choice
from ..release import pairing
from ..zeo.freeze import mark_frozen
from ..zeo.freeze import unmark_frozen
from .guard import Guard
from .guard import thaw_on_current
from .guard import recover_production
from .state import BLOBS
from .state import FS
from .state import REPORT
from .state import DataRoot
from .state import find_resumable
from .state import report
from .state import save_state

logger = logging.getLogger('collective.safedeploy')

class EvolveCopyFailed(SafeDeployError):
    """A step failed; production was thawed on its old data."""


class WrittenAfterFreeze(SafeDeployError):
    """Production's generation got transactions after the caught-up point
    (its server was restarted writable behind the evolve-copy's back):
    switching would leave them behind."""


# ZEO clients prefetch object ids in batches (ClientStorage._oids) and keep
# them across a reconnect.  Ids the production server handed out before the
# freeze may be unused yet; objects the evolve creates must not get them, or
# a client reconnected to the evolved database would store a new object
# over one of the evolve's.  The evolve allocates past this gap instead.
OID_GAP = 1 << 32


def skip_prefetched_oids(storage):
    from ZODB.utils import p64
    from ZODB.utils import u64
    storage.set_max_oid(p64(u64(storage._oid) + OID_GAP))


# -- the procedure ---------------------------------------------------------

class EvolveCopy:
    """One run of the procedure; each step is a method named after it."""

    def __init__(self, data, evolve, control=None, evolve_context=None,
                 evolve_key=None, release=None, out=None, progress=True,
                 releases=None, keep=layout.DEFAULT_KEEP_GENERATIONS):
        """``releases``: the releases directory, where the pairing of the
        switched data with ``release`` is recorded; ``keep``: the data
        generations kept after a successful run (0: all)."""
        self.data = DataRoot(data)
        self.releases = releases
        self.evolve_spec = evolve
        self.control = control
        self.evolve_context = evolve_context or None
        self.evolve_key = evolve_key or None
        self.release = release
        self.keep = keep
        self.out = out or sys.stdout
        self.progress = progress
        self.times = {}
        self.name = None          # the copy's generation
        self.source = None        # production's generation
        self.state = None
        self.frozen = False
        self.guard = Guard(self.data)
        self.syncing = None       # the caught-up copy's fsync, running

    # -- output -----------------------------------------------------------

    def say(self, text):
        self.out.write(text + '\n')
        self.out.flush()

    def timed(self, step, function, *args):
        started = time.monotonic()
        detail = function(*args)
        seconds = time.monotonic() - started
        self.times[step] = seconds
        self.say('%-8s %.3f s%s' % (step.replace('_', '-') + ':', seconds,
                                    '  (%s)' % detail if detail else ''))
        return detail

    def save(self, **changes):
        self.state.update(changes)
        save_state(self.data.dir(self.name), self.state)

    # -- the run ----------------------------------------------------------

    def run(self, resume=False):
        """The procedure, in run order.  A resumed run skips what the
        killed one finished (:meth:`start`)."""
        if self.control is None:
            check_choice(None, None, None, required=True)
        self.runner = runners.runner_for(
            self.evolve_spec, self.evolve_context, self.evolve_key)
        gens = self.data.generations
        with gens.lock('an evolve-copy or rollback of %s' % self.data.path):
            prepared, evolved = self.start(resume)
            self.check_no_split_brain()
            try:
                # the processes of the read-only and the writable server,
                # started while the copy is made
                self.control.prepare(2)
                self.step('prepare', done=prepared)
                self.control.ready()
                self.guard.spawn()
                self.step('freeze')
                self.step('catch_up')
                self.step('evolve', done=evolved())
                self.step('verify', done=evolved())
                self.step('switch')
                self.step('thaw')
            except BaseException as e:
                self.fail(e)
                raise
            finally:
                self.control.discard()
            prune_after(self.data, self.keep, self.releases, self.say)
        self.say('read-only window: %.3f s (catch-up %.3f s, evolve %.3f s)'
                 % (self.window, self.times['catch_up'],
                    self.times['evolve']))
        return 0

    def check_no_split_brain(self):
        """The server evolve-copy will freeze is the one serving the
        current generation (before anything is frozen or copied)."""
        check = getattr(self.control, 'check_serves', None)
        if check is not None:
            fs = self.data.fs(self.source)
            check(fs, lock_held=bool(self.data.running(
                self.data.dir(self.source))))

    def start(self, resume):
        """Finish what a killed run left (thaw production), find the
        source generation and, with ``resume``, the killed run's copy.
        Returns (prepared, evolved): whether the copy is made, and a test
        of whether it is evolved and verified already."""
        self.data.generations.recover()
        recover_production(self.data)
        self.source = self.data.current()
        prepared = False
        if resume:
            self.name, self.state = find_resumable(
                self.data, self.source, self.evolve_spec)
            self.say('resuming on data generation %s (from %s, last '
                     'step %s)' % (self.name, self.state['source'],
                                   self.state.get('phase')))
            if self.state.get('phase') == 'failed':
                self.state['phase'] = self.state.get('failed_phase')
            prepared = self.state.get('phase') not in (None, 'preparing')
        return prepared, lambda: bool(
            self.name and self.data.generations.is_complete(self.name))

    def step(self, name, done=False):
        if done:
            self.times[name] = 0.0
            self.say('%-8s done before the kill' % (
                name.replace('_', '-') + ':'))
            return
        self.timed(name, getattr(self, name))

    # 1. prepare
    def prepare(self):
        gens = self.data.generations
        self.name = self.data.next_name()
        src_fs, src_blobs = self.data.fs(self.source), self.data.blobs(
            self.source)
        path = gens.stage(self.name, source=self.source,
                          evolve=self.evolve_spec)
        self.state = dict(source=self.source, evolve=self.evolve_spec,
                          phase='preparing', release=self.release)
        self.save()
        os.makedirs(os.path.dirname(os.path.join(path, FS)))
        size = os.path.getsize(src_fs)
        progress = cli.Progress(size, 'copying Data.fs') if \
            self.progress else None
        prefix = fscopy.copy_prefix(
            src_fs, os.path.join(path, FS),
            progress=progress.update if progress else None)
        if progress:
            progress.finish()
        blobs = fscopy.link_blobs(src_blobs, os.path.join(path, BLOBS))
        # the copy's own index, so that opening it later scans only the tail
        fsverify.verify(os.path.join(path, FS), None,
                        expected_tid=prefix.last_tid, write_index=True)
        self.save(phase='prepared', prefix=prefix.as_dict(),
                  index_pos=prefix.end, prepared_end=prefix.end)
        return 'data generation %s from %s: %s, %d blobs linked' % (
            self.name, self.source, cli.human(prefix.end), blobs)

    # 2. freeze
    def freeze(self):
        self.guard.arm(self.source, self.control)
        self.frozen = True
        self.frozen_at = time.monotonic()
        # with the data: a restarted server comes up frozen too
        mark_frozen(self.data.dir(self.source), by='evolve-copy',
                    copy=self.name)
        self.control.freeze(self.data.dir(self.source))
        return 'production read-only: %s' % self.control.describe()

    # 3. catch up
    def catch_up(self):
        path = self.data.dir(self.name)
        src_fs = self.data.fs(self.source)
        dst_fs = os.path.join(path, FS)
        if self.state.get('phase') in ('evolving', 'evolved', 'verified'):
            return self.catch_up_resumed()
        prefix = filestorage.Prefix.from_dict(self.state['prefix'])
        new, since, linked, packed = self.append_tail(
            src_fs, dst_fs, prefix, say_pack=True)
        return '%s%s appended, %d new blobs' % (
            'full recopy after a pack, ' if packed else '',
            cli.human(new.end - since), linked)

    def append_tail(self, src_fs, dst_fs, prefix, say_pack=False):
        """Append production's transactions since ``prefix`` to the copy
        (all of it again after a pack), link their blobs, record the
        caught-up state.  Returns (new prefix, where the appended part
        starts, blobs linked, whether it was copied again in full)."""
        try:
            new = fscopy.catch_up(src_fs, dst_fs, prefix, sync=False)
            self.sync_in_background(dst_fs)
            since, packed = prefix.end, False
        except filestorage.PackedSince:
            if say_pack:
                self.say('production was packed since prepare: copying it '
                         'again in full')
            new = self.recopy()
            since, packed = 4, True
        linked = self.link_new_blobs(since)
        # every blob the copy's transactions up to here reference is in
        # it now (a missing one fails the link): verify checks the rest
        self.save(phase='caught-up', prefix=new.as_dict(),
                  frozen_tid=filestorage.tid_hex(new.last_tid),
                  blobs_checked_to=new.end)
        return new, since, linked, packed

    def catch_up_resumed(self):
        """A resumed run whose evolve had started: if production did not
        change since, go on; else start the evolve again on a fresh tail."""
        prefix = filestorage.Prefix.from_dict(self.state['prefix'])
        src_fs = self.data.fs(self.source)
        end = filestorage.committed_end(src_fs)
        if filestorage.still_prefix(src_fs, prefix) and end.end == prefix.end:
            return 'production unchanged since the killed run; no catch-up'
        if self.data.generations.is_complete(self.name):
            raise Refused(
                'data generation %s was evolved and verified, but production '
                'changed since; start a new run without --resume' % self.name)
        self.say('production changed since the killed run: the evolve '
                 'starts again on a fresh catch-up')
        dst_fs = os.path.join(self.data.dir(self.name), FS)
        for p in (dst_fs + '.index',):
            if os.path.exists(p):
                os.unlink(p)
        self.state['phase'] = 'prepared'
        self.state['index_pos'] = None
        new, since, linked, _ = self.append_tail(src_fs, dst_fs, prefix)
        return 'evolve restarts: %s appended, %d new blobs' % (
            cli.human(new.end - since), linked)

    def sync_in_background(self, path):
        """fsync ``path`` while the next steps run; :meth:`switch` waits
        for it: the copy is durable before it becomes current."""
        self.syncing = fsutil.BackgroundSync(path)

    def wait_synced(self):
        """The copy's Data.fs is on disk: the background fsync is done, or
        (a resumed run, whose catch-up a killed one made) one is done now.
        """
        syncing, self.syncing = self.syncing, None
        if syncing is None:
            fsutil.fsync_file(os.path.join(self.data.dir(self.name), FS))
        else:
            syncing.wait()

    def recopy(self):
        path = self.data.dir(self.name)
        dst_fs = os.path.join(path, FS)
        for p in (dst_fs, dst_fs + '.index'):
            if os.path.exists(p):
                os.unlink(p)
        fsutil.remove_tree(os.path.join(path, BLOBS))
        prefix = fscopy.copy_prefix(self.data.fs(self.source), dst_fs)
        self.state['index_pos'] = None
        self.state['prepared_end'] = 4
        fscopy.link_blobs(self.data.blobs(self.source),
                            os.path.join(path, BLOBS))
        return prefix

    def link_new_blobs(self, since):
        """Hard-link the blobs of the transactions after byte ``since`` of
        the copy (the caught-up tail): O(new transactions), not O(blobs)."""
        path = self.data.dir(self.name)
        return fsverify.check_blobs(
            os.path.join(path, FS), os.path.join(path, BLOBS), since,
            link_from=self.data.blobs(self.source))[2]

    # 4. evolve
    def open_copy(self, read_only=False):
        import ZODB
        path = self.data.dir(self.name)
        return ZODB.DB(filestorage.open_trusting_index(
            os.path.join(path, FS), os.path.join(path, BLOBS), read_only,
            position=self.state.get('index_pos')))

    def evolve(self):
        self.save(phase='evolving')
        db = self.open_copy()
        try:
            skip_prefetched_oids(db.storage)
            before = runners.status(db, self.runner)
            try:
                runner, steps = runners.evolve(db, self.runner,
                                               log=StepLog(self.say))
            except runners.EvolveError as e:
                self.state.setdefault('steps', []).extend(
                    s.as_dict() for s in e.done)
                raise
        finally:
            db.close()
        self.save(phase='evolved', steps=self.state.get('steps', []) + [
            s.as_dict() for s in steps])
        return '%s: %d steps, version %s -> %s' % (
            self.runner.describe(), len(steps), before['version'],
            self.runner.target())

    # 5. verify
    def verify(self):
        path = self.data.dir(self.name)
        frozen = filestorage.tid_bytes(self.state['frozen_tid'])
        prefix = filestorage.Prefix.from_dict(self.state['prefix'])
        dst_fs = os.path.join(path, FS)
        if filestorage.tid_ending_at(dst_fs, prefix.end) != prefix.last_tid:
            raise filestorage.VerificationFailed(
                'the copy does not hold production\'s frozen state at byte '
                '%d' % prefix.end)
        db = self.open_copy(read_only=True)
        try:
            last = db.storage.lastTransaction()
            status = runners.status(db, self.runner)
        except Exception as e:
            raise filestorage.VerificationFailed(
                'the evolved copy does not open: %s' % e)
        finally:
            db.close()
        if frozen is not None and last < frozen:
            raise filestorage.VerificationFailed(
                'the copy ends with transaction %s, older than production\'s '
                'frozen %s' % (last.hex(), self.state['frozen_tid']))
        if not status['reached']:
            raise filestorage.VerificationFailed(
                'the evolve stopped at version %s, not %s' % (
                    status['version'], status['target']))
        transactions, blobs = self.check_new_blobs(
            self.state.get('blobs_checked_to') or
            self.state.get('prepared_end') or 4)
        self.save(phase='verified', last_tid=last.hex())
        return '%d new transactions, %d new blobs present, version %s' % (
            transactions, blobs, status['version'])

    def check_new_blobs(self, since):
        """Every blob the transactions after byte ``since`` reference is
        in the copy's blob directory."""
        path = self.data.dir(self.name)
        return fsverify.check_blobs(os.path.join(path, FS),
                                    os.path.join(path, BLOBS), since)[:2]

    # 6. switch
    def written_after_freeze(self):
        """How many transactions production's generation got after the
        caught-up point (0: none; it is still the copy's prefix)."""
        prefix = filestorage.Prefix.from_dict(self.state['prefix'])
        src_fs = self.data.fs(self.source)
        if filestorage.still_prefix(src_fs, prefix) and \
                filestorage.committed_end(src_fs).end == prefix.end:
            return 0
        return max(1, filestorage.count_transactions_after(
            src_fs, prefix.last_tid))

    def check_not_written(self):
        count = self.written_after_freeze()
        if count:
            raise WrittenAfterFreeze(
                '%d transaction(s) were committed in data generation %s '
                'after it was frozen (was its server restarted writable?); '
                'not switching: they would be left behind' % (
                    count, self.source))

    def switch(self):
        self.wait_synced()
        gens = self.data.generations
        # production must not have moved since the catch-up: checked now,
        # right before the flip, and again right after it
        self.check_not_written()
        if not gens.is_complete(self.name):
            gens.complete(self.name, dict(
                source=self.source, evolve=self.evolve_spec,
                frozen_tid=self.state['frozen_tid'],
                switch_tid=self.state['last_tid'],
                steps=self.state.get('steps'), release=self.release))
        # the journal says what the evolve committed itself, as the
        # manifest does: it outlives the manifest when this generation is
        # pruned, and a rollback across it still knows those transactions
        gens.flip(self.name, via='evolve-copy', release=self.release,
                  evolve=self.evolve_spec, source=self.source,
                  frozen_tid=self.state['frozen_tid'],
                  switch_tid=self.state['last_tid'])
        try:
            self.check_not_written()
        except WrittenAfterFreeze:
            gens.flip(self.source, via='undo', left=self.name)
            raise
        pairing.record(self.releases, self.release, 'evolve-copy',
                       generation=self.name, source=self.source)
        return 'data current -> generation %s (release %s)' % (
            self.name, self.release or '-')

    # 7. thaw
    def thaw(self):
        self.control.thaw(self.data.dir(self.data.current()))
        self.window = time.monotonic() - self.frozen_at
        unmark_frozen(self.data.dir(self.source))
        self.frozen = False
        self.guard.stop()
        return 'production writable on data generation %s' % (
            self.data.current())

    # failure in prepare .. verify (switch: current may have flipped)
    def fail(self, error):
        reason = '%s: %s' % (type(error).__name__, error)
        if isinstance(error, SafeDeployError):
            reason = str(error)
        if self.frozen:
            try:
                thaw_on_current(self.data, self.control, left=self.source)
                self.frozen = False
                self.guard.stop()
                self.say('production thawed on data generation %s' %
                         self.data.current())
            except Exception as e:
                self.say('could not thaw production (%s); the guard process '
                         'retries' % e)
        else:
            self.guard.stop()     # nothing for it to thaw
        if self.name and not self.data.generations.is_complete(self.name):
            path = self.data.dir(self.name)
            self.save(phase='failed', error=reason,
                      failed_phase=self.state.get('phase'))
            fsutil.atomic_write(os.path.join(path, REPORT), report(
                self.state, reason, self.times))
            self.data.generations.journal.append(
                'failed', name=self.name, reason=reason)
            if isinstance(error, Exception):
                kept = 'with those writes' if isinstance(
                    error, WrittenAfterFreeze) else 'unchanged'
                raise EvolveCopyFailed(
                    '%s; production is writable on its old data (generation '
                    '%s, %s); the copy is kept in %s with %s -- fix '
                    'it and run bin/evolve-copy --resume' % (
                        reason, self.source, kept, path, REPORT)) from error


def prune_after(data, keep, releases, say):
    """After a successful run: data generations beyond ``keep`` go
    (:meth:`~collective.safedeploy.data.layout.DataRoot.prune`).  The run
    succeeded whatever happens here: a failure is reported, not raised."""
    try:
        removed = data.prune(keep, releases)
    except Exception as e:
        say('pruning data generations failed: %s (the next run retries)'
            % e)
        return []
    if removed:
        say('pruned data generation(s) %s (keep-generations = %d)' % (
            ', '.join(removed), keep))
    return removed


class StepLog:
    """Evolve steps as lines of the command's output."""

    def __init__(self, say):
        self.say = say

    def info(self, message, *args):
        logger.debug(message, *args)
        self.say('  ' + message % args)
