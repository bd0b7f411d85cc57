"""Reading a FileStorage file (Data.fs) without opening it.

A FileStorage is append-only up to the end of its last committed
transaction: ``tpc_vote`` writes a record with status ``'c'`` past that
end, ``tpc_finish`` flips that one byte to ``' '``, an abort truncates
back.  So the bytes before the committed end never change until a pack
replaces the file (new inode).  These functions read transaction headers
only, from one open file descriptor, with the layout of
``ZODB.FileStorage.format`` (``TRANS_HDR``: tid, length - 8, status,
user, description and extension lengths; the length again after the
record).  They do not import ZODB (``bin/snapshot --list`` reads a
snapshot's tail and starts in a few milliseconds); what needs ZODB's
record iterators imports them when it runs.

- :func:`committed_end`: the end of the last committed transaction and
  its id, checked from the tail of the file;
- :class:`Prefix`: what a copy holds of a file (inode, end, first and last
  transaction id); :func:`still_prefix` checks the file still starts
  with it (no pack, no replacement);
- :func:`count_transactions_after`, :func:`transaction_ids`: the
  transactions of a file, from their headers.

The source is only ever opened for reading.
"""
import collections
import os
import struct

from ..core.errors import SafeDeployError

MAGIC = b'FS30'
# ZODB.FileStorage.format.TRANS_HDR and TRANS_HDR_LEN (the tests check
# they are the same): tid, length - 8, status, ulen, dlen, elen
TRANS_HDR = '>8sQcHHH'
TRANS_HDR_LEN = 23
COMMITTED = (b' ', b'p')    # 'c': voted, not finished; 'u': undone marker


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


def count_transactions_after(fs_path, tid, pos=None):
    """How many committed transactions of ``fs_path`` come after ``tid``
    (read-only, header by header; the file may be in use).  ``pos``: where
    ``tid`` ended when it was recorded; when it still ends there, only the
    headers after it are read."""
    return sum(1 for t in transaction_tids(fs_path, after=(pos, tid))
               if tid is None or t > tid)


def transaction_tids(fs_path, after=None):
    """The ids of the committed transactions of ``fs_path``, oldest first
    (read-only, header by header; the file may be in use); with ``after``
    (a position and the id of the transaction ending there), those after
    it, when it still ends there (else all)."""
    fd = _open_source(fs_path)
    try:
        size = os.fstat(fd).st_size
        _check_magic(fd, fs_path)
        end = _committed_end(fd, fs_path, size).end
        pos, tids = 4, []
        if after is not None and after[0] and after[1] and \
                4 < after[0] <= end:
            found = _record_ending_at(fd, after[0])
            if found is not None and found[1] == after[1]:
                pos = after[0]
        while pos < end:
            txn_tid, tl, status = _header(fd, pos)
            tids.append(txn_tid)
            pos += tl + 8
        return tids
    finally:
        os.close(fd)


def first_tid_of(fs_path, end):
    """The first transaction id of a FileStorage file (None when empty)."""
    if end <= 4:
        return None
    fd = _open_source(fs_path)
    try:
        return _first_tid(fd, end)
    finally:
        os.close(fd)


# -- the saved index ----------------------------------------------------------

def index_position(fs_path):
    """The position a Data.fs.index was saved at, when it can be trusted
    without FileStorage's sanity check: saved at the very end of the file
    (by a clean close after the last write) and not older than the file.
    """
    pos = saved_index_position(fs_path)
    try:
        st_fs, st_index = os.stat(fs_path), os.stat(fs_path + '.index')
    except OSError:
        return None
    if pos is None or pos != st_fs.st_size or \
            st_index.st_mtime_ns < st_fs.st_mtime_ns:
        return None
    return pos


def trusted_sane(positions):
    """A ``FileStorage._sane`` that accepts an index saved at one of
    ``positions`` (one we wrote at the end of a copy, or one a clean close
    saved at the end of the file).

    FileStorage checks a saved index against the last transaction and
    rescans the whole file when the check fails -- which it does whenever
    that transaction stored an object twice, as every ZEO commit of a blob
    does.  A rescan of a large Data.fs inside the read-only window would
    make the window proportional to the database again.  An index at the
    start of the file (an empty database) is left to FileStorage.
    """
    from ZODB.FileStorage import FileStorage
    check = FileStorage._sane
    positions = {p for p in positions if p is not None and p > 4}

    def _sane(self, index, pos):
        if pos not in positions:
            return check(self, index, pos)
        return self._check_sanity(index, pos) or tid_ending_at(
            self._file_name, pos)
    return _sane


def open_trusting_index(fs, blobs=None, read_only=False, position=None):
    """A FileStorage on a copy whose index we wrote ourselves (at
    ``position``, or saved at its end): the open scans only the tail."""
    from ZODB.FileStorage import FileStorage

    class CopyStorage(FileStorage):
        _sane = trusted_sane({position, index_position(fs)})

    return CopyStorage(fs, blob_dir=blobs, read_only=read_only)
