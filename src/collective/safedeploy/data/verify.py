"""Checking a copy: it opens, ends where it should, and has its blobs.

:func:`verify` opens a copy read-only with ZODB and checks its last
transaction; :func:`check_blobs` walks the transactions after a position
with ZODB's own iterator and checks that every blob they reference is in
the blob directory (what a copy, a catch-up and a snapshot need checked:
the transactions since the last time, not the whole database again);
:func:`check_no_blobs` reads them when no blob directory goes with the
Data.fs: they may reference none.
"""
import os

from .copy import LAYOUT
from .copy import TMP_DIR
from .filestorage import CopyError
from .filestorage import VerificationFailed
from .filestorage import _position_after
from .filestorage import committed_end
from .filestorage import saved_index_position
from .filestorage import still_prefix
from .filestorage import tid_hex
from .filestorage import Prefix


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
    from ZODB.FileStorage import FileStorage

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
    finally:
        storage.close()
    if blob_dir is None or last is None or (since_tid and since_tid >= last):
        return dict(last_tid=last, transactions=0, blobs=0)
    start = _position_after(fs_path, since_tid, since_pos)
    transactions, blobs, _ = check_blobs(fs_path, blob_dir, start, last)
    return dict(last_tid=last, transactions=transactions, blobs=blobs)


def blob_records(fs_path, start, last=None):
    """(oid, tid) of every blob record in the transactions of ``fs_path``
    from byte ``start`` on (up to ``last``: a tail past it is
    unfinished), counting the transactions: yields (None, None) after
    each one.  ZODB's own record iterator does the reading."""
    if os.path.getsize(fs_path) <= max(start, 4):
        return          # nothing after start: ZODB is not even imported
    from ZODB.blob import is_blob_record
    from ZODB.FileStorage import FileIterator
    it = FileIterator(fs_path, pos=max(start, 4))
    try:
        for txn in it:
            if last is not None and txn.tid > last:
                break
            for record in txn:
                if record.data and b'ZODB.blob' in record.data and \
                        is_blob_record(record.data):
                    yield record.oid, record.tid
            yield None, None
    finally:
        it.close()


class BlobsWithoutDirectory(VerificationFailed):
    """A transaction references a blob, but no blob directory goes with
    the Data.fs: ``oid``, ``tid`` of the first blob record."""

    def __init__(self, fs_path, oid, tid):
        self.oid, self.tid = oid, tid
        super().__init__(
            'the records of %s reference blobs (object 0x%s, transaction '
            '%s) but no blob directory goes with it' % (
                fs_path, oid_hex(oid), tid_hex(tid)))


def oid_hex(oid):
    return oid.hex().lstrip('0') or '0'


def check_no_blobs(fs_path, start=4, last=None):
    """Read the transactions of ``fs_path`` from byte ``start`` on (up to
    ``last``) with ZODB's record iterator, when no blob directory goes
    with it: none may reference a blob (a copy would hold none of them).
    Returns the number of transactions read; raises
    :class:`BlobsWithoutDirectory`."""
    transactions = 0
    for oid, tid in blob_records(fs_path, start, last):
        if oid is not None:
            raise BlobsWithoutDirectory(fs_path, oid, tid)
        transactions += 1
    return transactions


def check_blobs(fs_path, blob_dir, start=4, last=None, link_from=None):
    """Every blob the transactions of ``fs_path`` from byte ``start`` on
    reference is in ``blob_dir``; with ``link_from`` (another blob
    directory) a missing one is hard-linked from there first.  Returns
    (transactions, blobs) checked and the number linked; raises
    :class:`VerificationFailed`."""
    from ZODB.blob import FilesystemHelper
    helper = FilesystemHelper(blob_dir)
    source = FilesystemHelper(link_from) if link_from else None
    transactions = blobs = linked = 0
    for oid, tid in blob_records(fs_path, start, last):
        if oid is None:
            transactions += 1
            continue
        blobs += 1
        path = helper.getBlobFilename(oid, tid)
        if os.path.exists(path):
            continue
        if source is not None:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            try:
                os.link(source.getBlobFilename(oid, tid), path)
                linked += 1
                continue
            except FileNotFoundError:
                pass
        raise VerificationFailed(
            'blob of object 0x%s, transaction %s, is missing from %s' % (
                oid.hex().lstrip('0') or '0', tid_hex(tid), blob_dir))
    return transactions, blobs, linked


def best_hint(src_fs, rel, hints):
    """The newest earlier copy (a :class:`~collective.safedeploy.data.
    filestorage.Prefix`) whose blobs were verified and which ``src_fs``
    still extends: only transactions after it need their blobs checked
    again.  None: check them all."""
    best = None
    for entry in hints:
        if entry.get('fs') != rel:
            continue
        for key in ('copy', 'source'):
            d = entry.get(key)
            if not d or not d.get('last_tid'):
                continue
            try:
                prefix = Prefix.from_dict(d)
            except (KeyError, ValueError, TypeError):
                continue
            if (best is None or prefix.last_tid > best.last_tid) and \
                    still_prefix(src_fs, prefix):
                best = prefix
    return best


def since(hint):
    """verify() arguments for a hint from :func:`best_hint`."""
    if hint is None:
        return dict(since_tid=None, since_pos=None)
    return dict(since_tid=hint.last_tid, since_pos=hint.end)
