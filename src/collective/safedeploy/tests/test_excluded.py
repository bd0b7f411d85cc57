"""exclude-parts: read as installed, updated only when asked, put back
with the release that asked -- with a real bin/buildout.

The excluded part's recipe computes an option (``conf``, under the parts
directory it is installed in); a release part refers to it.
"""
import os
import signal
import subprocess
import time
import unittest

from collective.safedeploy.release import excluded
from collective.safedeploy.tests import support

SERVER_RECIPE = '''\
import os


class Server:
    """Computes its location and conf, like plone.recipe.zeoserver."""

    def __init__(self, buildout, name, options):
        self.options = options
        options['location'] = os.path.join(
            buildout['buildout']['parts-directory'], name)
        options['conf'] = os.path.join(options['location'], 'server.conf')

    def install(self):
        os.makedirs(self.options['location'], exist_ok=True)
        with open(self.options['conf'], 'w') as f:
            f.write('address %s\\n' % self.options['address'])
        return [self.options['location']]

    update = install
'''

CONFIG = '''\
extensions = collective.safedeploy
find-links += {wheels}
develop = src/serverrecipe
parts = server client rollback

[safedeploy]
index = off
exclude-parts = server

[server]
recipe = serverrecipe
address = {address}

[client]
recipe = testrecipes:write
content = ${{server:conf}} ${{server:address}}

[boom]
recipe = testrecipes:fail

[slow]
recipe = testrecipes:sleep
seconds = 60

[rollback]
recipe = collective.safedeploy:rollback
'''


class ExcludedPartTests(unittest.TestCase):

    def setUp(self):
        self.sample = support.SampleBuildout()
        self.addCleanup(self.sample.cleanup)
        self.sample.write('src/serverrecipe/pyproject.toml', '''\
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "serverrecipe"
            version = "0.1"

            [project.entry-points."zc.buildout"]
            default = "serverrecipe:Server"

            [tool.setuptools.packages.find]
            where = ["src"]
            ''')
        self.sample.write('src/serverrecipe/src/serverrecipe/__init__.py',
                          SERVER_RECIPE)

    def configure(self, address):
        self.sample.write_config(CONFIG.format(
            wheels=support.built_wheels(), address=address))

    def build(self, tag, *args, rc=0):
        r = self.sample.buildout('safedeploy:tag=%s' % tag, *args,
                                 timeout=300)
        self.assertEqual(r.returncode, rc, r)
        return r

    def served(self):
        return self.sample.read('parts', 'server', 'server.conf')

    def installed_address(self):
        return excluded.installed_options(
            self.sample.path('.installed.cfg'), 'server')['address']

    def client(self, tag):
        return self.sample.read('releases', tag, 'parts', 'client',
                                'content')

    def test_read_as_installed_updated_when_asked_put_back(self):
        conf = self.sample.path('parts', 'server', 'server.conf')
        self.configure('one')
        self.build('1.0')
        # installed once, outside the releases; the release reads its real
        # options (the conf its recipe computed there), not the release's
        self.assertEqual(self.served(), 'address one\n')
        self.assertFalse(os.path.exists(self.sample.path(
            'releases', '1.0', 'parts', 'server')))
        self.assertEqual(self.client('1.0'), '%s one' % conf)

        # a changed configuration is not applied by a release, and said so
        self.configure('two')
        r = self.build('1.1')
        self.assertIn('the configuration of the excluded part server '
                      'changed; release 1.1 uses it as installed', r.output)
        self.assertEqual(self.served(), 'address one\n')
        self.assertEqual(self.client('1.1'), '%s one' % conf)

        # asked for, by a release whose build then fails: put back
        r = self.build('1.2', 'safedeploy:update-excluded-parts=server',
                       'buildout:parts=server client boom rollback', rc=1)
        self.assertIn('Installing server outside the releases', r.output)
        self.assertEqual(self.served(), 'address one\n')
        self.assertEqual(self.installed_address(), 'one')
        self.assertEqual(support.current_tag(self.sample.directory), '1.1')

        # asked for, by a release that fails its health check: put back
        r = self.build('1.3', 'safedeploy:update-excluded-parts=server',
                       'safedeploy:health-check=false',
                       'safedeploy:health-timeout=0', rc=1)
        self.assertIn('current flipped back to 1.1', r.output)
        self.assertEqual(self.served(), 'address one\n')
        self.assertEqual(self.installed_address(), 'one')

        # asked for, healthy: updated, and the release reads the update
        self.build('1.4', 'safedeploy:update-excluded-parts=server')
        self.assertEqual(self.served(), 'address two\n')
        self.assertEqual(self.installed_address(), 'two')
        self.assertEqual(self.client('1.4'), '%s two' % conf)
        # a release after it that does not ask changes nothing
        self.build('1.5')
        self.assertEqual(self.served(), 'address two\n')

        # rolling back past the release that updated it puts it back
        r = support.run([self.sample.path('bin', 'rollback'), '1.1'],
                        cwd=self.sample.directory)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn('put back as they were before release 1.4', r.output)
        self.assertEqual(self.served(), 'address one\n')
        self.assertEqual(self.installed_address(), 'one')

        events = [(e['event'], e['name'], e['parts'])
                  for e in support_journal(self.sample)
                  if e['event'].startswith('excluded-')]
        self.assertEqual(events, [
            ('excluded-installed', '1.0', ['server']),
            ('excluded-updated', '1.2', ['server']),
            ('excluded-restored', '1.2', ['server']),
            ('excluded-updated', '1.3', ['server']),
            ('excluded-restored', '1.3', ['server']),
            ('excluded-updated', '1.4', ['server']),
            ('excluded-restored', '1.4', ['server']),
        ])

    def test_a_killed_build_that_updated_it_is_put_back_by_the_next(self):
        self.configure('one')
        self.build('1.0')
        self.configure('two')
        env = dict(os.environ, HOME='/nonexistent',
                   PIP_NO_BUILD_ISOLATION='0')
        env.pop('PYTHONPATH', None)
        p = subprocess.Popen(
            [support.BUILDOUT, 'safedeploy:tag=1.1',
             'safedeploy:update-excluded-parts=server',
             'buildout:parts=server client slow rollback'],
            cwd=self.sample.directory, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if self.served() == 'address two\n':
                        break
                except FileNotFoundError:
                    pass        # being reinstalled
                self.assertLess(time.monotonic(), deadline)
                self.assertIsNone(p.poll())
                time.sleep(0.2)
            time.sleep(1)       # into the slow part
        finally:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        self.assertEqual(self.served(), 'address two\n')
        r = self.build('1.2')
        self.assertIn('excluded parts server put back as they were before '
                      'the killed build of release 1.1', r.output)
        self.assertEqual(self.served(), 'address one\n')
        self.assertEqual(self.installed_address(), 'one')
        self.assertEqual(self.client('1.2'), '%s one' % self.sample.path(
            'parts', 'server', 'server.conf'))


def support_journal(sample):
    from collective.safedeploy.core.journal import Journal
    return Journal(sample.path('releases', '.journal')).entries()
