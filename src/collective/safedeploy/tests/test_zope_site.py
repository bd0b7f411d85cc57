"""recipes/zope-site.cfg and recipes/plone-site.cfg: real sites built from
the recipes operators use, with a real bin/buildout, offline.

The Zope site (Zope 5 with plone.recipe.zeoserver outside the releases,
plone.recipe.zope2instance as its ZEO client, collective.recipe.supervisor,
collective.recipe.backup, mr.developer checking out a local git
repository, collective.recipe.template and collective.recipe.cmd parts):

- 1.0 is built and started by its after-flip (bin/restart starts
  supervisord, which runs the ZEO server and the instance); the instance
  answers, and its @@version page shows the checked-out code's version;
  content is written through ``bin/instance run``;
- 1.1 is released from a changed checkout and runs its code;
- 1.2 fails in its cmd part: ``current`` stays at 1.1, which keeps serving;
- bin/rollback 1.0 runs 1.0's frozen code again;
- a backup made under 1.0 is restored by 1.3's bin/restore over a lost
  Data.fs;
- every write is still there at the end.

Slow (a few minutes: about a hundred distributions are installed from the
wheelhouse).  SAFEDEPLOY_ZOPE_SITE=0 skips it.  The Plone site is built
only with SAFEDEPLOY_PLONE_SITE=1, from var/wheelhouse-plone (``bash
dev.sh plone-wheelhouse``).
"""
import os
import shutil
import signal
import sys
import textwrap
import time
import unittest
import urllib.error
import urllib.request

from collective.safedeploy.tests import support
from collective.safedeploy.zeo.server import free_port

RECIPES = os.path.join(support.CHECKOUT, 'recipes')
PLONE_WHEELHOUSE = os.path.join(support.CHECKOUT, 'var', 'wheelhouse-plone')

ZOPE_SITE = os.environ.get('SAFEDEPLOY_ZOPE_SITE', '1') != '0'
PLONE_SITE = os.environ.get('SAFEDEPLOY_PLONE_SITE', '0') == '1'

PACKAGE = '''\
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "mysite"
version = "0.1"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
mysite = ["*.zcml"]
'''

CODE = '''\
VERSION = %r


class Version:
    """@@version: the version of the code the instance runs."""

    def __init__(self, context, request):
        self.context, self.request = context, request

    def __call__(self):
        return 'mysite %%s' %% VERSION
'''

ZCML = '''\
<configure xmlns="http://namespaces.zope.org/zope"
           xmlns:browser="http://namespaces.zope.org/browser">
  <include package="Products.Five" file="meta.zcml" />
  <browser:page name="version" for="*" class=".Version"
                permission="zope2.Public" />
</configure>
'''

# bin/instance run SCRIPT NAME TEXT: a File in Zope's root
WRITE = '''\
import sys
import transaction
name, text = sys.argv[-2:]
app.manage_addProduct['OFSP'].manage_addFile(
    name, file=text.encode(), content_type='text/plain')
transaction.commit()
'''

CREATE_PLONE_SITE = '''\
import transaction
from AccessControl.SecurityManagement import newSecurityManager
from Products.CMFPlone.factory import addPloneSite
from Testing.makerequest import makerequest
app = makerequest(app)
admin = app.acl_users.getUserById('admin')
newSecurityManager(None, admin.__of__(app.acl_users))
addPloneSite(app, 'Plone', title='A released site', setup_content=False,
             extension_ids=('plone.app.contenttypes:default',))
transaction.commit()
'''


def http_get(url, timeout=120):
    """(status, body) of url, waiting up to timeout seconds for an answer
    (the instance may be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def processes_under(directory):
    """Pids of the processes whose command line names directory."""
    pids = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as f:
                cmdline = f.read().decode(errors='replace')
        except OSError:
            continue
        if directory + '/' in cmdline:
            pids.append(int(entry))
    return pids


class SiteTestCase(unittest.TestCase):
    """A sample buildout extending one of the recipes/ site files, its
    processes stopped at the end whatever happened."""

    recipe = None
    wheelhouse = support.WHEELHOUSE
    build_timeout = 1200    # seconds one bin/buildout may take

    def setUp(self):
        self.sample = support.SampleBuildout()
        self.addCleanup(self.sample.cleanup)
        self.addCleanup(self.stop_site)
        self.zeo_port, self.http_port = free_port(), free_port()
        self.url = 'http://127.0.0.1:%d' % self.http_port

    def write_config(self, body='', options=''):
        """buildout.cfg: ``options`` continue its [buildout] section,
        ``body`` follows [ports]."""
        head = self.sample.head().replace(support.WHEELHOUSE, self.wheelhouse)
        self.sample.write('buildout.cfg', head.replace(
            '[buildout]\n', '[buildout]\nextends = %s\n' % os.path.join(
                RECIPES, self.recipe), 1) + textwrap.dedent(options) +
            textwrap.dedent('''\

            [ports]
            zeo = %d
            instance = %d
            ''' % (self.zeo_port, self.http_port)) + textwrap.dedent(body))

    def buildout(self, tag):
        return self.sample.buildout('safedeploy:tag=%s' % tag,
                                    timeout=self.build_timeout)

    def release(self, tag):
        r = self.buildout(tag)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.last_line, 'current -> %s' % tag, r)
        self.assertEqual(support.current_tag(self.sample.directory), tag)
        return r

    def instance_run(self, script, *args):
        path = self.sample.path('script-%d.py' % time.monotonic_ns())
        with open(path, 'w') as f:
            f.write(script)
        r = support.run([self.sample.path('current', 'bin', 'instance'),
                         'run', path] + list(args), cwd=self.sample.directory)
        self.assertEqual(r.returncode, 0, r)
        return r

    def supervisorctl(self, *args):
        return support.run([self.sample.path('current', 'bin',
                                             'supervisorctl')] + list(args),
                           cwd=self.sample.directory, timeout=120)

    def stop_site(self):
        """supervisorctl shutdown (supervisord stops the ZEO server and the
        instance), then SIGKILL to whatever of the site still runs."""
        pidfile = self.sample.path('var', 'supervisord.pid')
        if os.path.exists(self.sample.path('current', 'bin', 'supervisorctl')):
            self.supervisorctl('shutdown')
        deadline = time.monotonic() + 60
        while os.path.exists(pidfile) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in processes_under(self.sample.directory):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@support.skip_unless(ZOPE_SITE, 'the Zope site test is off '
                     '(SAFEDEPLOY_ZOPE_SITE=0)')
class TestZopeSite(SiteTestCase):

    recipe = 'zope-site.cfg'

    def setUp(self):
        if not shutil.which('rsync'):
            reason = 'no rsync (collective.recipe.backup copies blobs with it)'
            print('\nSKIPPED: %s' % reason, file=sys.stderr)
            raise unittest.SkipTest(reason)
        super().setUp()
        self.upstream = self.sample.path('upstream', 'mysite')
        self.commit_source('1.0')
        # mr.developer updates the checkout before each build
        self.write_config(options='always-checkout = true\n', body='''\
            [sources]
            mysite = git file://%s branch=main

            [site]
            eggs = mysite
            zcml = mysite
            ''' % self.upstream)

    def commit_source(self, version):
        """The site's package in its git repository, at ``version``."""
        files = {'pyproject.toml': PACKAGE,
                 'src/mysite/__init__.py': CODE % version,
                 'src/mysite/configure.zcml': ZCML}
        for name, text in files.items():
            path = os.path.join(self.upstream, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'w') as f:
                f.write(text)
        git = ['git', '-C', self.upstream, '-c', 'user.name=test',
               '-c', 'user.email=test@example.invalid']
        if not os.path.isdir(os.path.join(self.upstream, '.git')):
            self.assertEqual(support.run(
                ['git', 'init', '-q', '-b', 'main', self.upstream]
            ).returncode, 0)
        for args in (['add', '-A'], ['commit', '-q', '-m', version]):
            r = support.run(git + args)
            self.assertEqual(r.returncode, 0, r)

    def assert_serves(self, version, notes):
        status, body = http_get(self.url + '/')
        self.assertEqual(status, 200, body)
        self.assertEqual(http_get(self.url + '/@@version'),
                         (200, 'mysite %s' % version))
        for name, text in notes.items():
            self.assertEqual(http_get(self.url + '/' + name), (200, text))

    def write_note(self, notes, name):
        notes[name] = 'written under %s' % support.current_tag(
            self.sample.directory)
        self.instance_run(WRITE, name, notes[name])

    def test_releases_rolls_back_backs_up_and_restores(self):
        notes = {}
        # 1.0: built, started by its after-flip, serving its code
        self.release('1.0')
        self.assert_serves('1.0', notes)
        self.write_note(notes, 'note-1')
        self.assert_serves('1.0', notes)
        # the ZEO server and its data outside the releases
        self.assertTrue(os.path.exists(self.sample.path('bin', 'zeoserver')))
        self.assertFalse(os.path.exists(self.sample.path(
            'current', 'bin', 'zeoserver')))
        self.assertTrue(os.path.exists(self.sample.path(
            'var', 'filestorage', 'Data.fs')))
        # supervisord runs the instance through current
        conf = self.sample.read('current', 'parts', 'supervisor',
                                'supervisord.conf')
        self.assertIn(self.sample.path('current', 'bin', 'instance'), conf)
        self.assertNotIn(self.sample.path('releases'), conf)
        # the template and cmd parts were built into the release
        self.assertIn(self.sample.path('var', 'log', '*.log'),
                      self.sample.read('current', 'parts', 'logrotate',
                                       'logrotate.conf'))
        zeo_conf = self.sample.read('parts', 'zeoserver', 'etc', 'zeo.conf')

        # 1.1: a changed checkout, updated by mr.developer, runs its code
        self.commit_source('1.1')
        self.release('1.1')
        self.assert_serves('1.1', notes)
        self.write_note(notes, 'note-2')

        # 1.2 fails in a part: current stays 1.1, which keeps serving
        config = self.sample.read('buildout.cfg')
        self.sample.write('buildout.cfg', config + textwrap.dedent('''
            [precompile]
            cmds = exit 3
            '''))
        r = self.buildout('1.2')
        self.assertNotEqual(r.returncode, 0, r)
        self.assertEqual(r.last_line, 'current still points to 1.1', r)
        self.assertEqual(support.current_tag(self.sample.directory), '1.1')
        self.assert_serves('1.1', notes)
        self.sample.write('buildout.cfg', config)
        # no release changed the excluded ZEO server
        self.assertEqual(self.sample.read(
            'parts', 'zeoserver', 'etc', 'zeo.conf'), zeo_conf)

        # bin/rollback 1.0: 1.0's frozen code runs again
        r = support.run([self.sample.path('bin', 'rollback'), '1.0'],
                        cwd=self.sample.directory)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')
        self.assert_serves('1.0', notes)
        self.write_note(notes, 'note-3')

        # a backup under 1.0 ...
        r = support.run([self.sample.path('current', 'bin', 'backup')],
                        cwd=self.sample.directory)
        self.assertEqual(r.returncode, 0, r)
        self.assertTrue(os.listdir(self.sample.path('var', 'backups')))
        self.assertTrue(os.listdir(self.sample.path(
            'var', 'blobstoragebackups')))

        # ... restored by the next release over a lost Data.fs
        self.commit_source('1.3')
        self.release('1.3')
        self.assert_serves('1.3', notes)
        r = self.supervisorctl('stop', 'all')
        self.assertEqual(r.returncode, 0, r)
        filestorage = self.sample.path('var', 'filestorage')
        shutil.rmtree(filestorage)
        os.mkdir(filestorage)
        r = support.run([self.sample.path('current', 'bin', 'restore'),
                         '--no-prompt'], cwd=self.sample.directory)
        self.assertEqual(r.returncode, 0, r)
        r = self.supervisorctl('start', 'all')
        self.assertEqual(r.returncode, 0, r)
        # every write is there
        self.assert_serves('1.3', notes)
        self.assertEqual(sorted(notes), ['note-1', 'note-2', 'note-3'])

        # each release kept the code it was built with
        for tag in ('1.0', '1.1', '1.3'):
            with open(self.sample.path('releases', tag, 'src', 'mysite', 'src',
                                       'mysite', '__init__.py')) as f:
                self.assertIn('VERSION = %r' % tag, f.read())


@support.skip_unless(PLONE_SITE, 'the Plone site is built only with '
                     'SAFEDEPLOY_PLONE_SITE=1 (after bash dev.sh '
                     'plone-wheelhouse)')
class TestPloneSite(SiteTestCase):

    recipe = 'plone-site.cfg'
    wheelhouse = PLONE_WHEELHOUSE
    # about 260 distributions, each unpacked by its own pip process
    build_timeout = 3600

    def test_builds_and_creates_a_plone_site(self):
        if not os.path.isdir(PLONE_WHEELHOUSE):
            self.fail('no %s: run "bash dev.sh plone-wheelhouse" first'
                      % PLONE_WHEELHOUSE)
        self.write_config()
        started = time.monotonic()
        self.release('1.0')
        built = time.monotonic()
        status, body = http_get(self.url + '/')
        self.assertEqual(status, 200, body)
        self.instance_run(CREATE_PLONE_SITE)
        status, body = http_get(self.url + '/Plone')
        self.assertEqual(status, 200, body)
        self.assertIn('A released site', body)
        print('\nPlone site: release 1.0 built and healthy in %.0f s, '
              'Plone site created in %.0f s more; %s' % (
                  built - started, time.monotonic() - built,
                  support.run(['du', '-sh', '--total',
                               support.shared_directory('eggs'),
                               self.sample.path('releases', '1.0')]
                              ).lines[-1]))


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
