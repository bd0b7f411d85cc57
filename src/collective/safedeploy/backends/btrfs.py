"""The btrfs backend: read-only snapshots of subvolumes, restored as
writable snapshots.

``DATA`` is a btrfs subvolume.  A snapshot is a read-only subvolume
``DATA/.snapshots/<name>`` -- atomic, instant, whatever the site is
writing (a transaction being committed at that moment is not part of it:
a read-only open stops at the last committed one).  It is a snapshot of

- the current data generation, when that is a subvolume itself (every
  generation a restore made is one): the snapshot's top level is the
  generation (``"of": "generation"`` in its details);
- otherwise of the whole data root (``"of": "root"``; e.g. generation 1
  made by ``--adopt``): the generation is ``generations/<G>`` in it.

Its details are in ``DATA/.snapshots/<name>.json``, written before the
snapshot gets its name, so a listed snapshot is always a verified one.

A restore makes a writable snapshot of the snapshot the new data
generation -- whatever the size of the data, no file is copied or linked
-- and flips ``DATA/current`` to it; the replaced generation is kept.
"""
import json
import logging
import os
import uuid

from .. import fsutil
from .. import generations
from .. import zodbcopy
from ..errors import ConfigurationError
from ..errors import NotFound
from ..datagen import GENERATIONS
from ..datagen import best_hint
from ..datagen import since
from ..journal import Journal
from . import command
from . import fs_type
from . import is_btrfs_subvolume
from .base import Backend
from .base import now

logger = logging.getLogger('collective.safedeploy')

SNAPSHOTS = '.snapshots'
STAGING = '.staging-'
# what a snapshot is of
ROOT = 'root'               # the data root (details without "of": old ones)
GENERATION = 'generation'   # the current data generation, a subvolume
# where a restore puts what a snapshot of the root holds besides the
# generation, before removing it
REST = '.safedeploy-rest-'


class BtrfsBackend(Backend):

    name = 'btrfs'

    def __init__(self, config):
        super().__init__(config)
        self.directory = os.path.join(self.root.path, SNAPSHOTS)
        self.journal = Journal(os.path.join(self.directory, '.journal'))

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
        return os.path.join(self.directory, name)

    def meta_path(self, name):
        return os.path.join(self.directory, name + '.json')

    def _delete_subvolume(self, path):
        command(['btrfs', 'subvolume', 'delete', path])

    def cleanup(self):
        """Remove what killed runs left: staging snapshots, snapshots
        without details, details without a snapshot."""
        if not os.path.isdir(self.directory):
            return
        for entry in os.listdir(self.directory):
            p = os.path.join(self.directory, entry)
            if entry.startswith(STAGING) and os.path.isdir(p):
                self._delete_subvolume(p)
            elif entry.endswith('.json') and not os.path.isdir(p[:-5]):
                os.unlink(p)
            elif os.path.isdir(p) and not entry.startswith('.') and \
                    not os.path.exists(p + '.json'):
                self._delete_subvolume(p)

    def create(self, name, release=None, durable=False):
        with self.lock():
            self.check()
            os.makedirs(self.directory, exist_ok=True)
            self.cleanup()
            self.refuse_existing(name)
            generation = self.root.current_name()
            of, source = self._what_to_snapshot(generation)
            time = now()
            staging = self.path(STAGING + name)
            command(['btrfs', 'subvolume', 'snapshot', '-r', source,
                     staging])
            try:
                storages = self._verify(
                    self.generation_in(staging, of, generation), generation)
                meta = dict(name=name, backend=self.name, time=time,
                            release=release, generation=generation, of=of,
                            storages=storages,
                            last_tid=storages[0]['last_tid']
                            if storages else None)
                fsutil.atomic_write_json(self.meta_path(name), meta)
                os.rename(staging, self.path(name))
                fsutil.fsync_directory(self.directory)
            except BaseException:
                for p in (self.meta_path(name),):
                    if os.path.exists(p):
                        os.unlink(p)
                if os.path.isdir(staging):
                    self._delete_subvolume(staging)
                raise
            self.journal.append('snapshot', name=name, release=release)
            return self._row(meta)

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
            pos = zodbcopy.committed_end(fs)
            live = os.path.join(source, fs_rel)
            hint = best_hint(live, fs_rel, hints)
            checked = zodbcopy.verify(fs, blobs, expected_tid=pos.last_tid,
                                      **since(hint))
            first = zodbcopy._first_tid_of(fs, pos.end)
            st, lst = os.stat(fs), os.stat(live)
            copy = zodbcopy.Prefix(st.st_ino, st.st_dev, pos.end,
                                   pos.last_tid, first)
            src = copy._replace(inode=lst.st_ino, device=lst.st_dev)
            entries.append(dict(
                fs=fs_rel, blobs=blobs_rel, copy=copy.as_dict(),
                source=src.as_dict() if zodbcopy.still_prefix(live, src)
                else None,
                last_tid=zodbcopy.tid_hex(pos.last_tid),
                verified_since=zodbcopy.tid_hex(hint and hint.last_tid),
                checked_transactions=checked['transactions'],
                checked_blobs=checked['blobs']))
        return entries

    def _entries(self):
        entries = []
        for row in self.snapshots():
            entries.extend(row.get('storages', []))
        return entries

    def _row(self, meta):
        return dict(name=meta['name'], backend=self.name,
                    time=meta.get('time'), release=meta.get('release'),
                    last_tid=meta.get('last_tid'),
                    generation=meta.get('generation'),
                    storages=meta.get('storages', []),
                    size=None, holds=None)

    def snapshots(self, sizes=False):
        rows = []
        if not os.path.isdir(self.directory):
            return rows
        for entry in os.listdir(self.directory):
            if entry.startswith('.') or not entry.endswith('.json'):
                continue
            if not os.path.isdir(self.path(entry[:-5])):
                continue
            try:
                with open(os.path.join(self.directory, entry)) as f:
                    meta = json.load(f)
            except (OSError, ValueError):
                continue
            row = self._row(meta)
            if sizes:
                row['size'], row['holds'] = self._usage(row['name'])
            rows.append(row)
        rows.sort(key=lambda r: r['time'] or '')
        return rows

    def _usage(self, name):
        """(size of the data it holds, space only it holds) from btrfs
        quota groups when quotas are on; else (size, None)."""
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
                           self.path(name)], check=True)
            for line in out.splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0].startswith('0/'):
                    held = int(parts[2])
        except Exception:
            held = None
        return size, held

    def meta(self, name):
        """The details of a listed snapshot."""
        self.info(name)
        with open(self.meta_path(name)) as f:
            return json.load(f)

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
            for marker in (generations.MANIFEST, generations.STAGING,
                           generations.FAILED):
                marker = os.path.join(path, marker)
                if os.path.exists(marker):
                    os.unlink(marker)
        except BaseException:
            fsutil.remove_tree(path)
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
            recorded = zodbcopy.Prefix.from_dict(entry['copy'])
            try:
                pos = zodbcopy.committed_end(fs)
            except zodbcopy.CopyError as e:
                raise zodbcopy.VerificationFailed(str(e))
            first = zodbcopy._first_tid_of(fs, pos.end)
            if (pos.end, pos.last_tid, first) != (
                    recorded.end, recorded.last_tid, recorded.first_tid):
                raise zodbcopy.VerificationFailed(
                    '%s ends with transaction %s at byte %d, not %s at %d '
                    'as recorded for snapshot %s; restore another snapshot'
                    % (fs, zodbcopy.tid_hex(pos.last_tid), pos.end,
                       entry['last_tid'], recorded.end, meta['name']))
            if os.path.getsize(fs) > pos.end:
                # a transaction being committed when the snapshot was taken:
                # not part of it (a writable open would cut it off too)
                os.truncate(fs, pos.end)
            if entry.get('blobs'):
                blobs = os.path.join(path, entry['blobs'])
                if not os.path.isdir(blobs):
                    raise zodbcopy.VerificationFailed(
                        'no blob directory at %s' % blobs)
                self.clear_blob_tmp(blobs)
                zodbcopy.prepare_blob_dir(blobs)
            st = os.stat(fs)
            own = recorded._replace(inode=st.st_ino, device=st.st_dev)
            index = zodbcopy.saved_index_position(fs)
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
        tmp = os.path.join(blobs, zodbcopy.TMP_DIR)
        if os.path.isdir(tmp) and os.listdir(tmp):
            fsutil.remove_tree(tmp)

    def destroy(self, name):
        with self.lock():
            self.info(name)
            os.unlink(self.meta_path(name))   # no longer listed
            fsutil.fsync_directory(self.directory)
            self._delete_subvolume(self.path(name))
            self.journal.append('destroyed', name=name)
