"""recipe = collective.safedeploy:snapshot with a real bin/buildout."""
import json
import os
import subprocess
import unittest

from . import support
from .zodbsupport import make_site_data


def recipe_registered():
    if not os.path.exists(support.SITE_PYTHON):
        return False
    p = subprocess.run(
        [support.SITE_PYTHON, '-c',
         'import importlib.metadata as m; print(" ".join(e.name for e in '
         'm.entry_points(group="zc.buildout")))'],
        stdout=subprocess.PIPE, text=True)
    return 'snapshot' in p.stdout.split()


@support.skip_unless(recipe_registered(),
                     'the zc.buildout entry point "snapshot" is not '
                     'registered in the site environment (setup.py, then '
                     'bash dev.sh setup)')
class SnapshotRecipeTests(unittest.TestCase):

    def setUp(self):
        self.sample = support.SampleBuildout()
        self.addCleanup(self.sample.cleanup)

    def configure(self, options=''):
        self.sample.write_config('''\
            parts = snapshot

            [snapshot]
            recipe = collective.safedeploy:snapshot
            data = ${buildout:directory}/var
            backend = copy
            ''' + options)

    def test_generates_bin_snapshot_that_works(self):
        self.configure()
        result = self.sample.buildout()
        self.assertEqual(result.returncode, 0, result.output)
        script = self.sample.path('bin', 'snapshot')
        self.assertTrue(os.access(script, os.X_OK))
        make_site_data(self.sample.path('var'))
        for args in (['--adopt'], ['first']):
            r = support.run([script] + args)
            self.assertEqual(r.returncode, 0, r.output)
        r = support.run([script, '--list', '--json'])
        self.assertEqual([row['name'] for row in json.loads(r.output)],
                         ['first'])
        r = support.run([script, '--restore', 'nosuch'])
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.lines), 1, r.output)
        r = support.run([script, '--help'])
        self.assertEqual(r.returncode, 0)

    def test_bad_options_are_one_line(self):
        self.configure('keep = many\n')
        result = self.sample.buildout()
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("invalid value for [snapshot] keep: 'many'", result.output)
        self.assertNotIn('Traceback', result.output)
        self.configure('files = ../../../../etc\n')
        result = self.sample.buildout()
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("Error: [snapshot] files: '../../../../etc' must be a "
                      "path relative to a generation", result.output)
        self.assertNotIn('Traceback', result.output)
