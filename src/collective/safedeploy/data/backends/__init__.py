"""Snapshot backends: ``copy`` (any filesystem), ``btrfs``, ``zfs``.

Each backend keeps snapshots of one data root and offers the same
operations: ``create``, ``snapshots`` (listing), ``restore``, ``destroy``.
``detect`` picks one for ``backend = auto``.
"""
import logging

from ...core.errors import ConfigurationError
from ..mounts import is_btrfs_subvolume
from ..mounts import zfs_dataset_at

logger = logging.getLogger('collective.safedeploy')

NAMES = ('auto', 'copy', 'btrfs', 'zfs')


def detect(data):
    """``(backend name, dataset)`` for ``backend = auto``: zfs when
    ``data`` is a ZFS dataset's mountpoint, btrfs on a btrfs subvolume,
    otherwise copy."""
    dataset = zfs_dataset_at(data)
    if dataset:
        return 'zfs', dataset
    if is_btrfs_subvolume(data):
        return 'btrfs', None
    return 'copy', None


def get(config):
    """The backend object for a :class:`~collective.safedeploy.data.
    snapshot.Config`."""
    name = config.backend
    if name not in NAMES:
        raise ConfigurationError(
            'backend = %s is unknown; use one of %s' % (
                name, ', '.join(NAMES)))
    if name == 'auto':
        name, dataset = detect(config.data)
        if dataset and not config.dataset:
            config.dataset = dataset
        logger.debug('backend = auto: using %s for %s', name, config.data)
    if name == 'copy':
        from .copy import CopyBackend
        return CopyBackend(config)
    if name == 'btrfs':
        from .btrfs import BtrfsBackend
        return BtrfsBackend(config)
    from .zfs import ZfsBackend
    return ZfsBackend(config)
