"""Consistent copies of a live FileStorage (Data.fs + blob directory).

A FileStorage is append-only up to the end of its last committed
transaction: ``tpc_vote`` writes a record with status ``'c'`` past that
end, ``tpc_finish`` flips that one byte to ``' '``, an abort truncates
back.  So the bytes before the committed end never change until a pack
replaces the file (new inode).  A copy of those bytes is a consistent
database, taken without stopping the site:

1. :func:`committed_end` finds the end of the last committed transaction,
   checked from the tail of the file;
2. :func:`copy_prefix` copies the file up to there (a reflink when the
   filesystem can, else the kernel's fastest copy), from one open file
   descriptor, so a pack renaming the file meanwhile cannot mix two files;
3. :func:`link_blobs` hard-links the committed blob files (never rewritten:
   a new revision is a new file) -- after Data.fs, because a blob file
   exists from ``tpc_vote`` on, before Data.fs records its commit;
4. :func:`verify` opens the copy read-only and checks its last
   transaction id and that every blob its transactions reference exists.

:func:`still_prefix` and :func:`catch_up` bring a copy up to date by
appending only the new committed tail; after a pack they raise
:class:`PackedSince` and the caller copies again.

The source is only ever opened for reading.
"""
import collections
import errno
import fcntl
import logging
import os
import shutil
import struct

from .errors import SafeDeployError
from .fsutil import fsync_directory

logger = logging.getLogger('collective.safedeploy')

MAGIC = b'FS30'
TRANS_HDR = '>8sQcHHH'      # tid, length - 8, status, ulen, dlen, elen
TRANS_HDR_LEN = 23
COMMITTED = (b' ', b'p')    # 'c': voted, not finished; 'u': undone marker
FICLONE = 0x40049409        # _IOW(0x94, 9, int)
CHUNK = 64 << 20
TMP_DIR = 'tmp'
LAYOUT = '.layout'


class CopyError(SafeDeployError):
    """A FileStorage could not be read or copied."""


class PackedSince(CopyError):
    """The source was packed (or replaced) since the copy was taken."""


class VerificationFailed(CopyError):
    """A copy does not hold what it should."""


Position = collections.namedtuple('Position', 'end last_tid')


class Prefix(collections.namedtuple(
        'Prefix', 'inode device end last_tid first_tid')):
    """What was copied: ``end`` bytes of the file with inode ``inode``,
    whose first and last transaction ids are ``first_tid``, ``last_tid``."""

    def as_dict(self):
        return dict(inode=self.inode, device=self.device, end=self.end,
                    last_tid=tid_hex(self.last_tid),
                    first_tid=tid_hex(self.first_tid))

    @classmethod
    def from_dict(cls, d):
        return cls(d['inode'], d['device'], d['end'],
                   tid_bytes(d['last_tid']), tid_bytes(d['first_tid']))


def tid_hex(tid):
    return tid.hex() if tid is not None else None


def tid_bytes(text):
    return bytes.fromhex(text) if text else None


def tid_time(tid):
    """The UTC time of a transaction id as an ISO string."""
    if not tid:
        return None
    from persistent.TimeStamp import TimeStamp
    import datetime
    return datetime.datetime.fromtimestamp(
        TimeStamp(tid).timeTime(), datetime.timezone.utc).isoformat(
            timespec='seconds')


# -- reading transaction records -------------------------------------------

def _pread(fd, n, pos):
    data = os.pread(fd, n, pos)
    if len(data) != n:
        raise EOFError(pos)
    return data


def _header(fd, pos):
    """(tid, tl, status) of the transaction record at ``pos``."""
    tid, tl, status, _, _, _ = struct.unpack(
        TRANS_HDR, _pread(fd, TRANS_HDR_LEN, pos))
    return tid, tl, status


def _record_ending_at(fd, end):
    """(start, tid, status) of a well-formed record ending at ``end``, or
    None when the bytes before ``end`` are not the end of one."""
    if end < 4 + TRANS_HDR_LEN + 8:
        return None
    try:
        tl, = struct.unpack('>Q', _pread(fd, 8, end - 8))
        start = end - 8 - tl
        if start < 4 or tl < TRANS_HDR_LEN:
            return None
        tid, htl, status = _header(fd, start)
    except EOFError:
        return None
    if htl != tl or status not in (b' ', b'p', b'c', b'u'):
        return None
    return start, tid, status


def _check_magic(fd, path):
    try:
        magic = _pread(fd, 4, 0)
    except EOFError:
        magic = b''
    if magic != MAGIC:
        raise CopyError('%s is not a FileStorage (Data.fs) file; check the '
                        'path' % path)


def _scan(fd, pos, size):
    """Walk transaction headers forward from ``pos``: the committed end
    and its last tid (tid None when nothing is committed past ``pos``)."""
    end, last = pos, None
    while pos + TRANS_HDR_LEN + 8 <= size:
        try:
            tid, tl, status = _header(fd, pos)
        except EOFError:
            break
        nxt = pos + tl + 8
        if tl < TRANS_HDR_LEN or nxt > size or status not in COMMITTED + (
                b'u',):
            break
        try:
            trailer, = struct.unpack('>Q', _pread(fd, 8, nxt - 8))
        except EOFError:
            break
        if trailer != tl:
            break
        pos = nxt
        end, last = pos, tid
    return end, last


def _committed_end(fd, path, size, hint=None):
    _check_magic(fd, path)
    end = size
    # from the tail: skip an unfinished ('c') record, accept a committed
    # one whose predecessor also ends where it starts
    for _ in range(3):
        if end == 4:
            return Position(4, None)
        found = _record_ending_at(fd, end)
        if found is None:
            break
        start, tid, status = found
        if status == b'c':
            end = start
            continue
        if start == 4 or _record_ending_at(fd, start) is not None:
            return Position(end, tid)
        break
    # a record cut short at the tail (being written): scan forward from a
    # known good position
    pos, last = 4, None
    if hint is not None and hint[0] <= size and \
            _record_ending_at(fd, hint[0]) is not None and \
            _record_ending_at(fd, hint[0])[1] == hint[1]:
        pos, last = hint
    end, tid = _scan(fd, pos, size)
    return Position(end, tid or last)


def committed_end(path):
    """The end of the last committed transaction of the FileStorage file
    ``path`` and its transaction id (None for an empty storage)."""
    fd = _open_source(path)
    try:
        return _committed_end(fd, path, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def tid_ending_at(path, end):
    fd = _open_source(path)
    try:
        found = _record_ending_at(fd, end)
        return found[1] if found else None
    finally:
        os.close(fd)


def _open_source(path):
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise CopyError('no FileStorage at %s; check the path' % path)


def _first_tid(fd, end):
    return _pread(fd, 8, 4) if end > 4 else None


# -- copying ---------------------------------------------------------------

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


class Background:
    """``function(*args, **kw)`` run in a thread while the caller goes on;
    :meth:`wait` returns its result once it is done (and raises what it
    raised)."""

    def __init__(self, function, *args, **kw):
        import threading
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


def fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BackgroundSync(Background):
    """fsync a file in a thread while the caller goes on; :meth:`wait`
    returns once it is on disk (and raises what the fsync raised)."""

    def __init__(self, path):
        super().__init__(fsync_file, path)


def _still_prefix(fd, prefix):
    st = os.fstat(fd)
    if (st.st_ino, st.st_dev) != (prefix.inode, prefix.device):
        return False
    if st.st_size < prefix.end:
        return False
    if prefix.end <= 4:
        return True
    found = _record_ending_at(fd, prefix.end)
    return (found is not None and found[1] == prefix.last_tid
            and _first_tid(fd, prefix.end) == prefix.first_tid)


def still_prefix(src_fs, prefix):
    """True when ``src_fs`` still starts with the bytes ``prefix`` copied
    (same inode, not shorter, same transaction ending at the copied end)."""
    try:
        fd = os.open(src_fs, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        return _still_prefix(fd, prefix)
    finally:
        os.close(fd)


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
        rel = os.path.relpath(root, blob_dir)
        for name in files:
            if name.endswith('.blob'):
                yield os.path.normpath(os.path.join(rel, name))


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
                _clone_file(entry.path, target, sync=False)
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


def _clone_file(src, dst, sync=True):
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


def syncfs(path):
    """Flush the filesystem holding ``path`` (one call instead of an
    fsync per cloned file)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


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
                _clone_file(s, os.path.join(target, name))


# -- verification ----------------------------------------------------------

def saved_index_position(fs_path):
    """Where the ``Data.fs.index`` next to ``fs_path`` says its index ends
    (the first thing saved in it), or None when there is none."""
    import pickle
    try:
        with open(fs_path + '.index', 'rb') as f:
            pos = pickle.Unpickler(f).load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError):
        return None
    return pos if isinstance(pos, int) else None


def prepare_blob_dir(blob_dir):
    """A read-only open creates ``tmp/`` and ``.layout`` when missing: make
    them first (only ever on a copy)."""
    os.makedirs(os.path.join(blob_dir, TMP_DIR), mode=0o700, exist_ok=True)
    layout = os.path.join(blob_dir, LAYOUT)
    if not os.path.exists(layout):
        with open(layout, 'w') as f:
            f.write('bushy\n')


def verify(fs_path, blob_dir=None, expected_tid=None, since_tid=None,
           write_index=False, since_pos=None):
    """Open the copy ``fs_path`` read-only and check it.

    Its last committed transaction id must be ``expected_tid`` (when
    given), and every blob referenced by its transactions (all, or those
    after ``since_tid``, which ends at byte ``since_pos`` when known) must
    exist in ``blob_dir``.  Returns a dict ``last_tid``, ``transactions``
    (checked), ``blobs`` (checked).  Raises :class:`VerificationFailed`
    with a one-line message.

    A filesystem snapshot may end with a voted, unfinished transaction:
    it is not part of the data (a read-only open stops before it, though
    ZODB then reports its id as the last one).
    """
    from ZODB.blob import is_blob_record
    from ZODB.FileStorage import FileIterator
    from ZODB.FileStorage import FileStorage
    from ZODB.utils import u64

    if not os.path.exists(fs_path):
        raise VerificationFailed('no Data.fs at %s' % fs_path)
    if blob_dir is not None and not os.path.isdir(blob_dir):
        raise VerificationFailed('no blob directory at %s' % blob_dir)
    try:
        pos = committed_end(fs_path)
    except CopyError as e:
        raise VerificationFailed(str(e))
    last = pos.last_tid
    complete = pos.end == os.path.getsize(fs_path)
    kw = {}
    if blob_dir is not None:
        kw['blob_dir'] = blob_dir
    try:
        storage = FileStorage(fs_path, read_only=True, **kw)
    except Exception as e:
        raise VerificationFailed('%s does not open as a FileStorage: %s'
                                 % (fs_path, e))
    try:
        opened = storage.lastTransaction()
        if opened == b'\0' * 8:
            opened = None
        if opened != last and (complete or (opened or b'') < (last or b'')):
            raise VerificationFailed(
                '%s opens with last transaction %s, but its last committed '
                'one is %s' % (fs_path, tid_hex(opened), tid_hex(last)))
        if expected_tid is not None and last != expected_tid:
            raise VerificationFailed(
                '%s ends with transaction %s, not %s as recorded' % (
                    fs_path, tid_hex(last), tid_hex(expected_tid)))
        if write_index and complete and \
                saved_index_position(fs_path) != storage._pos and \
                os.access(os.path.dirname(fs_path), os.W_OK):
            # the copy's own index: the next open of it is quick
            tmp = fs_path + '.index.writing'
            storage._index.save(storage._pos, tmp)
            os.replace(tmp, fs_path + '.index')
        fshelper = storage.fshelper if blob_dir is not None else None
    finally:
        storage.close()
    transactions = blobs = 0
    if blob_dir is None or last is None or (since_tid and since_tid >= last):
        return dict(last_tid=last, transactions=0, blobs=0)
    start = _position_after(fs_path, since_tid, since_pos)
    it = FileIterator(fs_path, pos=start)
    try:
        for txn in it:
            if txn.tid > last:
                break        # an unfinished tail
            transactions += 1
            for record in txn:
                if record.data and b'ZODB.blob' in record.data and \
                        is_blob_record(record.data):
                    blobs += 1
                    path = fshelper.getBlobFilename(record.oid, record.tid)
                    if not os.path.exists(path):
                        raise VerificationFailed(
                            'blob of object 0x%x, transaction %s, is '
                            'missing from %s' % (
                                u64(record.oid), tid_hex(record.tid),
                                blob_dir))
    finally:
        it.close()
    return dict(last_tid=last, transactions=transactions, blobs=blobs)


def _position_after(fs_path, tid, pos=None):
    """The position of the first transaction after ``tid`` (4: all)."""
    if not tid:
        return 4
    fd = _open_source(fs_path)
    try:
        if pos is not None:
            found = _record_ending_at(fd, pos)
            if found is not None and found[1] == tid:
                return pos
        size = os.fstat(fd).st_size
        pos = 4
        while pos + TRANS_HDR_LEN <= size:
            txn_tid, tl, status = _header(fd, pos)
            if txn_tid > tid:
                return pos
            pos += tl + 8
        return pos
    finally:
        os.close(fd)


def count_transactions_after(fs_path, tid):
    """How many committed transactions of ``fs_path`` come after ``tid``
    (read-only, header by header; the file may be in use)."""
    fd = _open_source(fs_path)
    try:
        size = os.fstat(fd).st_size
        _check_magic(fd, fs_path)
        end = _committed_end(fd, fs_path, size).end
        pos, n = 4, 0
        while pos < end:
            txn_tid, tl, status = _header(fd, pos)
            if tid is None or txn_tid > tid:
                n += 1
            pos += tl + 8
        return n
    finally:
        os.close(fd)


def _first_tid_of(fs_path, end):
    """The first transaction id of a FileStorage file (None when empty)."""
    if end <= 4:
        return None
    fd = _open_source(fs_path)
    try:
        return _first_tid(fd, end)
    finally:
        os.close(fd)
