"""The btrfs backend: read-only snapshots of subvolumes, restored as
writable snapshots.

``DATA`` is a btrfs subvolume.  A snapshot is a subvolume
``DATA/.snapshots/<name>`` in the one store type
(:class:`~collective.safedeploy.core.store.Store`): made by ``btrfs
subvolume snapshot`` as the staging directory -- atomic, instant,
whatever the site is writing (a transaction being committed at that
moment is not part of it: a read-only open stops at the last committed
one) --, verified, given its manifest, then made read-only.  It is a
snapshot of

- the current data generation, when that is a subvolume itself (every
  generation a restore made is one): the snapshot's top level is the
  generation (``"of": "generation"`` in its manifest);
- otherwise of the whole data root (``"of": "root"``; e.g. generation 1
  made by ``--adopt``): the generation is ``generations/<G>`` in it.

A restore makes a writable snapshot of the snapshot the new data
generation -- whatever the size of the data, no file is copied or linked
-- and flips ``DATA/current`` to it; the replaced generation is kept.
"""
import logging
import os
import uuid

from .. import filestorage
from .. import copy as fscopy
from .. import verify as fsverify
from ...core import fsutil
from ...core import store
from ...core.errors import ConfigurationError
from ...core.errors import NotFound
from ...core.store import SNAPSHOT
from ...core.store import Store
from ..layout import GENERATIONS
from ..mounts import command
from ..mounts import fs_type
from ..mounts import is_btrfs_subvolume
from ..mounts import remove_generation
from .base import StoreBackend

logger = logging.getLogger('collective.safedeploy')

SNAPSHOTS = '.snapshots'
# what a snapshot is of
ROOT = 'root'               # the data root
GENERATION = 'generation'   # the current data generation, a subvolume
# where a restore puts what a snapshot of the root holds besides the
# generation, before removing it
REST = '.safedeploy-rest-'
MARKERS = (store.MANIFEST, store.STAGING, store.FAILED)


class BtrfsBackend(StoreBackend):

    name = 'btrfs'

    def __init__(self, config):
        super().__init__(config)
        self.directory = os.path.join(self.root.path, SNAPSHOTS)
        self.store = Store(self.directory, SNAPSHOT,
                           remove=remove_generation)

    def check(self):
        if not os.path.isdir(self.root.path):
            raise ConfigurationError('data = %s does not exist; create it '
                                     'or fix the data option'
                                     % self.root.path)
        if not is_btrfs_subvolume(self.root.path):
            raise ConfigurationError(
                'backend = btrfs needs data = %s to be a btrfs subvolume (it '
                'is on %s); create one with "btrfs subvolume create" or use '
                'backend = copy' % (self.root.path,
                                    fs_type(self.root.path) or 'unknown'))
        self.root.current_path()

    def path(self, name):
        return self.store.path(name)

    def create(self, name, release=None, durable=False):
        with self.lock():
            self.check()
            self.cleanup()
            self.refuse_existing(name)
            of, source = self._what_to_snapshot(self.root.current_name())

            def fill(path, generation):
                return dict(of=of, storages=self._verify(
                    self.generation_in(path, of, generation), generation))
            return self.take(name, release, fill,
                             make=lambda tmp: self._snapshot(source, tmp),
                             seal=self._read_only)

    @staticmethod
    def _snapshot(source, path):
        """``path``: a writable snapshot of ``source``, without the markers
        of the generation it may be."""
        command(['btrfs', 'subvolume', 'snapshot', source, path])
        for marker in MARKERS:
            if os.path.exists(os.path.join(path, marker)):
                os.unlink(os.path.join(path, marker))

    @staticmethod
    def _read_only(path):
        command(['btrfs', 'property', 'set', '-ts', path, 'ro', 'true'])

    def _what_to_snapshot(self, generation):
        """(kind, subvolume): the current generation when it is a
        subvolume, else the data root.  (A snapshot of the root holds an
        empty directory where a nested subvolume is.)"""
        path = self.root.generations.path(generation)
        if is_btrfs_subvolume(path):
            return GENERATION, path
        return ROOT, self.root.path

    def generation_in(self, snapshot, of, generation):
        """Where data generation ``generation`` is in a snapshot."""
        if of == GENERATION:
            return snapshot
        return os.path.join(snapshot, GENERATIONS, generation)

    def _verify(self, inside, generation):
        """Check the snapshot's copy ``inside`` of the current generation;
        return the entries recorded for it."""
        source = self.root.generations.path(generation)
        hints = self.root.hints(self._entries())
        entries = []
        for fs_rel, blobs_rel in [(s.fs, s.blobs)
                                  for s in self.root.storages if s.fs]:
            fs = os.path.join(inside, fs_rel)
            blobs = os.path.join(inside, blobs_rel) if blobs_rel else None
            pos = filestorage.committed_end(fs)
            live = os.path.join(source, fs_rel)
            hint = fsverify.best_hint(live, fs_rel, hints)
            checked = fsverify.verify(fs, blobs, expected_tid=pos.last_tid,
                                      **fsverify.since(hint))
            first = filestorage.first_tid_of(fs, pos.end)
            st, lst = os.stat(fs), os.stat(live)
            copy = filestorage.Prefix(st.st_ino, st.st_dev, pos.end,
                                   pos.last_tid, first)
            src = copy._replace(inode=lst.st_ino, device=lst.st_dev)
            entries.append(dict(
                fs=fs_rel, blobs=blobs_rel, copy=copy.as_dict(),
                source=src.as_dict() if filestorage.still_prefix(live, src)
                else None,
                last_tid=filestorage.tid_hex(pos.last_tid),
                verified_since=filestorage.tid_hex(hint and hint.last_tid),
                checked_transactions=checked['transactions'],
                checked_blobs=checked['blobs']))
        return entries

    def usage(self, manifest, kept=()):
        """(size of the data it holds, space only it holds) from btrfs
        quota groups when quotas are on; else (size, None)."""
        name = manifest['name']
        size = 0
        for directory, dirs, files in os.walk(self.path(name)):
            for f in files:
                try:
                    size += os.lstat(os.path.join(directory, f)).st_size
                except OSError:
                    pass
        held = None
        try:
            out = command(['btrfs', 'qgroup', 'show', '--raw', '-f',
                           self.path(name)])
            for line in out.splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0].startswith('0/'):
                    held = int(parts[2])
        except Exception:
            held = None
        return size, held

    def meta(self, name):
        """The manifest of a listed snapshot."""
        self.info(name)
        return self.store.manifest(name)

    def restore(self, name, force=False, discard_writes=False):
        """A writable snapshot of snapshot ``name`` becomes the new data
        generation; ``current`` is flipped to it, the replaced generation
        is kept."""
        meta = self.meta(name)
        snapshot = self.path(name)
        return self.restore_as_generation(
            name, meta, snapshot, force, discard_writes,
            make=lambda tmp: self.writable_snapshot(snapshot, meta, tmp),
            check=lambda path: self.check_restored(path, meta))

    def writable_snapshot(self, snapshot, meta, path):
        """Make ``path`` a writable snapshot of ``snapshot`` laid out as a
        data generation: what the snapshotted generation held, without its
        manifest."""
        command(['btrfs', 'subvolume', 'snapshot', snapshot, path])
        try:
            if meta.get('of', ROOT) == ROOT:
                self.lift_generation(path, meta['generation'], meta['name'])
            for marker in MARKERS:
                marker = os.path.join(path, marker)
                if os.path.exists(marker):
                    os.unlink(marker)
        except BaseException:
            remove_generation(path)
            raise

    def lift_generation(self, top, generation, name):
        """In ``top``, a writable snapshot of the data root, move
        ``generations/<generation>/*`` up to the top level and remove
        everything else (in one subvolume a rename is instant; what is
        removed is small: other generations a snapshot of the root holds
        are empty directories when they are subvolumes)."""
        rest = os.path.join(top, REST + uuid.uuid4().hex[:8])
        os.mkdir(rest, 0o700)
        for entry in os.listdir(top):
            if entry != os.path.basename(rest):
                os.rename(os.path.join(top, entry),
                          os.path.join(rest, entry))
        inside = os.path.join(rest, GENERATIONS, generation)
        if not os.path.isdir(inside):
            raise NotFound('snapshot %s holds no data generation %s; '
                           'restore another snapshot' % (name, generation))
        for entry in os.listdir(inside):
            os.rename(os.path.join(inside, entry), os.path.join(top, entry))
        os.chmod(top, os.stat(inside).st_mode & 0o7777)
        fsutil.remove_tree(rest)
        fsutil.fsync_directory(top)

    def check_restored(self, path, meta):
        """Check the new generation ``path`` against the snapshot's details
        (the snapshot was verified when it was taken and is read-only: the
        Data.fs ends with the recorded transaction at the recorded end, the
        blob directory is there); return its manifest entries."""
        entries = []
        for entry in meta.get('storages', []):
            fs = os.path.join(path, entry['fs'])
            recorded = filestorage.Prefix.from_dict(entry['copy'])
            try:
                pos = filestorage.committed_end(fs)
            except filestorage.CopyError as e:
                raise filestorage.VerificationFailed(str(e))
            first = filestorage.first_tid_of(fs, pos.end)
            if (pos.end, pos.last_tid, first) != (
                    recorded.end, recorded.last_tid, recorded.first_tid):
                raise filestorage.VerificationFailed(
                    '%s ends with transaction %s at byte %d, not %s at %d '
                    'as recorded for snapshot %s; restore another snapshot'
                    % (fs, filestorage.tid_hex(pos.last_tid), pos.end,
                       entry['last_tid'], recorded.end, meta['name']))
            if os.path.getsize(fs) > pos.end:
                # a transaction being committed when the snapshot was taken:
                # not part of it (a writable open would cut it off too)
                os.truncate(fs, pos.end)
            if entry.get('blobs'):
                blobs = os.path.join(path, entry['blobs'])
                if not os.path.isdir(blobs):
                    raise filestorage.VerificationFailed(
                        'no blob directory at %s' % blobs)
                self.clear_blob_tmp(blobs)
                fsverify.prepare_blob_dir(blobs)
            st = os.stat(fs)
            own = recorded._replace(inode=st.st_ino, device=st.st_dev)
            index = filestorage.saved_index_position(fs)
            if index != pos.end:
                logger.info('%s.index %s: the first open of the restored '
                            'data scans %s', fs, 'is missing' if index is None
                            else 'ends at byte %d' % index,
                            'all of it' if index is None else
                            'the transactions after it')
            entries.append(dict(
                fs=entry['fs'], blobs=entry.get('blobs'),
                source=entry['copy'], copy=own.as_dict(),
                last_tid=entry['last_tid'],
                verified_since=entry.get('verified_since'),
                verified_in_snapshot=meta['name'],
                checked_transactions=0, checked_blobs=0))
        fsutil.fsync_directory(path)
        return entries

    def clear_blob_tmp(self, blobs):
        """Uncommitted blob files the site was writing when the snapshot
        was taken are no part of the data."""
        tmp = os.path.join(blobs, fscopy.TMP_DIR)
        if os.path.isdir(tmp) and os.listdir(tmp):
            fsutil.remove_tree(tmp)
