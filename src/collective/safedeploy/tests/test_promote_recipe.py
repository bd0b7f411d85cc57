"""recipe = collective.safedeploy:promote with a real bin/buildout."""
import json
import os
import subprocess
import textwrap
import unittest

from . import support


def recipe_registered():
    if not os.path.exists(support.SITE_PYTHON):
        return False
    p = subprocess.run(
        [support.SITE_PYTHON, '-c',
         'import importlib.metadata as m; print(" ".join(e.name for e in '
         'm.entry_points(group="zc.buildout")))'],
        stdout=subprocess.PIPE, text=True)
    return 'promote' in p.stdout.split()


@support.skip_unless(recipe_registered(),
                     'the zc.buildout entry point "promote" is not '
                     'registered in the site environment (setup.py, then '
                     'bash dev.sh setup)')
class PromoteRecipeTests(unittest.TestCase):

    def test_generates_bin_promote_that_lists_and_refuses(self):
        sample = support.SampleBuildout()
        self.addCleanup(sample.cleanup)
        with open(sample.path('stages.cfg'), 'w') as f:
            f.write(textwrap.dedent('''\
                [stages]
                order = dev beta

                [stage:beta]
                root = /srv/beta
                twin = /srv/beta_upgrade
                balancer = haproxy:/run/haproxy/admin.sock backend=beta
                servers = main1 main2
                twin-servers = twin1
                zeo = 127.0.0.1:8100
                twin-zeo = 127.0.0.1:8200
                release = none
                '''))
        sample.write_config('''\
            parts = promote

            [promote]
            recipe = collective.safedeploy:promote
            ''')
        result = sample.buildout()
        self.assertEqual(result.returncode, 0, result.output)
        script = sample.path('bin', 'promote')
        r = support.run([script, '--list', '--json'])
        self.assertEqual(r.returncode, 0, r.output)
        self.assertEqual([row['stage'] for row in json.loads(r.output)],
                         ['dev', 'beta'])
        r = support.run([script, 'gamma'])
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.lines), 1, r.output)
        self.assertIn("no stage 'gamma'", r.output)
        r = support.run([script, '--help'])
        self.assertEqual(r.returncode, 0)
