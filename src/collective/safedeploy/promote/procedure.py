"""bin/promote STAGE: the stage upgraded through its twin, traffic moved by
the balancer, no request failed and no acknowledged write lost.

:meth:`Promotion.run` is the procedure.  The same *handover* moves the
stage's traffic and writes from one set of servers to the other, first
from the main set to the twin (``to_twin``), then back (``back``); each
of its steps is a method named after it::

    preflight  the balancer knows every server; the main set serves, the
               twin does not; the main ZEO server runs (before it, and
               before anything is journaled: the previous stage has a
               current release with its package index)
    release    the target gets the release current on the previous stage,
               built from that release's own package index, offline
               (:mod:`.release`; the tag chosen by the handover to the
               twin is the one the main set gets too)
    copy       while the source serves: a new data generation of the
               target from the source's current one (Data.fs up to its last
               committed transaction, blobs hard-linked); with
               ``data-from = previous``, the twin's copy is of the previous
               stage's current data instead
    freeze     the source's ZEO server refuses new transactions, in place
               (its clients answer writes 503 at once: nothing committed,
               the balancer retries them elsewhere); when the twin's
               data comes from the previous stage, at the ``switch``
               instead: no write lands on the main set once the twin
               takes them, and the main set stays writable until then
    catch_up   the source's writes since the copy appended, new blobs
               linked (a copy of the previous stage: packed when ``pack =
               true``); one transaction of its own moves the copy's next
               object id out of the clients' way; the stage's ``evolve``
               runs on the copy, one committed step at a time (as in
               evolve-copy; nothing to do on the way back); the target's
               data ``current`` flipped to the copy
    start      the target's ZEO server started on it (its clients
               reconnect; with ``data-from = previous`` its data went
               backwards: its clients are stopped, their persistent caches
               dropped, and started again)
    check      the target answers: its ZEO server, at a last transaction
               not older than the source's frozen one, with every new blob,
               and the target's ``check`` URLs
    switch     balancer: the target ready, the source drained (in-flight
               sessions reach 0, or the drain timeout) and in maintenance;
               saved to the server-state file and read back
    stop       the source's ZEO server stopped; after ``back``, the twin is
               stopped

Every step is journaled in ``STAGES/<stage>/.journal`` before the next
begins, and each is idempotent: after a SIGKILL, ``bin/promote STAGE``
resumes the unfinished promotion at the first step not journaled as done.
A failed check puts the balancer back on the last servers journaled as
good, makes their ZEO server writable on its unchanged data and stops with
one line; the next run starts that handover again.

``data-from = previous`` replaces the stage's data with the previous
stage's: a promotion that would discard transactions committed on the
stage (:func:`writes_to_discard`) is refused before anything changes,
unless it is told to discard them.

(One module on purpose: the promotion and its handover are one
procedure, each step a method in run order; the few helpers only it
uses (:func:`zeo_last_transaction`, :func:`http_check`, ...) are at the
end.)
"""
import os
import socket
import sys
import time
import urllib.error
import urllib.request

from .. import balancer as balancers
from ..core import commands
from ..core import fsutil
from ..core.errors import Refused
from ..core.errors import SafeDeployError
from ..core.journal import Journal
from ..core.lock import locked
from ..data import copy as fscopy
from ..data import filestorage
from ..data import verify as fsverify
from ..evolve import runners
from ..evolve.procedure import StepLog
from ..evolve.procedure import skip_prefetched_oids
from ..evolve.state import BLOBS
from ..evolve.state import FS
from ..evolve.state import DataRoot
from ..evolve.switchback import committed_tids
from ..evolve.switchback import drop_client_caches
from ..evolve.switchback import evolve_intervals
from ..index.records import index_path
from ..zeo.control import DataServer
from ..zeo.server import ZEOServer
from . import release as releases

HANDOVERS = ('to_twin', 'back')
STEPS = ('release', 'copy', 'freeze', 'catch_up', 'start', 'check', 'switch', 'stop')


def plan():
    """Every step of a promotion, in run order."""
    return ['preflight'] + ['%s.%s' % (h, s) for h in HANDOVERS
                            for s in STEPS]


class CheckFailed(SafeDeployError):
    """A sanity check failed; traffic is back on the last good servers."""


class Promotion:

    def __init__(self, stage, directory, out=None, before_step=None,
                 discard_writes=False):
        """``directory``: where each stage's journal and lock live
        (``directory/<stage>/``); ``before_step(name)``, when given, is
        called before each step runs; ``discard_writes``: with
        ``data-from = previous``, go on when the stage's data holds
        transactions the previous stage's does not."""
        self.stage = stage
        self.discard_writes = discard_writes
        self.directory = os.path.join(directory, stage.name)
        self.journal = Journal(os.path.join(self.directory, '.journal'))
        self.out = out or sys.stdout
        self.before_step = before_step
        self.balancer = balancers.open(stage.balancer)
        self.run_id = None
        self.records = {}
        self.runner = None

    # -- output and journal -------------------------------------------------

    def say(self, text):
        self.out.write(text + '\n')
        self.out.flush()

    def unfinished(self):
        """(run id, {step: record}) of the promotion a killed or failed run
        left, or (None, {})."""
        run, records = None, {}
        for entry in self.journal.entries():
            event = entry['event']
            if event == 'promotion-started':
                run, records = entry['name'], {}
            elif entry.get('name') != run:
                continue
            elif event == 'step-done':
                records[entry['step']] = entry
            elif event == 'handover-reset':
                for step in list(records):
                    if step.startswith(entry['handover'] + '.'):
                        del records[step]
            elif event == 'promotion-finished':
                run, records = None, {}
        return run, records

    def done(self, step, **fields):
        entry = self.journal.append('step-done', name=self.run_id, step=step,
                                    **fields)
        self.records[step] = entry

    def last_good(self):
        good = None
        for entry in self.journal.entries():
            if entry['event'] == 'good':
                good = entry['servers']
        return good or self.stage.main.servers

    # -- the run --------------------------------------------------------------

    def run(self, dry_run=False):
        os.makedirs(self.directory, exist_ok=True)
        with locked(os.path.join(self.directory, '.lock'),
                    'a promotion of stage %s' % self.stage.name):
            self.run_id, self.records = self.unfinished()
            if dry_run:
                return self.print_plan()
            if self.stage.evolve:
                self.runner = runners.runner_for(
                    self.stage.evolve, self.stage.evolve_context,
                    self.stage.evolve_key)
            if self.run_id is None:
                if self.stage.release == 'previous':
                    # refused before anything is journaled
                    releases.source_release(
                        self.stage.previous, self.stage.previous_root,
                        self.stage.previous_indexes)
                discarded = self.check_discarded()
                self.run_id = time.strftime('%Y%m%dT%H%M%S') + '-%d' % (
                    os.getpid())
                self.journal.append('promotion-started', name=self.run_id,
                                    stage=self.stage.name, plan=plan(),
                                    data_from=self.stage.data_from,
                                    discarded_writes=discarded)
            else:
                self.say('resuming promotion %s after %s' % (
                    self.run_id, self.last_done() or 'its start'))
            self.step('preflight', self.preflight)
            for name in HANDOVERS:
                handover = Handover(self, name)
                for step in STEPS:
                    self.step('%s.%s' % (name, step),
                              getattr(handover, step))
            self.journal.append('promotion-finished', name=self.run_id,
                                stage=self.stage.name)
        self.say('promoted %s: traffic on %s' % (
            self.stage.name, ' '.join(self.stage.main.servers)))
        return 0

    def check_discarded(self):
        """With ``data-from = previous``: how many transactions committed
        on the stage the promotion discards; refused when there are any
        and ``discard_writes`` is false."""
        stage = self.stage
        if stage.data_from != 'previous':
            return None
        count = writes_to_discard(stage.main.data, stage.previous_data)
        if count and not self.discard_writes:
            raise Refused(
                'stage %s takes writes: its data holds %d transaction(s) the '
                'data of stage %s does not, and data-from = previous '
                'replaces it; run bin/promote %s --discard-writes to discard '
                'them' % (stage.name, count, stage.previous, stage.name))
        return count

    def last_done(self):
        done = [s for s in plan() if s in self.records]
        return done[-1] if done else None

    def step(self, name, function):
        if name in self.records:
            return
        if self.before_step is not None:
            self.before_step(name)
        started = time.monotonic()
        fields = function() or {}
        detail = fields.pop('detail', '')
        self.done(name, **fields)
        self.say('%-17s %.3f s%s' % (name + ':', time.monotonic() - started,
                                     '  (%s)' % detail if detail else ''))

    def print_plan(self):
        self.say('promote %s (data from %s):' % (
            self.stage.name, self.stage.data_from))
        for step in plan():
            self.say('  %s %s' % ('done' if step in self.records else '    ',
                                  step))
        return 0

    # 0. preflight
    def preflight(self):
        stage, lb = self.stage, self.balancer
        servers = lb.servers()
        for name in stage.main.servers + stage.twin.servers:
            lb.state(name)
        if not any(servers[n].admin == balancers.READY
                   for n in stage.main.servers):
            raise Refused(
                'no server of the main set (%s) of stage %s is ready in %s; '
                'put them back into service first' % (
                    ' '.join(stage.main.servers), stage.name,
                    lb.describe()))
        busy = [n for n in stage.twin.servers
                if servers[n].admin != balancers.MAINT]
        if busy:
            raise Refused(
                'the twin of stage %s takes traffic (%s not in maint) and no '
                'promotion is unfinished; put them into maint first' % (
                    stage.name, ' '.join(busy)))
        if ZEOServer(stage.main.zeo, stage.main.zeo_state).pid() is None:
            raise Refused('the ZEO server of stage %s (%s) does not run; '
                          'start it first' % (stage.name, stage.main.zeo))
        self.journal.append('good', name=self.run_id,
                            servers=stage.main.servers)
        return dict(detail='main %s ready, twin %s in maint' % (
            ' '.join(stage.main.servers), ' '.join(stage.twin.servers)))


class Handover:
    """Traffic and writes from ``source`` to ``target`` (main -> twin, or
    back)."""

    def __init__(self, promotion, name):
        self.p = promotion
        self.name = name
        stage = promotion.stage
        self.source, self.target = (stage.main, stage.twin) if \
            name == 'to_twin' else (stage.twin, stage.main)
        self.source_data = DataRoot(self.source.data)
        # data-from = previous: the twin's copy is of the previous stage,
        # and both sets' data goes back from what their clients saw
        self.from_previous = stage.data_from == 'previous' and \
            name == 'to_twin'
        self.backwards = stage.data_from == 'previous'
        self.copy_data = DataRoot(stage.previous_data) if \
            self.from_previous else self.source_data
        self.target_data = DataRoot(self.target.data)
        self.source_server = ZEOServer(self.source.zeo,
                                       self.source.zeo_state)
        self.target_server = ZEOServer(self.target.zeo,
                                       self.target.zeo_state)

    def record(self, step):
        return self.p.records.get('%s.%s' % (self.name, step), {})

    # 0. release
    def release(self):
        stage = self.p.stage
        if stage.release == 'none':
            return dict(detail='release = none: releases left alone')
        tag = self.p.records.get('to_twin.release', {}).get('tag')
        if tag is None:
            tag, index = releases.source_release(
                stage.previous, stage.previous_root, stage.previous_indexes)
        else:       # the one the twin got, whatever the previous has now
            index = index_path(stage.previous_indexes, tag)
        return dict(tag=tag, detail=releases.build(
            self.target.root, self.target.buildout, tag, index,
            stage.previous))

    # 1. copy
    def copy(self):
        origin = self.copy_data
        source = origin.current()
        serving = self.source_data.current()
        gens = self.target_data.generations
        gens.recover()
        name = self.target_data.next_name()
        path = gens.stage(name, source='%s:%s' % (origin.path, source),
                          promotion=self.p.run_id)
        os.makedirs(os.path.dirname(os.path.join(path, FS)))
        prefix = fscopy.copy_prefix(origin.fs(source),
                                    os.path.join(path, FS))
        linked = fscopy.link_blobs(origin.blobs(source),
                                   os.path.join(path, BLOBS))
        return dict(generation=name, source_generation=source,
                    serving_generation=serving, prefix=prefix.as_dict(),
                    detail='%s data generation %s from %s%s: %d bytes, %d '
                           'blobs linked' % (
                               self.target.role, name,
                               'stage %s\'s ' % self.p.stage.previous
                               if self.from_previous else '', source,
                               prefix.end, linked))

    def serving_generation(self):
        copied = self.record('copy')
        return copied.get('serving_generation',
                          copied.get('source_generation'))

    # 2. freeze
    def freeze(self):
        if self.from_previous:
            return dict(detail='at the switch: the twin\'s data does not '
                               'depend on the main set\'s')
        return dict(detail=self.freeze_source())

    def freeze_source(self):
        server = self.source_server
        if server.pid() is None:
            raise Refused('the %s ZEO server (%s) does not run; start it '
                          'and run bin/promote again' % (
                              self.source.role, self.source.zeo))
        if not server.read_only():
            DataServer(server, FS, BLOBS).freeze(self.source_data.dir(
                self.serving_generation()))
        return '%s read-only' % server.describe()

    # 3. catch up
    def catch_up(self):
        copied = self.record('copy')
        name, source = copied['generation'], copied['source_generation']
        gens = self.target_data.generations
        dst_fs = self.target_data.fs(name)
        prefix = filestorage.Prefix.from_dict(copied['prefix'])
        dst_blobs = self.target_data.blobs(name)
        packed = False
        if self.from_previous:
            # a copy of another stage, not caught up: it is what it is
            new, blobs_from = prefix, 4
            if self.p.stage.pack and not gens.is_complete(name):
                pack(dst_fs, dst_blobs)
                packed = True
        else:
            new, blobs_from = prefix, prefix.end
            if not gens.is_complete(name):
                new = fscopy.catch_up(self.source_data.fs(source), dst_fs,
                                      prefix)
                fsverify.check_blobs(dst_fs, dst_blobs, prefix.end,
                                     link_from=self.source_data.blobs(
                                         source))
        evolved = None
        if not gens.is_complete(name):
            try:
                last, evolved = past_prefetched_oids(
                    dst_fs, dst_blobs, self.p.run_id, self.p.runner,
                    StepLog(self.p.say))
            except (runners.EvolveError, filestorage.VerificationFailed) \
                    as e:
                self.back_to_good(str(e), 'the evolve on the copy for the '
                                  '%s set failed' % self.target.role)
            # the transactions promote committed itself (none is a
            # client's write): not counted as writes a later
            # data-from = previous would discard
            intervals = own_intervals(self.copy_data, source) + [
                (new.last_tid, last)]
            # (copied_from, not source: that names a generation of this
            # data root, as evolve_intervals follows it)
            gens.complete(name, dict(
                copied_from='%s:%s' % (self.copy_data.path, source),
                promotion=self.p.run_id, frozen_tid=filestorage.tid_hex(
                    new.last_tid), packed=packed, evolve=self.p.stage.evolve,
                steps=[step.as_dict() for step in evolved or ()],
                promote_intervals=[[filestorage.tid_hex(low),
                                    filestorage.tid_hex(high)]
                                   for low, high in intervals]))
            fsutil.fsync_file(dst_fs)
        if gens.current_name() != name:
            gens.flip(name, via='promote', promotion=self.p.run_id)
        if self.from_previous:
            detail = 'a copy of stage %s%s' % (
                self.p.stage.previous, ', packed' if packed else '')
        else:
            detail = '%d bytes appended' % (new.end - prefix.end)
        if evolved is not None:
            detail += '; %s: %d step(s)' % (self.p.runner.describe(),
                                            len(evolved))
        return dict(frozen_tid=filestorage.tid_hex(new.last_tid),
                    blobs_from=blobs_from,
                    detail='%s; %s data current -> %s' % (
                        detail, self.target.role, name))

    # 4. start
    def start(self):
        server = self.target_server
        name = self.target_data.current()
        fs, blobs = self.target_data.fs(name), self.target_data.blobs(name)
        if self.backwards:
            return self.start_with_caches_dropped(fs, blobs, name)
        conf = server.configuration()
        if server.pid() is not None:
            if conf and os.path.realpath(conf[0]) == os.path.realpath(fs) \
                    and not server.read_only():
                return dict(detail='%s already serves generation %s' % (
                    server.describe(), name))
            server.restart(fs, blobs)
        else:
            server.start(fs, blobs)
        return dict(detail='%s serves generation %s' % (server.describe(),
                                                         name))

    def start_with_caches_dropped(self, fs, blobs, name):
        """The target's data went back from what its clients saw: a ZEO
        client with a persistent cache refuses a server older than its
        cache, and one whose cache is newer than the data would serve
        objects the data does not hold.  Its clients are stopped, their
        cache files removed, the server started, the clients started."""
        target, server = self.target, self.target_server
        env = dict(os.environ, SAFEDEPLOY_DATA=self.target_data.dir(name))
        prefix = '' if target.role == 'main' else 'twin-'
        stop = commands.split(target.client_stop,
                              prefix + 'client-stop-command')
        if stop:
            commands.run(stop, what=prefix + 'client-stop-command', env=env)
        dropped = drop_client_caches(target.client_cache)
        if server.pid() is not None:
            server.restart(fs, blobs)
        else:
            server.start(fs, blobs)
        start = commands.split(target.client_start,
                               prefix + 'client-start-command')
        if start:
            commands.run(start, what=prefix + 'client-start-command',
                         env=env)
        return dict(dropped=dropped, detail='%s serves generation %s; %d '
                    'client cache file(s) dropped' % (
                        server.describe(), name, len(dropped)))

    # 5. check
    def check(self):
        try:
            return dict(detail=self.sanity())
        except CheckFailed as e:
            self.back_to_good(str(e))

    def sanity(self):
        timeout = self.p.stage.check_timeout
        frozen = filestorage.tid_bytes(self.record('catch_up')['frozen_tid'])
        last = zeo_last_transaction(self.target.zeo, timeout)
        if frozen is not None and last < frozen:
            raise CheckFailed(
                'the %s ZEO server is at transaction %s, older than the %s '
                'frozen at %s' % (self.target.role, last.hex(),
                                  self.source.role, frozen.hex()))
        name = self.record('copy')['generation']
        prefix = filestorage.Prefix.from_dict(self.record('copy')['prefix'])
        since = self.record('catch_up').get('blobs_from', prefix.end)
        try:
            _, blobs = fsverify.check_blobs(
                self.target_data.fs(name), self.target_data.blobs(name),
                since)[:2]
        except filestorage.VerificationFailed as e:
            raise CheckFailed(str(e))
        for url in self.target.checks:
            http_check(url, timeout)
        return 'ZEO at %s, %d new blobs present, %d URL(s) answer' % (
            last.hex(), blobs, len(self.target.checks))

    def back_to_good(self, reason, what=None):
        """Traffic on the last good servers, their ZEO server writable on
        its unchanged data; the handover starts again next run."""
        good = self.p.last_good()
        lb = self.p.balancer
        others = [n for n in self.p.stage.main.servers +
                  self.p.stage.twin.servers if n not in good]
        lb.switch(good, others, self.p.stage.drain_timeout)
        server = self.source_server
        if server.pid() is None or server.read_only():
            DataServer(server, FS, BLOBS).thaw(
                self.source_data.dir(self.serving_generation()))
        self.target_server.stop()
        self.p.journal.append('handover-reset', name=self.p.run_id,
                              handover=self.name, reason=reason)
        raise CheckFailed(
            '%s: %s; traffic is back on %s (writable on unchanged data); fix '
            'it and run bin/promote %s again' % (
                what or 'check of the %s set failed' % self.target.role,
                reason, ' '.join(good), self.p.stage.name))

    # 6. switch
    def switch(self):
        if self.from_previous:
            # no write lands on the main set once the twin takes them
            self.freeze_source()
        lb = self.p.balancer
        drained = lb.switch(self.target.servers, self.source.servers,
                            self.p.stage.drain_timeout)
        servers = lb.servers()
        wrong = [n for n in self.target.servers
                 if servers[n].admin != balancers.READY] + [
                     n for n in self.source.servers
                     if servers[n].admin != balancers.MAINT]
        if wrong:
            raise CheckFailed('%s: %s did not take the state set; see '
                              'HAProxy\'s log' % (lb.describe(),
                                                  ' '.join(wrong)))
        self.p.journal.append('good', name=self.p.run_id,
                              servers=self.target.servers)
        return dict(drained=drained, detail='traffic on %s; %s %s' % (
            ' '.join(self.target.servers), ' '.join(self.source.servers),
            'drained' if drained else 'still busy at the drain timeout, '
            'now in maint'))

    # 7. stop
    def stop(self):
        self.source_server.stop()
        return dict(detail='%s stopped' % self.source_server.describe())


def pack(fs, blobs):
    """Pack a copy no server serves yet (the old file is not kept)."""
    from ZODB.FileStorage import FileStorage
    from ZODB.serialize import referencesf
    storage = FileStorage(fs, blob_dir=blobs, pack_keep_old=False)
    try:
        storage.pack(time.time(), referencesf)
    finally:
        storage.close()


def own_intervals(data, name):
    """[(low, high)]: the transactions of data generation ``name`` that
    evolve-copy and promote committed themselves, ``low < tid <= high``
    (from the manifests: an evolve-copy's chain of generations, the
    intervals a promotion recorded and carried on from its source)."""
    manifest = data.generations.manifest(name) or {}
    return evolve_intervals(data, name) + [
        (filestorage.tid_bytes(low), filestorage.tid_bytes(high))
        for low, high in manifest.get('promote_intervals', ())]


def writes_to_discard(data, previous):
    """How many transactions clients committed in the current data
    generation of the data root ``data`` that the current one of
    ``previous`` does not hold (compared by transaction id; those
    evolve-copy and promote committed themselves do not count)."""
    data, previous = DataRoot(data), DataRoot(previous)
    current = data.current()
    lacking = committed_tids(data.fs(current)) - committed_tids(
        previous.fs(previous.current()))
    ours = own_intervals(data, current)
    return sum(1 for tid in lacking
               if not any(low < tid <= high for low, high in ours))


def past_prefetched_oids(fs, blobs, run_id, runner=None, log=None):
    """Commit one transaction to the caught-up copy, before anything
    serves it, that moves its next object id past evolve-copy's gap
    (:func:`~collective.safedeploy.evolve.procedure.skip_prefetched_oids`).
    ZEO clients keep object ids the old server handed out across a
    reconnect; the set that served meanwhile allocated from the same
    counter, so without the gap a client reconnected to the copy would
    store a new object over one of theirs.

    Then ``runner``'s evolve, when given, one committed step at a time
    (:func:`~collective.safedeploy.evolve.runners.evolve`, as
    evolve-copy runs it), to its target.  Returns the last transaction id
    and the evolve's steps (None without a runner)."""
    import transaction
    import ZODB
    from persistent.mapping import PersistentMapping
    from ZODB.FileStorage import FileStorage
    storage = FileStorage(fs, blob_dir=blobs)
    skip_prefetched_oids(storage)
    db = ZODB.DB(storage)
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        conn.root()['collective.safedeploy.promote'] = PersistentMapping(
            promotion=run_id)
        tm.commit()
        conn.close()
        steps = None
        if runner is not None:
            steps = runners.evolve(db, runner, log=log)[1]
            status = runners.status(db, runner)
            if not status['reached']:
                raise filestorage.VerificationFailed(
                    'the evolve stopped at version %s, not %s' % (
                        status['version'], status['target']))
        return storage.lastTransaction(), steps
    finally:
        db.close()


def zeo_last_transaction(address, timeout):
    """The last transaction id the ZEO server at ``address`` reports."""
    import ZEO
    from ..zeo.server import parse_address
    try:
        storage = ZEO.client(parse_address(address), read_only=True,
                             wait_timeout=timeout)
    except Exception as e:
        raise CheckFailed('the ZEO server %s does not answer: %s' % (
            address, e))
    try:
        return storage.lastTransaction()
    finally:
        storage.close()


def http_check(url, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if 200 <= r.status < 300:
                    return
                problem = 'HTTP %d' % r.status
        except urllib.error.HTTPError as e:
            problem = 'HTTP %d' % e.code
        except (urllib.error.URLError, socket.timeout, OSError) as e:
            problem = str(getattr(e, 'reason', e))
        if time.monotonic() >= deadline:
            raise CheckFailed('%s answers %s' % (url, problem))
        time.sleep(0.1)


def last_promotion(directory, stage):
    """The last promotion of ``stage`` journaled: {run, state, time}."""
    journal = Journal(os.path.join(directory, stage, '.journal'))
    last = None
    for entry in journal.entries(strict=False):
        event = entry.get('event')
        if event == 'promotion-started':
            last = dict(run=entry['name'], state='unfinished',
                        started=entry['time'], step=None)
        elif last and entry.get('name') == last['run']:
            if event == 'step-done':
                last['step'] = entry['step']
            elif event == 'promotion-finished':
                last.update(state='finished', finished=entry['time'])
            elif event == 'handover-reset':
                last.update(state='check failed', reason=entry['reason'])
    return last

