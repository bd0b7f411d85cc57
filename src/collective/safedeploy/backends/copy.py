"""The portable backend: a snapshot is a consistent copy of the current
data generation in ``DATA/snapshots/<name>``.

Data.fs is copied up to the end of its last committed transaction (a
reflink when the filesystem can, else the kernel's fastest copy), then the
committed blob files are hard-linked (they are never rewritten).  The site
keeps running meanwhile.  Like ``cp``, a create does not wait for the copy
to reach the disk (unless asked to, as before a release flip): a restore
makes it durable before it becomes the site's data, and one that a power
cut left short is refused as damaged.  Snapshots are staged and completed like
generations: one killed half-way is never listed and is removed by the
next run.
"""
import logging
import os

from .. import fsutil
from .. import zodbcopy
from ..errors import Refused
from ..generations import Generations
from .base import Backend
from .base import disk_usage
from .base import now

logger = logging.getLogger('collective.safedeploy')

SNAPSHOTS = 'snapshots'


class CopyBackend(Backend):

    name = 'copy'

    def __init__(self, config):
        super().__init__(config)
        directory = os.path.join(self.root.path, SNAPSHOTS)
        self.store = Generations(directory, os.path.join(directory, '.none'),
                                 kind='snapshot', what='snapshot name')

    def check(self):
        self.root.current_path()

    def cleanup(self):
        """Remove what killed runs left (incomplete snapshots)."""
        self.store.recover()
        for name in self.store.on_disk():
            if not self.store.is_complete(name):
                self.store.discard(name, 'incomplete')

    def create(self, name, release=None, durable=False):
        with self.lock():
            source = self.root.current_path()
            self.cleanup()
            self.refuse_existing(name)
            time = now()
            path = self.store.stage(name, backend=self.name)
            try:
                storages = self.root.copy_data(
                    source, path, self.root.hints(self._entries()),
                    keep_blobs=True, durable=durable)
            except BaseException as e:
                self.store.mark_failed(name, str(e) or repr(e))
                try:
                    self.store.discard(name, 'failed: %s' % e)
                except OSError:
                    pass
                raise
            manifest = self.store.complete(name, dict(
                backend=self.name, time=time, release=release,
                generation=self.root.current_name(), storages=storages,
                last_tid=storages[0]['last_tid'] if storages else None))
            return self._row(manifest)

    def _entries(self):
        entries = []
        for name in self.store.on_disk():
            manifest = self.store.manifest(name)
            if manifest:
                entries.extend(manifest.get('storages', []))
        return entries

    def _row(self, manifest, sizes=False):
        row = dict(name=manifest['name'], backend=self.name,
                   time=manifest.get('time'),
                   release=manifest.get('release'),
                   last_tid=manifest.get('last_tid'),
                   generation=manifest.get('generation'),
                   storages=manifest.get('storages', []))
        if sizes:
            row['size'], row['holds'] = disk_usage(
                self.store.path(manifest['name']))
            row['state'] = 'damaged' if self.damaged(manifest) else 'ok'
        return row

    def damaged(self, manifest):
        """The Data.fs files of a snapshot that are not what it recorded
        (shorter: a power cut came before the copy reached the disk; or
        replaced by hand).  A restore refuses such a snapshot."""
        path = self.store.path(manifest['name'])
        return [entry['fs'] for entry in manifest.get('storages', [])
                if entry.get('copy') and not zodbcopy.still_prefix(
                    os.path.join(path, entry['fs']),
                    zodbcopy.Prefix.from_dict(entry['copy']))]

    def snapshots(self, sizes=False):
        rows = []
        for name in self.store.on_disk():
            manifest = self.store.manifest(name)
            if manifest:
                rows.append(self._row(manifest, sizes))
        rows.sort(key=lambda r: r['time'] or '')
        return rows

    def restore(self, name, force=False, discard_writes=False):
        info = self.info(name)
        damaged = self.damaged(info)
        if damaged:
            raise Refused(
                'snapshot %s is damaged: its %s is not what it recorded '
                '(shorter: a power cut came before it reached the disk; or '
                'changed by hand); restore another snapshot'
                % (name, damaged[0]))
        return self.restore_as_generation(
            name, info, self.store.path(name), force, discard_writes,
            own_copy=True)

    def destroy(self, name):
        with self.lock():
            self.info(name)
            self.store.discard(name, 'destroyed')
            fsutil.fsync_directory(self.store.directory)
