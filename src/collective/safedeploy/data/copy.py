"""Consistent copies of a live FileStorage (Data.fs + blob directory).

A copy of the bytes of a Data.fs up to its committed end
(:func:`~collective.safedeploy.data.filestorage.committed_end`) is a
consistent database, taken without stopping the site:

1. :func:`copy_prefix` copies the file up to there (a reflink when the
   filesystem can, else the kernel's fastest copy), from one open file
   descriptor, so a pack renaming the file meanwhile cannot mix two files;
2. :func:`link_blobs` hard-links the committed blob files (never rewritten:
   a new revision is a new file) -- after Data.fs, because a blob file
   exists from ``tpc_vote`` on, before Data.fs records its commit;
3. :func:`~collective.safedeploy.data.verify.verify` opens the copy
   read-only and checks it.

:func:`catch_up` brings a copy up to date by appending only the new
committed tail; after a pack it raises :class:`~collective.safedeploy.
data.filestorage.PackedSince` and the caller copies again.  A snapshot's
own copy is handed to a restored generation by :func:`take_prefix` and
:func:`take_blobs` without copying.

The source is only ever opened for reading.
"""
import errno
import fcntl
import logging
import os
import shutil

from ..core.fsutil import fsync_directory
from ..core.fsutil import syncfs
from .filestorage import CopyError
from .filestorage import PackedSince
from .filestorage import Position
from .filestorage import Prefix
from .filestorage import _committed_end
from .filestorage import _first_tid
from .filestorage import _open_source
from .filestorage import _record_ending_at
from .filestorage import _still_prefix
from .filestorage import still_prefix
from .filestorage import tid_hex

logger = logging.getLogger('collective.safedeploy')

FICLONE = 0x40049409        # _IOW(0x94, 9, int)
CHUNK = 64 << 20
TMP_DIR = 'tmp'
LAYOUT = '.layout'


def _reflink(src_fd, dst_fd):
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
        return True
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV,
                       errno.EINVAL, errno.ENOSYS, errno.EPERM):
            return False
        raise


def _copy_range(src_fd, dst_fd, start, end, progress=None):
    """Copy bytes [start, end) of src to the same offsets of dst."""
    pos = start
    use_cfr = hasattr(os, 'copy_file_range')
    while pos < end:
        n = min(CHUNK, end - pos)
        done = 0
        if use_cfr:
            try:
                done = os.copy_file_range(src_fd, dst_fd, n, pos, pos)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL,
                                   errno.EOPNOTSUPP):
                    raise
                use_cfr = False
                continue
        else:
            data = os.pread(src_fd, n, pos)
            done = os.pwrite(dst_fd, data, pos) if data else 0
        if done <= 0:
            raise CopyError('the source file ended at %d, before %d: it was '
                            'truncated while being copied' % (pos, end))
        pos += done
        if progress is not None:
            progress(done)


def _copy_index(src_fs, dst_fs):
    """Copy Data.fs.index: FileStorage checks it against the copy when it
    opens it (an index past the end of the file is ignored) and scans
    forward from its position, so a stale one still saves a full scan."""
    src, dst = src_fs + '.index', dst_fs + '.index'
    if not os.path.exists(src):
        return False
    tmp = dst + '.copying'
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        if os.path.exists(tmp):
            os.unlink(tmp)
        return False
    return True


def copy_prefix(src_fs, dst_fs, progress=None, end=None, sync=True,
                on_end=None):
    """Copy ``src_fs`` up to the end of its last committed transaction (or
    up to ``end``, the end of a committed transaction) to ``dst_fs`` (which
    must not exist), fsynced (unless ``sync`` is false: the caller then
    makes it durable, e.g. with :class:`BackgroundSync`, before relying on
    it).  Returns a :class:`Prefix`.

    ``on_end(end)`` is called once the end is known, before the bytes are
    copied: every blob file the copied transactions reference exists from
    then on, so their blobs may be linked while the bytes are copied.
    """
    if os.path.lexists(dst_fs):
        raise CopyError('%s exists; a copy never overwrites a file' % dst_fs)
    fd = _open_source(src_fs)
    try:
        st = os.fstat(fd)
        if end is None:
            pos = _committed_end(fd, src_fs, st.st_size)
        else:
            found = _record_ending_at(fd, end) if end > 4 else (4, None, b' ')
            if found is None:
                raise CopyError('no transaction of %s ends at %d; the file '
                                'is not what was recorded' % (src_fs, end))
            pos = Position(end, found[1])
        if on_end is not None:
            on_end(pos.end)
        tmp = dst_fs + '.copying'
        if os.path.lexists(tmp):
            os.unlink(tmp)
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            if _reflink(fd, out):
                os.ftruncate(out, pos.end)
                if progress is not None:
                    progress(pos.end)
            else:
                _copy_range(fd, out, 0, pos.end, progress)
            if sync:
                os.fsync(out)
            os.close(out)
            out = None
            os.rename(tmp, dst_fs)
        except BaseException:
            if out is not None:
                os.close(out)
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        prefix = Prefix(st.st_ino, st.st_dev, pos.end, pos.last_tid,
                        _first_tid(fd, pos.end))
    finally:
        os.close(fd)
    _copy_index(src_fs, dst_fs)
    fsync_directory(os.path.dirname(os.path.abspath(dst_fs)))
    logger.debug('copied %s bytes of %s (last transaction %s)',
                 prefix.end, src_fs, tid_hex(prefix.last_tid))
    return prefix


def take_prefix(src_fs, dst_fs, prefix, progress=None, sync=True):
    """``dst_fs`` holding the first ``prefix.end`` bytes of ``src_fs``, a
    snapshot's own copy (``prefix`` describes it as recorded).

    When nothing else holds that file and it is exactly as recorded, it is
    hard-linked: no byte is copied.  FileStorage only ever appends to its
    file (a pack writes a new one and renames it), so the snapshot's bytes
    stay what they are while the site writes after them; it is copied
    instead whenever it is shared or longer already.  Returns a
    :class:`Prefix` of ``src_fs``.
    """
    if not still_prefix(src_fs, prefix):
        raise CopyError('%s is damaged (shorter than recorded, or changed '
                        'or replaced since); it cannot be restored: restore '
                        'another snapshot' % src_fs)
    st = os.stat(src_fs)
    if st.st_nlink > 1 or st.st_size != prefix.end:
        return copy_prefix(src_fs, dst_fs, progress, prefix.end, sync)
    try:
        os.link(src_fs, dst_fs)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):
            raise
        return copy_prefix(src_fs, dst_fs, progress, prefix.end, sync)
    _copy_index(src_fs, dst_fs)
    fsync_directory(os.path.dirname(os.path.abspath(dst_fs)))
    if progress is not None:
        progress(prefix.end)
    logger.debug('linked %s (%s bytes, last transaction %s)', src_fs,
                 prefix.end, tid_hex(prefix.last_tid))
    return prefix


def catch_up(src_fs, dst_fs, prefix, progress=None, sync=True):
    """Append to ``dst_fs`` the transactions committed in ``src_fs`` since
    ``prefix`` was copied (fsynced unless ``sync`` is false: the caller
    then makes it durable before relying on it).  Raises
    :class:`PackedSince` when ``src_fs`` is no longer an extension of what
    was copied."""
    fd = _open_source(src_fs)
    try:
        if not _still_prefix(fd, prefix):
            raise PackedSince(
                '%s was packed or replaced since it was copied; copy it '
                'again' % src_fs)
        st = os.fstat(fd)
        pos = _committed_end(fd, src_fs, st.st_size,
                             hint=(prefix.end, prefix.last_tid))
        out = os.open(dst_fs, os.O_WRONLY)
        try:
            if os.fstat(out).st_size < prefix.end:
                raise CopyError('%s is shorter than the copy recorded for '
                                'it; copy it again' % dst_fs)
            os.ftruncate(out, prefix.end)   # a killed catch-up's tail
            _copy_range(fd, out, prefix.end, pos.end, progress)
            if sync:
                os.fsync(out)
        finally:
            os.close(out)
        return prefix._replace(end=pos.end,
                               last_tid=pos.last_tid or prefix.last_tid)
    finally:
        os.close(fd)


# -- blobs -----------------------------------------------------------------

def blob_files(blob_dir):
    """Relative paths of the committed blob files (``*.blob``) and the
    directories holding them; ``tmp/`` (uncommitted uploads) is skipped."""
    for root, dirs, files in os.walk(blob_dir):
        if root == blob_dir and TMP_DIR in dirs:
            dirs.remove(TMP_DIR)
        # os.walk's roots start with blob_dir: cut it (relpath costs a
        # third of a first snapshot's walk)
        rel = root[len(blob_dir):].lstrip(os.sep)
        for name in files:
            if name.endswith('.blob'):
                yield os.path.join(rel, name)


def link_blobs(src_blobdir, dst_blobdir, progress=None, reflink=False,
               keep=False):
    """Hard-link every committed blob file of ``src_blobdir`` that
    ``dst_blobdir`` lacks; copy ``.layout``.  Returns the number linked.

    Idempotent: a second call (a catch-up) links only what is new.  With
    ``reflink`` (or when hard links cannot cross, e.g. between btrfs
    subvolumes) files are cloned instead.  With ``keep`` each file is
    linked into the flat directory beside ``dst_blobdir`` too (see
    :func:`take_blobs`).
    """
    if not os.path.isdir(src_blobdir):
        raise CopyError('no blob directory at %s; check the blob-dir '
                        'path' % src_blobdir)
    os.makedirs(dst_blobdir, mode=0o700, exist_ok=True)
    layout = os.path.join(src_blobdir, LAYOUT)
    if os.path.exists(layout) and not os.path.exists(
            os.path.join(dst_blobdir, LAYOUT)):
        shutil.copyfile(layout, os.path.join(dst_blobdir, LAYOUT))
    os.makedirs(os.path.join(dst_blobdir, TMP_DIR), mode=0o700,
                exist_ok=True)
    state = dict(count=0, cloned=False, reflink=reflink, keep=None)
    if keep:
        state['keep'] = kept = kept_path(dst_blobdir)
        os.mkdir(kept, 0o700)
        if os.path.exists(layout):
            shutil.copyfile(layout, os.path.join(kept, LAYOUT))
    _link_tree(src_blobdir, dst_blobdir, True, state, progress, top=True)
    if state['cloned']:
        syncfs(dst_blobdir)
    return state['count']


def _link_tree(src, dst, existed, state, progress, top=False, rel=''):
    """Mirror the directories of ``src`` in ``dst`` and link its
    ``*.blob`` files (like ``cp -al``, but only what ``dst`` lacks); with
    ``state['keep']``, link them into that flat directory too."""
    present = set(os.listdir(dst)) if existed else ()
    try:
        entries = list(os.scandir(src))
    except FileNotFoundError:
        return      # removed by a pack meanwhile; verify() decides
    for entry in entries:
        name = entry.name
        if entry.is_dir(follow_symlinks=False):
            if top and name == TMP_DIR:
                continue
            target = dst + os.sep + name
            if name in present:
                _link_tree(entry.path, target, True, state, progress,
                           rel=rel + name + KEPT_SEP)
            else:
                os.mkdir(target, 0o700)
                _link_tree(entry.path, target, False, state, progress,
                           rel=rel + name + KEPT_SEP)
        elif name.endswith('.blob') and name not in present:
            target = dst + os.sep + name
            try:
                if state['reflink']:
                    raise OSError(errno.EXDEV, 'reflink requested')
                os.link(entry.path, target)
            except FileNotFoundError:
                continue
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):
                    raise
                state['reflink'] = True    # no hard links here: stop trying
                clone_file(entry.path, target, sync=False)
                state['cloned'] = True
            if state['keep']:
                os.link(target, state['keep'] + os.sep + rel + name)
            state['count'] += 1
            if progress is not None:
                progress(1)


# A snapshot's blob tree can be handed over to a restored generation
# whole (a rename) because the snapshot also keeps its own hard link to
# every blob file, flat, in ``<blob dir>.kept/``: a name there is the
# file's path in the tree with KEPT_SEP for the slashes.
KEPT = '.kept'
KEPT_SEP = '%'


def kept_path(blob_dir):
    return os.path.normpath(blob_dir) + KEPT


def take_blobs(src_blobdir, dst_blobdir):
    """``dst_blobdir`` (which must not exist) gets the blob tree of
    ``src_blobdir``, a snapshot's own: the tree itself, renamed, while the
    snapshot keeps its files through the links in its ``.kept`` directory
    (made first when an older snapshot has none); rebuilt from those links
    when the tree was handed over before.  Nothing is copied."""
    kept = kept_path(src_blobdir)
    if not os.path.isdir(kept):
        _keep_links(src_blobdir, kept)
    os.makedirs(os.path.dirname(os.path.abspath(dst_blobdir)), exist_ok=True)
    if os.path.isdir(src_blobdir):
        os.rename(src_blobdir, dst_blobdir)
        fsync_directory(os.path.dirname(os.path.abspath(src_blobdir)))
        fsync_directory(os.path.dirname(os.path.abspath(dst_blobdir)))
        return
    rebuild_from_kept(kept, dst_blobdir)


def rebuild_from_kept(kept, dst_blobdir):
    """A blob tree in ``dst_blobdir`` (must not exist) of hard links to
    the flat links of a ``.kept`` directory."""
    os.mkdir(dst_blobdir, 0o700)
    made = set()
    for name in os.listdir(kept):
        if name == LAYOUT:
            shutil.copyfile(os.path.join(kept, name),
                            os.path.join(dst_blobdir, LAYOUT))
            continue
        parts = name.split(KEPT_SEP)
        directory = os.path.join(dst_blobdir, *parts[:-1])
        if directory not in made:
            os.makedirs(directory, 0o700, exist_ok=True)
            made.add(directory)
        os.link(os.path.join(kept, name), os.path.join(directory, parts[-1]))
    os.makedirs(os.path.join(dst_blobdir, TMP_DIR), 0o700, exist_ok=True)


def _keep_links(blob_dir, kept):
    """The ``.kept`` links of a blob tree, made under a temporary name:
    a killed run never leaves a partial one that looks complete."""
    tmp = kept + '.tmp'
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    os.mkdir(tmp, 0o700)
    if os.path.exists(os.path.join(blob_dir, LAYOUT)):
        shutil.copyfile(os.path.join(blob_dir, LAYOUT),
                        os.path.join(tmp, LAYOUT))
    for rel in blob_files(blob_dir):
        os.link(os.path.join(blob_dir, rel),
                os.path.join(tmp, rel.replace(os.sep, KEPT_SEP)))
    fsync_directory(tmp)
    os.rename(tmp, kept)
    fsync_directory(os.path.dirname(kept))


def clone_file(src, dst, sync=True):
    tmp = dst + '.copying'
    with open(src, 'rb') as s:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if not _reflink(s.fileno(), out):
                _copy_range(s.fileno(), out, 0, os.fstat(s.fileno()).st_size)
            if sync:
                os.fsync(out)
        finally:
            os.close(out)
    os.chmod(tmp, os.stat(src).st_mode & 0o777)
    os.rename(tmp, dst)


def copy_tree_clone(src, dst):
    """Copy a data tree, cloning (reflink) each file when the filesystem
    can.  ``dst`` must not exist."""
    os.makedirs(dst)
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        target = os.path.normpath(os.path.join(dst, rel))
        for d in dirs:
            os.makedirs(os.path.join(target, d), exist_ok=True)
        for name in files:
            s = os.path.join(root, name)
            if os.path.islink(s):
                os.symlink(os.readlink(s), os.path.join(target, name))
            else:
                clone_file(s, os.path.join(target, name))
