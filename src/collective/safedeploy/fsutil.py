"""Crash-safe filesystem primitives.

Every change that must survive a SIGKILL is written as: a new file or link
under a temporary name in the same directory, fsync, ``os.replace`` over
the target, fsync of the directory.  A reader sees the old version or the
new one, never a missing or partial one.
"""
import json
import os
import shutil
import uuid


def fsync_directory(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary_name(path):
    directory, name = os.path.split(path)
    return os.path.join(directory, '.%s.%s.tmp' % (name, uuid.uuid4().hex[:12]))


def atomic_write(path, data, mode=0o644, durable=True):
    """Replace ``path`` by a file holding ``data`` (str or bytes).

    Without ``durable`` nothing is fsynced: the replacement is still
    atomic for every process (a SIGKILL never leaves a partial file), but a
    power failure may bring back the old version -- for state that is
    only advice to a later run, where an fsync would cost more than it
    protects."""
    if isinstance(data, str):
        data = data.encode('utf-8')
    tmp = _temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        fsync_directory(os.path.dirname(path) or '.')


def atomic_write_json(path, obj, durable=True):
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + '\n',
                 durable=durable)


def atomic_copy(source, path):
    """Copy ``source`` to ``path`` (mode included) atomically."""
    tmp = _temporary_name(path)
    try:
        shutil.copy2(source, tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    fsync_directory(os.path.dirname(path) or '.')


def atomic_symlink(target, link):
    """Point the symlink ``link`` at ``target``, atomically.

    A new link is made under a temporary name beside ``link`` and renamed
    over it.  Never ``ln -sfn``: that unlinks first, and readers in between
    find nothing.
    """
    tmp = _temporary_name(link)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    fsync_directory(os.path.dirname(link) or '.')


def remove_tree(path, trash_prefix='.trash-'):
    """Remove a directory tree so that a crash never leaves half of it
    under its old name: rename it aside first, then delete."""
    if not os.path.lexists(path):
        return
    directory, name = os.path.split(path)
    trash = os.path.join(directory, '%s%s-%s' % (
        trash_prefix, name, uuid.uuid4().hex[:8]))
    os.rename(path, trash)
    fsync_directory(directory)
    _rmtree(trash)


def _rmtree(path):
    def onerror(function, p, excinfo):
        # committed blobs are read-only (0444) in read-only directories
        try:
            os.chmod(os.path.dirname(p), 0o755)
            os.chmod(p, 0o755)
        except OSError:
            pass
        function(p)
    shutil.rmtree(path, onerror=onerror)


def empty_trash(directory, trash_prefix='.trash-'):
    """Finish removals a killed process left behind."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if name.startswith(trash_prefix):
            _rmtree(os.path.join(directory, name))
        elif name.startswith('.') and name.endswith('.tmp'):
            try:
                p = os.path.join(directory, name)
                if os.path.isdir(p) and not os.path.islink(p):
                    _rmtree(p)
                else:
                    os.unlink(p)
            except OSError:
                pass


def is_within(path, directory):
    """True when ``path`` is ``directory`` or inside it (no symlink tricks)."""
    path = os.path.realpath(path)
    directory = os.path.realpath(directory)
    return path == directory or path.startswith(directory + os.sep)
