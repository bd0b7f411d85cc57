"""What the tests share: real sample buildouts, run with a real bin/buildout.

``bash dev.sh setup`` makes two environments: ``.venv`` runs the tests,
``.venv-site`` is the minimal environment a site's ``bin/buildout`` runs
from (zc.buildout, zc.recipe.egg, collective.safedeploy), and
``var/wheelhouse`` holds the distributions sample buildouts install from.
Sample buildouts never reach the network: their index is an empty
directory and ``allow-hosts`` shuts every host out.
"""
import atexit
import os
import shutil
import signal
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

# A test runner that a shell started in the background (``bin/test &``,
# a script's ``... &``) has SIGINT ignored, and every process it starts
# inherits that: the tests that press Ctrl-C would then test nothing.
# They send SIGINT as a terminal does, to processes that handle it as a
# terminal's would.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def shared_directory(name):
    if not _SHARED:
        atexit.register(_remove_shared)
    if name not in _SHARED:
        _SHARED[name] = tempfile.mkdtemp(prefix='safedeploy-%s-' % name)
        if name == 'eggs':  # buildout would say it created it
            os.mkdir(os.path.join(_SHARED[name], 'v5'))
    return _SHARED[name]


def _remove_shared():
    for path in _SHARED.values():
        shutil.rmtree(path, ignore_errors=True)


def skip_unless(condition, reason):
    """Skip with a reason that is printed (zope.testrunner prints skips
    with -vv; we also print it at once so it is never silent)."""
    if not condition:
        print('\nSKIPPED: %s' % reason, file=sys.stderr)
    return unittest.skipUnless(condition, reason)


def spread(rounds, rnd):
    """Moments for ``rounds`` kills, as fractions of a step's duration:
    one in each of ``rounds`` equal slices of it, the slices in random
    order, then again (for rounds that did not count).  A few kills
    spread so cover the whole step; as many uniform random moments leave
    gaps beside clusters."""
    while True:
        slices = list(range(rounds))
        rnd.shuffle(slices)
        for k in slices:
            yield (k + rnd.random()) / rounds


def require_site_venv():
    if not os.path.exists(BUILDOUT):
        raise unittest.SkipTest(
            'no %s: run "bash dev.sh setup" first' % BUILDOUT)


class Result:

    def __init__(self, args, returncode, output, errors=''):
        self.args = args
        self.returncode = returncode
        self.output = output
        self.errors = errors        # stderr, when it was kept apart

    @property
    def lines(self):
        return [line for line in self.output.splitlines() if line.strip()]

    @property
    def last_line(self):
        return self.lines[-1] if self.lines else ''

    def __repr__(self):
        return '<Result %r rc=%s>\n%s%s' % (
            self.args, self.returncode, self.output,
            '\n[stderr]\n' + self.errors if self.errors else '')


def run(args, cwd=None, env=None, timeout=600, input=None, split=False):
    """Run a command; ``split``: keep stderr apart (``Result.errors``)."""
    full_env = dict(os.environ)
    full_env.pop('PYTHONPATH', None)
    full_env['HOME'] = full_env.get('SAFEDEPLOY_TEST_HOME', '/nonexistent')
    # develop packages are built offline with the environment's setuptools
    full_env.setdefault('PIP_NO_BUILD_ISOLATION', '0')
    full_env.update(env or {})
    p = subprocess.run(args, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE if split else subprocess.STDOUT,
                       timeout=timeout, input=input, text=True)
    return Result(args, p.returncode, p.stdout, p.stderr or '')


def pyproject(name):
    """pyproject.toml of a src-layout package ``name`` whose console
    script ``name`` runs ``name:main``."""
    return textwrap.dedent('''\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "%s"
        version = "0.1"

        [project.scripts]
        %s = "%s:main"

        [tool.setuptools.packages.find]
        where = ["src"]
        ''' % (name, name, name))


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
        self.write('src/%s/pyproject.toml' % name, pyproject(name))
        # a src layout: buildout 6 puts its path on the scripts' sys.path
        # (a flat layout's editable finder is not followed by scripts)
        self.write('src/%s/src/%s/__init__.py' % (name, name), script or '''\
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


TEST_RECIPES = '''\
"""Recipes for tests: fail, sleep, write a file."""
import atexit
import os
import time


class Fail:
    def __init__(self, buildout, name, options):
        self.options = options

    def install(self):
        raise RuntimeError(self.options.get('message', 'this part fails'))

    update = install


class Sleep:
    def __init__(self, buildout, name, options):
        self.options = options
        self.location = os.path.join(
            buildout['buildout']['parts-directory'], name)

    def install(self):
        time.sleep(float(self.options.get('seconds', '1')))
        os.makedirs(self.location, exist_ok=True)
        with open(os.path.join(self.location, 'done'), 'w') as f:
            f.write('done')
        return [self.location]

    update = install


class Write:
    def __init__(self, buildout, name, options):
        self.options = options
        self.location = os.path.join(
            buildout['buildout']['parts-directory'], name)

    def install(self):
        os.makedirs(self.location, exist_ok=True)
        with open(os.path.join(self.location, 'content'), 'w') as f:
            f.write(self.options.get('content', ''))
        return [self.location]

    update = install
'''


def add_test_recipes(sample):
    """A develop package ``testrecipes`` with recipes ``testrecipes:fail``,
    ``testrecipes:sleep`` and ``testrecipes:write``."""
    sample.write('src/testrecipes/pyproject.toml', '''\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "testrecipes"
        version = "0.1"

        [project.entry-points."zc.buildout"]
        fail = "testrecipes:Fail"
        sleep = "testrecipes:Sleep"
        write = "testrecipes:Write"

        [tool.setuptools.packages.find]
        where = ["src"]
        ''')
    path = sample.path('src/testrecipes/src/testrecipes/__init__.py')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(TEST_RECIPES)


def current_tag(directory):
    link = os.path.join(directory, 'current')
    if not os.path.lexists(link):
        return None
    return os.path.basename(os.readlink(link))


def built_wheels():
    """Wheels of the test packages (hello 1.0 and testrecipes), built once
    per test run, so most sample buildouts need no develop package."""
    directory = shared_directory('wheels')
    if not os.listdir(directory):
        sample = SampleBuildout()
        try:
            sample.add_package('hello', '1.0')
            add_test_recipes(sample)
            for name in ('hello', 'testrecipes'):
                r = run([SITE_PYTHON, '-m', 'pip', 'wheel', '-q', '--no-deps',
                         '--no-build-isolation', '--no-index', '-w',
                         directory, sample.path('src', name)])
                if r.returncode:
                    raise RuntimeError(r.output)
        finally:
            sample.cleanup()
    return directory


def tree_state(directory, ignore=('.lock',)):
    """(path, kind, content/target, mode) of everything under directory,
    to prove nothing changed."""
    state = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(root, name)
            rel = os.path.relpath(p, directory)
            if name in ignore:
                continue  # zc.lockfile writes its holder's pid into it
            st = os.lstat(p)
            if os.path.islink(p):
                state.append((rel, 'link', os.readlink(p)))
            elif os.path.isdir(p):
                state.append((rel, 'dir', oct(st.st_mode)))
            else:
                with open(p, 'rb') as f:
                    state.append((rel, 'file', f.read(), oct(st.st_mode)))
    return state
