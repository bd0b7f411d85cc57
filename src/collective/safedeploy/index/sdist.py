"""Releasing a develop package into the index: an sdist whose version is
unique to the tag.

:func:`tag_version` gives the version (a PEP 440 local label
``+tag.<tag>``); :class:`SdistBuild` builds the sdist through the
project's own build backend with pyproject_hooks (the PEP 517 hook
caller pypa ``build`` uses), without isolation: no download of build
requirements.
"""
import configparser
import hashlib
import os
import re
import shutil
import tempfile

from packaging.version import Version

from ..core import commands
from ..core import fsutil
from ..core.errors import CommandFailed
from ..core.fsutil import sha256
from ..release.distributions import archive_key
from .records import IndexFailure


def tag_version(version, tag):
    """The version a develop package is released under for ``tag``.

    PEP 440 local version label ``+tag.<tag>``: ``0.1`` becomes
    ``0.1+tag.v1`` for tag ``v1``, ``2.0+tag.2026.11.22`` for tag
    ``2026.11.22``.  It is valid PEP 440, sorts after the plain version,
    and local labels compare segment by segment (numbers as numbers), so
    numbered tags sort in order.  A label is lower case, and ``-``, ``_``
    become ``.``; when that loses something (``V1`` vs ``v1``, ``a-b`` vs
    ``a.b``) eight hex digits of the tag's sha1 are appended, so every tag
    gets its own version.  A version with a label already gets
    ``.tag.<tag>`` added to it.
    """
    return str(Version(version + tag_build(version, tag)))


def tag_build(version, tag):
    """What :func:`tag_version` appends to ``version`` (setuptools'
    ``tag_build``)."""
    label = re.sub(r'[^a-z0-9]+', '.', tag.lower()).strip('.')
    if label != tag:
        label += '.' + hashlib.sha1(tag.encode('utf-8')).hexdigest()[:8]
    return '%stag.%s' % ('.' if '+' in version else '+', label)


def start_develop_builds(distributions, directory):
    """Start the sdist builds of the develop packages; they run while
    the caller pools the other archives.  Their work directories are
    ``directory/.sdist-*.tmp``: what a killed run leaves there goes with
    the next run's :func:`~collective.safedeploy.core.fsutil.empty_trash`.
    """
    builds = []
    try:
        for dist in distributions:
            if dist['develop']:
                builds.append(SdistBuild(dist, directory))
    except BaseException:
        for build in builds:
            build.cleanup()
        raise
    return builds


def finish_develop_builds(builds):
    """Wait for the builds; each dist gets its ``file`` and ``sha256``.
    Returns the built files' paths."""
    paths = []
    for build in builds:
        archive = build.finish()
        build.dist.update(file=os.path.basename(archive),
                          sha256=sha256(archive), archive=None)
        paths.append(archive)
    return paths


def _run_hook(cmd, cwd=None, extra_environ=None):
    """pyproject_hooks' runner, through the one command runner (a failure
    is one line)."""
    env = dict(os.environ, **(extra_environ or {}))
    commands.run(cmd, what='the sdist build in %s' % cwd, cwd=cwd, env=env)


class SdistBuild:
    """The sdist of a develop package, with the version of its tag.

    The source is copied aside (the release's frozen copy stays
    untouched) and setuptools' ``[egg_info] tag_build`` appends the local
    label; setuptools writes that setting into the sdist's setup.cfg, so
    whoever builds the sdist later gets the same version.  The build runs
    without isolation (no download of build requirements), so only
    setuptools projects whose build requirements are installed work.
    It runs in a thread, through pyproject_hooks.
    """

    def __init__(self, dist, directory):
        import pyproject_hooks
        self.dist = dist
        source = dist['source']
        backend = build_backend(source)
        if not backend.startswith('setuptools.build_meta'):
            raise IndexFailure(
                'develop package %s uses the build backend %s; only '
                'setuptools can give it a version per release' % (
                    source, backend))
        self.work = tempfile.mkdtemp(prefix='.sdist-', suffix='.tmp',
                                     dir=directory)
        copy = os.path.join(self.work, 'src')
        shutil.copytree(source, copy, symlinks=True,
                        ignore=shutil.ignore_patterns(
                            '.git', '*.egg-info', 'build', 'dist',
                            '__pycache__'))
        setup_cfg = os.path.join(copy, 'setup.cfg')
        parser = configparser.RawConfigParser()
        parser.read(setup_cfg)
        if not parser.has_section('egg_info'):
            parser.add_section('egg_info')
        parser.set('egg_info', 'tag_build', dist['tag_build'])
        parser.set('egg_info', 'tag_date', '0')
        with open(setup_cfg, 'w') as f:
            parser.write(f)
        self.out = os.path.join(self.work, 'dist')
        os.mkdir(self.out)
        hooks = pyproject_hooks.BuildBackendHookCaller(
            copy, backend, runner=_run_hook)
        self.task = fsutil.Background(hooks.build_sdist, self.out)

    def finish(self):
        source, version = self.dist['source'], self.dist['version']
        try:
            name = self.task.wait()
        except CommandFailed as e:
            raise IndexFailure('building the sdist of %s failed: %s' % (
                source, str(e).split(': ', 1)[-1]))
        except Exception as e:
            raise IndexFailure('building the sdist of %s failed: %s' % (
                source, e))
        if Version(_sdist_version(name)) != Version(version):
            raise IndexFailure('the sdist of %s came out as %s, not version '
                               '%s' % (source, name, version))
        return os.path.join(self.out, name)

    def cleanup(self):
        try:
            self.task.wait()
        except BaseException:
            pass
        shutil.rmtree(self.work, ignore_errors=True)


def build_backend(source):
    pyproject = os.path.join(source, 'pyproject.toml')
    if os.path.exists(pyproject):
        try:
            import tomllib
        except ImportError:  # Python 3.10
            with open(pyproject) as f:
                found = re.search(r'^build-backend\s*=\s*["\']([^"\']+)',
                                  f.read(), re.M)
            return found.group(1) if found else 'setuptools.build_meta'
        with open(pyproject, 'rb') as f:
            data = tomllib.load(f)
        backend = data.get('build-system', {}).get('build-backend')
        if backend:
            return backend
    return 'setuptools.build_meta:__legacy__'


def _sdist_version(filename):
    return archive_key(filename)[1]
