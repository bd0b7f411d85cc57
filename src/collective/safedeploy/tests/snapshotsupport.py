"""What the snapshot tests of every backend share: a data root with real
ZODB data, the command run in-process, and the contract every backend
meets (create, list, restore, destroy, prune, a live writer)."""
import contextlib
import io
import json
import os

from collective.safedeploy.data import snapshot
from collective.safedeploy.data.layout import DataRoot
from collective.safedeploy.tests import zodbsupport as zs


def run_snapshot(*argv, **options):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = snapshot.main(list(argv), **options)
    return code, out.getvalue(), err.getvalue()


def make_data_root(path, **kw):
    """Site data in ``path/filestorage``, ``path/blobstorage``, adopted
    into ``path/generations/1``."""
    os.makedirs(path, exist_ok=True)
    zs.make_site_data(path, **kw)
    snapshot.adopt(dict(data=path))
    return path


class BackendContract:
    """Mixed into a TestCase whose setUp sets ``self.data`` and
    ``self.options`` (a data root made by make_data_root)."""

    backend = None

    def run_snapshot(self, *argv):
        return run_snapshot(*argv, **self.options)

    def ok(self, *argv):
        code, out, err = self.run_snapshot(*argv)
        self.assertEqual(code, 0, out + err)
        return out

    def fails(self, *argv):
        code, out, err = self.run_snapshot(*argv)
        self.assertNotEqual(code, 0, out + err)
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertNotIn('Traceback', err)
        return lines[0]

    def listing(self):
        return json.loads(self.ok('--list', '--json'))

    def current_fs(self):
        return os.path.join(self.data, 'current', 'filestorage', 'Data.fs')

    def current_blobs(self):
        return os.path.join(self.data, 'current', 'blobstorage')

    def test_create_list_restore_destroy(self):
        before = zs.read_all(self.current_fs(), self.current_blobs())
        out = self.ok('first')
        self.assertIn('snapshot first taken (%s' % self.backend, out)
        rows = self.listing()
        self.assertEqual([r['name'] for r in rows], ['first'])
        self.assertEqual(rows[0]['backend'], self.backend)
        self.assertIsNotNone(rows[0]['size'])
        self.assertIn('first', self.ok('--list'))

        zs.commit(self.current_fs(), self.current_blobs(), n=2)
        message = self.fails('--restore', 'first')
        self.assertIn('would discard 2 transaction(s)', message)
        self.assertIn('--discard-writes', message)
        changed = zs.read_all(self.current_fs(), self.current_blobs())
        self.assertNotEqual(changed, before)

        self.ok('--restore', 'first', '--discard-writes', '--force')
        self.assertEqual(zs.read_all(self.current_fs(),
                                     self.current_blobs()), before)
        self.check_discarded_kept(changed)

        self.ok('--destroy', 'first')
        self.assertEqual(self.listing(), [])
        self.assertIn('no snapshot first', self.fails('--destroy', 'first'))

    def check_discarded_kept(self, changed):
        root = DataRoot(self.data)
        gens = root.generations.good()
        self.assertEqual(len(gens), 2)
        old = root.generations.path(gens[0])
        self.assertEqual(zs.read_all(
            os.path.join(old, 'filestorage', 'Data.fs'),
            os.path.join(old, 'blobstorage')), changed)

    def test_names_are_unique_and_pruned_beyond_keep(self):
        self.options['keep'] = '2'
        for i in range(3):
            self.ok()
        names = [r['name'] for r in self.listing()]
        self.assertEqual(len(names), 2)
        self.assertEqual(len(set(names)), 2)
        info = snapshot.take_for_release(self.options, '1.0')
        self.assertEqual(info['name'], '1.0')
        self.assertEqual(set(info), {'name', 'backend', 'time', 'last_tid',
                                     'generation'})
        again = snapshot.take_for_release(self.options, '1.0')
        self.assertEqual(again['name'], '1.0-2')
        rows = self.listing()
        self.assertEqual([r['release'] for r in rows], ['1.0', '1.0'])

    def test_writer_during_snapshots(self):
        writer = zs.Writer(self.current_fs(), self.current_blobs())
        self.addCleanup(writer.stop)
        for i in range(4):
            self.ok('live%d' % i)
        writer.stop()
        history = zs.transaction_ids(self.current_fs())
        rows = self.listing()
        self.assertEqual(len(rows), 4)
        for row in rows:
            fs, blobs = self.snapshot_files(row['name'])
            tids = zs.transaction_ids(fs)
            self.assertEqual(tids, history[:len(tids)])
            self.assertEqual(tids[-1].hex(), row['last_tid'])
            zs.read_all(fs, blobs)   # every blob opens

    def test_bad_inputs(self):
        self.assertIn('no snapshot nosuch', self.fails('--restore', 'nosuch'))
        self.assertIn('invalid snapshot name', self.fails('../evil'))
        self.assertIn('keep', self.run_snapshot('--keep', 'x')[2])
        holder = zs.Holder(self.current_fs(), self.current_blobs())
        self.addCleanup(holder.stop)
        self.ok('s')
        self.assertIn('stop the site', self.fails('--restore', 's'))
