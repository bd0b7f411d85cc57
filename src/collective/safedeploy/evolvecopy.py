"""bin/evolve-copy: evolve a copy of the database, switch to it only when
it succeeded.

Evolve scripts never run against live data.  The site stays readable
throughout and is read-only only while the writes made since the copy are
caught up and the evolve runs on the copy::

    prepare   while the site runs: data generation N+1 from the current
              one (Data.fs up to its last committed transaction, blobs
              hard-linked)
    freeze    production read-only (ZEO restarted read-only on the same
              address, or freeze-command)
    catch_up  the copied prefix is still production's: append only the new
              tail, link the new blobs (a pack since prepare: copy again)
    evolve    the configured evolve on the copy, one commit per step
    verify    the copy opens, is at least as new as production's frozen
              state, reached its target version, has every new blob
    switch    data ``current`` flipped to the copy; the pair (release,
              generation) recorded in the journal
    thaw      production writable again (on the new generation)

A failure, or a SIGKILL, in prepare .. verify leaves production on its old
data, byte for byte, and writable again: from ``freeze`` on, a guard
process outlives this one and thaws production if it dies.  The copy is
kept with a report; ``bin/evolve-copy --resume`` continues on it from the
last committed evolve step.

``--rehearse`` runs the evolve in a copy-on-write sandbox instead
(:mod:`DemoStorage` over production opened read-only, pinned with
zc.beforestorage): nothing is copied and production is not touched.
"""
import json
import logging
import os
import subprocess
import sys
import time

from . import cli
from . import datagen
from . import fsutil
from . import zeoctl
from . import zodbcopy
from .errors import ConfigurationError
from .errors import NotFound
from .errors import Refused
from .errors import SafeDeployError
from .evolve import runners

logger = logging.getLogger('collective.safedeploy')

FS = os.path.join('filestorage', 'Data.fs')
BLOBS = 'blobstorage'
STATE = 'safedeploy-evolve.json'
REPORT = 'safedeploy-evolve-report.txt'
GUARD = '.evolve-guard.json'

STEPS = ('prepare', 'freeze', 'catch_up', 'evolve', 'verify', 'switch',
         'thaw')
FROZEN_STEPS = ('catch_up', 'evolve', 'verify', 'switch')


class EvolveCopyFailed(SafeDeployError):
    """A step failed; production was thawed on its old data."""


# -- the data root ---------------------------------------------------------

class DataRoot(datagen.DataRoot):
    """The data root of :mod:`.datagen`, seen by evolve-copy: one
    FileStorage (``filestorage/Data.fs``) and its blobs per generation."""

    def dir(self, name):
        return self.generations.path(name)

    def fs(self, name):
        return os.path.join(self.dir(name), FS)

    def blobs(self, name):
        return os.path.join(self.dir(name), BLOBS)

    def current(self):
        name = self.generations.current_name()
        if name is None:
            raise NotFound(
                'no data generation is current in %s (no %s link); make the '
                'first one with bin/snapshot' % (
                    self.path, self.generations.current))
        return name

    def guard_path(self):
        return os.path.join(self.path, GUARD)


def load_state(path):
    try:
        with open(os.path.join(path, STATE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def save_state(path, state):
    # advice to --resume about a copy that is disposable until the switch
    # (whose manifest and flip are durable): atomic, not fsynced -- after a
    # power failure --resume redoes a step or refuses, production untouched
    fsutil.atomic_write_json(os.path.join(path, STATE), state, durable=False)


# -- production control ----------------------------------------------------

def make_control(zeo_address=None, zeo_state=None, runzeo=None,
                 freeze_command=None, thaw_command=None):
    if zeo_address and (freeze_command or thaw_command):
        raise ConfigurationError(
            'set either zeo (the ZEO server to restart) or freeze-command '
            'and thaw-command, not both')
    if zeo_address:
        if not zeo_state:
            raise ConfigurationError(
                'zeo needs a state directory for the server\'s zeo.conf and '
                'pid (zeo-state)')
        return zeoctl.DataServer(
            zeoctl.ZEOServer(zeo_address, zeo_state, runzeo), FS, BLOBS)
    if freeze_command or thaw_command:
        return zeoctl.CommandControl(freeze_command, thaw_command)
    return None


def control_config(control):
    if isinstance(control, zeoctl.DataServer):
        s = control.server
        return dict(kind='zeo', address=zeoctl.format_address(s.address),
                    state=s.state_dir, runzeo=s.runzeo)
    return dict(kind='commands', freeze=control.freeze_command,
                thaw=control.thaw_command)


def control_from_config(config):
    if config['kind'] == 'zeo':
        return make_control(config['address'], config['state'],
                            config.get('runzeo'))
    return make_control(freeze_command=config['freeze'],
                        thaw_command=config['thaw'])


def thaw_on_current(data, control, log=logger):
    """Make production writable on whatever ``current`` is (after a killed
    run: its old generation, or the new one once the flip happened)."""
    name = data.current()
    serving = control.serving()
    if serving is not None and not serving[1] and \
            os.path.realpath(serving[0]) == os.path.realpath(data.fs(name)):
        return False
    log.warning('thawing production on data generation %s', name)
    control.thaw(data.dir(name))
    return True


def recover_production(data, log=logger):
    """What a killed run left frozen: thaw it (the guard normally has)."""
    path = data.guard_path()
    try:
        with open(path) as f:
            guard = json.load(f)
    except (OSError, ValueError):
        return False
    control = control_from_config(guard['control'])
    control.settle(guard.get('prepared', ()))
    thaw_on_current(data, control, log)
    os.unlink(path)
    return True


def guard_main(argv):
    """``python -m collective.safedeploy.evolvecopy --guard DATA PID``:
    wait for PID to end; if it left production frozen, thaw it."""
    from . import lock
    from .errors import Busy
    data, pid = DataRoot(argv[0]), int(argv[1])
    while zeoctl.alive(pid):
        time.sleep(0.02)
    if not os.path.exists(data.guard_path()):
        return 0
    # the dead run's lock is free now; a new run may hold it: wait for it
    while True:
        try:
            held = lock.acquire(data.generations.lock_path, 'evolve-copy')
            break
        except Busy:
            time.sleep(0.1)
    try:
        recover_production(data)
    except Exception as e:  # nobody to report to but the log
        sys.stderr.write('evolve-copy guard: %s\n' % e)
        return 1
    finally:
        held.close()
    return 0


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


def copy_storage(fs, blobs, read_only=False, trusted_index_pos=None):
    """A FileStorage on a copy whose index we wrote ourselves.

    FileStorage checks a saved index against the last transaction before
    the index's position and rescans the whole file when that check fails
    -- which it does whenever that transaction stored an object twice (ZEO
    clients committing blobs do).  On a copy, the index at the copied end
    is ours, so it is trusted: the open scans only the tail.
    """
    from ZODB.FileStorage import FileStorage

    trusted = {trusted_index_pos, zeoctl.index_position(fs)} - {None}

    class CopyStorage(FileStorage):

        def _sane(self, index, pos):
            if pos in trusted:
                tid = self._check_sanity(index, pos)
                return tid or zodbcopy.tid_ending_at(fs, pos)
            return FileStorage._sane(self, index, pos)

    return CopyStorage(fs, blob_dir=blobs, read_only=read_only)


# -- the procedure ---------------------------------------------------------

class EvolveCopy:
    """One run of the procedure; each step is a method named after it."""

    def __init__(self, data, evolve, control=None, evolve_context=None,
                 evolve_key=None, release=None, out=None, progress=True):
        self.data = DataRoot(data)
        self.evolve_spec = evolve
        self.control = control
        self.evolve_context = evolve_context or None
        self.evolve_key = evolve_key or None
        self.release = release
        self.out = out or sys.stdout
        self.progress = progress
        self.times = {}
        self.name = None          # the copy's generation
        self.source = None        # production's generation
        self.state = None
        self.frozen = False
        self.guard = None
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
        if self.control is None:
            raise ConfigurationError(
                'evolve-copy needs a way to make production read-only: set '
                'zeo = <ZEO part>, or freeze-command and thaw-command')
        self.runner = runners.runner_for(
            self.evolve_spec, self.evolve_context, self.evolve_key)
        gens = self.data.generations
        with gens.lock('an evolve-copy or rollback of %s' % self.data.path):
            fsutil.empty_trash(gens.directory)
            recover_production(self.data)
            self.source = self.data.current()
            prepared = False
            if resume:
                self.find_resumable()
                if self.state.get('phase') == 'failed':
                    self.state['phase'] = self.state.get('failed_phase')
                prepared = self.state.get('phase') not in (None, 'preparing')
            try:
                # the processes of the read-only and the writable server,
                # started while the copy is made
                self.control.prepare(2)
                if not prepared:
                    self.timed('prepare', self.prepare)
                self.control.ready()
                self.spawn_guard()
                self.timed('freeze', self.freeze)
                for step in FROZEN_STEPS:
                    if step in ('evolve', 'verify') and \
                            self.data.generations.is_complete(self.name):
                        self.times[step] = 0.0
                        self.say('%-8s done before the kill' % (step + ':'))
                        continue
                    self.timed(step, getattr(self, step))
                self.timed('thaw', self.thaw)
            except BaseException as e:
                self.fail(e)
                raise
            finally:
                self.control.discard()
        window = self.window
        self.say('read-only window: %.3f s (catch-up %.3f s, evolve %.3f s)'
                 % (window, self.times['catch_up'], self.times['evolve']))
        return 0

    def find_resumable(self):
        gens = self.data.generations
        states = gens.states()
        for name in reversed(sorted(
                (n for n in gens.on_disk() if n != self.source),
                key=lambda n: (len(n), n))):
            state = load_state(gens.path(name))
            if not state or state.get('evolve') != self.evolve_spec:
                continue
            if gens.is_complete(name) and not (
                    state.get('phase') == 'verified' and
                    states.get(name) == 'built'):
                continue   # an earlier run's, switched to or rolled back
            if state['source'] != self.source:
                raise Refused(
                    'the killed run copied data generation %s, but %s is '
                    'current now; start a new run without --resume' % (
                        state['source'], self.source))
            self.name, self.state = name, state
            self.say('resuming on data generation %s (from %s, last '
                     'step %s)' % (name, state['source'],
                                   state.get('phase')))
            return
        raise NotFound('no killed or failed evolve-copy of %s to resume in '
                       '%s; run without --resume' % (
                           self.evolve_spec, gens.directory))

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
        prefix = zodbcopy.copy_prefix(
            src_fs, os.path.join(path, FS),
            progress=progress.update if progress else None)
        if progress:
            progress.finish()
        blobs = zodbcopy.link_blobs(src_blobs, os.path.join(path, BLOBS))
        # the copy's own index, so that opening it later scans only the tail
        zodbcopy.verify(os.path.join(path, FS), None,
                        expected_tid=prefix.last_tid, write_index=True)
        self.save(phase='prepared', prefix=prefix.as_dict(),
                  index_pos=prefix.end, prepared_end=prefix.end)
        return 'data generation %s from %s: %s, %d blobs linked' % (
            self.name, self.source, human(prefix.end), blobs)

    # 2. freeze
    def freeze(self):
        self.arm_guard()
        self.frozen = True
        self.frozen_at = time.monotonic()
        self.control.freeze(self.data.dir(self.source))
        return 'production read-only: %s' % self.control.describe()

    def spawn_guard(self):
        """A process that outlives this one: if it dies frozen, the guard
        thaws production.  Started (before the read-only window) before
        the guard file that tells it to is written, so that there never is
        such a file without a guard."""
        self.guard = subprocess.Popen(
            [sys.executable, '-m', 'collective.safedeploy.evolvecopy',
             '--guard', self.data.path, str(os.getpid())],
            stdin=subprocess.DEVNULL, start_new_session=True,
            env=zeoctl.child_env())

    def arm_guard(self):
        # it describes running processes: atomic, no need to be durable
        fsutil.atomic_write_json(self.data.guard_path(), dict(
            pid=os.getpid(), generation=self.source,
            control=control_config(self.control),
            prepared=self.control.prepared_pids()), durable=False)

    # 3. catch up
    def catch_up(self):
        path = self.data.dir(self.name)
        src_fs = self.data.fs(self.source)
        dst_fs = os.path.join(path, FS)
        if self.state.get('phase') in ('evolving', 'evolved', 'verified'):
            return self.catch_up_resumed()
        prefix = zodbcopy.Prefix.from_dict(self.state['prefix'])
        new, since, linked, packed = self.append_tail(
            src_fs, dst_fs, prefix, say_pack=True)
        return '%s%s appended, %d new blobs' % (
            'full recopy after a pack, ' if packed else '',
            human(new.end - since), linked)

    def append_tail(self, src_fs, dst_fs, prefix, say_pack=False):
        """Append production's transactions since ``prefix`` to the copy
        (all of it again after a pack), link their blobs, record the
        caught-up state.  Returns (new prefix, where the appended part
        starts, blobs linked, whether it was copied again in full)."""
        try:
            new = zodbcopy.catch_up(src_fs, dst_fs, prefix, sync=False)
            self.sync_in_background(dst_fs)
            since, packed = prefix.end, False
        except zodbcopy.PackedSince:
            if say_pack:
                self.say('production was packed since prepare: copying it '
                         'again in full')
            new = self.recopy()
            since, packed = 4, True
        linked = self.link_new_blobs(since)
        # every blob the copy's transactions up to here reference is in
        # it now (a missing one fails the link): verify checks the rest
        self.save(phase='caught-up', prefix=new.as_dict(),
                  frozen_tid=zodbcopy.tid_hex(new.last_tid),
                  blobs_checked_to=new.end)
        return new, since, linked, packed

    def catch_up_resumed(self):
        """A resumed run whose evolve had started: if production did not
        change since, go on; else start the evolve again on a fresh tail."""
        prefix = zodbcopy.Prefix.from_dict(self.state['prefix'])
        src_fs = self.data.fs(self.source)
        end = zodbcopy.committed_end(src_fs)
        if zodbcopy.still_prefix(src_fs, prefix) and end.end == prefix.end:
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
            human(new.end - since), linked)

    def sync_in_background(self, path):
        """fsync ``path`` while the next steps run; :meth:`switch` waits
        for it: the copy is durable before it becomes current."""
        self.syncing = zodbcopy.BackgroundSync(path)

    def wait_synced(self):
        """The copy's Data.fs is on disk: the background fsync is done, or
        (a resumed run, whose catch-up a killed one made) one is done now.
        """
        syncing, self.syncing = self.syncing, None
        if syncing is None:
            zodbcopy.fsync_file(os.path.join(self.data.dir(self.name), FS))
        else:
            syncing.wait()

    def recopy(self):
        path = self.data.dir(self.name)
        dst_fs = os.path.join(path, FS)
        for p in (dst_fs, dst_fs + '.index'):
            if os.path.exists(p):
                os.unlink(p)
        fsutil.remove_tree(os.path.join(path, BLOBS))
        prefix = zodbcopy.copy_prefix(self.data.fs(self.source), dst_fs)
        self.state['index_pos'] = None
        self.state['prepared_end'] = 4
        zodbcopy.link_blobs(self.data.blobs(self.source),
                            os.path.join(path, BLOBS))
        return prefix

    def link_new_blobs(self, since):
        """Hard-link the blobs of the transactions after byte ``since`` of
        the copy (the caught-up tail): O(new transactions), not O(blobs)."""
        from ZODB.blob import FilesystemHelper
        from ZODB.blob import is_blob_record
        from ZODB.FileStorage import FileIterator
        path = self.data.dir(self.name)
        dst_fs = os.path.join(path, FS)
        if os.path.getsize(dst_fs) <= max(since, 4):
            return 0
        src = FilesystemHelper(self.data.blobs(self.source))
        dst = FilesystemHelper(os.path.join(path, BLOBS))
        count = 0
        it = FileIterator(dst_fs, pos=max(since, 4))
        try:
            for txn in it:
                for record in txn:
                    if record.data and is_blob_record(record.data):
                        s = src.getBlobFilename(record.oid, record.tid)
                        d = dst.getBlobFilename(record.oid, record.tid)
                        if os.path.exists(d):
                            continue
                        os.makedirs(os.path.dirname(d), mode=0o700,
                                    exist_ok=True)
                        os.link(s, d)
                        count += 1
        finally:
            it.close()
        return count

    # 4. evolve
    def open_copy(self, read_only=False):
        import ZODB
        path = self.data.dir(self.name)
        return ZODB.DB(copy_storage(
            os.path.join(path, FS), os.path.join(path, BLOBS), read_only,
            trusted_index_pos=self.state.get('index_pos')))

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
        frozen = zodbcopy.tid_bytes(self.state['frozen_tid'])
        prefix = zodbcopy.Prefix.from_dict(self.state['prefix'])
        dst_fs = os.path.join(path, FS)
        if zodbcopy.tid_ending_at(dst_fs, prefix.end) != prefix.last_tid:
            raise zodbcopy.VerificationFailed(
                'the copy does not hold production\'s frozen state at byte '
                '%d' % prefix.end)
        db = self.open_copy(read_only=True)
        try:
            last = db.storage.lastTransaction()
            status = runners.status(db, self.runner)
        except Exception as e:
            raise zodbcopy.VerificationFailed(
                'the evolved copy does not open: %s' % e)
        finally:
            db.close()
        if frozen is not None and last < frozen:
            raise zodbcopy.VerificationFailed(
                'the copy ends with transaction %s, older than production\'s '
                'frozen %s' % (last.hex(), self.state['frozen_tid']))
        if not status['reached']:
            raise zodbcopy.VerificationFailed(
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
        from ZODB.blob import FilesystemHelper
        from ZODB.blob import is_blob_record
        from ZODB.FileStorage import FileIterator
        path = self.data.dir(self.name)
        dst_fs = os.path.join(path, FS)
        helper = FilesystemHelper(os.path.join(path, BLOBS))
        transactions = blobs = 0
        if os.path.getsize(dst_fs) <= since:
            return 0, 0
        it = FileIterator(dst_fs, pos=since)
        try:
            for txn in it:
                transactions += 1
                for record in txn:
                    if record.data and is_blob_record(record.data):
                        blobs += 1
                        if not os.path.exists(helper.getBlobFilename(
                                record.oid, record.tid)):
                            raise zodbcopy.VerificationFailed(
                                'blob of object 0x%s, transaction %s, is '
                                'missing from the copy' % (
                                    record.oid.hex(), record.tid.hex()))
        finally:
            it.close()
        return transactions, blobs

    # 6. switch
    def switch(self):
        self.wait_synced()
        gens = self.data.generations
        if not gens.is_complete(self.name):
            gens.complete(self.name, dict(
                source=self.source, evolve=self.evolve_spec,
                frozen_tid=self.state['frozen_tid'],
                switch_tid=self.state['last_tid'],
                steps=self.state.get('steps'), release=self.release))
        gens.flip(self.name, release=self.release, evolve=self.evolve_spec,
                  source=self.source, switch_tid=self.state['last_tid'])
        return 'data current -> generation %s (release %s)' % (
            self.name, self.release or '-')

    # 7. thaw
    def thaw(self):
        self.control.thaw(self.data.dir(self.data.current()))
        self.window = time.monotonic() - self.frozen_at
        self.frozen = False
        self.stop_guard()
        return 'production writable on data generation %s' % (
            self.data.current())

    def stop_guard(self):
        if os.path.exists(self.data.guard_path()):
            os.unlink(self.data.guard_path())
        if self.guard is not None:
            self.guard.terminate()
            self.guard.wait()
            self.guard = None

    # failure in prepare .. verify (switch: current may have flipped)
    def fail(self, error):
        reason = '%s: %s' % (type(error).__name__, error)
        if isinstance(error, SafeDeployError):
            reason = str(error)
        if self.frozen:
            try:
                thaw_on_current(self.data, self.control)
                self.frozen = False
                self.stop_guard()
                self.say('production thawed on data generation %s' %
                         self.data.current())
            except Exception as e:
                self.say('could not thaw production (%s); the guard process '
                         'retries' % e)
        else:
            self.stop_guard()     # nothing for it to thaw
        if self.name and not self.data.generations.is_complete(self.name):
            path = self.data.dir(self.name)
            self.save(phase='failed', error=reason,
                      failed_phase=self.state.get('phase'))
            fsutil.atomic_write(os.path.join(path, REPORT), report(
                self.state, reason, self.times))
            self.data.generations.journal.append(
                'failed', name=self.name, reason=reason)
            if isinstance(error, Exception):
                raise EvolveCopyFailed(
                    '%s; production is writable on its old data (generation '
                    '%s, unchanged); the copy is kept in %s with %s -- fix '
                    'it and run bin/evolve-copy --resume' % (
                        reason, self.source, path, REPORT)) from error


class StepLog:
    """Evolve steps as lines of the command's output."""

    def __init__(self, say):
        self.say = say

    def info(self, message, *args):
        logger.debug(message, *args)
        self.say('  ' + message % args)


def report(state, reason, times):
    lines = ['evolve-copy failed: %s' % reason,
             'source generation: %s' % state.get('source'),
             'evolve: %s' % state.get('evolve'),
             'last phase reached: %s' % state.get('failed_phase')]
    for step, seconds in times.items():
        lines.append('%s: %.3f s' % (step, seconds))
    for s in state.get('steps') or ():
        lines.append('committed step %(step)s: %(seconds)s s, %(objects)s '
                     'objects' % s)
    return '\n'.join(lines) + '\n'


def human(n):
    for unit in ('bytes', 'KiB', 'MiB', 'GiB'):
        if n < 1024 or unit == 'GiB':
            return ('%d %s' % (n, unit)) if unit == 'bytes' else (
                '%.1f %s' % (n, unit))
        n /= 1024.0


# -- rehearse --------------------------------------------------------------

SANDBOX_CONF = '''\
%import zc.beforestorage
# collective.safedeploy rehearsal sandbox: production read-only (pinned
# before {before}), changes in this directory.
<zodb main>
  <demostorage>
    <before>
      before {before}
      <filestorage>
        path {fs}
        blob-dir {blobs}
        read-only true
      </filestorage>
    </before>
    <filestorage changes>
      path {changes}
      blob-dir {changes_blobs}
    </filestorage>
  </demostorage>
</zodb>
'''


def before_string(tid):
    """A zc.beforestorage ``before`` time just after transaction ``tid``."""
    import datetime
    import math
    from persistent.TimeStamp import TimeStamp
    t = TimeStamp(tid)
    micro = math.floor(t.second() * 1e6) + 1
    base = datetime.datetime(t.year(), t.month(), t.day(), t.hour(),
                             t.minute()) + datetime.timedelta(
                                 microseconds=micro)
    return base.strftime('%Y-%m-%dT%H:%M:') + '%09.6f' % (
        base.second + base.microsecond / 1e6)


def rehearse(data, evolve, sandbox=None, keep_sandbox=False,
             evolve_context=None, evolve_key=None, out=None):
    """Run the evolve in a copy-on-write sandbox over production."""
    import tempfile
    import ZODB.config
    out = out or sys.stdout
    data = DataRoot(data)
    name = data.current()
    runner = runners.runner_for(evolve, evolve_context, evolve_key)
    fs, blobs = data.fs(name), data.blobs(name)
    last = zodbcopy.committed_end(fs).last_tid
    if sandbox is None:
        sandbox = tempfile.mkdtemp(prefix='evolve-rehearsal-',
                                   dir=data.path)
    else:
        if os.path.exists(sandbox) and os.listdir(sandbox):
            raise Refused('%s exists and is not empty; give a new sandbox '
                          'directory' % sandbox)
        os.makedirs(sandbox, exist_ok=True)
    sandbox = os.path.abspath(sandbox)
    conf = SANDBOX_CONF.format(
        before=before_string(last) if last else 'now', fs=fs, blobs=blobs,
        changes=os.path.join(sandbox, 'changes.fs'),
        changes_blobs=os.path.join(sandbox, 'blobs'))
    fsutil.atomic_write(os.path.join(sandbox, 'zodb.conf'), conf)
    out.write('rehearsing %s on data generation %s (sandbox %s)\n' % (
        runner.describe(), name, sandbox))
    errors = []
    started = time.monotonic()
    db = ZODB.config.databaseFromString(conf)
    try:
        try:
            _, steps = runners.evolve(db, runner)
        except runners.EvolveError as e:
            steps = e.done
            errors.append(str(e))
        status = runners.status(db, runner)
    finally:
        db.close()
    for s in steps:
        out.write('  %s: %.3f s, %d objects\n' % (s.name, s.seconds,
                                                  s.objects))
    for e in errors:
        out.write('  error: %s\n' % e)
    out.write('rehearsal: %.3f s, %d steps, %d objects changed, %d errors, '
              'version %s of %s\n' % (
                  time.monotonic() - started, len(steps),
                  sum(s.objects for s in steps), len(errors),
                  status['version'], status['target']))
    if keep_sandbox:
        out.write('sandbox kept in %s; serve it with the ZODB configuration '
                  '%s\n' % (sandbox, os.path.join(sandbox, 'zodb.conf')))
    else:
        fsutil.remove_tree(sandbox)
    return dict(steps=[s.as_dict() for s in steps], errors=errors,
                sandbox=sandbox if keep_sandbox else None, status=status)


# -- rollback pairing --------------------------------------------------------

def writes_since_switch(data, name=None):
    """Transactions committed in data generation ``name`` (default: the
    current one) since it was switched to."""
    data = DataRoot(data) if isinstance(data, str) else data
    name = name or data.current()
    manifest = data.generations.manifest(name) or {}
    tid = zodbcopy.tid_bytes(manifest.get('switch_tid'))
    if tid is None:
        return None
    return zodbcopy.count_transactions_after(data.fs(name), tid)


def drop_client_caches(patterns):
    """Remove ZEO clients' persistent cache files (``*.zec``): a client
    whose cache is newer than the database refuses it ("Server behind
    client")."""
    import glob
    removed = []
    for pattern in patterns:
        for path in glob.glob(pattern):
            if path.endswith('.zec') or path.endswith('.zec.lock'):
                os.unlink(path)
                removed.append(path)
    return removed


def run_hook(command, **env):
    import shlex
    if not command:
        return
    p = subprocess.run(shlex.split(command), env=dict(os.environ, **env),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if p.returncode:
        raise SafeDeployError('%s exited with code %d: %s' % (
            command, p.returncode, p.stdout.strip()[-300:]))


def switch_data_back(data, target, control=None, discard_writes=False,
                     client_stop_command=None, client_start_command=None,
                     client_caches=()):
    """Make the older data generation ``target`` current again (what
    ``bin/rollback`` calls for a release paired with older data).

    Refuses when the current generation got writes since its switch,
    unless ``discard_writes``; the abandoned generation is kept.  ZEO
    clients are stopped, their persistent caches dropped and started
    again around the server restart.
    """
    data = DataRoot(data) if isinstance(data, str) else data
    gens = data.generations
    with gens.lock('an evolve-copy or rollback of %s' % data.path):
        current = data.current()
        target = gens.resolve(target)
        writes = writes_since_switch(data, current)
        if writes and not discard_writes:
            raise Refused(
                '%d transactions were committed in data generation %s since '
                'it became current; going back to %s discards them: run '
                'again with --discard-writes (generation %s is kept)' % (
                    writes, current, target, current))
        run_hook(client_stop_command, SAFEDEPLOY_DATA=data.dir(target))
        drop_client_caches(client_caches)
        gens.flip(target, event='rolled-back', abandoned=current,
                  discarded_writes=writes or 0)
        if control is not None:
            control.thaw(data.dir(target))
        run_hook(client_start_command, SAFEDEPLOY_DATA=data.dir(target))
    return dict(previous=current, current=target, discarded=writes or 0)


# -- the command -------------------------------------------------------------

def parser():
    p = cli.ArgumentParser(
        prog='evolve-copy',
        description='Run the evolve on a copy of the database and switch to '
                    'it only when it succeeded; production is read-only only '
                    'while the writes made since the copy are caught up and '
                    'the evolve runs.')
    p.add_argument('--resume', action='store_true',
                   help='continue a killed or failed run on its copy from '
                        'the last committed evolve step')
    p.add_argument('--rehearse', action='store_true',
                   help='run the evolve in a copy-on-write sandbox over '
                        'production; nothing is copied or switched')
    p.add_argument('--keep-sandbox', metavar='DIR', nargs='?', const='',
                   default=None,
                   help='with --rehearse: keep the sandbox (in DIR) with a '
                        'zodb.conf to serve it from')
    p.add_argument('--json', action='store_true',
                   help='with --rehearse: print the report as JSON')
    p.add_argument('--switch-back', metavar='GENERATION',
                   help='make the older data generation GENERATION current '
                        'again (bin/rollback does this for a release paired '
                        'with older data); refuses to discard writes made '
                        'since the switch unless --discard-writes')
    p.add_argument('--discard-writes', action='store_true',
                   help='with --switch-back: go back even though '
                        'transactions were committed since the switch (the '
                        'abandoned generation is kept)')
    p.add_argument('--data', help='the data root (generations/, current)')
    p.add_argument('--evolve', help='package, package:schema_manager or '
                                    'module:function(root, commit)')
    p.add_argument('--evolve-context', help='root key of the object '
                                            'evolveN modules get')
    p.add_argument('--zeo-address')
    p.add_argument('--zeo-state')
    p.add_argument('--freeze-command')
    p.add_argument('--thaw-command')
    p.add_argument('-q', '--quiet', action='store_true')
    p.add_argument('-v', '--verbose', action='count', default=0)
    return p


def current_release(link):
    """The tag of the code release ``link`` (safedeploy:current) points
    to, or None."""
    if link and os.path.islink(link):
        return os.path.basename(os.readlink(link))
    return None


def main(argv=None, **options):
    """bin/evolve-copy; ``options`` come from the recipe."""
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ['--guard']:
        return guard_main(argv[1:])
    args = parser().parse_args(argv)
    cli.setup_logging(args.verbose, args.quiet)

    def option(name):
        value = getattr(args, name.replace('-', '_'), None)
        return value if value else (options.get(name.replace('-', '_')) or
                                    options.get(name) or None)

    def do():
        data = option('data')
        if not data:
            raise ConfigurationError('no data root: set data = in the '
                                     'evolve-copy part or pass --data')
        evolve = option('evolve')
        if args.rehearse:
            keep = args.keep_sandbox is not None
            result = rehearse(data, evolve, sandbox=args.keep_sandbox or None,
                              keep_sandbox=keep,
                              evolve_context=option('evolve-context'),
                              evolve_key=option('evolve-key'),
                              out=sys.stderr if args.json else sys.stdout)
            if args.json:
                cli.print_json(result)
            return 1 if result['errors'] else 0
        if args.keep_sandbox is not None:
            raise ConfigurationError('--keep-sandbox goes with --rehearse')
        control = make_control(option('zeo-address'), option('zeo-state'),
                               option('runzeo'), option('freeze-command'),
                               option('thaw-command'))
        if args.switch_back:
            caches = (option('client-cache') or '').split()
            result = switch_data_back(
                data, args.switch_back, control,
                discard_writes=args.discard_writes,
                client_stop_command=option('client-stop-command'),
                client_start_command=option('client-start-command'),
                client_caches=caches)
            print('data current -> generation %s (was %s; %d transaction(s) '
                  'discarded, kept in generation %s)' % (
                      result['current'], result['previous'],
                      result['discarded'], result['previous']))
            return 0
        if args.discard_writes:
            raise ConfigurationError('--discard-writes goes with '
                                     '--switch-back')
        return EvolveCopy(
            data, evolve, control, evolve_context=option('evolve-context'),
            evolve_key=option('evolve-key'),
            release=option('release') or os.environ.get(
                'SAFEDEPLOY_RELEASE_TAG') or current_release(
                    option('current'))).run(resume=args.resume)
    return cli.run('evolve-copy', do)


if __name__ == '__main__':
    sys.exit(main())
