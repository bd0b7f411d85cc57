"""The btrfs backend: read-only snapshots of the data root subvolume.

``DATA`` is a btrfs subvolume; a snapshot is ``btrfs subvolume snapshot
-r DATA DATA/.snapshots/<name>`` -- atomic, instant, whatever the site is
writing (a transaction being committed at that moment is not part of it:
a read-only open stops at the last committed one).  Its details are in
``DATA/.snapshots/<name>.json``, written before the snapshot gets its
name, so a listed snapshot is always a verified one.

A restore makes a new data generation from the snapshot's copy of the
current generation (Data.fs and blobs reflinked across subvolumes: no
data is copied) and flips ``DATA/current`` to it; the replaced generation
is kept.
"""
import json
import logging
import os

from .. import fsutil
from .. import zodbcopy
from ..errors import ConfigurationError
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

    def create(self, name, release=None):
        with self.lock():
            self.check()
            os.makedirs(self.directory, exist_ok=True)
            self.cleanup()
            self.refuse_existing(name)
            generation = self.root.current_name()
            time = now()
            staging = self.path(STAGING + name)
            command(['btrfs', 'subvolume', 'snapshot', '-r', self.root.path,
                     staging])
            try:
                storages = self._verify(staging, generation)
                meta = dict(name=name, backend=self.name, time=time,
                            release=release, generation=generation,
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

    def _verify(self, snapshot, generation):
        """Check the snapshot's copy of the current generation; return the
        entries recorded for it."""
        source = self.root.generations.path(generation)
        inside = os.path.join(snapshot, 'generations', generation)
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

    def restore(self, name, force=False, discard_writes=False):
        info = self.info(name)
        source = os.path.join(self.path(name), 'generations',
                              info['generation'])
        # blobs the generation it was taken of still holds are the same
        # files: hard-link them from there (no link crosses subvolumes)
        live = self.root.generations.path(info['generation'])
        return self.restore_as_generation(
            name, info, source, force, discard_writes,
            link_from=live if os.path.isdir(live) else None)

    def destroy(self, name):
        with self.lock():
            self.info(name)
            os.unlink(self.meta_path(name))   # no longer listed
            fsutil.fsync_directory(self.directory)
            self._delete_subvolume(self.path(name))
            self.journal.append('destroyed', name=name)
