"""bin/snapshot with the copy backend, adopt, and bad inputs."""
import os
import shutil
import subprocess
import tempfile
import unittest

from collective.safedeploy.data import snapshot
from collective.safedeploy.tests import support
from collective.safedeploy.tests import zodbsupport as zs
from collective.safedeploy.tests.snapshotsupport import BackendContract
from collective.safedeploy.tests.snapshotsupport import make_data_root
from collective.safedeploy.tests.snapshotsupport import run_snapshot


class CopyBackendTests(BackendContract, unittest.TestCase):

    backend = 'copy'

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='safedeploy-snapshot-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.data = make_data_root(os.path.join(self.dir, 'var'))
        self.options = dict(data=self.data, backend='copy')

    def snapshot_files(self, name):
        """The snapshot's Data.fs and blob tree, exported (a snapshot's
        own directory holds no Data.fs: its bytes are in the pool)."""
        target = tempfile.mkdtemp(prefix='export-', dir=self.dir)
        os.rmdir(target)
        self.ok('--export', name, target)
        return (os.path.join(target, 'filestorage', 'Data.fs'),
                os.path.join(target, 'blobstorage'))

    def pool_file(self, number=1):
        return self.pool_file_of(self.data, number)

    @staticmethod
    def pool_file_of(data, number=1):
        return os.path.join(data, 'snapshots', '.pool',
                            'filestorage%Data.fs', '%d.fs' % number)

    def entry(self, name):
        manifest = snapshot.backend_for(self.options).store.manifest(name)
        return manifest['storages'][0]

    def test_blobs_are_hard_links_and_production_is_untouched(self):
        before = zs.hash_tree(os.path.join(self.data, 'generations', '1'))
        self.ok('s1')
        self.assertEqual(sorted(os.listdir(os.path.join(
            self.data, 'snapshots', 's1'))), ['safedeploy-manifest.json'])
        fs, blobs = self.snapshot_files('s1')
        from collective.safedeploy.data import copy as fscopy
        for rel in fscopy.blob_files(blobs):
            self.assertEqual(
                os.stat(os.path.join(blobs, rel)).st_ino,
                os.stat(os.path.join(self.current_blobs(), rel)).st_ino)
        self.assertNotEqual(os.stat(self.pool_file()).st_ino,
                            os.stat(self.current_fs()).st_ino)
        self.assertEqual(
            zs.hash_tree(os.path.join(self.data, 'generations', '1')),
            before)

    def test_a_first_snapshot_holds_the_blobs_its_transactions_name(self):
        # a blob file no transaction references (one of a transaction
        # still being committed, or left by a crash) is not taken
        stray = os.path.join(self.current_blobs(), *(['0x00'] * 7 + [
            '0x7f', '0x03d0000000000001.blob']))
        os.makedirs(os.path.dirname(stray))
        with open(stray, 'wb') as f:
            f.write(b'not committed')
        self.ok('s1')
        fs, blobs = self.snapshot_files('s1')
        from collective.safedeploy.data import copy as fscopy
        taken = set(fscopy.blob_files(blobs))
        production = set(fscopy.blob_files(self.current_blobs()))
        self.assertEqual(production - taken,
                         {os.path.relpath(stray, self.current_blobs())})
        self.assertTrue(taken)
        self.assertEqual(self.entry('s1')['blobs_added'], len(taken))

    def test_blob_links_past_the_newest_snapshot_are_cut(self):
        from collective.safedeploy.data import copy as fscopy
        from collective.safedeploy.data.backends.pool import blob_tid
        pool_blobs = self.pool_file()[:-3] + '.blobs'
        tree = self.pool_file()[:-3] + '.tree'

        def past(tid_hex):
            newest = int(tid_hex, 16)
            flat = [n for n in os.listdir(pool_blobs)
                    if (blob_tid(n) or 0) > newest]
            in_tree = [n for n in fscopy.blob_files(tree)
                       if (blob_tid(os.path.basename(n)) or 0) > newest]
            return flat + in_tree

        self.ok('s1')
        zs.commit(self.current_fs(), self.current_blobs(), n=2)
        self.ok('s2')
        self.assertEqual(len(past(self.entry('s1')['last_tid'])), 4)
        # the newest destroyed: its blobs leave the pool with it
        self.ok('--destroy', 's2')
        self.assertEqual(past(self.entry('s1')['last_tid']), [])
        # a create killed after it linked a blob (its transaction later
        # than any snapshot): the next run cuts the link
        name = '%'.join(['0x00'] * 7 + ['0x7e', '0x7fffffffffffff00.blob'])
        os.link(self.current_fs(), os.path.join(pool_blobs, name))
        os.unlink(pool_blobs + '.upto')
        self.ok('s3')
        self.assertNotIn(name, os.listdir(pool_blobs))
        self.assertEqual(past(self.entry('s3')['last_tid']), [])

    def test_a_second_snapshot_appends_only_the_delta(self):
        self.ok('s1')
        first = self.entry('s1')
        pool_blobs = self.pool_file()[:-3] + '.blobs'
        linked = set(os.listdir(pool_blobs))
        zs.commit(self.current_fs(), self.current_blobs(), n=2)
        state = zs.read_all(self.current_fs(), self.current_blobs())
        self.ok('s2')
        second = self.entry('s2')
        # one pool file, the second snapshot's range starts at the first
        # one's end; only the two new blobs were linked
        self.assertEqual((second['pool'], second['start']),
                         (1, first['end']))
        self.assertEqual(os.path.getsize(self.pool_file()), second['end'])
        # the pool file's index moved to its new end with it, and its
        # tree holds the same links as the flat directory
        from collective.safedeploy.data import copy as fscopy
        from collective.safedeploy.data import filestorage
        self.assertEqual(filestorage.saved_index_position(self.pool_file()),
                         second['end'])
        tree = self.pool_file()[:-3] + '.tree'
        self.assertEqual(
            sorted(n.replace(os.sep, '%') for n in fscopy.blob_files(tree)),
            sorted(n for n in os.listdir(pool_blobs) if n.endswith('.blob')))
        self.assertEqual(second['checked_transactions'], 2)
        self.assertEqual(len(second['blobs_added']), 2)
        self.assertEqual(set(os.listdir(pool_blobs)) - linked,
                         set(second['blobs_added']))
        self.assertEqual(second['chain'][0], first['chain'][0])
        self.assertEqual(len(second['chain']), 2)
        # listed: what destroying each would free.  The second holds its
        # delta's bytes (not its blobs: production links them too); the
        # first nothing of the pool, which the second builds on
        rows = self.listing()
        delta = second['end'] - first['end']
        self.assertGreaterEqual(rows[1]['holds'], delta)
        self.assertLess(rows[1]['holds'], delta + 64 * 1024)
        self.assertLess(rows[0]['holds'], 64 * 1024)
        self.assertGreater(rows[0]['size'], first['end'])
        self.assertEqual(rows[1]['pool'][0]['start'], first['end'])
        # exported and restored: exactly the recorded prefix
        fs, blobs = self.snapshot_files('s2')
        self.assertEqual(os.path.getsize(fs), second['end'])
        self.assertEqual(zs.read_all(fs, blobs), state)
        fs1, blobs1 = self.snapshot_files('s1')
        self.assertEqual(os.path.getsize(fs1), first['end'])
        zs.commit(self.current_fs(), self.current_blobs(), n=1)
        self.ok('--restore', 's1', '--discard-writes')
        self.assertEqual(zs.read_all(self.current_fs(), self.current_blobs()),
                         zs.read_all(fs1, blobs1))
        self.assertEqual(os.path.getsize(self.current_fs()), first['end'])

    def test_restore_hands_the_pool_file_over_sealed(self):
        self.ok('s1')
        before = zs.read_all(self.current_fs(), self.current_blobs())
        end = self.entry('s1')['end']
        zs.commit(self.current_fs(), self.current_blobs(), n=1)
        self.ok('--restore', 's1', '--discard-writes')
        # the newest snapshot's pool file is the restored Data.fs: nothing
        # copied; sealed, so that no snapshot appends to it again
        self.assertEqual(os.stat(self.current_fs()).st_ino,
                         os.stat(self.pool_file()).st_ino)
        self.assertTrue(os.path.exists(self.pool_file()[:-3] + '.sealed'))
        self.assertEqual(zs.read_all(self.current_fs(), self.current_blobs()),
                         before)
        # its blob tree is the pool file's ready one, renamed (the pool
        # keeps its flat links); its index is the one the snapshot saved
        # at its end, so neither the restore nor the site scans the file
        from collective.safedeploy.data import copy as fscopy
        from collective.safedeploy.data import filestorage
        self.assertFalse(os.path.exists(self.pool_file()[:-3] + '.tree'))
        fs, blobs = self.snapshot_files('s1')
        self.assertEqual(sorted(fscopy.blob_files(self.current_blobs())),
                         sorted(fscopy.blob_files(blobs)))
        self.assertEqual(filestorage.saved_index_position(self.current_fs()),
                         end)
        # the site writes after it, replaces every blob and packs; the
        # next snapshot starts a new pool file
        zs.commit(self.current_fs(), self.current_blobs(), n=2)
        self.ok('s2')
        self.assertEqual(self.entry('s2')['pool'], 2)
        rewrite_blobs_and_pack(self.current_fs(), self.current_blobs())
        self.ok('s3')
        self.assertEqual((self.entry('s3')['pool'],
                          self.entry('s3')['start']), (3, 0))
        # ... and s1 is still its first bytes, listed, restorable
        fs, blobs = self.snapshot_files('s1')
        self.assertEqual(os.path.getsize(fs), end)
        self.assertEqual(zs.read_all(fs, blobs), before)
        self.assertEqual([r['state'] for r in self.listing()], ['ok'] * 3)
        self.ok('--restore', 's1', '--discard-writes')
        self.assertEqual(zs.read_all(self.current_fs(), self.current_blobs()),
                         before)

    def test_destroy_keeps_what_a_kept_snapshot_references(self):
        self.ok('s1')
        end = self.entry('s1')['end']
        s1 = zs.read_all(self.current_fs(), self.current_blobs())
        zs.commit(self.current_fs(), self.current_blobs(), n=2)
        self.ok('s2')
        added = self.entry('s2')['blobs_added']
        pool_blobs = self.pool_file()[:-3] + '.blobs'
        self.ok('--destroy', 's2')
        # the bytes and blobs only s2 referenced are gone, s1's stay
        self.assertEqual(os.path.getsize(self.pool_file()), end)
        self.assertFalse(set(added) & set(os.listdir(pool_blobs)))
        self.assertEqual(zs.read_all(*self.snapshot_files('s1')), s1)
        self.ok('s3')
        self.ok('--destroy', 's1')
        self.assertTrue(os.path.exists(self.pool_file()))
        self.ok('--destroy', 's3')
        self.assertEqual(os.listdir(os.path.dirname(self.pool_file())), [])

    def release(self, releases, tag):
        """A complete release ``tag`` in ``releases`` (what bin/buildout
        leaves there: its directory, its manifest, the journal entries)."""
        from collective.safedeploy.core.store import RELEASE
        from collective.safedeploy.core.store import Store
        store = Store(releases, RELEASE)
        with store.lock():
            store.stage(tag)
            store.complete(tag, dict(tag=tag))
        return store

    def flip_to(self, releases, previous, tag):
        """What bin/buildout with ``snapshot-before-flip`` does when it
        flips release ``tag`` in after ``previous``: a snapshot named after
        ``tag``, paired with ``previous`` (it holds its data)."""
        from collective.safedeploy.release import pairing
        store = self.release(releases, tag)
        taken = snapshot.take_for_release(self.options, tag)
        pairing.record(releases, previous, 'snapshot-before-flip',
                       snapshot=taken['name'], backend=taken['backend'],
                       last_tid=taken['last_tid'],
                       generation=taken['generation'])
        pairing.record(releases, tag, 'publish', generation='1')
        return store, taken['name']

    def test_destroy_refuses_a_snapshot_paired_with_a_release(self):
        releases = os.path.join(self.dir, 'releases')
        self.options['releases'] = releases
        self.release(releases, '2.7')
        store, name = self.flip_to(releases, '2.7', '2.8')
        self.assertEqual(name, '2.8')
        self.ok('unpaired')
        before = zs.hash_tree(self.data)
        message = self.fails('--destroy', '2.8')
        self.assertEqual(
            message, 'snapshot: error: snapshot 2.8 is paired with releases '
            '2.7, 2.8, still in %s (bin/rollback 2.7 --with-data restores '
            'it); destroy it with --force if you mean it, or remove the '
            'releases first' % releases)
        self.assertEqual(zs.hash_tree(self.data), before)
        self.assertEqual([r['name'] for r in self.listing()],
                         ['2.8', 'unpaired'])
        # a snapshot no release is paired with goes as before
        self.assertEqual(self.ok('--destroy', 'unpaired'),
                         'destroyed snapshot unpaired\n')
        # the library refuses the same
        from collective.safedeploy.core.errors import Refused
        with self.assertRaises(Refused):
            snapshot.destroy(self.options, '2.8')
        # release 2.8 gone: 2.7 still restores it with --with-data
        store.discard('2.8', 'removed by hand')
        self.assertIn('paired with release 2.7, still in', self.fails(
            '--destroy', '2.8'))
        # with --force, it goes
        self.assertEqual(self.ok('--destroy', '2.8', '--force'),
                         'destroyed snapshot 2.8\n')
        self.assertEqual(self.listing(), [])
        # the snapshot of a release there is nothing paired with yet
        self.release(releases, '3.0')
        snapshot.take_for_release(self.options, '3.0')
        self.assertIn('snapshot 3.0 is paired with release 3.0, still in',
                      self.fails('--destroy', '3.0'))

    def test_a_damaged_snapshot_is_listed_and_refused(self):
        # a create does not wait for its copy to reach the disk: a power
        # cut just after it can leave the pool file short.  --list says
        # so; a restore refuses it and changes nothing
        self.ok('s1')
        zs.commit(self.current_fs(), self.current_blobs(), n=1)
        self.ok('s2')
        with open(self.pool_file(), 'r+b') as f:
            f.truncate(os.path.getsize(self.pool_file()) - 100)
        self.assertEqual([(r['name'], r['state']) for r in self.listing()],
                         [('s1', 'ok'), ('s2', 'damaged')])
        self.assertIn('STATE', self.ok('--list'))
        before = zs.hash_tree(self.data)
        error = self.fails('--restore', 's2', '--discard-writes')
        self.assertIn('snapshot s2 is damaged', error)
        self.assertIn('restore another snapshot', error)
        self.assertEqual(zs.hash_tree(self.data), before)
        self.ok('--restore', 's1', '--discard-writes')

    def test_verify_finds_changed_pool_bytes_and_lost_blobs(self):
        # one byte of the first snapshot's range changed on disk: the
        # listing and a restore read the ends and count the blob files
        # only (to be quick); --verify and --export read every byte
        self.ok('s1')
        zs.commit(self.current_fs(), self.current_blobs(), n=2)
        self.ok('s2')
        out = self.ok('--verify', 's2')
        self.assertIn('snapshot s2 verified: ', out)
        self.assertIn(' transactions, %d blob files'
                      % self.entry('s2')['blobs_total'], out)
        middle = self.entry('s1')['end'] // 2
        byte = flip_byte(self.pool_file(), middle)
        # (what changes: the verdict in the journal, the pool file sealed)
        ignore = ('tmp', 'Data.fs.index', '.journal', '1.sealed')
        before = zs.hash_tree(self.data, ignore)
        for args in (['--export', 's2', os.path.join(self.dir, 'out')],
                     ['--verify', 's1'], ['--verify', 's2']):
            with self.subTest(args=args):
                error = self.fails(*args)
                self.assertIn('is damaged: bytes 0 to ', error)
                self.assertIn('filestorage/Data.fs are not what it recorded',
                              error)
                self.assertEqual(zs.hash_tree(self.data, ignore), before)
                self.assertFalse(os.path.exists(os.path.join(self.dir,
                                                             'out')))
        with open(self.pool_file(), 'r+b') as f:
            f.seek(middle)
            f.write(byte)
        # repaired: what --verify found stands until it passes again
        self.assertEqual([r['state'] for r in self.listing()],
                         ['damaged', 'damaged'])
        self.ok('--verify', 's1')
        self.ok('--verify', 's2')
        # a blob link lost from the pool and one put there instead: the
        # count is right, the record check is not
        pool_blobs = self.pool_file()[:-3] + '.blobs'
        lost = self.entry('s2')['blobs_added'][0]
        other = lost.split('%')
        other[-2] = '0x7f'            # another object, the same transaction
        os.rename(os.path.join(pool_blobs, lost),
                  os.path.join(pool_blobs, '%'.join(other)))
        self.assertEqual([r['state'] for r in self.listing()], ['ok', 'ok'])
        error = self.fails('--verify', 's2')
        self.assertIn('snapshot s2 is damaged: the blob of object', error)
        self.assertEqual(self.fails('--verify', '../x').count('\n'), 0)

    def test_what_verify_found_is_listed_and_refused_until_it_passes(self):
        # the newest snapshot restored: its pool file is the generation's
        # Data.fs (a hard link); one byte of it overwritten inside the
        # recorded prefix, which the older snapshot shares
        self.ok('s1')
        zs.commit(self.current_fs(), self.current_blobs(), n=2)
        self.ok('s2')
        state = zs.read_all(self.current_fs(), self.current_blobs())
        zs.commit(self.current_fs(), self.current_blobs(), n=1)
        self.ok('--restore', 's2', '--discard-writes')
        self.assertEqual(os.stat(self.current_fs()).st_ino,
                         os.stat(self.pool_file()).st_ino)
        middle = self.entry('s1')['end'] // 2
        byte = flip_byte(self.current_fs(), middle)
        # the listing reads the ends only: it cannot see it
        self.assertEqual([r['state'] for r in self.listing()], ['ok', 'ok'])
        error = self.fails('--verify', 's2')
        self.assertIn('snapshot s2 is damaged: bytes 0 to %d of its '
                      'filestorage/Data.fs are not what it recorded'
                      % self.entry('s1')['end'], error)
        # not forgotten: listed as damaged, restore and export refuse it;
        # so is the older snapshot, whose prefix holds the same bytes
        rows = self.listing()
        self.assertEqual([r['state'] for r in rows], ['damaged', 'damaged'])
        self.assertIn('so is snapshot s1, which shares them', error)
        self.assertEqual([r['verified']['ok'] for r in rows], [False, False])
        self.assertIn('bytes 0 to ', rows[1]['verified']['problem'])
        self.assertIn('damaged', self.ok('--list').splitlines()[2])
        before = zs.hash_tree(self.data)
        for name, args in (('s2', ['--restore', 's2', '--discard-writes']),
                           ('s1', ['--restore', 's1', '--discard-writes']),
                           ('s2', ['--export', 's2',
                                   os.path.join(self.dir, 'out')])):
            with self.subTest(args=args):
                error = self.fails(*args)
                self.assertRegex(error, r'snapshot %s failed verification '
                                 r'at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: '
                                 r'bytes 0 to \d+ of its filestorage/Data.fs '
                                 r'are not what it recorded' % name)
                self.assertIn('run bin/snapshot --verify %s again' % name,
                              error)
                self.assertEqual(zs.hash_tree(self.data), before)
                self.assertFalse(os.path.exists(os.path.join(self.dir,
                                                             'out')))
        # repaired by hand: a --verify that passes clears its own verdict
        with open(self.current_fs(), 'r+b') as f:
            f.seek(middle)
            f.write(byte)
        self.assertIn('snapshot s2 verified: ', self.ok('--verify', 's2'))
        rows = self.listing()
        self.assertEqual([r['state'] for r in rows], ['damaged', 'ok'])
        self.assertTrue(rows[1]['verified']['ok'])
        self.ok('--restore', 's2', '--discard-writes')
        self.assertEqual(zs.read_all(self.current_fs(),
                                     self.current_blobs()), state)
        self.assertIn('failed verification', self.fails(
            '--restore', 's1', '--discard-writes'))
        self.ok('--verify', 's1')
        self.assertEqual([r['state'] for r in self.listing()], ['ok', 'ok'])
        self.ok('--restore', 's1', '--discard-writes')

    def test_no_snapshot_builds_on_pool_bytes_verify_found_damaged(self):
        self.ok('s1')
        end = self.entry('s1')['end']
        flip_byte(self.pool_file(), end // 2)
        self.assertIn('snapshot s1 is damaged', self.fails('--verify', 's1'))
        # the pool file is sealed: the next snapshot starts a new one
        # rather than appending to (and recording) the damaged bytes
        zs.commit(self.current_fs(), self.current_blobs(), n=1)
        self.ok('s2')
        self.assertEqual((self.entry('s2')['pool'],
                          self.entry('s2')['start']), (2, 0))
        self.assertEqual([(r['name'], r['state']) for r in self.listing()],
                         [('s1', 'damaged'), ('s2', 'ok')])
        self.ok('--verify', 's2')
        # a snapshot made again under the name has no verdict
        self.ok('--destroy', 's1')
        self.ok('s1')
        self.assertEqual([(r['name'], r['state']) for r in self.listing()],
                         [('s2', 'ok'), ('s1', 'ok')])

    def test_files_without_the_blob_directory_of_records_with_blobs(self):
        # files names the Data.fs alone; its records reference blobs: a
        # snapshot would hold none of them, and a restore lose them all
        self.options['files'] = 'filestorage/Data.fs'
        error = self.fails('s1')
        self.assertRegex(error, r'files: the records of filestorage/Data.fs '
                         r'reference blobs \(object 0x[0-9a-f]+, transaction '
                         r'[0-9a-f]{16}\) but no blob directory is '
                         r'configured: add blobstorage to files '
                         r'\("filestorage/Data.fs blobstorage" on one line\)$')
        self.assertEqual(self.listing(), [])
        self.assertEqual(os.listdir(os.path.dirname(self.pool_file())), [])
        # a snapshot taken so before this was refused: --verify reads
        # every record, finds the blob references it has no blob files
        # for; listed as damaged, refused
        from unittest import mock
        with mock.patch('collective.safedeploy.data.verify.check_no_blobs',
                        return_value=0):
            snapshot.create(self.options, 'old')
        self.assertEqual([r['state'] for r in self.listing()], ['ok'])
        error = self.fails('--verify', 'old')
        self.assertIn('snapshot old is damaged: the records of its '
                      'filestorage/Data.fs reference blobs (object 0x', error)
        self.assertIn('but it holds no blob files', error)
        self.assertEqual([r['state'] for r in self.listing()], ['damaged'])
        self.assertIn('failed verification', self.fails(
            '--restore', 'old', '--discard-writes'))
        # blobstorage added to files: the next snapshot does not build on
        # the pool file that has none of the blobs; it holds them all
        del self.options['files']
        state = zs.read_all(self.current_fs(), self.current_blobs())
        self.ok('new')
        self.assertEqual((self.entry('new')['pool'],
                          self.entry('new')['start']), (2, 0))
        self.assertEqual(zs.read_all(*self.snapshot_files('new')), state)
        self.ok('--verify', 'new')

    def test_verify_reads_every_transaction_without_a_blob_directory(self):
        data = make_data_root(os.path.join(self.dir, 'noblobs'), blobs=0)
        self.options = dict(data=data, backend='copy',
                            files='filestorage/Data.fs')
        fs = os.path.join(data, 'current', 'filestorage', 'Data.fs')
        self.ok('s1')
        self.assertIn('%d transactions, 0 blob files' % len(
            zs.transaction_ids(fs)), self.ok('--verify', 's1'))
        zs.commit(fs, None, n=2, blob=False)
        self.ok('s2')
        self.assertEqual(self.entry('s2')['checked_transactions'], 2)
        self.assertIn('%d transactions, 0 blob files' % len(
            zs.transaction_ids(fs)), self.ok('--verify', 's2'))
        # a blob committed after all: refused, the pool as it was
        end = os.path.getsize(self.pool_file_of(data))
        zs.commit(fs, os.path.join(data, 'current', 'blobstorage'), n=1)
        self.assertIn('but no blob directory is configured',
                      self.fails('s3'))
        self.assertEqual(os.path.getsize(self.pool_file_of(data)), end)
        self.assertEqual([r['name'] for r in self.listing()], ['s1', 's2'])

    def test_a_failed_create_leaves_the_pool_as_it_was(self):
        self.ok('s1')
        pool_blobs = self.pool_file()[:-3] + '.blobs'
        before = (os.path.getsize(self.pool_file()),
                  sorted(os.listdir(pool_blobs)))
        zs.commit(self.current_fs(), self.current_blobs(), n=3)
        from collective.safedeploy.data import copy as fscopy
        newest = max(fscopy.blob_files(self.current_blobs()),
                     key=os.path.basename)
        os.unlink(os.path.join(self.current_blobs(), newest))
        error = self.fails('s2')
        self.assertIn('is missing from', error)
        self.assertEqual((os.path.getsize(self.pool_file()),
                          sorted(os.listdir(pool_blobs))), before)
        self.assertEqual([r['name'] for r in self.listing()], ['s1'])

    def test_a_lost_pool_blob_is_listed_and_refused(self):
        self.ok('s1')
        zs.commit(self.current_fs(), self.current_blobs(), n=2)
        self.ok('s2')
        pool_blobs = self.pool_file()[:-3] + '.blobs'
        lost = self.entry('s2')['blobs_added'][0]
        os.unlink(os.path.join(pool_blobs, lost))
        self.assertEqual([(r['name'], r['state']) for r in self.listing()],
                         [('s1', 'ok'), ('s2', 'damaged')])
        before = zs.hash_tree(self.data)
        for args in (['--restore', 's2', '--discard-writes'],
                     ['--export', 's2', os.path.join(self.dir, 'out')]):
            with self.subTest(args=args):
                error = self.fails(*args)
                self.assertIn('snapshot s2 is damaged', error)
                self.assertIn('1 of its %d blob files are missing'
                              % self.entry('s2')['blobs_total'], error)
                self.assertEqual(zs.hash_tree(self.data), before)
        self.ok('--restore', 's1', '--discard-writes')

    def test_a_link_lost_from_the_ready_tree_is_restored(self):
        self.ok('s1')
        zs.commit(self.current_fs(), self.current_blobs(), n=2)
        self.ok('s2')
        state = zs.read_all(self.current_fs(), self.current_blobs())
        tree = self.pool_file()[:-3] + '.tree'
        from collective.safedeploy.data import copy as fscopy
        os.unlink(os.path.join(tree, next(fscopy.blob_files(tree))))
        self.ok('--restore', 's2', '--discard-writes')
        self.assertEqual(os.stat(self.current_fs()).st_ino,
                         os.stat(self.pool_file()).st_ino)   # handed over
        self.assertEqual(zs.read_all(self.current_fs(),
                                     self.current_blobs()), state)

    def test_only_what_relies_on_a_snapshot_waits_for_the_disk(self):
        from unittest import mock
        synced = []
        fsync = os.fsync

        def recorded(fd):
            path = os.readlink('/proc/self/fd/%d' % fd)
            if path.endswith('.copying'):
                path = path[:-len('.copying')]
            if path.endswith('.fs') and os.path.isfile(path + '.copying') \
                    or path.endswith('.fs') and os.path.isfile(path):
                synced.append(os.path.relpath(path, self.data))
            return fsync(fd)

        with mock.patch('os.fsync', recorded):
            snapshot.create(self.options, 'plain')
            self.assertEqual(synced, [])
            zs.commit(self.current_fs(), self.current_blobs(), n=1)
            snapshot.take_for_release(self.options, 'v2')
            pool = os.path.relpath(self.pool_file(), self.data)
            self.assertEqual(synced, [pool])
            del synced[:]
            snapshot.restore(self.options, 'plain', discard_writes=True)
            # the new generation's Data.fs, while it is staged
            self.assertEqual(len(synced), 1, synced)
            self.assertTrue(synced[0].startswith('generations'), synced)
            self.assertTrue(synced[0].endswith(os.path.join(
                'filestorage', 'Data.fs')), synced)

    def test_snapshots_of_earlier_versions_are_restored(self):
        # a snapshot with its own Data.fs in its directory
        backend = snapshot.backend_for(self.options)
        with backend.lock():
            source = backend.root.current_path()
            backend.take('old', None, lambda path, generation: dict(
                storages=backend.root.copy_data(source, path,
                                                keep_blobs=True,
                                                durable=False)))
        before = zs.read_all(self.current_fs(), self.current_blobs())
        self.assertEqual([r['state'] for r in self.listing()], ['ok'])
        zs.commit(self.current_fs(), self.current_blobs(), n=1)
        self.ok('new')
        self.assertEqual(self.entry('new')['start'], 0)
        self.ok('--restore', 'old', '--discard-writes')
        self.assertEqual(zs.read_all(self.current_fs(), self.current_blobs()),
                         before)
        self.assertEqual(zs.read_all(*self.snapshot_files('old')), before)
        self.ok('--destroy', 'old')

    def test_export_refusals(self):
        self.ok('s1')
        before = zs.hash_tree(self.data)
        self.assertIn('exists', self.fails('--export', 's1', self.dir))
        self.assertIn('inside the data root', self.fails(
            '--export', 's1', os.path.join(self.data, 'out')))
        self.assertIn('does not exist', self.fails(
            '--export', 's1', os.path.join(self.dir, 'no', 'out')))
        self.assertIn('no snapshot nosuch', self.fails(
            '--export', 'nosuch', os.path.join(self.dir, 'out')))
        a_file = os.path.join(self.dir, 'a-file')
        open(a_file, 'w').close()
        self.assertIn('a-file is not a directory; name a directory',
                      self.fails('--export', 's1',
                                 os.path.join(a_file, 'out')))
        if os.path.isdir('/proc/self'):
            self.assertIn('cannot write into /proc', self.fails(
                '--export', 's1', '/proc/out'))
        self.assertEqual(zs.hash_tree(self.data), before)

    def test_forced_btrfs_on_another_filesystem(self):
        message = self.fails('--backend', 'btrfs')
        self.assertIn('needs data = %s to be a btrfs subvolume' % self.data,
                      message)

    def test_zfs_dataset_that_does_not_exist(self):
        message = self.fails('--backend', 'zfs', '--dataset',
                             'nosuchpool/site')
        self.assertTrue('no ZFS dataset nosuchpool/site' in message or
                        'zfs command is not installed' in message, message)

    def test_a_blob_directory_on_a_line_of_its_own(self):
        # "one entry a line" misread: the blob directory would be copied
        # as a plain directory into every snapshot
        production = os.path.join(self.data, 'generations', '1')
        before = zs.hash_tree(production, ignore=())
        code, out, err = run_snapshot(
            's1', data=self.data, files='filestorage/Data.fs\nblobstorage')
        self.assertEqual(code, 1, out + err)
        self.assertIn('name them on one line: "filestorage/Data.fs '
                      'blobstorage"', err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        # under another name: found by the blob directory's .layout
        os.symlink('blobstorage', os.path.join(self.data, 'current',
                                               'media'))
        code, out, err = run_snapshot(
            's1', data=self.data, files='filestorage/Data.fs\nmedia')
        self.assertEqual(code, 1, out + err)
        self.assertIn('media is a blob directory', err)
        self.assertEqual(self.listing(), [])
        os.unlink(os.path.join(self.data, 'current', 'media'))
        self.assertEqual(zs.hash_tree(production, ignore=()), before)

    def test_no_data_root(self):
        code, out, err = run_snapshot(data=os.path.join(self.dir, 'nope'))
        self.assertEqual(code, 1)
        self.assertIn('bin/snapshot --adopt', err)

    def test_help(self):
        p = subprocess.run([support.sys.executable, '-c',
                            'from collective.safedeploy.data.snapshot import main;'
                            'main(["--help"])'],
                           stdout=subprocess.PIPE, text=True)
        self.assertEqual(p.returncode, 0)
        self.assertIn('--restore NAME', p.stdout)


class FilesOptionTests(unittest.TestCase):

    def test_each_refusal_names_the_option_once(self):
        from collective.safedeploy.core.errors import ConfigurationError
        for files, message in (
                ('../../../../etc', "'../../../../etc' must be a path "
                 "relative to a generation"),
                ('/etc/passwd', "'/etc/passwd' must be a path relative"),
                ('a.fs b c', "'a.fs b c' has more than a Data.fs"),
                ('filestorage/Data.fs\nblobstorage',
                 "'blobstorage' looks like the blob directory")):
            with self.subTest(files=files):
                with self.assertRaises(ConfigurationError) as caught:
                    snapshot.Config(data='/srv/site/var', files=files)
                self.assertTrue(str(caught.exception).startswith(
                    '[snapshot] files: ' + message), caught.exception)
                code, out, err = run_snapshot(data='/srv/site/var',
                                              files=files)
                self.assertEqual(code, 1, out + err)
                self.assertEqual(err.count('files:'), 1, err)
                self.assertEqual(len(err.splitlines()), 1, err)


class AdoptTests(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='safedeploy-adopt-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.data = os.path.join(self.dir, 'var')
        self.fs, self.blobs, self.last = zs.make_site_data(self.data)

    def test_adopt_moves_the_data_into_generation_1(self):
        before = zs.hash_tree(self.data)
        code, out, err = run_snapshot('--adopt', data=self.data)
        self.assertEqual(code, 0, err)
        self.assertEqual(os.readlink(os.path.join(self.data, 'current')),
                         'generations/1')
        moved = zs.hash_tree(os.path.join(self.data, 'generations', '1'),
                             ignore=('tmp', 'Data.fs.index', 'Data.fs.lock',
                                     'Data.fs.tmp',
                                     'safedeploy-manifest.json'))
        self.assertEqual(moved, before)
        code, out, err = run_snapshot('--adopt', data=self.data)
        self.assertEqual(code, 1)
        self.assertIn('nothing to adopt', err)

    def test_adopt_refuses_while_the_site_runs(self):
        holder = zs.Holder(self.fs, self.blobs)
        self.addCleanup(holder.stop)
        before = sorted(os.listdir(self.data))
        code, out, err = run_snapshot('--adopt', data=self.data)
        self.assertEqual(code, 1)
        self.assertIn('stop the site', err)
        self.assertEqual(len(err.strip().splitlines()), 1)
        self.assertEqual(sorted(os.listdir(self.data)), before)

    def test_adopt_finishes_what_a_killed_adopt_left(self):
        root = snapshot.DataRoot(self.data)
        root.generations.stage('1', adopted_from=self.data)
        os.rename(os.path.join(self.data, 'filestorage'),
                  os.path.join(self.data, 'generations', '1', 'filestorage'))
        code, out, err = run_snapshot('--adopt', data=self.data)
        self.assertEqual(code, 0, err)
        fs = os.path.join(self.data, 'current', 'filestorage', 'Data.fs')
        self.assertEqual(zs.transaction_ids(fs)[-1], self.last)

    def test_nothing_to_adopt(self):
        code, out, err = run_snapshot('--adopt', data=os.path.join(
            self.dir, 'empty'))
        self.assertEqual(code, 1)
        self.assertIn('no ', err)
        empty = os.path.join(self.dir, 'empty-directory')
        os.mkdir(empty)
        code, out, err = run_snapshot('--adopt', data=empty)
        self.assertEqual(code, 1)
        self.assertIn('Data.fs to adopt', err)
        self.assertEqual(os.listdir(empty), [])

    def test_adopt_of_data_with_a_missing_blob_moves_nothing(self):
        from collective.safedeploy.data import copy as fscopy
        os.unlink(os.path.join(self.blobs, next(fscopy.blob_files(
            self.blobs))))
        before = zs.hash_tree(self.data, ignore=())
        code, out, err = run_snapshot('--adopt', data=self.data)
        self.assertEqual(code, 1, out + err)
        self.assertIn('is missing', err)
        self.assertIn('nothing was moved', err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertEqual(zs.hash_tree(self.data, ignore=()), before)
        self.assertEqual(sorted(os.listdir(self.data)),
                         ['blobstorage', 'filestorage'])


@support.skip_unless(os.geteuid() == 0, 'mounting a small tmpfs needs root')
class FullDiskTests(unittest.TestCase):

    def test_full_disk_changes_nothing(self):
        self.dir = tempfile.mkdtemp(prefix='safedeploy-full-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=6m', 'tmpfs',
                        self.dir], check=True)
        self.addCleanup(subprocess.run, ['umount', '-l', self.dir])
        data = make_data_root(os.path.join(self.dir, 'var'),
                              transactions=200, blobs=4)
        # fill the disk: less room left than one Data.fs
        free = os.statvfs(self.dir)
        size = os.path.getsize(os.path.join(
            data, 'current', 'filestorage', 'Data.fs'))
        with open(os.path.join(self.dir, 'filler'), 'wb') as f:
            f.write(b'x' * (free.f_bavail * free.f_frsize - size // 2))
        before = zs.hash_tree(data)
        code, out, err = run_snapshot('big', data=data)
        self.assertEqual(code, 1, out + err)
        self.assertIn('No space left on device', err)
        self.assertEqual(len(err.strip().splitlines()), 1)
        after = zs.hash_tree(data)
        ignore = lambda tree: {k: v for k, v in tree.items()
                               if not k.startswith('snapshots')}
        self.assertEqual(ignore(after), ignore(before))
        self.assertFalse(os.path.exists(os.path.join(
            data, 'snapshots', 'big')))
        code, out, err = run_snapshot('--list', '--json', data=data)
        self.assertEqual(out.strip(), '[]')


def flip_byte(path, offset):
    """Change the byte at ``offset`` of ``path`` in place (damage that
    only a full read finds); returns what it was."""
    with open(path, 'r+b') as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xff]))
    return byte


def rewrite_blobs_and_pack(fs_path, blob_dir):
    """A new revision of every blob, then a pack: the files of the old
    revisions are removed from ``blob_dir``."""
    import time
    import transaction
    import ZODB
    from ZODB.blob import Blob
    from ZODB.FileStorage import FileStorage
    db = ZODB.DB(FileStorage(fs_path, blob_dir=blob_dir,
                             pack_keep_old=False))
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        for key in list(conn.root()['blobs'].keys()):
            blob = Blob()
            with blob.open('w') as f:
                f.write(b'rewritten ' + key.encode())
            conn.root()['blobs'][key] = blob
        tm.commit()
        conn.close()
        db.pack(time.time() + 1)
    finally:
        db.close()
    assert not os.path.exists(fs_path + '.old')
