"""The listing commands start light: bin/snapshot --list, bin/rollback
--list and bin/index --list, run as a site's generated scripts, import
neither the database, nor the network, nor the package index tools, nor a
process runner (benchmarks/startup.py measures what that saves); a
snapshot with nothing written since the previous one does not load ZODB
either: there is no transaction to read."""
import shutil
import sys
import tempfile
import unittest

from . import startupsupport


class ListingStartUpTests(unittest.TestCase):

    def setUp(self):
        work = tempfile.mkdtemp(prefix='safedeploy-startup-')
        self.addCleanup(shutil.rmtree, work, True)
        self.scripts = startupsupport.listing_site(work)

    def listing(self, name, *args):
        p, modules = startupsupport.imported_modules(
            [sys.executable, self.scripts[name]] + list(args))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p.stdout, modules

    def assertLight(self, modules):
        self.assertEqual(startupsupport.heavy(modules), [],
                         'a listing imported what it does not need')

    def test_snapshot_list(self):
        output, modules = self.listing('snapshot', '--list')
        self.assertIn('s1', output)
        self.assertLight(modules)

    def test_snapshot_list_json_and_generations(self):
        for args in (['--list', '--json'], ['--list', '--generations']):
            with self.subTest(args=args):
                output, modules = self.listing('snapshot', *args)
                self.assertIn('s1' if '--json' in args else 'GENERATION',
                              output)
                self.assertLight(modules)

    def test_rollback_list(self):
        output, modules = self.listing('rollback', '--list')
        self.assertIn('built at (UTC)', output)
        self.assertLight(modules)

    def test_index_list(self):
        output, modules = self.listing('index', '--list')
        self.assertIn('no package indexes', output)
        self.assertLight(modules)

    def test_snapshot_with_nothing_new_reads_no_transaction(self):
        output, modules = self.listing('snapshot', 's2')
        self.assertNotIn('ZODB', {m.split('.')[0] for m in modules})
        output, modules = self.listing('snapshot', '--list')
        self.assertIn('s2', output)

    def test_the_check_sees_what_a_command_imports(self):
        # the same check on a process that does import the network code
        _, modules = startupsupport.imported_modules(
            [sys.executable, '-c', 'import urllib.request'])
        self.assertIn('urllib.request', startupsupport.heavy(modules))
        self.assertIn('http.client', startupsupport.heavy(modules))
