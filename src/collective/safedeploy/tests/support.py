"""What the tests share: real sample buildouts, run with a real bin/buildout.

``bash dev.sh setup`` makes two environments: ``.venv`` runs the tests,
``.venv-site`` is the minimal environment a site's ``bin/buildout`` runs
from (zc.buildout, zc.recipe.egg, collective.safedeploy), and
``var/wheelhouse`` holds the distributions sample buildouts install from.
Sample buildouts never reach the network: their index is an empty
directory and ``allow-hosts`` shuts every host out.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.abspath(os.path.join(HERE, '..', '..', '..', '..'))
SITE_VENV = os.environ.get('SAFEDEPLOY_SITE_VENV',
                           os.path.join(CHECKOUT, '.venv-site'))
WHEELHOUSE = os.environ.get('SAFEDEPLOY_WHEELHOUSE',
                            os.path.join(CHECKOUT, 'var', 'wheelhouse'))
BUILDOUT = os.path.join(SITE_VENV, 'bin', 'buildout')
SITE_PYTHON = os.path.join(SITE_VENV, 'bin', 'python')

# eggs unpacked from the wheelhouse, shared by every sample buildout of
# one test run (like an operator's shared eggs directory)
_SHARED = {}


def shared_directory(name):
    if name not in _SHARED:
        _SHARED[name] = tempfile.mkdtemp(prefix='safedeploy-%s-' % name)
    return _SHARED[name]


def skip_unless(condition, reason):
    """Skip with a reason that is printed (zope.testrunner prints skips
    with -vv; we also print it at once so it is never silent)."""
    if not condition:
        print('\nSKIPPED: %s' % reason, file=sys.stderr)
    return unittest.skipUnless(condition, reason)


def require_site_venv():
    if not os.path.exists(BUILDOUT):
        raise unittest.SkipTest(
            'no %s: run "bash dev.sh setup" first' % BUILDOUT)


class Result:

    def __init__(self, args, returncode, output):
        self.args = args
        self.returncode = returncode
        self.output = output

    @property
    def lines(self):
        return [line for line in self.output.splitlines() if line.strip()]

    @property
    def last_line(self):
        return self.lines[-1] if self.lines else ''

    def __repr__(self):
        return '<Result %r rc=%s>\n%s' % (self.args, self.returncode,
                                          self.output)


def run(args, cwd=None, env=None, timeout=600, input=None):
    full_env = dict(os.environ)
    full_env.pop('PYTHONPATH', None)
    full_env['HOME'] = full_env.get('SAFEDEPLOY_TEST_HOME', '/nonexistent')
    full_env.update(env or {})
    p = subprocess.run(args, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout,
                       input=input, text=True)
    return Result(args, p.returncode, p.stdout)


class SampleBuildout:
    """A buildout directory in a temporary directory.

    ``write_config`` writes buildout.cfg with the offline settings every
    sample needs; ``add_package`` writes a develop package whose console
    script prints its version; ``buildout(...)`` runs the real bin/buildout.
    """

    HEAD = textwrap.dedent('''\
        [buildout]
        eggs-directory = {eggs}
        download-cache = {cache}
        find-links = {wheelhouse}
        index = {empty}
        allow-hosts = *.example.invalid
        newest = false
        show-picked-versions = false
        ''')

    def __init__(self, directory=None):
        require_site_venv()
        self.directory = directory or tempfile.mkdtemp(
            prefix='safedeploy-sample-')
        self.empty_index = os.path.join(self.directory, '.empty-index')
        os.makedirs(self.empty_index, exist_ok=True)

    def cleanup(self):
        shutil.rmtree(self.directory, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.directory, *parts)

    def write(self, relpath, text):
        path = self.path(relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(textwrap.dedent(text))
        return path

    def read(self, *relpath):
        with open(self.path(*relpath)) as f:
            return f.read()

    def head(self):
        return self.HEAD.format(
            eggs=shared_directory('eggs'),
            cache=shared_directory('download-cache'),
            wheelhouse=WHEELHOUSE, empty=self.empty_index)

    def write_config(self, body, name='buildout.cfg'):
        """``body`` continues the [buildout] section."""
        return self.write(name, self.head() + textwrap.dedent(body))

    def add_package(self, name='hello', version='1.0', fail=False,
                    script=None):
        """A develop package with a console script ``<name>`` that prints
        ``<name> <version>``."""
        self.write('src/%s/pyproject.toml' % name, '''\
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "%s"
            version = "0.1"

            [project.scripts]
            %s = "%s:main"
            ''' % (name, name, name))
        self.write('src/%s/%s.py' % (name, name), script or '''\
            VERSION = %r

            def main():
                print('%s', VERSION)
            ''' % (version, name))

    def buildout(self, *args, env=None, timeout=600):
        return run([BUILDOUT] + list(args), cwd=self.directory, env=env,
                   timeout=timeout)

    def git(self, *args):
        return run(['git', '-c', 'user.name=test',
                    '-c', 'user.email=test@example.invalid'] + list(args),
                   cwd=self.directory)
