"""collective.recipe.backup in a released site: backups live in the site.

The recipe takes the site to be the parent of ``bin-directory`` -- under
collective.safedeploy, the release.  A real site (recipes/filestorage-
site.cfg, a FileStorage with blobs in data generations, no ``shared``)
with a backup part that sets no path: a backup taken under release 1.0
is in the site's var, survives the pruning of 1.0 and is restored by
release 1.2's bin/restore.  A blob copy that fails (rsync missing, the
blob directory missing) fails bin/backup and bin/restore.
"""
import os
import shutil
import textwrap
import unittest

from . import support
from . import zodbsupport

RECIPES = os.path.join(support.CHECKOUT, 'recipes')
HAVE_RSYNC = shutil.which('rsync') is not None
# a PATH with python's own directory but no rsync (the scripts run their
# interpreter by its full path; the shell finds no rsync)
NO_RSYNC = {'PATH': '/nonexistent'}


@support.skip_unless(HAVE_RSYNC, 'rsync is not installed (collective.recipe.'
                     'backup copies blobs with it)')
class TestBackupRecipe(unittest.TestCase):

    def setUp(self):
        self.sample = support.SampleBuildout()
        self.addCleanup(self.sample.cleanup)
        self.var = self.sample.path('var')
        from collective.safedeploy.data import snapshot
        zodbsupport.make_site_data(self.var, transactions=3, blobs=2)
        snapshot.adopt(dict(data=self.var, backend='copy'))
        self.fs = os.path.join(self.var, 'current', 'filestorage', 'Data.fs')
        self.blobs = os.path.join(self.var, 'current', 'blobstorage')

    def write_config(self, backup=''):
        head = self.sample.head().replace(
            'find-links = %s' % support.WHEELHOUSE,
            'find-links = %s\n    %s' % (support.WHEELHOUSE,
                                         support.built_wheels()))
        head = head.replace('[buildout]\n', '[buildout]\nextends = %s\n' %
                            os.path.join(RECIPES, 'filestorage-site.cfg'), 1)
        self.sample.write('buildout.cfg', head + textwrap.dedent('''\
            parts += repozo backup

            [safedeploy]
            keep = 2
            # not var: the defaults must keep the backups out of the
            # releases by themselves
            shared =
            index = off

            [app]
            eggs = hello
            scripts = hello

            [repozo]
            recipe = zc.recipe.egg
            eggs = ZODB
            scripts = repozo

            [backup]
            recipe = collective.recipe.backup
            ''') + textwrap.dedent(backup))

    def release(self, tag):
        r = self.sample.buildout('safedeploy:tag=%s' % tag)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.last_line, 'current -> %s' % tag, r)
        return r

    def script(self, name, *args, env=None):
        return support.run([self.sample.path('current', 'bin', name)] +
                           list(args), cwd=self.sample.directory, env=env)

    def files_under(self, top, names):
        found = []
        for root, dirs, files in os.walk(top):
            found.extend(os.path.join(root, n) for n in dirs + files
                         if n in names or n.endswith(('.fsz', '.deltafsz')))
        return found

    def test_backup_under_one_release_restored_under_a_later_one(self):
        self.write_config()
        r = self.release('1.0')
        self.assertIn('[backup] collective.recipe.backup: the site\'s paths',
                      r.output)
        zodbsupport.commit(self.fs, self.blobs, n=2)
        backed_up = zodbsupport.read_all(self.fs, self.blobs)
        r = self.script('backup')
        self.assertEqual(r.returncode, 0, r)
        backups = os.path.join(self.var, 'backups')
        blob_backups = os.path.join(self.var, 'blobstoragebackups')
        self.assertTrue(any(n.endswith('.fsz') for n in os.listdir(backups)),
                        r)
        self.assertTrue(any(n.startswith('blobstorage.')
                            for n in os.listdir(blob_backups)), r)
        # written after the backup: the restore takes it back
        zodbsupport.commit(self.fs, self.blobs, n=3)
        self.assertNotEqual(zodbsupport.read_all(self.fs, self.blobs),
                            backed_up)

        self.release('1.1')
        self.release('1.2')
        releases = self.sample.path('releases')
        self.assertFalse(os.path.exists(os.path.join(releases, '1.0')),
                         'keep = 2 prunes release 1.0')
        r = self.script('restore', '--no-prompt')
        self.assertEqual(r.returncode, 0, r)
        self.assertIn(os.path.join(releases, '1.2', 'bin'),
                      os.path.realpath(self.sample.path('current', 'bin',
                                                        'restore')))
        self.assertEqual(zodbsupport.read_all(self.fs, self.blobs), backed_up)
        # nothing of the backups ever went into a release
        self.assertEqual(self.files_under(releases, (
            'backups', 'blobstoragebackups', 'snapshotbackups',
            'blobstoragesnapshots', 'var')), [])
        # and 1.2 backs up beside 1.0's backups
        zodbsupport.commit(self.fs, self.blobs, n=1)
        r = self.script('backup')
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(len([n for n in os.listdir(blob_backups)
                              if n.startswith('blobstorage.')]), 2, r)

    def test_failed_blob_copy_fails_backup_and_restore(self):
        # what the operator sets is kept, relative to the site's var
        self.write_config('''\
            location = mybackups
            ''')
        self.release('1.0')
        installed = self.sample.read('current', '.installed.cfg')
        self.assertIn('location = %s' % os.path.join(self.var, 'mybackups'),
                      installed)
        self.assertIn('blob_storage = %s' % self.blobs, installed)

        zodbsupport.commit(self.fs, self.blobs)
        r = self.script('backup', env=NO_RSYNC)
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn('Halting execution: rsync', r.output)
        self.assertNotIn('Traceback', r.output)

        # the next backup, with rsync, makes the missing blob backup
        r = self.script('backup')
        self.assertEqual(r.returncode, 0, r)
        self.assertIn('mybackups', os.listdir(self.var))

        # the blob directory is gone: rsync fails, so does bin/backup
        zodbsupport.commit(self.fs, self.blobs)
        moved = self.blobs + '.away'
        os.rename(self.blobs, moved)
        try:
            r = self.script('backup')
        finally:
            os.rename(moved, self.blobs)
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn('Halting execution: rsync', r.output)

        r = self.script('restore', '--no-prompt', env=NO_RSYNC)
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn('Halting execution: rsync', r.output)


@support.skip_unless(HAVE_RSYNC, 'rsync is not installed (collective.recipe.'
                     'backup copies blobs with it)')
class TestBackupWithExcludedZEOServer(unittest.TestCase):
    """The recipe reads the storage paths from the ZEO server part; in
    exclude-parts, that part is read as it is installed.  A backup part in
    exclude-parts has the site's paths by itself, and strict scripts."""

    def test_storage_paths_from_the_zeo_server(self):
        sample = support.SampleBuildout()
        self.addCleanup(sample.cleanup)
        data = sample.path('data')
        zodbsupport.make_site_data(data, transactions=3, blobs=2)
        sample.write_config('''\
            extensions = collective.safedeploy
            parts = zeoserver repozo backup blobs

            [safedeploy]
            index = off
            exclude-parts = zeoserver blobs

            [zeoserver]
            recipe = plone.recipe.zeoserver
            zeo-address = 127.0.0.1:8199
            file-storage = ${buildout:directory}/data/filestorage/Data.fs
            blob-storage = ${buildout:directory}/data/blobstorage

            [repozo]
            recipe = zc.recipe.egg
            eggs = ZODB
            scripts = repozo

            [backup]
            recipe = collective.recipe.backup

            # installed outside the releases: its defaults are the site's
            [blobs]
            recipe = collective.recipe.backup
            only_blobs = true
            ''')
        for tag in ('1.0', '1.1'):
            r = sample.buildout('safedeploy:tag=%s' % tag)
            self.assertEqual(r.returncode, 0, r)
            self.assertEqual(r.last_line, 'current -> %s' % tag, r)
            installed = sample.read('releases', tag, '.installed.cfg')
            for line in (
                    'datafs = %s' % os.path.join(data, 'filestorage',
                                                 'Data.fs'),
                    'blob_storage = %s' % os.path.join(data, 'blobstorage'),
                    'location = %s' % sample.path('var', 'backups'),
                    'blobbackuplocation = %s' % sample.path(
                        'var', 'blobstoragebackups')):
                self.assertIn(line + '\n', installed, tag)
        self.assertTrue(os.path.exists(sample.path('bin', 'zeoserver')))
        r = support.run([sample.path('current', 'bin', 'backup')],
                        cwd=sample.directory)
        self.assertEqual(r.returncode, 0, r)
        self.assertTrue(os.listdir(sample.path('var', 'backups')), r)
        self.assertTrue(os.listdir(sample.path('var', 'blobstoragebackups')),
                        r)
        # the excluded one, built by the first release build: strict too
        zodbsupport.commit(os.path.join(data, 'filestorage', 'Data.fs'),
                           os.path.join(data, 'blobstorage'))
        r = support.run([sample.path('bin', 'blobs')], cwd=sample.directory,
                        env=NO_RSYNC)
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn('Halting execution: rsync', r.output)
        r = support.run([sample.path('bin', 'blobs')], cwd=sample.directory)
        self.assertEqual(r.returncode, 0, r)
        self.assertTrue(os.listdir(sample.path('var', 'blobs-blobstorages')),
                        r)


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
