"""Which filesystem holds a path, and the tools of the snapshotting ones.

:func:`command` runs ``zfs`` and ``btrfs`` (through the one command
runner); :func:`remove_generation` removes a generation's directory the
way its filesystem wants (a btrfs subvolume is deleted at once, a plain
directory renamed aside and removed file by file).
"""
import os
import shutil

from ..core import commands
from ..core import fsutil
from ..core.errors import CommandFailed


def command(args):
    """Run a filesystem tool (zfs, btrfs); return what it printed on
    stdout.  A failure is one line (:class:`CommandFailed`)."""
    if shutil.which(args[0]) is None:
        raise CommandFailed('the %s command is not installed; install it '
                            'or choose another backend' % args[0])
    return commands.run(args, output=commands.CAPTURE).stdout


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
    """The ZFS dataset whose mountpoint is ``path``, or None.

    Asks ``zfs list`` only when a filesystem is mounted at ``path`` itself
    (a mounted dataset always is): a plain directory is answered from
    /proc/self/mountinfo, without starting a process (without it, zfs
    is asked)."""
    path = os.path.realpath(path)
    try:
        found = mount_of(path)
        mounted_here = found is not None and found[0] == path
    except OSError:     # no /proc/self/mountinfo
        mounted_here = True
    if not mounted_here or shutil.which('zfs') is None:
        return None
    try:
        out = command(['zfs', 'list', '-H', '-o', 'name,mountpoint',
                       '-t', 'filesystem'])
    except CommandFailed:
        return None
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




def remove_generation(path):
    """Remove a generation, snapshot or their staging directory."""
    if not os.path.lexists(path):
        return
    if is_btrfs_subvolume(path):
        command(['btrfs', 'subvolume', 'delete', path])
        fsutil.fsync_directory(os.path.dirname(path))
    else:
        fsutil.remove_tree(path)
