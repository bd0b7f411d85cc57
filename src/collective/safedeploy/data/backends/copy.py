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

from .. import filestorage
from ...core.errors import Refused
from ...core.store import SNAPSHOT
from ...core.store import Store
from .base import StoreBackend

logger = logging.getLogger('collective.safedeploy')

SNAPSHOTS = 'snapshots'


class CopyBackend(StoreBackend):

    name = 'copy'

    def __init__(self, config):
        super().__init__(config)
        directory = os.path.join(self.root.path, SNAPSHOTS)
        self.store = Store(directory, SNAPSHOT)

    def check(self):
        self.root.current_path()

    def create(self, name, release=None, durable=False):
        with self.lock():
            source = self.root.current_path()
            self.cleanup()
            self.refuse_existing(name)

            def fill(path, generation):
                return dict(storages=self.root.copy_data(
                    source, path, self.root.hints(self._entries()),
                    keep_blobs=True, durable=durable))
            return self.take(name, release, fill)

    def state(self, manifest):
        return 'damaged' if self.damaged(manifest) else 'ok'

    def damaged(self, manifest):
        """The Data.fs files of a snapshot that are not what it recorded
        (shorter: a power cut came before the copy reached the disk; or
        replaced by hand).  A restore refuses such a snapshot."""
        path = self.store.path(manifest['name'])
        return [entry['fs'] for entry in manifest.get('storages', [])
                if entry.get('copy') and not filestorage.still_prefix(
                    os.path.join(path, entry['fs']),
                    filestorage.Prefix.from_dict(entry['copy']))]

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
