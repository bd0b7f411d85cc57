"""A chain of three evolve-copy switches on a site built with a real
bin/buildout, a writer committing through ZEO throughout, then the site's
own bin/rollback back to the first release, as an operator runs it:

- without ``--with-data`` (the data switched back to generation 1) and
  with it (snapshot 1.1, holding 1.0's data, restored);
- the count it prints is every transaction the target lacks, along the
  whole chain; it refuses without ``--discard-writes`` (one line, exit 1,
  nothing changed, the kept generation named);
- every acknowledged write is in the generation served afterwards or in
  the kept one the command named."""
import os
import re
import sys
import unittest

from collective.safedeploy.evolve import state
from collective.safedeploy.tests import support
from collective.safedeploy.tests import writersupport
from collective.safedeploy.tests.test_evolve_recipe import has_entry_point
from collective.safedeploy.tests.test_site_zeo import AFTER_FLIP
from collective.safedeploy.tests.test_site_zeo import HEALTH
from collective.safedeploy.zeo import server as zeoserver

EVOLVE = '''\
VERSION = %r


def evolve(root, commit):
    root['evolved_by'] = VERSION
    commit('mark the version')
'''

PYPROJECT = '''\
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "siteevolve"
version = "0.1"

[tool.setuptools.packages.find]
where = ["src"]
'''

CONFIG = '''\
extensions = collective.safedeploy
develop = src/siteevolve
parts = snapshot evolve-copy rollback

[safedeploy]
after-flip = sh etc/after-flip.sh %(python)s %(address)s
health-check = %(python)s etc/health.py %(address)s
health-timeout = 30
%(snapshot)s

[zeoserver]
zeo-address = %(address)s

[snapshot]
recipe = collective.safedeploy:snapshot
data = ${buildout:directory}/var/data
backend = copy
keep = 0

[evolve-copy]
recipe = collective.safedeploy:evolve-copy
data = ${snapshot:data}
zeo = zeoserver
evolve = siteevolve:evolve
eggs = siteevolve
keep-generations = 0

[rollback]
recipe = collective.safedeploy:rollback
evolve-copy = evolve-copy
'''


def transactions(fs_path):
    """[(tid, description)] of a FileStorage file, oldest first."""
    from ZODB.FileStorage import FileIterator
    it = FileIterator(fs_path)
    try:
        return [(t.tid, t.description) for t in it]
    finally:
        it.close()


def is_evolve_step(description):
    # what the evolve-copy runner notes for the step of siteevolve:evolve
    return description.startswith(b'evolve: siteevolve:evolve')


@support.skip_unless(has_entry_point(),
                     'the site environment has no zc.buildout entry point '
                     'evolve-copy (run "bash dev.sh setup")')
class ChainRollbackTests(unittest.TestCase):

    def setUp(self):
        self.sample = support.SampleBuildout()
        self.addCleanup(self.sample.cleanup)
        self.address = '127.0.0.1:%d' % zeoserver.free_port()
        self.server = zeoserver.ZEOServer(self.address, self.sample.path(
            'var', 'safedeploy-zeo'))
        self.addCleanup(self.server.stop)
        self.sample.write('etc/health.py', HEALTH)
        self.sample.write('etc/after-flip.sh', AFTER_FLIP)
        self.sample.write('src/siteevolve/pyproject.toml', PYPROJECT)
        self.configure('')
        self.data = state.DataRoot(self.sample.path('var', 'data'))

    def configure(self, snapshot):
        self.sample.write_config(CONFIG % dict(
            python=sys.executable, address=self.address, snapshot=snapshot))

    def run_site(self, script, *args):
        return support.run([self.sample.path('bin', script)] + list(args),
                           cwd=self.sample.directory)

    def release(self, tag):
        self.sample.write('src/siteevolve/src/siteevolve/__init__.py',
                          EVOLVE % tag)
        r = self.sample.buildout('safedeploy:tag=%s' % tag)
        self.assertEqual(r.returncode, 0, r.output)
        self.assertEqual(support.current_tag(self.sample.directory), tag)

    def chain(self):
        """Releases 1.0 .. 1.3; evolve-copy after each of 1.1 .. 1.3 with a
        writer committing all the time: data generations 1 .. 4."""
        # the first release starts the server on a new data root: from
        # then on, a snapshot before each flip
        self.release('1.0')
        self.assertEqual(self.data.current(), '1')
        self.configure('snapshot-before-flip = snapshot')
        writer = writersupport.Writer(self.address,
                                      self.sample.path('writers'))
        self.addCleanup(writer.stop)
        for tag, generation in (('1.1', '2'), ('1.2', '3'), ('1.3', '4')):
            self.assertTrue(writer.wait_acknowledged(3))
            self.release(tag)
            r = self.run_site('evolve-copy', '-q')
            self.assertEqual(r.returncode, 0, r.output)
            self.assertEqual(self.data.current(), generation)
            # writes acknowledged on the new generation
            self.assertTrue(writer.wait_acknowledged(5))
            self.assertEqual(writer.log().missing_from(
                self.data.fs(generation)), [])
        return writer

    def lacking(self, left, target_fs):
        """What clients committed in generation ``left`` that the Data.fs
        ``target_fs`` does not hold (the evolve steps' own commits do not
        count), and all transactions it lacks."""
        held = set(tid for tid, _ in transactions(target_fs))
        missing = [(tid, d) for tid, d in transactions(self.data.fs(left))
                   if tid not in held]
        return (sum(1 for _, d in missing if not is_evolve_step(d)),
                len(missing))

    def assert_refused(self, r, count, kept):
        self.assertEqual(r.returncode, 1, r.output)
        self.assertEqual(len(r.lines), 1, r.output)
        if count is not None:
            self.assertIn(' %d transaction' % count, r.output)
        self.assertIn('--discard-writes', r.output)
        self.assertIn(kept, r.output)
        self.assertEqual(support.current_tag(self.sample.directory), '1.3')
        self.assertEqual(self.data.current(), '4')

    def served(self):
        conf = self.server.configuration()
        self.assertTrue(self.server.pid())
        self.assertFalse(self.server.read_only())
        return os.path.realpath(conf[0])

    def test_rollback_to_the_first_release_switches_the_data_back(self):
        writer = self.chain()
        # the log first: what it acknowledged is in generation 4 by then (the
        # writer goes on committing; right after the switch it is no longer
        # held up by a reconnect delay)
        log = writer.log()
        before, _ = self.lacking('4', self.data.fs('1'))
        # the writer's writes on 2, 3 and 4 and the health checks of 1.2
        # and 1.3 (on 2 and 3), not only those since the last switch
        made_later = set(log.tids()) - set(
            tid.hex() for tid, _ in transactions(self.data.fs('1')))
        self.assertGreaterEqual(before, len(made_later) + 2)
        self.assertGreater(len(made_later), len(
            set(log.tids()) - set(tid.hex() for tid, _ in transactions(
                self.data.fs('3')))))
        # the writer still commits: refused, nothing changed
        r = self.run_site('rollback', '1.0')
        self.assert_refused(r, None, 'generation 4 is kept')
        count = int(re.search(r'error: (\d+) transactions were committed in '
                              r'data generation 4 that generation 1 does not '
                              r'hold', r.output).group(1))
        after, _ = self.lacking('4', self.data.fs('1'))
        self.assertTrue(before <= count <= after, (before, count, after))
        self.assertEqual(self.served(), os.path.realpath(self.data.fs('4')))
        self.assertTrue(writer.wait_acknowledged(3))
        # a client whose cache is newer than generation 1 refuses it: the
        # operator stops it first (client-stop-command does in a site)
        log = writer.stop()
        self.assertEqual(log.missing_from(self.data.fs('4')), [])
        clients, _ = self.lacking('4', self.data.fs('1'))
        r = self.run_site('rollback', '1.0')
        self.assert_refused(r, clients, 'generation 4 is kept')
        self.assertIn('%d transactions were committed in data generation 4 '
                      'that generation 1 does not hold' % clients, r.output)
        r = self.run_site('rollback', '1.0', '--discard-writes')
        self.assertEqual(r.returncode, 0, r.output)
        self.assertIn('data switched back to generation 1 (%d transaction(s) '
                      'discarded, kept in generation 4)' % clients, r.output)
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')
        self.assertEqual(self.data.current(), '1')
        self.assertEqual(self.served(), os.path.realpath(self.data.fs('1')))
        self.assertTrue(self.data.generations.is_complete('4'))
        # every acknowledged write: served, or in the kept generation
        self.assertEqual(sorted(set(log.missing_from(self.data.fs('1'))) &
                                set(log.missing_from(self.data.fs('4')))), [])
        self.assertEqual(log.missing_from(self.data.fs('4')), [])

    def test_rollback_with_data_restores_the_snapshot(self):
        writer = self.chain()
        # the site runs: a restore is refused, nothing changed
        r = self.run_site('rollback', '1.0', '--with-data',
                          '--discard-writes')
        self.assertEqual(r.returncode, 1, r.output)
        self.assertEqual(len(r.lines), 1, r.output)
        self.assertIn('stop the site', r.output)
        self.assertEqual(support.current_tag(self.sample.directory), '1.3')
        self.assertEqual(self.data.current(), '4')
        # the operator stops the site
        log = writer.stop()
        self.server.stop()
        self.assertEqual(log.missing_from(self.data.fs('4')), [])
        # snapshot 1.1, taken just before 1.1 was flipped in: 1.0's data
        refused = self.run_site('rollback', '1.0', '--with-data')
        self.assert_refused(refused, None, 'kept in data generation 4')
        r = self.run_site('rollback', '1.0', '--with-data',
                          '--discard-writes')
        self.assertEqual(r.returncode, 0, r.output)
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')
        restored = self.data.current()
        self.assertNotIn(restored, ('1', '2', '3', '4'))
        # the restored generation holds what the snapshot held (and the
        # health check's commit since): the count is everything of 4 it
        # lacks
        _, everything = self.lacking('4', self.data.fs(restored))
        self.assertIn('restoring 1.1 would discard %d transaction(s)'
                      % everything, refused.output)
        self.assertIn('data restored from snapshot 1.1 (%d transaction(s) '
                      'discarded, kept in generation 4)' % everything,
                      r.output)
        # the after-flip hook started the server on the restored data
        self.assertEqual(self.served(),
                         os.path.realpath(self.data.fs(restored)))
        self.assertTrue(self.data.generations.is_complete('4'))
        self.assertEqual(log.missing_from(self.data.fs('4')), [])
