"""mr.developer checkouts are frozen into each release as they were built.

Real mr.developer (from the wheelhouse), a real git repository as the
source (``git file://...``), real bin/buildout.  buildout calls the
extensions' load hooks in working-set order, not in the order of
``extensions =``: an extension egg buildout has just installed goes to
the front of the working set (mr.developer's load runs before ours), one
already in the eggs directory goes after the site environment's (ours
runs first).  Each test uses an eggs directory of its own, so the first
release is built with mr.developer's hook first and the next ones with
ours first; :meth:`MrDeveloperCase.reinstall_mr_developer` puts it first
again.  Every build says which ran first, and the tests check it.
"""
import os
import shutil
import tarfile
import tempfile
import textwrap

from . import support
from .base import ReleaseTestCase


def git(cwd, *args):
    r = support.run(['git', '-c', 'user.name=test',
                     '-c', 'user.email=test@example.invalid'] + list(args),
                    cwd=cwd)
    if r.returncode:
        raise AssertionError(r)
    return r.output.strip()


class Upstream:
    """A git repository holding one package whose console script prints
    ``<name> <version>``."""

    def __init__(self, directory, name):
        self.name = name
        self.path = os.path.join(directory, name)
        os.makedirs(os.path.join(self.path, 'src', name))
        with open(os.path.join(self.path, 'pyproject.toml'), 'w') as f:
            f.write(support.pyproject(name))
        git(self.path, 'init', '-q', '-b', 'main', '.')
        self.commit('one')

    def commit(self, version):
        """Commit the version ``version``; return the commit."""
        with open(os.path.join(self.path, 'src', self.name, '__init__.py'),
                  'w') as f:
            f.write(textwrap.dedent('''\
                VERSION = %r


                def main():
                    print(%r, VERSION)
                ''' % (version, self.name)))
        git(self.path, 'add', '-A')
        git(self.path, 'commit', '-q', '-m', version)
        self.head = git(self.path, 'rev-parse', 'HEAD')
        return self.head

    @property
    def url(self):
        return 'file://' + self.path


class MrDeveloperCase(ReleaseTestCase):

    extensions = 'mr.developer collective.safedeploy'

    def setUp(self):
        self.sample = support.SampleBuildout()
        self.addCleanup(self.sample.cleanup)
        self.eggs = tempfile.mkdtemp(prefix='safedeploy-mrdev-eggs-')
        self.addCleanup(shutil.rmtree, self.eggs, True)
        upstream = tempfile.mkdtemp(prefix='safedeploy-mrdev-upstream-')
        self.addCleanup(shutil.rmtree, upstream, True)
        self.mrpkg = Upstream(upstream, 'mrpkg')
        self.extra = Upstream(upstream, 'extrapkg')

    def configure(self, auto_checkout='mrpkg', always_checkout=False,
                  parts='app rollback', index='off', safedeploy='',
                  more=''):
        # the sample's head, with an eggs directory of the test's own
        head = self.sample.head().replace(
            support.shared_directory('eggs'), self.eggs)
        self.sample.write('buildout.cfg', head + textwrap.dedent('''\
            extensions = %s
            auto-checkout = %s
            always-checkout = %s
            parts = %s

            [sources]
            mrpkg = git %s branch=main
            extrapkg = git %s branch=main

            [safedeploy]
            index = %s
            %s

            [app]
            recipe = zc.recipe.egg
            eggs = mrpkg

            [extra]
            recipe = zc.recipe.egg
            eggs = extrapkg

            [rollback]
            recipe = collective.safedeploy:rollback
            %s''') % (
            self.extensions, auto_checkout,
            'true' if always_checkout else 'false', parts, self.mrpkg.url,
            self.extra.url, index, safedeploy, textwrap.dedent(more)))

    def reinstall_mr_developer(self):
        """The next build installs mr.developer again: its hook runs
        first."""
        for name in os.listdir(os.path.join(self.eggs, 'v5')):
            if name.startswith('mr.developer'):
                shutil.rmtree(os.path.join(self.eggs, 'v5', name))

    def build(self, tag, *args, first):
        """Release ``tag``; ``first``: whose load hook must run first
        ('mr.developer' or 'safedeploy')."""
        result = self.release(tag, *args)
        self.assertReleased(result, tag)
        lines = result.lines
        ours = [n for n, line in enumerate(lines)
                if line.startswith('stage: building release')]
        theirs = [n for n, line in enumerate(lines)
                  if line.startswith('mr.developer: ')]
        self.assertTrue(ours and theirs, result)
        ran_first = 'mr.developer' if theirs[0] < ours[0] else 'safedeploy'
        self.assertEqual(ran_first, first, result)
        return result

    def run_script(self, where, name='mrpkg'):
        return support.run([self.sample.path(where, 'bin', name)]
                           ).output.strip()

    def frozen(self, tag, name='mrpkg'):
        path = self.sample.path('releases', tag, 'src', name, 'src', name,
                                '__init__.py')
        with open(path) as f:
            return f.read()

    def indexed(self, tag, name):
        """The package's module in the sdist the index of ``tag`` holds."""
        index = self.sample.path('indexes', tag)
        sdists = [n for n in os.listdir(index)
                  if n.startswith(name + '-') and n.endswith('.tar.gz')]
        self.assertEqual(len(sdists), 1, sdists)
        with tarfile.open(os.path.join(index, sdists[0])) as archive:
            member = [m for m in archive.getnames()
                      if m.endswith('src/%s/__init__.py' % name)]
            self.assertEqual(len(member), 1, archive.getnames())
            return archive.extractfile(member[0]).read().decode()

    def develop_sources(self, tag):
        return {os.path.basename(e['source']): e
                for e in self.manifest(tag)['develop-sources']}

    def assertFrozen(self, tag, version, commit, name='mrpkg'):
        """Release ``tag`` runs ``version`` of ``name`` from its own copy
        of the checkout, made at ``commit``."""
        self.assertEqual(self.run_script('releases/' + tag, name),
                         '%s %s' % (name, version))
        self.assertIn('VERSION = %r' % version, self.frozen(tag, name))
        script = self.sample.read('releases', tag, 'bin', name)
        self.assertIn(self.sample.path('releases', tag, 'src', name), script)
        self.assertNotIn(self.sample.path('src', name), script)
        entry = self.develop_sources(tag)[name]
        self.assertEqual(entry['source'], self.sample.path('src', name))
        self.assertEqual(entry['frozen'],
                         self.sample.path('releases', tag, 'src', name))
        self.assertEqual(entry['revision'], commit)
        self.assertFalse(entry['modified'])


class TestMrDeveloperListedFirst(MrDeveloperCase):
    """``extensions = mr.developer collective.safedeploy``."""

    def test_auto_and_always_checkout_whatever_the_hook_order(self):
        one = self.mrpkg.head
        self.configure(index='required')
        self.build('1.0', first='mr.developer')
        self.assertFrozen('1.0', 'one', one)
        self.assertEqual(self.run_script('current'), 'mrpkg one')
        # the checkout is the site's (src/), never the release's
        self.assertEqual(git(self.sample.path('src', 'mrpkg'),
                             'rev-parse', 'HEAD'), one)

        two = self.mrpkg.commit('two')
        self.configure(always_checkout=True, index='required')
        result = self.build('1.1', first='safedeploy')
        self.assertIn("mr.developer: Updated 'mrpkg' with git.",
                      result.output)
        # what always-checkout updated during the run is what was frozen
        self.assertIn('stage: froze %s at %s into release 1.1' % (
            self.sample.path('src', 'mrpkg'), two[:12]), result.output)
        self.assertFrozen('1.1', 'two', two)
        self.assertEqual(self.run_script('current'), 'mrpkg two')
        self.assertFrozen('1.0', 'one', one)
        # the develop package is released into the index as it was built
        self.assertIn('mrpkg = 0.1+tag.1.1\n',
                      self.sample.read('releases', '1.1', 'versions.cfg'))
        self.assertIn("VERSION = 'two'", self.indexed('1.1', 'mrpkg'))

        three = self.mrpkg.commit('three')
        self.reinstall_mr_developer()
        self.build('1.2', first='mr.developer')
        self.assertFrozen('1.2', 'three', three)

        r = self.rollback('1.0')
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.run_script('current'), 'mrpkg one')
        self.assertFrozen('1.0', 'one', one)
        # the site's checkout was not touched by the rollback
        self.assertEqual(git(self.sample.path('src', 'mrpkg'),
                             'rev-parse', 'HEAD'), three)

    def test_a_later_run_never_checks_out_into_a_release(self):
        one = self.mrpkg.head
        self.configure(always_checkout=True)
        self.build('1.0', first='mr.developer')
        before = support.tree_state(self.sample.path('releases', '1.0'))
        self.mrpkg.commit('two')
        # the current tag again: nothing to do, whoever's hook runs first
        for reinstall in (False, True):
            if reinstall:
                self.reinstall_mr_developer()
            r = self.release('1.0')
            self.assertEqual(r.returncode, 0, r)
            self.assertIn('release 1.0 is current and complete; nothing to '
                          'do', r.output)
        self.assertEqual(
            support.tree_state(self.sample.path('releases', '1.0')), before)
        self.assertFrozen('1.0', 'one', one)

    def test_installing_an_excluded_part_changes_no_release(self):
        # the excluded part is installed by a bin/buildout of its own,
        # outside the releases, in which mr.developer runs too
        more = '''
            [tool]
            recipe = zc.recipe.egg
            eggs = zc.lockfile
            '''
        one = self.mrpkg.head
        self.configure(always_checkout=True, parts='tool app rollback',
                       safedeploy='exclude-parts = tool', more=more)
        result = self.build('1.0', first='mr.developer')
        self.assertIn('Installing tool outside the releases.', result.output)
        self.assertFrozen('1.0', 'one', one)
        before = support.tree_state(self.sample.path('releases', '1.0'))
        two = self.mrpkg.commit('two')
        result = self.build('1.1', 'safedeploy:update-excluded-parts=tool',
                            first='safedeploy')
        self.assertIn('Installing tool outside the releases.', result.output)
        self.assertFrozen('1.1', 'two', two)
        # always-checkout updated the source once, before the freeze: the
        # excluded part's run does not update it again
        self.assertEqual(result.output.count("Updated 'mrpkg' with git."), 1,
                         result.output)
        self.assertEqual(
            support.tree_state(self.sample.path('releases', '1.0')), before)
        # bin/develop rebuild still has the release's command, not the
        # excluded part's
        self.assertIn("'safedeploy:tag=1.1'",
                      self.sample.read('.mr.developer.cfg'))

    def test_bin_develop_is_in_the_root_bin_and_works_on_the_site(self):
        one = self.mrpkg.head
        self.configure()
        self.build('1.0', first='mr.developer')
        develop = self.sample.path('bin', 'develop')
        self.assertTrue(os.path.isfile(develop))
        self.assertEqual(self.sample.read('bin', 'develop'),
                         self.sample.read('releases', '1.0', 'bin',
                                          'develop'))
        two = self.mrpkg.commit('two')

        def bin_develop(*args):
            r = support.run([develop] + list(args),
                            cwd=self.sample.directory)
            self.assertEqual(r.returncode, 0, r)
            return r.output

        bin_develop('update', 'mrpkg')
        self.assertEqual(git(self.sample.path('src', 'mrpkg'),
                             'rev-parse', 'HEAD'), two)
        # the release still runs what it was built with
        self.assertEqual(self.run_script('current'), 'mrpkg one')
        self.build('1.1', first='safedeploy')
        self.assertFrozen('1.1', 'two', two)

        # a source checked out and activated with bin/develop
        bin_develop('checkout', 'extrapkg')
        self.assertIn('extrapkg', bin_develop('list', '--develop'))
        self.configure(parts='app extra rollback')
        self.build('1.2', first='safedeploy')
        self.assertFrozen('1.2', 'two', two)
        self.assertFrozen('1.2', 'one', self.extra.head, name='extrapkg')
        self.assertEqual(self.run_script('current', 'extrapkg'),
                         'extrapkg one')
        self.assertEqual(sorted(self.develop_sources('1.2')),
                         ['extrapkg', 'mrpkg'])
        # "run buildout with the last used arguments": the same tag, which
        # is complete and never rebuilt
        self.assertIn('release 1.2 is current and complete; nothing to do',
                      bin_develop('rebuild'))

        r = self.rollback('1.0')
        self.assertEqual(r.returncode, 0, r)
        self.assertFrozen('1.0', 'one', one)
        self.assertEqual(self.sample.read('bin', 'develop'),
                         self.sample.read('releases', '1.0', 'bin',
                                          'develop'))


class TestSafeDeployListedFirst(MrDeveloperCase):
    """``extensions = collective.safedeploy mr.developer``: the same."""

    extensions = 'collective.safedeploy mr.developer'

    test_auto_and_always_checkout_whatever_the_hook_order = \
        TestMrDeveloperListedFirst.\
        test_auto_and_always_checkout_whatever_the_hook_order
    test_a_later_run_never_checks_out_into_a_release = \
        TestMrDeveloperListedFirst.\
        test_a_later_run_never_checks_out_into_a_release
