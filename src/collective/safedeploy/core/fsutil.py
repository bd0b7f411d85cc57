"""Crash-safe filesystem primitives.

Every change that must survive a SIGKILL is written as: a new file or link
under a temporary name in the same directory, fsync, ``os.replace`` over
the target, fsync of the directory.  A reader sees the old version or the
new one, never a missing or partial one.
"""
import json
import os
import shutil
import sys
import threading


def fsync_directory(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path):
    """Flush the filesystem holding ``path`` (one call instead of an
    fsync per file)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def random_suffix(length):
    """``length`` random hex digits, for names that must not collide
    (without the uuid module, which costs the listings' start-up)."""
    return os.urandom((length + 1) // 2).hex()[:length]


def _temporary_name(path):
    directory, name = os.path.split(path)
    return os.path.join(directory, '.%s.%s.tmp' % (name, random_suffix(12)))


def _replace(path, make, durable=True):
    """``make(tmp)`` writes a new version under a temporary name beside
    ``path`` (fsynced when ``durable``); it is renamed over ``path``."""
    tmp = _temporary_name(path)
    try:
        make(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        fsync_directory(os.path.dirname(path) or '.')


def atomic_write(path, data, mode=0o644, durable=True):
    """Replace ``path`` by a file holding ``data`` (str or bytes).

    Without ``durable`` nothing is fsynced: the replacement is still
    atomic for every process (a SIGKILL never leaves a partial file), but a
    power failure may bring back the old version -- for state that is
    only advice to a later run, where an fsync would cost more than it
    protects."""
    if isinstance(data, str):
        data = data.encode('utf-8')

    def make(tmp):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
    _replace(path, make, durable)


def atomic_write_json(path, obj, durable=True):
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + '\n',
                 durable=durable)


def read_json_object(path):
    """The JSON object in the file ``path``; None when the file is
    missing, unreadable, not JSON or not an object (a record whose writer
    may have been killed: the caller decides what that means)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def atomic_copy(source, path):
    """Copy ``source`` to ``path`` (mode included) atomically."""
    def make(tmp):
        shutil.copy2(source, tmp)
        fsync_file(tmp)
    _replace(path, make)


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
        trash_prefix, name, random_suffix(8)))
    os.rename(path, trash)
    fsync_directory(directory)
    _rmtree(trash)


def _rmtree(path):
    def retry(function, p, excinfo):
        # committed blobs are read-only (0444) in read-only directories
        try:
            os.chmod(os.path.dirname(p), 0o755)
            os.chmod(p, 0o755)
        except OSError:
            pass
        function(p)
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)


def remove_marked(path, marker):
    """Remove the directory ``path`` that the file ``marker`` in it says
    is ours, the marker last: a removal killed half-way leaves it still
    marked, for the next run to finish."""
    if not os.path.lexists(path):
        return
    for name in os.listdir(path):
        if name == marker:
            continue
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            _rmtree(p)
        else:
            os.unlink(p)
    if os.path.lexists(os.path.join(path, marker)):
        os.unlink(os.path.join(path, marker))
    os.rmdir(path)
    fsync_directory(os.path.dirname(path))


def empty_trash(directory, trash_prefix='.trash-', remove=None):
    """Finish removals a killed process left behind: our trash, and the
    temporary files and directories of killed writes.  ``remove(path)``
    removes a directory when a plain removal is not the way (a btrfs
    subvolume); it may rename it aside first, like :func:`remove_tree`."""
    if not os.path.isdir(directory):
        return
    delete = _rmtree if remove in (None, remove_tree) else remove
    for name in os.listdir(directory):
        p = os.path.join(directory, name)
        try:
            if name.startswith(trash_prefix):
                delete(p)
            elif name.startswith('.') and name.endswith('.tmp'):
                if os.path.isdir(p) and not os.path.islink(p):
                    delete(p)
                else:
                    os.unlink(p)
        except FileNotFoundError:
            pass


def is_within(path, directory):
    """True when ``path`` is ``directory`` or inside it (no symlink tricks)."""
    path = os.path.realpath(path)
    directory = os.path.realpath(directory)
    return path == directory or path.startswith(directory + os.sep)


class Background:
    """``function(*args, **kw)`` run in a thread while the caller goes on;
    :meth:`wait` returns its result once it is done (and raises what it
    raised)."""

    def __init__(self, function, *args, **kw):
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       args=(function, args, kw))
        self.thread.start()

    def _run(self, function, args, kw):
        try:
            self.result = function(*args, **kw)
        except BaseException as e:
            self.error = e

    def wait(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.result


class BackgroundSync(Background):
    """fsync a file in a thread while the caller goes on; :meth:`wait`
    returns once it is on disk (and raises what the fsync raised)."""

    def __init__(self, path):
        super().__init__(fsync_file, path)


def sha256(path, size=1 << 20):
    """The sha256 hex digest of a file's content."""
    import hashlib
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(size), b''):
            digest.update(block)
    return digest.hexdigest()
