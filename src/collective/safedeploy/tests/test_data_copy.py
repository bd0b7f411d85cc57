"""data.copy, data.filestorage, data.verify: consistent copies of a live FileStorage, on real ZODB data."""
import os
import shutil
import struct
import tempfile
import unittest
from collective.safedeploy.data import filestorage
from collective.safedeploy.data import copy as fscopy
from collective.safedeploy.data import verify as fsverify
from collective.safedeploy.core.errors import SafeDeployError
from collective.safedeploy.tests import zodbsupport as zs


class Base(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='safedeploy-zodbcopy-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.fs, self.blobs, self.last = zs.make_site_data(
            os.path.join(self.dir, 'live'), transactions=10, blobs=5)

    def target(self, name='copy'):
        path = os.path.join(self.dir, name)
        os.makedirs(os.path.join(path, 'filestorage'))
        return (os.path.join(path, 'filestorage', 'Data.fs'),
                os.path.join(path, 'blobstorage'))


class CommittedEndTests(Base):

    def test_end_of_a_closed_storage_is_its_size(self):
        pos = filestorage.committed_end(self.fs)
        self.assertEqual(pos.end, os.path.getsize(self.fs))
        self.assertEqual(pos.last_tid, self.last)

    def append(self, data):
        with open(self.fs, 'ab') as f:
            f.write(data)

    def test_a_voted_unfinished_transaction_is_not_committed(self):
        size = os.path.getsize(self.fs)
        tid = b'\xff' * 8
        body = struct.pack('>8sQcHHH', tid, 23 + 10, b'c', 0, 0, 0)
        self.append(body + b'x' * 10 + struct.pack('>Q', 23 + 10))
        self.assertEqual(filestorage.committed_end(self.fs),
                         (size, self.last))

    def test_verify_a_snapshot_taken_mid_commit(self):
        # a filesystem snapshot may end with a voted, unfinished record
        tid = b'\xff' * 8
        body = struct.pack('>8sQcHHH', tid, 23 + 10, b'c', 0, 0, 0)
        self.append(body + b'x' * 10 + struct.pack('>Q', 23 + 10))
        result = fsverify.verify(self.fs, self.blobs, expected_tid=self.last)
        self.assertEqual(result['last_tid'], self.last)
        self.assertEqual(result['blobs'], 5)

    def test_a_record_cut_short_is_not_committed(self):
        size = os.path.getsize(self.fs)
        body = struct.pack('>8sQcHHH', b'\xff' * 8, 5000, b'c', 0, 0, 0)
        self.append(body + b'partial record')
        self.assertEqual(filestorage.committed_end(self.fs),
                         (size, self.last))

    def test_not_a_filestorage(self):
        path = os.path.join(self.dir, 'other')
        with open(path, 'w') as f:
            f.write('hello')
        with self.assertRaises(filestorage.CopyError) as e:
            filestorage.committed_end(path)
        self.assertIn('is not a FileStorage', str(e.exception))


class CopyTests(Base):

    def test_copy_verify_catch_up(self):
        dst, dst_blobs = self.target()
        before = zs.hash_file(self.fs)
        prefix = fscopy.copy_prefix(self.fs, dst)
        self.assertEqual(zs.hash_file(self.fs), before)
        self.assertEqual(prefix.last_tid, self.last)
        self.assertEqual(fscopy.link_blobs(self.blobs, dst_blobs), 5)
        self.assertEqual(fscopy.link_blobs(self.blobs, dst_blobs), 0)
        result = fsverify.verify(dst, dst_blobs, expected_tid=self.last)
        self.assertEqual(result['blobs'], 5)
        self.assertEqual(zs.read_all(dst, dst_blobs),
                         zs.read_all(self.fs, self.blobs))
        self.assertTrue(filestorage.still_prefix(self.fs, prefix))

        last = zs.commit(self.fs, self.blobs, n=3)
        self.assertTrue(filestorage.still_prefix(self.fs, prefix))
        new = fscopy.catch_up(self.fs, dst, prefix)
        self.assertEqual(new.last_tid, last)
        self.assertEqual(fscopy.link_blobs(self.blobs, dst_blobs), 3)
        result = fsverify.verify(dst, dst_blobs, expected_tid=last,
                                 since_tid=prefix.last_tid)
        self.assertEqual((result['transactions'], result['blobs']), (3, 3))
        self.assertEqual(zs.hash_file(dst), zs.hash_file(self.fs))

    def test_copies_never_overwrite(self):
        dst, _ = self.target()
        fscopy.copy_prefix(self.fs, dst)
        with self.assertRaises(filestorage.CopyError):
            fscopy.copy_prefix(self.fs, dst)

    def test_pack_is_detected(self):
        dst, dst_blobs = self.target()
        prefix = fscopy.copy_prefix(self.fs, dst)
        db = zs.open_db(self.fs, self.blobs)
        try:
            import time
            db.pack(time.time() + 1)
        finally:
            db.close()
        self.assertFalse(filestorage.still_prefix(self.fs, prefix))
        with self.assertRaises(filestorage.PackedSince):
            fscopy.catch_up(self.fs, dst, prefix)
        self.assertTrue(issubclass(filestorage.PackedSince, SafeDeployError))

    def test_verify_finds_a_missing_blob_and_a_wrong_tid(self):
        dst, dst_blobs = self.target()
        prefix = fscopy.copy_prefix(self.fs, dst)
        fscopy.link_blobs(self.blobs, dst_blobs)
        with self.assertRaises(filestorage.VerificationFailed) as e:
            fsverify.verify(dst, dst_blobs, expected_tid=b'\0' * 7 + b'\1')
        self.assertIn('ends with transaction', str(e.exception))
        victim = sorted(fscopy.blob_files(dst_blobs))[0]
        os.unlink(os.path.join(dst_blobs, victim))
        with self.assertRaises(filestorage.VerificationFailed) as e:
            fsverify.verify(dst, dst_blobs, expected_tid=prefix.last_tid)
        self.assertIn('is missing', str(e.exception))
        self.assertEqual(len(str(e.exception).splitlines()), 1)

    def test_uncommitted_blob_uploads_are_not_linked(self):
        tmp = os.path.join(self.blobs, 'tmp')
        with open(os.path.join(tmp, 'upload.blob'), 'w') as f:
            f.write('partial')
        _, dst_blobs = self.target()
        fscopy.link_blobs(self.blobs, dst_blobs)
        self.assertEqual(os.listdir(os.path.join(dst_blobs, 'tmp')), [])

    def test_count_transactions_after(self):
        tids = zs.transaction_ids(self.fs)
        self.assertEqual(filestorage.count_transactions_after(self.fs, tids[-3]),
                         2)
        self.assertEqual(filestorage.count_transactions_after(self.fs, None),
                         len(tids))


class LiveWriterTests(Base):
    """A writer process commits (with blobs) while copies are taken."""

    def test_every_copy_is_a_verified_prefix_of_production(self):
        writer = zs.Writer(self.fs, self.blobs)
        self.addCleanup(writer.stop)
        copies = []
        for i in range(8):
            dst, dst_blobs = self.target('copy%d' % i)
            prefix = fscopy.copy_prefix(self.fs, dst)
            fscopy.link_blobs(self.blobs, dst_blobs)
            fsverify.verify(dst, dst_blobs, expected_tid=prefix.last_tid)
            if i % 2:
                prefix = fscopy.catch_up(self.fs, dst, prefix)
                fscopy.link_blobs(self.blobs, dst_blobs)
                fsverify.verify(dst, dst_blobs, expected_tid=prefix.last_tid)
            copies.append((dst, prefix))
        writer.stop()
        history = zs.transaction_ids(self.fs)
        for dst, prefix in copies:
            tids = zs.transaction_ids(dst)
            self.assertEqual(tids, history[:len(tids)])
            self.assertEqual(tids[-1], prefix.last_tid)
        self.assertGreater(len(history), len(zs.transaction_ids(
            copies[0][0])))
