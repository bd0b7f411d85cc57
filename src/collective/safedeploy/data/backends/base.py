"""What every backend shares: the data root, the lock, and restoring a
snapshot as a new data generation."""
import logging
import os

from .. import filestorage
from ...core.errors import Damaged
from ...core.errors import NotFound
from ...core.errors import Refused
from ...core.journal import now  # noqa: F401 (the backends' time stamps)
from ..layout import DataRoot

logger = logging.getLogger('collective.safedeploy')


def disk_usage(root):
    """(apparent size, bytes held only by this tree) of a directory tree,
    each file counted once however many links to it the tree has: a
    hard-linked blob production still has holds nothing extra."""
    seen = {}
    for directory, dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            links, _ = seen.get(key, (0, st))
            seen[key] = (links + 1, st)
    size = held = 0
    for links, st in seen.values():
        size += st.st_size
        if links >= st.st_nlink:
            held += st.st_blocks * 512
    return size, held


class Backend:

    name = None

    def __init__(self, config):
        self.config = config
        self.root = DataRoot(config.data, config.files)

    # -- to implement ------------------------------------------------------

    def check(self):
        """Raise when the data root is unsuitable for this backend."""

    def create(self, name, release=None, durable=False):
        """Take snapshot ``name``; return its info dict.  It is consistent
        and verified when this returns; with ``durable`` it is on disk too
        (zfs and btrfs snapshots always are: they commit before they
        return; a copy otherwise reaches the disk with the kernel's
        write-back, and what relies on it makes it durable first)."""
        raise NotImplementedError

    def snapshots(self):
        """Info dicts of the complete snapshots, oldest first."""
        raise NotImplementedError

    def restore(self, name, force=False, discard_writes=False):
        raise NotImplementedError

    def destroy(self, name):
        raise NotImplementedError

    # -- shared ------------------------------------------------------------

    def lock(self):
        return self.root.lock()

    def info(self, name):
        for row in self.snapshots():
            if row['name'] == name:
                return row
        raise NotFound('no snapshot %s of %s; bin/snapshot --list shows the '
                       'ones there are' % (name, self.config.data))

    def exists(self, name):
        return any(r['name'] == name for r in self.snapshots())

    def refuse_existing(self, name):
        if self.exists(name):
            raise Refused('snapshot %s exists already; choose another name '
                          'or destroy it first' % name)

    def refuse_running(self):
        running = self.root.running()
        if running:
            raise Refused(
                '%s is in use (a process holds %s.lock); stop the site, '
                'then restore' % (running[0], running[0]))

    def discarded(self, info):
        """Transactions committed to the current data after the snapshot
        (what a restore would discard)."""
        current = self.root.current_path()
        total = 0
        for entry in info.get('storages', []):
            fs = os.path.join(current, entry['fs'])
            if os.path.exists(fs):
                total += filestorage.count_transactions_after(
                    fs, filestorage.tid_bytes(entry.get('last_tid')),
                    entry.get('end'))
        return total

    def check_restore(self, name, discard_writes=False):
        """What :meth:`restore` refuses for want of ``discard_writes``,
        refused the same way, changing nothing: returns the number of
        transactions it would discard."""
        count = self.discarded(self.info(name))
        self.refuse_discarding(name, count, discard_writes,
                               self.discards_kept_in())
        return count

    def discards_kept_in(self):
        """Where a restore keeps what it discards: the data generation it
        replaces."""
        return 'data generation %s' % self.root.current_name()

    def refuse_discarding(self, name, count, discard_writes, keeper):
        if count and not discard_writes:
            raise Refused(
                'restoring %s would discard %d transaction(s) committed '
                'after it; run again with --discard-writes to restore anyway '
                '(they are kept in %s)' % (name, count, keeper))

    def restore_as_generation(self, name, info, source, force=False,
                              discard_writes=False, own_copy=False,
                              make=None, check=None):
        """A new data generation made from ``source`` (the snapshot's copy
        of the data) and flipped in; the replaced one is kept.  With
        ``own_copy`` (``source`` holds the snapshot's own files, as
        recorded) its Data.fs is handed over rather than copied when it
        can be; ``make`` and ``check``: see :meth:`~collective.safedeploy.
        data.layout.DataRoot.new_generation`."""
        with self.lock():
            self.refuse_running()
            current = self.root.current_name()
            count = self.discarded(info)
            self.refuse_discarding(name, count, discard_writes,
                                   'data generation %s' % current)
            generation = self.root.new_generation(
                source=source, flip=True, hints=info.get('storages', []),
                via='restore', snapshot=name, discarded=count,
                replaced=current, make=make, check=check,
                recorded=info.get('storages', []) if own_copy else ())
            # the result: bin/snapshot --restore and bin/rollback say it
            logger.debug('restored snapshot %s as data generation %s '
                         '(generation %s kept, %d transaction(s) in it '
                         'after the snapshot)', name, generation, current,
                         count)
            pruned = self.prune_generations()
            return dict(name=name, backend=self.name, generation=generation,
                        replaced=current, discarded=count,
                        last_tid=info.get('last_tid'), pruned=pruned)

    def prune_generations(self, discard_writes=False, dry_run=False):
        """The data generations beyond ``keep-generations`` go, after a
        restore made one (call under :meth:`lock`); a failure is logged,
        not raised: the restore is done."""
        keep = getattr(self.config, 'keep_generations',
                       self.root.DEFAULT_KEEP)
        try:
            removed = self.root.prune(keep, self.config.releases,
                                      discard_writes=discard_writes,
                                      dry_run=dry_run)
        except Exception as e:
            if dry_run:
                raise
            logger.error('pruning data generations failed: %s (the next '
                         'restore or bin/snapshot --prune retries)', e)
            return []
        for name in [] if dry_run else removed:
            logger.info('pruned data generation %s (more than '
                        'keep-generations=%d)', name, keep)
        return removed


class StoreBackend(Backend):
    """A backend whose snapshots are directories in the one store type
    (copy: ``DATA/snapshots``; btrfs: subvolumes in ``DATA/.snapshots``).
    Subclasses set ``self.store`` and say how a snapshot is filled."""

    store = None

    def info(self, name):
        if self.store.entry(name) == 'damaged':
            raise Damaged(
                'snapshot %s is damaged (its manifest is not what '
                'collective.safedeploy writes); it is left as it is: '
                'restore another snapshot' % name)
        return super().info(name)

    def cleanup(self):
        """Remove what killed runs left (snapshots never completed)."""
        self.store.recover()
        for name in self.store.on_disk():
            if self.store.entry(name) == 'staging':
                self.store.discard(name, 'incomplete')

    def take(self, name, release, fill, make=None, seal=None):
        """Stage snapshot ``name`` (``make(path)`` makes its directory),
        ``fill(path, generation)`` it (returns the manifest's ``storages``
        and any other fields), complete it (``seal(path)`` last).  A
        failure leaves nothing listed."""
        generation = self.root.current_name()
        time = now()
        path = self.store.stage(name, backend=self.name, make=make)
        try:
            fields = fill(path, generation)
            storages = fields.get('storages', [])
            manifest = self.store.complete(name, dict(
                fields, backend=self.name, time=time, release=release,
                generation=generation,
                last_tid=storages[0]['last_tid'] if storages else None),
                seal=seal)
        except BaseException as e:
            self.store.mark_failed(name, str(e) or repr(e))
            try:
                self.store.discard(name, 'failed: %s' % e)
            except Exception:
                pass     # the next run removes it
            raise
        return self._row(manifest)

    def _entries(self):
        entries = []
        for row in self.snapshots():
            entries.extend(row.get('storages', []))
        return entries

    def usage(self, manifest, kept=()):
        """(size, bytes only this snapshot holds) for listings; ``kept``:
        the manifests of every complete snapshot (read once a listing)."""
        return disk_usage(self.store.path(manifest['name']))

    def state(self, manifest):
        return 'ok'

    def _row(self, manifest, sizes=False, kept=()):
        row = dict(name=manifest['name'], backend=self.name,
                   time=manifest.get('time'),
                   release=manifest.get('release'),
                   last_tid=manifest.get('last_tid'),
                   generation=manifest.get('generation'),
                   storages=manifest.get('storages', []))
        if sizes:
            row['size'], row['holds'] = self.usage(manifest, kept)
            row['state'] = self.state(manifest)
        return row

    def snapshots(self, sizes=False, damaged=False):
        """The complete snapshots, oldest first; with ``damaged``, those
        whose manifest is damaged too (state ``damaged``: listed, never
        restored or removed by us)."""
        rows, complete = [], []
        for name in self.store.on_disk(strict=not damaged):
            entry = self.store.entry(name)
            if entry == 'complete':
                complete.append(self.store.manifest(name))
            elif entry == 'damaged' and damaged:
                rows.append(dict(name=name, backend=self.name, time=None,
                                 release=None, last_tid=None,
                                 generation=None, storages=[],
                                 state='damaged'))
        rows.extend(self._row(m, sizes, complete) for m in complete)
        rows.sort(key=lambda r: r['time'] or '')
        return rows

    def destroy(self, name):
        with self.lock():
            self.info(name)
            self.store.discard(name, 'destroyed')
