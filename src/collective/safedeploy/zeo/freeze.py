"""What runs inside a ZEO server safedeploy starts, beyond runzeo.

:func:`server_setup` (called by :mod:`.bootstrap` before runzeo starts)
trusts an index saved at the end of the file, builds the invalidation
queue from record headers only, and makes the server freeze in place on
SIGUSR1: new transactions and packs get ``ReadOnlyError``, the one being
committed finishes first, reads go on undisturbed -- production is
read-only without a restart.  Thawing is a restart (on the new
generation, or on the old one after a failure).
"""
import os
import signal

from ..core import fsutil

# the file a server frozen in place writes: "PID frozen [indexed]", or
# "PID busy REASON" when it cannot freeze now
FROZEN = 'zeo.frozen'

# the frozen state kept with the data: in a data generation's directory
# (the parent of filestorage/Data.fs) while an evolve-copy has it frozen.
# A server safedeploy starts on a Data.fs below it comes up frozen -- a
# restart by a process manager cannot make it writable behind the
# evolve-copy's back.  Thawing removes it (:func:`unmark_frozen`).
DATA_FROZEN = 'safedeploy-frozen.json'


def frozen_mark_path(generation_dir):
    return os.path.join(generation_dir, DATA_FROZEN)


def mark_frozen(generation_dir, **why):
    """Keep ``generation_dir`` frozen across server restarts (durable: a
    restart after a power failure must not serve it writable either)."""
    fsutil.atomic_write_json(frozen_mark_path(generation_dir),
                             dict(why, pid=os.getpid()), durable=True)


def unmark_frozen(generation_dir):
    try:
        os.unlink(frozen_mark_path(generation_dir))
    except FileNotFoundError:
        return False
    fsutil.fsync_directory(generation_dir)
    return True


def marked_frozen(fs_path):
    """True when the data generation holding the Data.fs ``fs_path`` is
    frozen by its mark (looked for next to the file and one level up)."""
    directory = os.path.dirname(os.path.abspath(fs_path))
    return any(os.path.exists(frozen_mark_path(d)) for d in (
        directory, os.path.dirname(directory)))


def server_setup(state_dir, position=None):
    """What a server safedeploy starts does beyond runzeo: trust an index
    saved at ``position``, build its invalidation queue from record headers
    only, never hand out an object id a server at this address handed out
    before, and freeze in place on SIGUSR1."""
    from ZODB.FileStorage import FileStorage
    from ..data.filestorage import trusted_sane
    if position is not None:
        FileStorage._sane = trusted_sane({position})
    invalidations_from_headers()
    oids_past_handed_out(os.path.join(state_dir, OIDS))
    freeze_on_signal(os.path.join(state_dir, FROZEN))


# the object ids the server at this address may have handed out: "N", the
# first one it never did.  Written before any id past it is handed out.
OIDS = 'zeo.oids'
OID_BLOCK = 1 << 20


def oids_past_handed_out(path):
    """Make every writable FileStorage of this process start its new object
    ids past those any earlier server process at this address handed out.

    ZEO clients fetch object ids in batches (``new_oids``) and keep the ones
    they have not used across a reconnect.  A FileStorage that opens starts
    at the largest id *stored*: restarted -- frozen, thawed, on the evolved
    copy, back on an older generation -- it handed a client's unused ids
    out again, and the client's next new object took an id its own current
    transaction, or another client, already used ("A different object
    already has the same oid", or a POSKeyError loading it).  The ids handed
    out are reserved in ``path`` in blocks of :data:`OID_BLOCK`, durably,
    before any of them is given out; a new process starts past the
    reservation.
    """
    import threading
    from ZODB.FileStorage import FileStorage
    from ZODB.utils import p64
    from ZODB.utils import u64
    init, new_oid = FileStorage.__init__, FileStorage.new_oid
    state = dict(reserved=read_reserved(path))
    lock = threading.Lock()

    def __init__(self, *args, **kw):
        init(self, *args, **kw)
        if not self.isReadOnly() and state['reserved']:
            self.set_max_oid(p64(state['reserved'] - 1))

    def new_oid_(self):
        oid = new_oid(self)
        with lock:
            if u64(oid) >= state['reserved']:
                state['reserved'] = u64(oid) + OID_BLOCK
                fsutil.atomic_write(path, '%d\n' % state['reserved'],
                                    durable=True)
        return oid

    FileStorage.__init__ = __init__
    FileStorage.new_oid = new_oid_


def read_reserved(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def invalidations_from_headers():
    """Make FileStorage.lastInvalidations :func:`last_invalidations`.

    A starting ZEO server fills its invalidation queue with the object ids
    of the last transactions (so that reconnecting clients keep their
    caches).  FileStorage reads every record's data to get them: the time
    grows with the size of those transactions.  The ids are in the record
    headers; the result is the same.
    """
    from ZODB.FileStorage import FileStorage
    FileStorage.lastInvalidations = last_invalidations


def last_invalidations(storage, count):
    """[(tid, [oid, ...]), ...] of the last ``count`` transactions of a
    FileStorage, oldest first, from the record headers only."""
    import struct
    from ZODB.FileStorage.format import DATA_HDR_LEN
    from ZODB.FileStorage.format import TRANS_HDR
    from ZODB.FileStorage.format import TRANS_HDR_LEN
    from ZODB.utils import u64
    file = storage._file
    seek, read = file.seek, file.read
    with storage._lock:
        pos = end = storage._pos
        while count > 0 and pos > 4:
            count -= 1
            seek(pos - 8)
            pos = pos - 8 - u64(read(8))
        result = []
        while pos + TRANS_HDR_LEN <= end:
            seek(pos)
            tid, tlen, status, ul, dl, el = struct.unpack(
                TRANS_HDR, read(TRANS_HDR_LEN))
            if status == b'c' or pos + tlen + 8 > end:
                break
            oids = []
            rpos, tend = pos + TRANS_HDR_LEN + ul + dl + el, pos + tlen
            while rpos < tend:
                seek(rpos)
                # oid, tid, prev, tloc, vlen (2), plen: record length
                header = read(DATA_HDR_LEN)
                if u64(header[24:32]) != pos:
                    break
                oids.append(header[:8])
                rpos += DATA_HDR_LEN + (u64(header[34:42]) or 8)
            result.append((tid, oids))
            pos = tend + 8
        seek(0)
        return result


def freeze_on_signal(marker):
    """On SIGUSR1, make every writable FileStorage of this process refuse
    new transactions (ReadOnlyError), wait for the one being committed, and
    write ``marker``: production is read-only without a restart, and reads
    go on undisturbed.  Then save the index (a later stop need not).

    There is no way back but a restart: thawing means serving the new
    generation (or, after a failure, the old one again) anyway.
    """
    import threading
    from ZODB.FileStorage import FileStorage
    from ZODB.POSException import ReadOnlyError
    opened = []
    state = dict(frozen=False, packing=0)
    guard = threading.Lock()
    init, begin, pack = (FileStorage.__init__, FileStorage.tpc_begin,
                         FileStorage.pack)

    def __init__(self, *args, **kw):
        init(self, *args, **kw)
        opened.append(self)
        if not self.isReadOnly() and marked_frozen(self._file_name):
            # restarted while an evolve-copy has this data frozen
            with guard:
                state['frozen'] = True
            write('frozen indexed')

    def tpc_begin(self, transaction, tid=None, status=' '):
        begin(self, transaction, tid, status)   # holds the commit lock now
        if state['frozen']:
            self.tpc_abort(transaction)
            raise ReadOnlyError('frozen for an evolve-copy')

    def pack_(self, *args, **kw):
        with guard:
            if state['frozen']:
                raise ReadOnlyError('frozen for an evolve-copy')
            state['packing'] += 1
        try:
            return pack(self, *args, **kw)
        finally:
            with guard:
                state['packing'] -= 1

    def write(text):
        fsutil.atomic_write(marker, '%d %s\n' % (os.getpid(), text),
                            durable=False)

    def freeze():
        with guard:
            if state['packing']:
                write('busy a pack is running')
                return
            state['frozen'] = True
        writable = [s for s in opened if not s.isReadOnly()]
        for storage in writable:
            # the transaction being committed, if any, finishes first
            storage._commit_lock.acquire()
            storage._commit_lock.release()
        write('frozen')
        for storage in writable:
            storage._save_index()
        write('frozen indexed')

    FileStorage.__init__ = __init__
    FileStorage.tpc_begin = tpc_begin
    FileStorage.pack = pack_
    signal.signal(signal.SIGUSR1, lambda *args: threading.Thread(
        target=freeze, daemon=True).start())
