"""The hidden pool of the copy backend: snapshots in O(delta).

FileStorage only appends between packs, so a snapshot needs only the
transactions and blobs written since the previous one.  The snapshots of a
data root share their Data.fs bytes and blob files in
``DATA/snapshots/.pool``; a snapshot's own directory holds its manifest
(and copies of the configured files that are not a FileStorage)::

    .pool/<fs>/3.fs          Data.fs bytes: a prefix of production's file,
                             appended to by later snapshots
    .pool/<fs>/3.fs.index    FileStorage's index of it, saved at the end
                             of the newest snapshot (as a clean close of
                             a FileStorage saves it)
    .pool/<fs>/3.blobs/      the committed blob files, flat hard links
                             (a name is the path in the tree with ``%``)
    .pool/<fs>/3.tree/       the same links as a blob directory (bushy),
                             ready to be handed to a restore of the newest
                             snapshot of the file
    .pool/<fs>/3.sealed      handed to a restored generation: never
                             appended to again
    .pool/<fs>/3.blobs.upto  the newest transaction id a blob link in
                             3.blobs may have: written once a snapshot or
                             a clean-up left no link past it, removed
                             before a create links more

(``<fs>`` is the Data.fs path relative to a generation, ``/`` as ``%``.)

A snapshot records, per Data.fs, its pool file, the byte range it added
(``start``, ``end``), the last transaction id and, as ``chain``, the
sha256 of every range from 0 to ``end``: its own delta and the ones it
builds on.  A new snapshot appends to the newest unsealed pool file when
production still extends it (same first transaction, same bytes before
the seam, the recorded transaction ending there), else it starts a new
pool file (after a pack, a restore of an older state, or any mismatch).

Blob files a snapshot needs are the pool's files whose transaction id is at
most its last one: blob files are never rewritten, and one pool file is one
line of history.  The tree holds the same names as the flat directory: a
name is linked into the flat directory first and unlinked from the tree
first.

A restore of the newest snapshot of a pool file takes the file (sealed), a
copy of its index and its tree as they are: nothing is copied, scanned or
rebuilt.  Restores of other snapshots copy the recorded prefix and link
the blob tree from the flat directory.

Nothing but bin/snapshot writes the pool, always under the data root's
lock.  A killed create leaves at most bytes past every recorded end (cut by
:meth:`Pool.collect` on the next run), blob links newer than every recorded
transaction and unreferenced pool files (removed by it too); an index saved
past what is kept is removed with the bytes it describes.  The blob links
are only listed when ``N.blobs.upto`` does not name the newest kept
snapshot's transaction (a create was killed, or a snapshot destroyed): a
snapshot after a clean one costs its delta, not the number of blobs.
"""
import errno
import os
import shutil

from .. import copy as fscopy
from .. import filestorage
from ...core import fsutil

POOL = '.pool'
SEP = fscopy.KEPT_SEP
SEAM = 1 << 16        # bytes compared before the seam
HASH_CHUNK = 8 << 20


def blob_tid(name):
    """The transaction id (an int) in a blob file's name, or None."""
    base = name.rsplit(SEP, 1)[-1]
    if not base.endswith('.blob') or not base.startswith('0x'):
        return None
    try:
        return int(base[2:-5], 16)
    except ValueError:
        return None


def tid_int(tid_hex):
    return int(tid_hex, 16) if tid_hex else 0


def hash_range(fd, start, end):
    import hashlib  # loads OpenSSL: only where bytes are hashed
    digest = hashlib.sha256()
    pos = start
    while pos < end:
        data = os.pread(fd, min(HASH_CHUNK, end - pos), pos)
        if not data:
            raise filestorage.VerificationFailed(
                'the pool file ended at %d, before %d' % (pos, end))
        digest.update(data)
        pos += len(data)
    return digest.hexdigest()


class PoolDamage(filestorage.VerificationFailed):
    """What reading a pool file whole found wrong (the message), and
    where: a recorded byte range (``chain``: start, end, sha256) of pool
    file ``pool`` of ``fs`` not what it recorded, or the blob file of
    transaction ``tid`` (an int) missing from it."""

    def __init__(self, message, fs, pool, chain=None, tid=None):
        super().__init__(message)
        self.fs, self.pool, self.chain, self.tid = fs, pool, chain, tid

    def shared_by(self, entry):
        """True when the snapshot entry ``entry`` holds the damaged place
        too: its recorded prefix of the same pool file has the range (or
        the transaction).  Its bytes are the same bytes."""
        if (entry.get('fs'), entry.get('pool')) != (self.fs, self.pool):
            return False
        if self.chain is not None:
            return list(self.chain) in [list(r) for r in
                                        entry.get('chain', [])]
        return tid_int(entry.get('last_tid')) >= self.tid


class Pool:
    """The pool of one data root's copy snapshots."""

    def __init__(self, snapshots_directory):
        self.path = os.path.join(snapshots_directory, POOL)

    def directory(self, fs_rel):
        return os.path.join(self.path, fs_rel.replace('/', SEP))

    def fs_path(self, fs_rel, number):
        return os.path.join(self.directory(fs_rel), '%d.fs' % number)

    def blobs_path(self, fs_rel, number):
        return os.path.join(self.directory(fs_rel), '%d.blobs' % number)

    def tree_path(self, fs_rel, number):
        return os.path.join(self.directory(fs_rel), '%d.tree' % number)

    def sealed_path(self, fs_rel, number):
        return os.path.join(self.directory(fs_rel), '%d.sealed' % number)

    def is_sealed(self, fs_rel, number):
        return os.path.exists(self.sealed_path(fs_rel, number))

    def upto_path(self, fs_rel, number):
        return self.blobs_path(fs_rel, number) + '.upto'

    def links_upto(self, fs_rel, number):
        """The transaction id (an int) no blob link of the pool file is
        newer than, or None when that is not known."""
        try:
            with open(self.upto_path(fs_rel, number)) as f:
                return int(f.read().strip(), 16)
        except (OSError, ValueError):
            return None

    def mark_links_upto(self, fs_rel, number, tid):
        fsutil.atomic_write(self.upto_path(fs_rel, number), '%016x\n' % tid)

    def unmark_links_upto(self, fs_rel, number):
        """Before links past the mark are made: unknown until the next
        :meth:`collect` or complete create marks it again."""
        path = self.upto_path(fs_rel, number)
        if os.path.lexists(path):
            os.unlink(path)
            fsutil.fsync_directory(os.path.dirname(path))

    def numbers(self, fs_rel):
        try:
            names = os.listdir(self.directory(fs_rel))
        except FileNotFoundError:
            return []
        found = set()
        for name in names:
            head = name.split('.', 1)[0]
            if head.isdigit():
                found.add(int(head))
        return sorted(found)

    def seal(self, fs_rel, number):
        fsutil.atomic_write(self.sealed_path(fs_rel, number), 'sealed\n')

    # -- what the snapshots reference -------------------------------------

    @staticmethod
    def references(manifests):
        """{(fs, pool number): (max end, max last tid)} of the entries of
        ``manifests``."""
        refs = {}
        for manifest in manifests:
            for entry in manifest.get('storages', []):
                if entry.get('pool') is None:
                    continue
                key = (entry['fs'], entry['pool'])
                end, tid = refs.get(key, (0, 0))
                refs[key] = (max(end, entry['end']),
                             max(tid, tid_int(entry.get('last_tid'))))
        return refs

    def collect(self, manifests, fs_rels):
        """Make the pool what the complete snapshots ``manifests``
        reference, no more: cut what a killed run appended past every
        recorded end of an unsealed pool file, unlink blob links newer than
        every recorded transaction, remove pool files nothing references.
        Call under the data root's lock."""
        refs = self.references(manifests)
        for fs_rel in fs_rels:
            for number in self.numbers(fs_rel):
                ref = refs.get((fs_rel, number))
                if ref is None:
                    self.remove(fs_rel, number)
                    continue
                end, tid = ref
                path = self.fs_path(fs_rel, number)
                if not self.is_sealed(fs_rel, number) and \
                        os.path.exists(path) and \
                        os.path.getsize(path) > end:
                    with open(path, 'r+b') as f:
                        f.truncate(end)
                        os.fsync(f.fileno())
                saved = filestorage.saved_index_position(path)
                if saved is not None and saved > end:
                    os.unlink(path + '.index')   # of the bytes just cut
                blobs = self.blobs_path(fs_rel, number)
                tree = self.tree_path(fs_rel, number)
                if os.path.isdir(blobs) and \
                        self.links_upto(fs_rel, number) != tid:
                    for name in os.listdir(blobs):
                        t = blob_tid(name)
                        if t is not None and t > tid:
                            self._unlink_from_tree(tree, name)
                            os.unlink(os.path.join(blobs, name))
                    self.mark_links_upto(fs_rel, number, tid)
                for leftover in (path + '.copying', blobs + '.tmp',
                                 tree + '.tmp', path + '.index.writing'):
                    if os.path.isdir(leftover):
                        shutil.rmtree(leftover)
                    elif os.path.lexists(leftover):
                        os.unlink(leftover)

    def remove(self, fs_rel, number):
        """Unlink a pool file and its blob links (a generation holding the
        file by a link of its own keeps it)."""
        base = os.path.join(self.directory(fs_rel), '%d.' % number)
        for suffix in ('fs', 'fs.index', 'fs.index.writing', 'fs.copying',
                       'sealed', 'blobs.upto'):
            if os.path.lexists(base + suffix):
                os.unlink(base + suffix)
        for suffix in ('blobs', 'blobs.tmp', 'tree', 'tree.tmp'):
            if os.path.isdir(base + suffix):
                shutil.rmtree(base + suffix)

    # -- taking a snapshot -------------------------------------------------

    def latest(self, fs_rel, manifests):
        """The entry with the highest end in the newest unsealed pool file
        of ``fs_rel``, or None."""
        best = None
        for manifest in manifests:
            for entry in manifest.get('storages', []):
                if entry.get('fs') != fs_rel or entry.get('pool') is None:
                    continue
                if self.is_sealed(fs_rel, entry['pool']):
                    continue
                if best is None or (entry['pool'], entry['end']) > (
                        best['pool'], best['end']):
                    best = entry
        return best

    def extends(self, fd, entry):
        """True when the open production file ``fd`` starts with what the
        pool file of ``entry`` holds up to its end: same first transaction,
        the recorded transaction ending at the seam, the same bytes just
        before it."""
        end = entry['end']
        path = self.fs_path(entry['fs'], entry['pool'])
        try:
            pool_fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            if os.fstat(pool_fd).st_size < end or os.fstat(fd).st_size < end:
                return False
            if end <= 4:
                return os.pread(fd, 4, 0) == os.pread(pool_fd, 4, 0)
            if os.pread(fd, 12, 0) != os.pread(pool_fd, 12, 0):
                return False
            found = filestorage._record_ending_at(fd, end)
            if found is None or filestorage.tid_hex(found[1]) != \
                    entry['last_tid']:
                return False
            start = max(4, end - SEAM)
            return os.pread(fd, end - start, start) == \
                os.pread(pool_fd, end - start, start)
        finally:
            os.close(pool_fd)

    def append(self, src_fs, entry, durable):
        """Append production's transactions committed since ``entry``'s
        end to its pool file.  Returns (pool number, start, Position,
        production's Prefix), or None when production no longer extends
        it."""
        fd = filestorage._open_source(src_fs)
        try:
            if not self.extends(fd, entry):
                return None
            st = os.fstat(fd)
            start = entry['end']
            last = filestorage.tid_bytes(entry['last_tid'])
            pos = filestorage._committed_end(fd, src_fs, st.st_size,
                                             hint=(start, last))
            if pos.end < start:
                return None
            path = self.fs_path(entry['fs'], entry['pool'])
            saved = filestorage.saved_index_position(path)
            if saved is not None and saved > start:
                os.unlink(path + '.index')   # a killed run's, of its tail
            out = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(out, start)     # a killed run's tail
                fscopy._copy_range(fd, out, start, pos.end)
                if durable:
                    os.fsync(out)
            finally:
                os.close(out)
            pos = filestorage.Position(pos.end, pos.last_tid or last)
            prefix = filestorage.Prefix(
                st.st_ino, st.st_dev, pos.end, pos.last_tid,
                filestorage._first_tid(fd, pos.end))
            return entry['pool'], start, pos, prefix
        finally:
            os.close(fd)

    def start_new(self, src_fs, fs_rel, durable):
        """A new pool file holding production's committed prefix.  Returns
        (pool number, 0, Position, production's Prefix)."""
        numbers = self.numbers(fs_rel)
        number = (numbers[-1] + 1) if numbers else 1
        os.makedirs(self.directory(fs_rel), exist_ok=True)
        self.remove(fs_rel, number)
        path = self.fs_path(fs_rel, number)
        prefix = fscopy.copy_prefix(src_fs, path, sync=durable)
        return number, 0, filestorage.Position(
            prefix.end, prefix.last_tid), prefix

    def start_blobs(self, src_blobs, fs_rel, number):
        """The empty flat directory and tree of a new pool file, with
        ``src_blobs``' layout: :meth:`link_new_blobs` then links what its
        transactions reference (a killed run leaves a pool file nothing
        references: :meth:`collect` removes all of it)."""
        target = self.blobs_path(fs_rel, number)
        tree = self.tree_path(fs_rel, number)
        for directory in (target, tree):
            if os.path.lexists(directory):
                shutil.rmtree(directory)
            os.mkdir(directory, 0o700)
        layout = os.path.join(src_blobs, fscopy.LAYOUT)
        if os.path.exists(layout):
            shutil.copyfile(layout, os.path.join(target, fscopy.LAYOUT))
            shutil.copyfile(layout, os.path.join(tree, fscopy.LAYOUT))
        os.mkdir(os.path.join(tree, fscopy.TMP_DIR), 0o700)

    def _link_into_tree(self, flat, name, tree, made=None):
        """Link the flat pool link ``name`` into ``tree`` at its path."""
        parts = name.split(SEP)
        directory = os.path.join(tree, *parts[:-1])
        if made is None or directory not in made:
            os.makedirs(directory, 0o700, exist_ok=True)
            if made is not None:
                made.add(directory)
        return self._link(os.path.join(flat, name), directory, parts[-1])

    @staticmethod
    def _unlink_from_tree(tree, name):
        try:
            os.unlink(os.path.join(tree, *name.split(SEP)))
        except FileNotFoundError:
            pass

    @staticmethod
    def _link(src, target, name):
        dst = os.path.join(target, name)
        if os.path.lexists(dst):
            return False
        try:
            os.link(src, dst)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):
                raise
            fscopy.clone_file(src, dst)
        return True

    def link_new_blobs(self, src_blobs, fs_rel, number, start, last_tid):
        """Link the blob files the transactions of the pool file from
        byte ``start`` on reference (what the delta added), checking each
        is there.  Returns (transactions, blobs checked, names added)."""
        from ..verify import blob_records
        helper = None
        target = self.blobs_path(fs_rel, number)
        os.makedirs(target, 0o700, exist_ok=True)
        tree = self.tree_path(fs_rel, number)
        if not os.path.isdir(tree):
            tree = None       # a pool file of an earlier version
        transactions = blobs = 0
        added = []
        made = set()
        for oid, tid in blob_records(self.fs_path(fs_rel, number), start,
                                     last_tid):
            if oid is None:
                transactions += 1
                continue
            if helper is None:   # ZODB imported when a blob is found
                from ZODB.blob import FilesystemHelper
                helper = FilesystemHelper(src_blobs)
                base = helper.base_dir
            blobs += 1
            path = helper.getBlobFilename(oid, tid)
            name = path[len(base):].replace(os.sep, SEP)
            try:
                if self._link(path, target, name):
                    added.append(name)
            except FileNotFoundError:
                raise filestorage.VerificationFailed(
                    'blob of object 0x%s, transaction %s, is missing '
                    'from %s' % (oid.hex().lstrip('0') or '0',
                                 filestorage.tid_hex(tid), src_blobs))
            if tree is not None:
                # flat first, then the tree: the tree never holds a name
                # the flat directory lacks
                self._link_into_tree(target, name, tree, made)
        return transactions, blobs, added

    def save_index(self, fs_rel, number, start, end, last_tid):
        """Bring the pool file's saved index from ``start`` (the previous
        snapshot's end, where we saved it) to ``end``, as FileStorage does
        when it opens a file with an index: scan the transactions from
        ``start`` on with its own ``read_index``, then save it at ``end``
        (the scan costs the delta; the load and save, the number of
        objects).  False when the saved index is not at ``start``: the
        caller saves one the slow way."""
        path = self.fs_path(fs_rel, number)
        if filestorage.saved_index_position(path) != start or start <= 4:
            return False
        if end == start:
            return True      # nothing committed since
        from ZODB.FileStorage.FileStorage import read_index
        from ZODB.fsIndex import fsIndex
        try:
            info = fsIndex.load(path + '.index')
        except Exception:
            return False
        index = info.get('index')
        if not isinstance(index, fsIndex) or info.get('pos') != start:
            return False
        try:
            with open(path, 'rb') as f:
                pos, _, tid = read_index(f, path, index, {}, start=start,
                                         ltid=b'\0' * 8, read_only=1)
        except Exception as e:
            raise filestorage.VerificationFailed(
                'the new transactions of %s do not scan: %s' % (path, e))
        if pos != end or tid != last_tid:
            raise filestorage.VerificationFailed(
                'the new transactions of %s do not scan to %d, transaction '
                '%s (but to %d, %s)' % (path, end, filestorage.tid_hex(
                    last_tid), pos, filestorage.tid_hex(tid)))
        tmp = path + '.index.writing'
        index.save(end, tmp)
        os.replace(tmp, path + '.index')
        return True

    def take_tree(self, entry, dst_blobdir):
        """Hand the pool file's ready blob tree to ``dst_blobdir`` (must
        not exist) when ``entry`` is the newest snapshot of its pool file:
        renamed, after unlinking what a killed create linked past the
        snapshot.  The pool keeps its flat links to every file.  False
        when there is no tree (taken before, or a pool of an earlier
        version)."""
        tree = self.tree_path(entry['fs'], entry['pool'])
        if not os.path.isdir(tree):
            return False
        flat, names = self.blobs_path(entry['fs'], entry['pool']), []
        try:
            names = os.listdir(flat)
        except FileNotFoundError:
            return False
        last = tid_int(entry.get('last_tid'))
        made = set()
        for name in names:
            t = blob_tid(name)
            if t is None:
                continue
            if t > last:
                self._unlink_from_tree(tree, name)
            elif not os.path.lexists(os.path.join(tree, *name.split(SEP))):
                # a link lost from the tree: the flat one is kept
                self._link_into_tree(flat, name, tree, made)
        os.makedirs(os.path.join(tree, fscopy.TMP_DIR), 0o700,
                    exist_ok=True)
        os.rename(tree, dst_blobdir)
        fsutil.fsync_directory(os.path.dirname(tree))
        fsutil.fsync_directory(os.path.dirname(dst_blobdir))
        return True

    # -- reading a snapshot back -------------------------------------------

    def check(self, entry):
        """What is wrong with the pool bytes of ``entry`` (a line), or
        None: its pool file holds at least ``end`` bytes, with the recorded
        first and last transactions."""
        return self.check_file(self.fs_path(entry['fs'], entry['pool']),
                               entry, 'its pool file %s')

    @staticmethod
    def check_file(path, entry, what='%s'):
        """The same for the file ``path`` (the pool file, or a restored or
        exported copy of the snapshot's prefix)."""
        what = what % path
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return '%s is missing' % what
        try:
            end = entry['end']
            if os.fstat(fd).st_size < end:
                return '%s is shorter than recorded' % what
            if end <= 4:
                return None
            found = filestorage._record_ending_at(fd, end)
            if found is None or filestorage.tid_hex(found[1]) != \
                    entry['last_tid'] or filestorage.tid_hex(
                        filestorage._first_tid(fd, end)) != \
                    entry.get('first_tid'):
                return '%s is not what it recorded' % what
            return None
        finally:
            os.close(fd)

    def check_chain(self, fs_path, entry):
        """Hash the ranges of ``fs_path`` (a copy of the snapshot's prefix,
        or its pool file) against the checksums ``entry`` recorded; raises
        :class:`PoolDamage` naming the first range that differs."""
        fd = os.open(fs_path, os.O_RDONLY)
        try:
            for start, end, digest in entry.get('chain', []):
                if hash_range(fd, start, end) != digest:
                    raise PoolDamage(
                        'bytes %d to %d of its %s are not what it recorded'
                        % (start, end, entry['fs']), entry['fs'],
                        entry['pool'], chain=[start, end, digest])
        finally:
            os.close(fd)

    def check_blob_count(self, entry):
        """What is wrong with the pool's blob files of ``entry`` (a line),
        or None: it holds as many as the snapshot recorded (snapshots of
        earlier versions recorded none: not checked)."""
        total = entry.get('blobs_total')
        if total is None or not entry.get('blobs'):
            return None
        source, names = self.blob_names(entry)
        if len(names) < total:
            return '%d of its %d blob files are missing from %s' % (
                total - len(names), total, source)
        return None

    def check_blob_records(self, entry):
        """Read the transactions of ``entry`` with ZODB's record iterator:
        every blob file they reference is in the pool -- and, when the
        snapshot has no blob directory, they reference none (it holds no
        blob files).  (transactions, blobs) checked; raises
        :class:`PoolDamage`."""
        from ZODB.blob import FilesystemHelper
        from ..verify import BlobsWithoutDirectory
        from ..verify import blob_records
        from ..verify import check_no_blobs
        from ..verify import oid_hex
        pool_fs = self.fs_path(entry['fs'], entry['pool'])
        last = filestorage.tid_bytes(entry['last_tid'])
        if not entry.get('blobs'):
            try:
                return check_no_blobs(pool_fs, 4, last), 0
            except BlobsWithoutDirectory as e:
                raise PoolDamage(
                    'the records of its %s reference blobs (object 0x%s, '
                    'transaction %s) but it holds no blob files (taken '
                    'without a blob directory in files): a restore of it '
                    'loses them' % (entry['fs'], oid_hex(e.oid),
                                    filestorage.tid_hex(e.tid)),
                    entry['fs'], entry['pool'], tid=tid_int(e.tid.hex()))
        flat = self.blobs_path(entry['fs'], entry['pool'])
        try:
            with open(os.path.join(flat, fscopy.LAYOUT)) as f:
                layout = f.read().strip() or 'bushy'
        except FileNotFoundError:
            layout = 'bushy'
        # names only: a helper on the flat directory makes no directory
        helper = FilesystemHelper(flat, layout_name=layout)
        transactions = blobs = 0
        for oid, tid in blob_records(pool_fs, 4, last):
            if oid is None:
                transactions += 1
                continue
            blobs += 1
            name = helper.getBlobFilename(oid, tid)[len(helper.base_dir):]
            if not os.path.exists(os.path.join(
                    flat, name.replace(os.sep, SEP))):
                raise PoolDamage(
                    'the blob of object 0x%s, transaction %s, is missing '
                    'from %s' % (oid_hex(oid), filestorage.tid_hex(tid),
                                 flat),
                    entry['fs'], entry['pool'], tid=tid_int(tid.hex()))
        return transactions, blobs

    def blob_names(self, entry):
        """The flat names of the blob files ``entry`` holds."""
        blobs = self.blobs_path(entry['fs'], entry['pool'])
        last = tid_int(entry.get('last_tid'))
        try:
            names = os.listdir(blobs)
        except FileNotFoundError:
            return blobs, []
        return blobs, [n for n in names if blob_tid(n) is not None and
                       blob_tid(n) <= last]

    def materialise_blobs(self, entry, dst_blobdir):
        """The blob tree of ``entry`` in ``dst_blobdir`` (must not exist),
        hard links to the pool's files (copies across filesystems)."""
        source, names = self.blob_names(entry)
        os.makedirs(dst_blobdir, 0o700)
        layout = os.path.join(source, fscopy.LAYOUT)
        if os.path.exists(layout):
            shutil.copyfile(layout, os.path.join(dst_blobdir, fscopy.LAYOUT))
        made = set()
        for name in names:
            parts = name.split(SEP)
            directory = os.path.join(dst_blobdir, *parts[:-1])
            if directory not in made:
                os.makedirs(directory, 0o700, exist_ok=True)
                made.add(directory)
            self._link(os.path.join(source, name), directory, parts[-1])
        os.makedirs(os.path.join(dst_blobdir, fscopy.TMP_DIR), 0o700,
                    exist_ok=True)
        return len(names)

    def blob_bytes(self, entry, newer_than=-1):
        """(bytes of the blob files ``entry`` holds, bytes of those whose
        transaction is newer than ``newer_than`` that nothing outside the
        pool links), in one pass."""
        source, names = self.blob_names(entry)
        in_pool = 1 + os.path.isdir(self.tree_path(entry['fs'],
                                                   entry['pool']))
        total = held = 0
        for name in names:
            try:
                st = os.stat(os.path.join(source, name))
            except OSError:
                continue
            total += st.st_size
            if blob_tid(name) > newer_than and st.st_nlink <= in_pool:
                held += st.st_size
        return total, held
