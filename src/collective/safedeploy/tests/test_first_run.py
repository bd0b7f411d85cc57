"""The first run of a plain buildout: no download-cache, eggs of its own.

The quickstart as the README gives it, and the adoption of a buildout
whose eggs were unpacked before it had a download cache -- following
the advice of the message word for word.
"""
import os
import shutil
import textwrap
import unittest

from . import support

PLAIN = textwrap.dedent('''\
    [buildout]
    find-links = {links}
    index = {empty}
    allow-hosts = *.example.invalid
    newest = false
    show-picked-versions = false
    parts = app
    {extensions}

    [app]
    recipe = zc.recipe.egg
    eggs = waitress
    ''')


def waitress_wheel():
    for name in os.listdir(support.WHEELHOUSE):
        if name.startswith('waitress-') and name.endswith('.whl'):
            return os.path.join(support.WHEELHOUSE, name)
    raise unittest.SkipTest('no waitress wheel in %s: run "bash dev.sh '
                            'setup"' % support.WHEELHOUSE)


class TestFirstRun(unittest.TestCase):

    def setUp(self):
        self.sample = support.SampleBuildout()
        self.addCleanup(self.sample.cleanup)
        # a find-links directory of its own: the test takes files away
        self.links = self.sample.path('links')
        os.mkdir(self.links)
        self.wheel = shutil.copy(waitress_wheel(), self.links)
        self.sample.git('init', '-q')

    def write(self, extensions=True):
        self.sample.write('buildout.cfg', PLAIN.format(
            links=self.links, empty=self.sample.empty_index,
            extensions='extensions = collective.safedeploy' if extensions
            else ''))

    def tag(self, tag):
        with open(self.sample.path('.gitignore'), 'w') as f:
            f.write('*\n!buildout.cfg\n!.gitignore\n')
        self.sample.git('add', '-A')
        self.sample.git('commit', '-q', '-m', tag, '--allow-empty')
        self.sample.git('tag', tag)

    def test_quickstart_on_a_fresh_buildout_without_download_cache(self):
        self.write()
        self.tag('1.0')
        result = self.sample.buildout()
        self.assertEqual(result.returncode, 0, result)
        self.assertIn('current -> 1.0', result.output)
        self.assertEqual(os.readlink(self.sample.path('current')),
                         'releases/1.0')
        # the shared download cache the layout promises, with the archive
        self.assertIn(os.path.basename(self.wheel),
                      os.listdir(self.sample.path('downloads', 'dist')))
        # the release's index has waitress, from that archive
        import json
        with open(self.sample.path('indexes', '1.0',
                                   'safedeploy-index.json')) as f:
            record = json.load(f)
        dists = {d['name'].lower(): d for d in record['distributions']}
        self.assertEqual(dists['waitress']['file'],
                         os.path.basename(self.wheel))
        # a re-run (cron, Ansible, -N) has nothing to do and says so
        for args in ((), ('-N',)):
            again = self.sample.buildout(*args)
            self.assertEqual(again.returncode, 0, again)
            self.assertIn('release 1.0 is current and complete; nothing '
                          'to do', again.output)

    def test_eggs_unpacked_before_the_cache_the_advice_works(self):
        # the site as it was before adopting safedeploy: eggs, no cache
        self.write(extensions=False)
        plain = self.sample.buildout()
        self.assertEqual(plain.returncode, 0, plain)
        self.assertFalse(os.path.exists(self.sample.path('downloads')))
        # where the egg came from is gone (an index long since moved on)
        os.unlink(self.wheel)
        self.write()
        self.tag('1.0')
        result = self.sample.buildout()
        self.assertEqual(result.returncode, 1, result)
        self.assertFalse(os.path.exists(self.sample.path('current')))
        error = [l for l in result.lines if l.startswith('Error:')]
        self.assertEqual(len(error), 1, result)
        line = error[0]
        self.assertIn('current still points to nothing', result.last_line)
        self.assertIn('waitress', line)
        self.assertNotIn('remove', line)
        self.assertIn('index-fetch = true', line)
        dist = self.sample.path('downloads', 'dist')
        self.assertIn('copy its archive into %s' % dist, line)
        # follow the advice: its archive into the download cache, again
        shutil.copy(waitress_wheel(), dist)
        result = self.sample.buildout()
        self.assertEqual(result.returncode, 0, result)
        self.assertIn('current -> 1.0', result.output)

    def test_a_pruned_release_takes_its_index_not_shared_files(self):
        self.write()
        with open(self.sample.path('buildout.cfg'), 'a') as f:
            f.write('\n[safedeploy]\nkeep = 1\nallow-dirty = true\n')
        for tag in ('1.0', '1.1', '1.2'):
            result = self.sample.buildout('safedeploy:tag=%s' % tag)
            self.assertEqual(result.returncode, 0, result)
        self.assertFalse(os.path.exists(self.sample.path('releases', '1.0')))
        self.assertFalse(os.path.exists(self.sample.path('indexes', '1.0')))
        self.assertIn('pruned the package index of 1.0', result.output)
        for tag in ('1.1', '1.2'):
            self.assertTrue(os.path.exists(self.sample.path('indexes', tag)))
        # the file 1.0 shared with the kept releases stays in the pool
        self.assertIn(os.path.basename(self.wheel),
                      os.listdir(self.sample.path('pool')))
