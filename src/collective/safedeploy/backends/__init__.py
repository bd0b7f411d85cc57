"""Snapshot backends: ``copy`` (any filesystem), ``btrfs``, ``zfs``.

Each backend keeps snapshots of one data root and offers the same
operations: ``create``, ``snapshots`` (listing), ``restore``, ``destroy``.
``detect`` picks one for ``backend = auto``.
"""
import logging
import os
import shutil
import subprocess

from ..errors import ConfigurationError
from ..errors import SafeDeployError

logger = logging.getLogger('collective.safedeploy')

NAMES = ('auto', 'copy', 'btrfs', 'zfs')


class CommandFailed(SafeDeployError):
    """An external command (zfs, btrfs) failed."""


def command(args, check=True):
    """Run an external command (argument list); return its stdout.  A
    failure becomes a one-line :class:`CommandFailed`."""
    logger.debug('running %s', ' '.join(args))
    if shutil.which(args[0]) is None:
        raise CommandFailed('the %s command is not installed; install it '
                            'or choose another backend' % args[0])
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    if check and p.returncode:
        message = (p.stderr.strip() or p.stdout.strip()).splitlines()
        raise CommandFailed('%s failed: %s' % (
            ' '.join(args[:3]), message[-1] if message else
            'exit code %d' % p.returncode))
    return p.stdout


def mounts():
    """(mount point, filesystem type, source) of every mount."""
    result = []
    with open('/proc/self/mountinfo') as f:
        for line in f:
            fields = line.split()
            sep = fields.index('-')
            point = fields[4].replace('\\040', ' ')
            result.append((point, fields[sep + 1], fields[sep + 2]))
    return result


def mount_of(path):
    """(mount point, type, source) of the mount holding ``path``."""
    path = os.path.realpath(path)
    best = None
    for point, fstype, source in mounts():
        if path == point or path.startswith(point.rstrip('/') + '/'):
            if best is None or len(point) >= len(best[0]):
                best = (point, fstype, source)
    return best


def fs_type(path):
    found = mount_of(path)
    return found[1] if found else None


def zfs_dataset_at(path):
    """The ZFS dataset whose mountpoint is ``path``, or None."""
    if shutil.which('zfs') is None:
        return None
    try:
        out = command(['zfs', 'list', '-H', '-o', 'name,mountpoint',
                       '-t', 'filesystem'])
    except CommandFailed:
        return None
    path = os.path.realpath(path)
    for line in out.splitlines():
        name, _, mountpoint = line.partition('\t')
        if mountpoint.startswith('/') and \
                os.path.realpath(mountpoint) == path:
            return name
    return None


def is_btrfs_subvolume(path):
    try:
        return fs_type(path) == 'btrfs' and os.stat(path).st_ino == 256
    except OSError:
        return False


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
    """The backend object for a :class:`~collective.safedeploy.snapshot.
    Config`."""
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
