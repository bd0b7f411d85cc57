"""The portable backend: snapshots of the current data generation in
``DATA/snapshots/<name>``, their Data.fs bytes and blob files in the hidden
pool ``DATA/snapshots/.pool`` (:mod:`~collective.safedeploy.data.backends.
pool`), so that a snapshot costs the writes since the previous one.

A create appends to the newest pool file the transactions production
committed since that file's end (or copies production's committed prefix
into a new pool file after a pack or any mismatch), then links the blob
files those transactions reference, and verifies what it added: the
transactions parse, end with the recorded one, their blobs are there; the
checksum of the delta joins the chain's recorded ones.  The site keeps
running meanwhile.  Like ``cp``, a create does not wait for the disk
(unless asked to, as before a release flip): a restore makes it durable
before it becomes the site's data, and a snapshot that a power cut left
short is refused as damaged.  Snapshots are staged and completed like
generations: one killed half-way is never listed, and what it appended to
the pool is cut by the next run.

A restore gives exactly the recorded prefix: the pool file itself when the
snapshot is its newest and nothing else holds it (it is sealed first: the
site appends to it from then on, and the pool never does again), else a
copy of the first ``end`` bytes.  The pool file handed over takes a copy of
the index each create saves at the pool file's end and the pool file's
ready blob tree with it: nothing is scanned or linked, and the restored
Data.fs is checked by its recorded length, first and last transactions.
Otherwise the blob tree is hard-linked from the pool.  ``bin/snapshot
--export NAME DIR`` writes the same into a directory of the operator's
choice.

Snapshots of earlier versions (their own Data.fs in their directory) are
listed, restored and destroyed as before.
"""
import logging
import os

from .. import exports
from .. import filestorage
from ...core import fsutil
from ...core.errors import ConfigurationError
from ...core.errors import NotFound
from ...core.errors import Refused
from ...core.store import SNAPSHOT
from ...core.store import Store
from .base import StoreBackend
from .base import disk_usage
from .pool import Pool
from .pool import tid_int

logger = logging.getLogger('collective.safedeploy')

SNAPSHOTS = 'snapshots'


class CopyBackend(StoreBackend):

    name = 'copy'

    def __init__(self, config):
        super().__init__(config)
        directory = os.path.join(self.root.path, SNAPSHOTS)
        self.store = Store(directory, SNAPSHOT)
        self.pool = Pool(directory)

    def check(self):
        self.root.current_path()

    def fs_rels(self):
        return [s.fs for s in self.root.storages if s.fs]

    def manifests(self):
        return [self.store.manifest(row['name'])
                for row in self.snapshots()]

    def cleanup(self):
        super().cleanup()
        self.collect()
        exports.remove_killed(self.root)

    def collect(self):
        """Drop pool bytes and blob links no kept snapshot references --
        unless a snapshot's manifest is damaged: what it references is
        unknown, so the pool is left as it is."""
        if any(self.store.entry(n) == 'damaged'
               for n in self.store.on_disk(strict=False)):
            logger.warning('a snapshot in %s is damaged; the snapshot pool '
                           'is not cleaned up until it is removed by hand',
                           self.store.directory)
            return
        self.pool.collect(self.manifests(), self.fs_rels())

    # -- create ------------------------------------------------------------

    def create(self, name, release=None, durable=False):
        with self.lock():
            source = self.root.current_path()
            self.refuse_existing(name)     # refused: nothing changed
            self.cleanup()
            manifests = self.manifests()

            def fill(path, generation):
                # a blob directory configured as another path is what to
                # fix first (its Data.fs's blob records are refused next)
                for s in self.root.storages:
                    if s.other:
                        self.root.check_other(source, s.other)
                storages = []
                for s in self.root.storages:
                    if s.fs:
                        storages.append(self._take_storage(
                            source, s, manifests, durable))
                    if s.other:
                        self.root._copy_other(source, path, s.other)
                fsutil.fsync_directory(path)
                return dict(storages=storages, layout='pool')
            try:
                row = self.take(name, release, fill)
            except BaseException:
                # what the failed create appended and linked goes now, not
                # on the next run
                try:
                    self.collect()
                except Exception:
                    pass
                raise
            # complete: no blob link is past the newest snapshot, so the
            # next create need not list them (Pool.collect)
            for entry in row['storages']:
                if entry.get('pool') is not None and entry.get('blobs'):
                    self.pool.mark_links_upto(entry['fs'], entry['pool'],
                                              tid_int(entry['last_tid']))
            return row

    def _take_storage(self, source, s, manifests, durable):
        """Add production's new transactions and blobs of one Data.fs to
        the pool, verify them; the manifest entry."""
        from .. import verify as fsverify
        src_fs = os.path.join(source, s.fs)
        previous = self.pool.latest(s.fs, manifests)
        taken = None
        if previous is not None and previous.get('blobs') == s.blobs:
            # (a pool file taken with another blob directory, or none,
            # has not linked what its transactions reference: a snapshot
            # with this one reads them all in a new pool file)
            taken = self.pool.append(src_fs, previous, durable)
        if taken is None:
            taken = self.pool.start_new(src_fs, s.fs, durable)
            chain = []
        else:
            chain = list(previous.get('chain', []))
        number, start, pos, prefix = taken
        pool_fs = self.pool.fs_path(s.fs, number)
        last = filestorage.tid_hex(pos.last_tid)
        if start == 0 or not self.pool.save_index(
                s.fs, number, start, pos.end, pos.last_tid):
            # a new pool file (or one whose index is not where the
            # previous snapshot saved it): opened by ZODB, its index saved
            fsverify.verify(pool_fs, None, expected_tid=pos.last_tid,
                            write_index=True)
        entry = dict(fs=s.fs, blobs=s.blobs, pool=number, start=start,
                     end=pos.end, last_tid=last,
                     first_tid=filestorage.tid_hex(prefix.first_tid),
                     source=prefix.as_dict())
        problem = self.pool.check(entry)
        if problem:
            raise filestorage.VerificationFailed(
                'the new snapshot of %s failed: %s' % (s.fs, problem))
        transactions = blobs = 0
        if s.blobs:
            src_blobs = os.path.join(source, s.blobs)
            if not os.path.isdir(src_blobs):
                raise filestorage.CopyError(
                    'no blob directory at %s; check the blob-dir path'
                    % src_blobs)
            if start == 0:
                self.pool.start_blobs(src_blobs, s.fs, number)
            self.pool.unmark_links_upto(s.fs, number)
            # the delta's transactions (all of them in a new pool file),
            # read with ZODB's iterator: each parses, and every blob it
            # references is linked into the pool
            transactions, blobs, names = self.pool.link_new_blobs(
                src_blobs, s.fs, number, max(start, 4), pos.last_tid)
            # a new pool file's snapshot holds all its blobs: a count
            entry['blobs_added'] = names if start else len(names)
            # how many blob files the snapshot has in all: a restore, an
            # export and the listing find a lost one by counting
            total = len(names) if not start else \
                previous.get('blobs_total')
            if start and total is not None:
                total += len(names)
            elif total is None:     # built on a snapshot of an earlier
                total = len(self.pool.blob_names(entry)[1])   # version
            entry['blobs_total'] = total
        else:
            # no blob directory configured: the delta's transactions (all
            # of them in a new pool file) may reference no blob, or the
            # snapshot would hold none of them
            try:
                transactions = fsverify.check_no_blobs(
                    pool_fs, max(start, 4), pos.last_tid)
            except fsverify.BlobsWithoutDirectory as e:
                raise ConfigurationError(
                    'files: the records of %s reference blobs (object 0x%s, '
                    'transaction %s) but no blob directory is configured: '
                    'add blobstorage to files ("%s blobstorage" on one '
                    'line)' % (s.fs, fsverify.oid_hex(e.oid),
                               filestorage.tid_hex(e.tid), s.fs))
        fd = os.open(pool_fs, os.O_RDONLY)
        try:
            from .pool import hash_range
            chain.append([start, pos.end, hash_range(fd, start, pos.end)])
        finally:
            os.close(fd)
        entry.update(chain=chain, checked_transactions=transactions,
                     checked_blobs=blobs,
                     verified_since=previous['last_tid']
                     if start and previous else None)
        return entry

    # -- listing -----------------------------------------------------------

    @staticmethod
    def pooled(manifest):
        return any(e.get('pool') is not None
                   for e in manifest.get('storages', []))

    def usage(self, manifest, kept=()):
        """(size, what destroying it would free).  Of a pool file, a
        snapshot alone holds only what no other kept snapshot references:
        the bytes past their ends and the blobs newer than their last
        transactions -- the whole file once no other references it -- and
        of those only what nothing outside the pool links (production, or
        a generation a restore handed the file to, still holds its
        blobs)."""
        size, holds = disk_usage(self.store.path(manifest['name']))
        if not self.pooled(manifest):
            return size, holds
        others = self.pool.references(
            m for m in kept if m['name'] != manifest['name'])
        for entry in manifest['storages']:
            if entry.get('pool') is None:
                continue
            shared_end, shared_tid = others.get(
                (entry['fs'], entry['pool']), (0, -1))
            blobs, held = self.pool.blob_bytes(entry, newer_than=shared_tid)
            size += entry['end'] + blobs
            pool_fs = self.pool.fs_path(entry['fs'], entry['pool'])
            try:
                alone = os.stat(pool_fs).st_nlink == 1
            except FileNotFoundError:
                alone = False
            if alone:
                holds += max(0, entry['end'] - shared_end)
            holds += held
        return size, holds

    def _row(self, manifest, sizes=False, kept=()):
        row = super()._row(manifest, sizes, kept)
        if self.pooled(manifest):
            row['pool'] = [dict(fs=e['fs'], file=e['pool'], start=e['start'],
                                end=e['end']) for e in manifest['storages']
                           if e.get('pool') is not None]
        return row

    def snapshots(self, sizes=False, damaged=False):
        rows = super().snapshots(sizes, damaged)
        if sizes:
            # a listing: what the last --verify of each found
            verdicts = self.store.verdicts(strict=False)
            for row in rows:
                verdict = verdicts.get(row['name'])
                if verdict is None:
                    continue
                row['verified'] = dict(time=verdict.get('time'),
                                       ok=verdict['event'] == 'verified')
                if verdict['event'] != 'verified':
                    row['verified']['problem'] = verdict.get('problem')
                    row['state'] = 'damaged'
        return rows

    def state(self, manifest):
        return 'damaged' if self.damaged(manifest) else 'ok'

    def damaged(self, manifest):
        """What of a snapshot is not what it recorded (a pool file shorter:
        a power cut came before the copy reached the disk; or replaced by
        hand), one line each.  A restore refuses such a snapshot."""
        problems = []
        path = self.store.path(manifest['name'])
        for entry in manifest.get('storages', []):
            if entry.get('pool') is not None:
                problem = self.pool.check(entry) or \
                    self.pool.check_blob_count(entry)
                if problem:
                    problems.append('%s: %s' % (entry['fs'], problem))
            elif entry.get('copy') and not filestorage.still_prefix(
                    os.path.join(path, entry['fs']),
                    filestorage.Prefix.from_dict(entry['copy'])):
                problems.append('its %s is not what it recorded' % entry['fs'])
        return problems

    def refuse_damaged(self, name, info):
        damaged = self.damaged(info)
        if damaged:
            raise Refused(
                'snapshot %s is damaged: %s (shorter: a power cut came '
                'before it reached the disk; or changed by hand); restore '
                'another snapshot' % (name, damaged[0]))

    def refuse_failed_verification(self, name):
        """What the listing and a restore cannot see (they read the ends
        of the files) but the last ``--verify`` found: refused until a
        later one passes."""
        verdict = self.store.verdicts().get(name)
        if verdict is None or verdict['event'] == 'verified':
            return
        raise Refused(
            'snapshot %s failed verification at %s: %s%s; restore or export '
            'another snapshot, or repair its pool file and run bin/snapshot '
            '--verify %s again' % (
                name, verdict['time'][:19].replace('T', ' ') + ' UTC',
                verdict.get('problem'),
                ' (found by --verify %s, which shares them)'
                % verdict['found_by'] if verdict.get('found_by') else '',
                name))

    def verify(self, name):
        """Check snapshot ``name`` completely, reading all of it: every
        byte of each Data.fs against the recorded checksums, every blob
        file its transactions reference (what a restore, which must be
        quick, leaves to the checks made when the snapshot was taken).

        The verdict goes into the snapshots' journal: the listing shows a
        snapshot found damaged as damaged, and a restore or export refuses
        it, until a later ``--verify`` of it passes.  Damage in a pool
        file is damage to every snapshot whose recorded prefix of that
        file holds it: they are marked too, and the pool file is sealed
        (no later snapshot builds on it)."""
        with self.lock():
            info = self.info(name)
            self.refuse_damaged(name, info)
            try:
                result = self._read_whole(name, info)
            except filestorage.VerificationFailed as e:
                sharing = self._record_failed(name, e)
                raise Refused(
                    'snapshot %s is damaged: %s%s%s; restore or export '
                    'another snapshot (bin/snapshot --list)' % (
                        name, e, ' (its pool file was changed on disk)'
                        if getattr(e, 'chain', None) else '',
                        '; so %s %s, which share%s them' % (
                            'is snapshot' if len(sharing) == 1 else
                            'are snapshots', ', '.join(sharing),
                            's' if len(sharing) == 1 else '')
                        if sharing else ''))
            self.store.journal.append('verified', name=name, **{
                k: result[k] for k in ('bytes', 'transactions', 'blobs')})
            return result

    def _record_failed(self, name, damage):
        """Record that snapshot ``name`` failed verification, and so did
        the other snapshots holding the same damaged pool bytes or blob
        (:meth:`~.pool.PoolDamage.shared_by`); seal that pool file.  The
        names of those others."""
        from .pool import PoolDamage
        sharing = []
        if isinstance(damage, PoolDamage):
            self.pool.seal(damage.fs, damage.pool)
            sharing = [m['name'] for m in self.manifests()
                       if m['name'] != name and any(
                           damage.shared_by(e) for e in m.get('storages', []))]
        self.store.journal.append('verify-failed', name=name,
                                  problem=str(damage))
        for other in sharing:
            self.store.journal.append('verify-failed', name=other,
                                      problem=str(damage), found_by=name)
        return sharing

    def _read_whole(self, name, info):
        """Read snapshot ``name`` whole: {name, bytes, transactions,
        blobs}; raises :class:`~..filestorage.VerificationFailed`."""
        from .. import verify as fsverify
        result = dict(name=name, bytes=0, transactions=0, blobs=0)
        path = self.store.path(name)
        for entry in info.get('storages', []):
            if entry.get('pool') is not None:
                fs = self.pool.fs_path(entry['fs'], entry['pool'])
                self.pool.check_chain(fs, entry)
                # every transaction read, every blob reference checked
                transactions, blobs = self.pool.check_blob_records(entry)
                end = entry['end']
            else:     # a snapshot of an earlier version: its own files
                fs = os.path.join(path, entry['fs'])
                fsverify.verify(fs, None)
                end = os.path.getsize(fs)
                if entry.get('blobs'):
                    transactions, blobs, _ = fsverify.check_blobs(
                        fs, os.path.join(path, entry['blobs']))
                else:
                    transactions = fsverify.check_no_blobs(fs)
                    blobs = 0
            result['transactions'] += transactions
            result['blobs'] += blobs
            result['bytes'] += end
        return result

    def check_bytes(self, name, entry, fs):
        """``fs`` (a restored or exported copy of the snapshot's Data.fs,
        or its pool file) against every checksum the snapshot recorded:
        damage the listing cannot see (it reads no more than the ends)."""
        try:
            self.pool.check_chain(fs, entry)
        except filestorage.VerificationFailed as e:
            raise Refused(
                'snapshot %s is damaged: %s (its pool file was changed on '
                'disk); restore or export another snapshot (bin/snapshot '
                '--list)' % (name, e))

    # -- restore, export, destroy ------------------------------------------

    def restore(self, name, force=False, discard_writes=False):
        info = self.info(name)
        self.refuse_damaged(name, info)
        self.refuse_failed_verification(name)
        if not self.pooled(info):
            return self.restore_as_generation(
                name, info, self.store.path(name), force, discard_writes,
                own_copy=True)
        snapshot_dir = self.store.path(name)

        def make(tmp):
            os.mkdir(tmp)
            self._write_out(info, snapshot_dir, tmp, hand_over=True,
                            durable=True)

        def check(path):
            return self._check_restored(info, path)
        return self.restore_as_generation(
            name, info, snapshot_dir, force, discard_writes,
            make=make, check=check)

    def _write_out(self, info, snapshot_dir, target, hand_over=False,
                   durable=False):
        """The snapshot's files in ``target``: each Data.fs exactly its
        recorded prefix, each blob tree linked from the pool (or, with the
        pool file handed over, the pool file's ready tree), the other files
        copied from the snapshot's directory."""
        entries = {e['fs']: e for e in info.get('storages', [])}
        for s in self.root.storages:
            if s.fs:
                entry = entries[s.fs]
                dst = os.path.join(target, s.fs)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                taken = self._write_fs(entry, dst, hand_over, durable)
                if s.blobs:
                    dst_blobs = os.path.join(target, s.blobs)
                    os.makedirs(os.path.dirname(dst_blobs), exist_ok=True)
                    if not (taken and self.pool.take_tree(entry, dst_blobs)):
                        self.pool.materialise_blobs(entry, dst_blobs)
            if s.other:
                self.root._copy_other(snapshot_dir, target, s.other)
        fsutil.fsync_directory(target)

    def _write_fs(self, entry, dst, hand_over, durable):
        """``dst`` holding the recorded prefix; True when it is the pool
        file itself, handed over (sealed), with a copy of its index."""
        from .. import copy as fscopy
        pool_fs = self.pool.fs_path(entry['fs'], entry['pool'])
        end = entry['end']
        refs = self.pool.references(self.manifests())
        newest = refs.get((entry['fs'], entry['pool']), (0,))[0] == end
        st = os.stat(pool_fs)
        if hand_over and newest and st.st_nlink == 1 and \
                st.st_size == end and end > 4:
            # the pool file is exactly this snapshot: hand it over, sealed
            # first, so that nothing of ours appends to it again
            self.pool.seal(entry['fs'], entry['pool'])
            try:
                os.link(pool_fs, dst)
                linked = True
            except OSError:
                linked = False
            if linked:
                pos = filestorage.saved_index_position(pool_fs)
                if pos is not None and pos <= end and \
                        fscopy._copy_index(pool_fs, dst) and durable:
                    fsutil.fsync_file(dst + '.index')
                if durable:
                    # what the kernel has not written back yet: the
                    # snapshots' appends since the last sync, if any
                    fsutil.fsync_file(dst)
                return True
        fscopy.copy_prefix(pool_fs, dst, end=end, sync=durable)
        pos = filestorage.saved_index_position(dst)
        if pos is not None and pos > end:
            os.unlink(dst + '.index')   # an index of a longer file
        elif pos == end and durable:
            fsutil.fsync_file(dst + '.index')
        return False

    def _check_restored(self, info, path):
        """Each restored Data.fs is the recorded prefix: its length, its
        first and last transactions as recorded, its blob files counted
        (its bytes were checked against the chain's checksums and its blobs
        when the snapshot was taken; ``--verify`` checks them again).
        With the index the snapshot saved at its end beside it, that is
        all: the site opens it without a scan.  Else it is opened by ZODB
        and its index saved.  The manifest entries of the generation."""
        from .. import verify as fsverify
        result = []
        for entry in info['storages']:
            fs = os.path.join(path, entry['fs'])
            last = filestorage.tid_bytes(entry['last_tid'])
            if entry.get('blobs'):
                fsverify.prepare_blob_dir(os.path.join(path, entry['blobs']))
            problem = self.pool.check_file(fs, entry)
            if problem:
                raise filestorage.VerificationFailed(
                    'the restored %s is not what snapshot %s recorded: %s'
                    % (entry['fs'], info['name'], problem))
            if filestorage.saved_index_position(fs) != entry['end'] or \
                    os.path.getsize(fs) != entry['end']:
                fsverify.verify(fs, None, expected_tid=last,
                                write_index=True)
            st = os.stat(fs)
            prefix = filestorage.Prefix(
                st.st_ino, st.st_dev, entry['end'], last,
                filestorage.tid_bytes(entry.get('first_tid')))
            result.append(dict(
                fs=entry['fs'], blobs=entry.get('blobs'),
                copy=prefix.as_dict(), source=entry.get('source'),
                last_tid=entry['last_tid'], checked_transactions=0,
                checked_blobs=0))
        return result

    def export(self, name, directory):
        """Write snapshot ``name`` into ``directory`` (a new directory):
        the configured files, each Data.fs exactly the recorded prefix,
        checked against the chain's checksums."""
        directory = os.path.abspath(directory)
        if os.path.lexists(directory):
            raise Refused('%s exists; --export writes a new directory: '
                          'name one that does not exist' % directory)
        parent = os.path.dirname(directory)
        if os.path.lexists(parent) and not os.path.isdir(parent):
            raise Refused('%s is not a directory; name a directory to '
                          'export into' % parent)
        if not os.path.isdir(parent):
            raise NotFound('%s does not exist; create it or name another '
                           'directory' % parent)
        if fsutil.is_within(directory, self.root.path):
            raise Refused('%s is inside the data root %s; export somewhere '
                          'else' % (directory, self.root.path))
        with self.lock():
            info = self.info(name)
            self.refuse_damaged(name, info)
            self.refuse_failed_verification(name)
            exports.remove_killed(self.root)
            # recorded in the data root and marked before it is made: a
            # killed export's staging is removed by the next run
            staging = exports.Staging(self.root, name, directory)
            tmp = staging.make()
            try:
                if self.pooled(info):
                    self._write_out(info, self.store.path(name), tmp)
                    for entry in info['storages']:
                        self.check_bytes(name, entry,
                                         os.path.join(tmp, entry['fs']))
                else:
                    self._export_earlier(info, tmp)
                staging.finish()
            except BaseException:
                staging.discard()
                raise
            return directory

    def _export_earlier(self, info, target):
        """Export a snapshot of an earlier version (its own Data.fs, blob
        links in ``<blobs>.kept``)."""
        from .. import copy as fscopy
        path = self.store.path(info['name'])
        entries = {e['fs']: e for e in info.get('storages', [])}
        for s in self.root.storages:
            if s.fs:
                dst = os.path.join(target, s.fs)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                fscopy.copy_prefix(os.path.join(path, s.fs), dst,
                                   end=entries[s.fs]['copy']['end'])
                if s.blobs:
                    src = os.path.join(path, s.blobs)
                    kept = fscopy.kept_path(src)
                    if not os.path.isdir(kept):
                        fscopy._keep_links(src, kept)
                    fscopy.rebuild_from_kept(kept,
                                             os.path.join(target, s.blobs))
            if s.other:
                self.root._copy_other(path, target, s.other)

    def destroy(self, name):
        with self.lock():
            self.info(name)
            self.store.discard(name, 'destroyed')
            self.collect()
            exports.remove_killed(self.root)
