"""The evolve-copy recipe, with a real bin/buildout: bin/evolve-copy lands
in the root bin directory and runs the whole procedure."""
import os
import unittest
from collective.safedeploy.zeo import server as zeoserver
from collective.safedeploy.tests import support
from collective.safedeploy.tests import zeosupport


def has_entry_point():
    if not os.path.exists(support.SITE_PYTHON):
        return False
    r = support.run([support.SITE_PYTHON, '-c', (
        'from importlib.metadata import entry_points; '
        'print([e.name for e in entry_points(group="zc.buildout")])')])
    return "'evolve-copy'" in r.output


class RecipeTests(unittest.TestCase):

    @support.skip_unless(has_entry_point(),
                         'the site environment has no zc.buildout entry '
                         'point evolve-copy (run "bash dev.sh setup")')
    def test_generates_bin_evolve_copy_that_runs(self):
        sample = support.SampleBuildout()
        self.addCleanup(sample.cleanup)
        data = zeosupport.make_data_root(sample.path('var', 'data'))
        port = zeoserver.free_port()
        sample.write_config('''\
            parts = evolve-copy

            [zeoserver]
            zeo-address = 127.0.0.1:%d

            [evolve-copy]
            recipe = collective.safedeploy:evolve-copy
            data = var/data
            zeo = zeoserver
            evolve = collective.safedeploy.tests.evolve_example
            evolve-context = site
            eggs = ZEO
            ''' % port)
        result = sample.buildout()
        self.assertEqual(result.returncode, 0, result.output)
        script = sample.path('bin', 'evolve-copy')
        self.assertTrue(os.path.exists(script), result.output)
        # production's server, on the configured address and state
        server = zeosupport.Server(data, sample.path('var', 'safedeploy-zeo'),
                                   '127.0.0.1:%d' % port)
        self.addCleanup(server.stop)
        r = support.run([script])
        self.assertEqual(r.returncode, 0, r.output)
        self.assertTrue(r.last_line.startswith('read-only window: '), r.output)
        self.assertEqual(data.current(), '2')
        site = zeosupport.read_site(data.fs('2'), data.blobs('2'))
        self.assertEqual(site[1], ('title 1', b'BODY OF 1'))
        r = support.run([script, '--bogus'])
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.lines), 1, r.output)

    @support.skip_unless(has_entry_point(),
                         'the site environment has no zc.buildout entry '
                         'point evolve-copy (run "bash dev.sh setup")')
    def test_options_are_checked(self):
        sample = support.SampleBuildout()
        self.addCleanup(sample.cleanup)
        sample.write_config('''\
            parts = evolve-copy

            [evolve-copy]
            recipe = collective.safedeploy:evolve-copy
            data = var/data
            evolve = some.package
            ''')
        result = sample.buildout()
        self.assertNotEqual(result.returncode, 0)
        self.assertIn('needs a way to make production read-only: set '
                      'zeo = <ZEO part>, or freeze-command and thaw-command',
                      result.output)
        self.assertNotIn('Traceback', result.output)
