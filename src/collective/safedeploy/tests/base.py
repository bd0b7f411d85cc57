"""A test case around one real sample buildout using the extension."""
import json
import os
import subprocess
import textwrap
import time
import unittest

from . import support


class ReleaseTestCase(unittest.TestCase):

    parts = 'hello rollback'
    safedeploy = ''
    extra = ''

    def setUp(self):
        self.sample = support.SampleBuildout()
        self.addCleanup(self.sample.cleanup)
        self.sample.add_package('hello', '1.0')
        support.add_test_recipes(self.sample)

    def configure(self, parts=None, safedeploy=None, extra=None,
                  develop='', extensions='collective.safedeploy',
                  says=None, index='off'):
        """``index``: the package index of each release is tested on its
        own (test_index*), so it is off by default here."""
        """``develop``: e.g. 'src/hello' to use the source of hello (and
        freeze it) instead of its wheel."""
        body = textwrap.dedent('''\
            extensions = %s
            develop = %s
            find-links += %s
            parts = %s

            [safedeploy]
            index = %s
            %s

            [hello]
            recipe = zc.recipe.egg
            eggs = hello
            %s

            [rollback]
            recipe = collective.safedeploy:rollback

            [slow]
            recipe = testrecipes:sleep
            seconds = 2

            [slower]
            recipe = testrecipes:sleep
            seconds = 10

            [broken]
            recipe = testrecipes:fail
            message = the broken part fails on purpose
            ''') % (
            extensions, develop, support.built_wheels(),
            parts if parts is not None else self.parts, index,
            textwrap.dedent(safedeploy if safedeploy is not None
                            else self.safedeploy),
            # bin/hello first says this: tells releases apart, no develop
            "initialization = print('%s')" % says if says else '',
            )
        body += textwrap.dedent(extra if extra is not None else self.extra)
        self.sample.write_config(body)

    def release(self, tag, *args, **kw):
        return self.sample.buildout('safedeploy:tag=%s' % tag, *args, **kw)

    def start_release(self, tag):
        """Start bin/buildout for ``tag`` in the background; return the
        process once it is installing parts (its release has parts/)."""
        p = subprocess.Popen(
            [support.BUILDOUT, 'safedeploy:tag=%s' % tag],
            cwd=self.sample.directory, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PIP_NO_BUILD_ISOLATION='0'))
        self.addCleanup(p.wait)
        self.addCleanup(p.kill)
        deadline = time.time() + 60
        while not self.exists('releases', tag, 'parts') and \
                time.time() < deadline:
            time.sleep(0.05)
        return p

    def assertReleased(self, result, tag):
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(support.current_tag(self.sample.directory), tag,
                         result)

    def manifest(self, tag):
        with open(self.sample.path('releases', tag,
                                   'safedeploy-manifest.json')) as f:
            return json.load(f)

    def journal(self):
        with open(self.sample.path('releases', '.journal')) as f:
            return [json.loads(line) for line in f if line.strip()]

    def rollback(self, *args, **kw):
        return support.run([self.sample.path('bin', 'rollback')] + list(args),
                           cwd=self.sample.directory, **kw)

    def hello(self, where='current'):
        return support.run([self.sample.path(where, 'bin', 'hello')]
                           ).output.strip()

    def state(self):
        return support.tree_state(self.sample.directory)

    def exists(self, *path):
        return os.path.lexists(self.sample.path(*path))
