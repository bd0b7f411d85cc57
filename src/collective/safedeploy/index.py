"""Versioned package indexes: one per release, built with compoze from a
shared pool, so that any release can be rebuilt exactly, offline.

::

    pool/                          every archive any release used, each once
      zodb-6.4-py3-none-any.whl      (read-only; never overwritten)
      hello-0.1+tag.v1.tar.gz        a develop package, released for tag v1
    indexes/
      .journal  .lock
      v1/
        safedeploy-index.json      what the index holds: name, version,
                                   file, sha256 of every distribution
        versions.cfg               the [versions] the release was built with
        buildout/buildout.cfg      the configuration it was built from
        zodb-6.4-py3-none-any.whl -> ../../pool/zodb-6.4-py3-none-any.whl
        simple/zodb/index.html     compoze's index, PEP 503 names

Publishing a release (:func:`publish`) runs these steps in order:

1. *record*: sort the distributions buildout used into archives (from the
   download cache), develop packages and the environment's own (the
   buildout venv: setuptools, zc.buildout, ...);
2. *pin*: write ``releases/<tag>/versions.cfg``;
3. *release develop packages*: build each as an sdist whose version is
   unique to the tag (:func:`tag_version`);
4. *pool*: add every archive to the pool (:func:`add_to_pool`);
5. *index*: link the tag's files from the pool into a staging directory,
   build ``simple/`` there with compoze, write the record, and rename the
   directory to ``indexes/<tag>`` -- a complete index or none.

The pool only grows (:func:`prune` keeps files); ``bin/index --gc``
removes the files no index links any more.
"""
import configparser
import datetime
import email.parser
import glob
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion
from packaging.version import Version

from . import cli
from . import fsutil
from .compozeshim import build_index
from .compozeshim import sha256
from .errors import ConfigurationError
from .errors import NotFound
from .errors import Refused
from .errors import SafeDeployError
from .generations import validate_name
from .journal import Journal
from .lock import locked

logger = logging.getLogger('collective.safedeploy')

RECORD = 'safedeploy-index.json'
VERSIONS = 'versions.cfg'
CONFIGURATION = 'buildout'
MODES = ('required', 'best-effort', 'off')
# a host pattern no real host matches: buildout's allow-hosts with it
# refuses every URL but file: ones
NO_HOSTS = '*.invalid'
ARCHIVE = re.compile(r'.*(\.whl|\.tar\.gz|\.tgz|\.tar\.bz2|\.tbz|\.zip)\Z')


class IndexFailure(SafeDeployError):
    """A release's index could not be built, or does not verify."""


# -- publishing -----------------------------------------------------------

def publish(tag, manifest, release_dir, pool_dir, indexes_dir,
            mode='required', configuration=None, download_cache=None,
            fetch=False):
    """Publish the release ``tag``'s distributions as ``indexes/<tag>``.

    ``manifest['distributions']`` lists what buildout used (dicts with
    name, version, location, archive, sha256, develop, source).
    ``configuration`` maps names to the buildout configuration files to
    record for a rebuild (default: the release's ``effective.cfg`` if it
    has one, else the buildout's ``buildout.cfg`` and what it extends).
    ``download_cache`` is buildout's download cache, searched for
    archives of the environment's own distributions; with ``fetch`` true,
    those not found are fetched with ``pip download``.
    With ``mode='required'`` any failure raises a SafeDeployError (the
    release is not published); ``'best-effort'`` logs a warning and
    returns None; ``'off'`` does nothing.  Returns the index record.
    """
    if mode not in MODES:
        raise ConfigurationError(
            'index = %s is not one of %s; fix [safedeploy] index' % (
                mode, ' | '.join(MODES)))
    if mode == 'off':
        return None
    started = time.perf_counter()
    try:
        record = _publish(tag, manifest, release_dir, pool_dir, indexes_dir,
                          configuration, download_cache, fetch)
        logger.info('release %s: package index %s (%d distributions) in '
                    '%.2f s', tag, os.path.join(indexes_dir, tag),
                    len(record['distributions']),
                    time.perf_counter() - started)
        return record
    except (SafeDeployError, OSError, ValueError,
            subprocess.SubprocessError) as e:
        if mode == 'required':
            if isinstance(e, SafeDeployError):
                raise
            raise IndexFailure(
                'the package index of release %s could not be built: %s; '
                'fix that, or set [safedeploy] index = best-effort' % (
                    tag, e))
        logger.warning('release %s: no package index (%s); it cannot be '
                       'rebuilt offline', tag, e)
        return None


def publish_release(settings, manifest, buildout):
    """What the release extension calls once a release is built.

    ``[safedeploy]`` options read here (defaults in brackets):
    ``indexes-directory`` [${buildout:directory}/indexes],
    ``pool-directory`` [${buildout:directory}/pool],
    ``index-fetch`` [false]: fetch archives of the environment's own
    distributions with pip (network) when the download cache lacks them.
    """
    options = buildout['safedeploy']
    root = settings.buildout_directory

    def directory(name, default):
        value = (options.get(name) or default).replace(
            '${buildout:directory}', root)
        return os.path.normpath(os.path.join(root, value))

    fetch = (options.get('index-fetch') or 'false').strip().lower()
    if fetch not in ('true', 'false', 'yes', 'no', 'on', 'off', '1', '0'):
        raise ConfigurationError(
            'invalid value for safedeploy:index-fetch: %r; use true or '
            'false' % fetch)
    return publish(
        settings.tag, manifest,
        os.path.join(settings.releases_directory, settings.tag),
        directory('pool-directory', 'pool'),
        directory('indexes-directory', 'indexes'),
        mode=settings.index,
        download_cache=buildout['buildout'].get('download-cache') or None,
        fetch=fetch in ('true', 'yes', 'on', '1'))


def _publish(tag, manifest, release_dir, pool_dir, indexes_dir,
             configuration, download_cache, fetch):
    validate_name(tag)
    root = (manifest.get('buildout-directory')
            or manifest.get('buildout_directory')
            or os.path.dirname(os.path.dirname(os.path.abspath(release_dir))))
    distributions = record_distributions(tag, manifest['distributions'])
    if configuration is None:
        effective = os.path.join(release_dir, 'effective.cfg')
        if os.path.exists(effective):
            configuration = {'effective.cfg': effective}
        else:
            configuration = find_configuration(
                os.path.join(root, 'buildout.cfg'))
    if not isinstance(configuration, dict):
        configuration = {_relative(p, root): os.path.join(root, p)
                         for p in configuration}
    versions = versions_cfg(tag, distributions)
    fsutil.atomic_write(os.path.join(release_dir, VERSIONS), versions)

    os.makedirs(indexes_dir, exist_ok=True)
    with locked(os.path.join(indexes_dir, '.lock'),
                'a package index build or gc'):
        final = os.path.join(indexes_dir, tag)
        if os.path.isdir(final):
            return _same_as_published(tag, final, distributions)
        fsutil.empty_trash(indexes_dir)
        staging = os.path.join(indexes_dir, '.%s.%s.tmp' % (
            tag, uuid.uuid4().hex[:8]))
        os.mkdir(staging)
        builds = []
        try:
            builds = start_develop_builds(distributions, indexes_dir)
            fetch_environment(distributions, pool_dir, download_cache, fetch)
            for dist in distributions:
                if dist['file']:
                    add_to_pool(dist, pool_dir)
                    link(pool_dir, dist['file'], staging)
            finish_develop_builds(builds, staging)
            for build in builds:
                add_to_pool(build.dist, pool_dir)
                link(pool_dir, build.dist['file'], staging)
            built = build_index(staging, {
                d['file']: d['sha256'] for d in distributions if d['file']})
            check_index(tag, distributions, built)
            store_configuration(configuration, staging)
            fsutil.atomic_write(os.path.join(staging, VERSIONS), versions)
            record = dict(tag=tag, created=_now(),
                          distributions=distributions,
                          configuration=sorted(configuration))
            fsutil.atomic_write_json(os.path.join(staging, RECORD), record)
            fsutil.fsync_directory(staging)
            os.rename(staging, final)
            fsutil.fsync_directory(indexes_dir)
        except BaseException:
            fsutil.remove_tree(staging)
            raise
        finally:
            for build in builds:
                build.cleanup()
        Journal(os.path.join(indexes_dir, '.journal')).append(
            'published', name=tag, distributions=len(distributions))
    return record


def record_distributions(tag, distributions):
    """What the index of ``tag`` holds: one dict per distribution with
    name, version, file (in the pool; None for the environment's own),
    sha256, develop, environment and, for develop packages, the
    source directory and the version it had there."""
    result = {}
    for dist in distributions:
        name = dist['name']
        key = canonicalize_name(name)
        entry = dict(name=name, version=str(dist['version']), file=None,
                     sha256=None, develop=bool(dist.get('develop')),
                     environment=False)
        if entry['develop']:
            source = project_directory(dist.get('source')
                                       or dist.get('location'))
            if not source:
                raise IndexFailure(
                    'develop package %s of release %s has no project '
                    'directory with pyproject.toml or setup.py at %s; it '
                    'cannot be released into the index' % (
                        name, tag, dist.get('source') or dist.get('location')))
            entry['source'] = source
            entry['develop_version'] = entry['version']
            entry['tag_build'] = tag_build(entry['version'], tag)
            entry['version'] = tag_version(entry['version'], tag)
        elif dist.get('archive'):
            archive = dist['archive']
            if not os.path.isfile(archive):
                raise IndexFailure(
                    'the archive of %s %s is missing (%s); run bin/buildout '
                    'again to download it' % (name, entry['version'],
                                              archive))
            digest = sha256(archive)
            if dist.get('sha256') and dist['sha256'] != digest:
                raise IndexFailure(
                    '%s changed since buildout installed it (sha256 %s, '
                    'recorded %s); remove it from the download cache and '
                    'run bin/buildout again' % (archive, digest,
                                                dist['sha256']))
            entry.update(file=os.path.basename(archive), sha256=digest,
                         archive=archive)
        elif in_environment(dist.get('location')):
            entry['environment'] = True
        else:
            raise IndexFailure(
                '%s %s has no archive in the download cache (it was '
                'installed into the eggs directory before the cache had '
                'it); remove %s and run bin/buildout again' % (
                    name, entry['version'], dist.get('location')))
        if key in result and result[key]['version'] != entry['version']:
            raise IndexFailure('release %s used two versions of %s (%s, %s)'
                              % (tag, name, result[key]['version'],
                                 entry['version']))
        result[key] = entry
    return [result[k] for k in sorted(result)]


def project_directory(path):
    """The project directory (with pyproject.toml or setup.py) at or
    above ``path``: an egg-link names the directory put on sys.path,
    which for a src layout is the ``src`` directory inside the project."""
    if not path or not os.path.isdir(path):
        return None
    path = os.path.abspath(path)
    for _ in range(3):
        if any(os.path.exists(os.path.join(path, name))
               for name in ('pyproject.toml', 'setup.py')):
            return path
        path = os.path.dirname(path)
    return None


def in_environment(location):
    """True for a distribution of the Python environment buildout runs
    from (its site-packages)."""
    if not location:
        return False
    if os.path.basename(os.path.normpath(location)) in (
            'site-packages', 'dist-packages'):
        return True
    return any(fsutil.is_within(location, prefix)
               for prefix in {sys.prefix, sys.base_prefix})


def fetch_environment(distributions, pool_dir, download_cache=None,
                      fetch=False):
    """Find archives for the environment's own distributions (setuptools,
    zc.lockfile, ...: buildout took them from its venv, so the download
    cache may not have them): in the pool, in the download cache, and
    with ``fetch`` by ``pip download`` (pip's own configuration applies:
    index-url, find-links, no-index).  What is not found is only logged:
    buildout rebuilds take those from the venv; pip users need them."""
    wanted = [d for d in distributions if d['environment'] and not d['file']]
    if not wanted:
        return
    places = [pool_dir]
    if download_cache:
        places.append(os.path.join(download_cache, 'dist'))
    found = {}
    for place in places:
        for name in (os.listdir(place) if os.path.isdir(place) else ()):
            key = archive_key(name)
            if key and key not in found:
                found[key] = os.path.join(place, name)
    missing = []
    for dist in wanted:
        key = (canonicalize_name(dist['name']), str(Version(dist['version'])))
        if key not in found:
            missing.append(dist)
    if missing and not fetch:
        logger.info('not in the index (taken from the environment buildout '
                    'runs in): %s', ', '.join(
                        '%s %s' % (d['name'], d['version']) for d in missing))
    elif missing:
        os.makedirs(pool_dir, exist_ok=True)
        work = tempfile.mkdtemp(prefix='.fetch-', suffix='.tmp', dir=pool_dir)
        try:
            for dist in missing:
                p = subprocess.run(
                    [sys.executable, '-m', 'pip', 'download', '--no-deps',
                     '--disable-pip-version-check', '--quiet', '--dest', work,
                     '%s==%s' % (dist['name'], dist['version'])],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    text=True)
                if p.returncode:
                    logger.warning(
                        'no archive of %s %s (taken from the environment '
                        'buildout runs in); pip users of the index need it '
                        'installed', dist['name'], dist['version'])
            for name in os.listdir(work):
                key = archive_key(name)
                if key and key not in found:
                    target = os.path.join(pool_dir, name)
                    if not os.path.exists(target):
                        os.makedirs(pool_dir, exist_ok=True)
                        _store(os.path.join(work, name), target)
                    found[key] = target
        finally:
            shutil.rmtree(work, ignore_errors=True)
    for dist in wanted:
        key = (canonicalize_name(dist['name']), str(Version(dist['version'])))
        if key in found:
            dist.update(file=os.path.basename(found[key]),
                        sha256=sha256(found[key]), archive=found[key])


def archive_key(filename):
    """(normalised name, version) of a wheel or sdist file name."""
    from packaging.utils import parse_sdist_filename
    from packaging.utils import parse_wheel_filename
    try:
        if filename.endswith('.whl'):
            name, version = parse_wheel_filename(filename)[:2]
        else:
            name, version = parse_sdist_filename(filename)
    except Exception:
        return None
    return canonicalize_name(name), str(version)


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
    import hashlib
    label = re.sub(r'[^a-z0-9]+', '.', tag.lower()).strip('.')
    if label != tag:
        label += '.' + hashlib.sha1(tag.encode('utf-8')).hexdigest()[:8]
    return '%stag.%s' % ('.' if '+' in version else '+', label)


def versions_cfg(tag, distributions):
    lines = ['# The distributions release %s was built with, pinned.' % tag,
             '# Develop packages are pinned to the sdist released for '
             'it into', '# its package index.', '[versions]']
    for dist in sorted(distributions, key=lambda d: d['name'].lower()):
        if dist['develop']:
            lines.append('# %s: develop package, %s in its checkout' % (
                dist['name'], dist['develop_version']))
        lines.append('%s = %s' % (dist['name'], dist['version']))
    return '\n'.join(lines) + '\n'


def start_develop_builds(distributions, directory):
    """Start the sdist builds of the develop packages; they run while
    the caller pools the other archives.  Their work directories are
    ``directory/.sdist-*.tmp``: what a killed run leaves there goes with
    the next run's :func:`fsutil.empty_trash`."""
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


def finish_develop_builds(builds, directory):
    for build in builds:
        archive = build.finish(directory)
        build.dist.update(file=os.path.basename(archive),
                          sha256=sha256(archive), archive=None)


class SdistBuild:
    """The sdist of a develop package, with the version of its tag.

    The source is copied aside (the release's frozen copy stays
    untouched) and setuptools' ``[egg_info] tag_build`` appends the local
    label; setuptools writes that setting into the sdist's setup.cfg, so
    whoever builds the sdist later gets the same version.  The build runs
    without isolation (no download of build requirements), so only
    setuptools projects whose build requirements are installed work.
    """

    def __init__(self, dist, directory):
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
        module, _, attr = backend.partition(':')
        code = ('import sys, importlib; b = importlib.import_module(%r)%s; '
                'print(b.build_sdist(sys.argv[1]))' % (
                    module, ('.' + attr) if attr else ''))
        self.process = subprocess.Popen(
            [sys.executable, '-c', code, self.out], cwd=copy,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def finish(self, directory):
        output, _ = self.process.communicate()
        source, version = self.dist['source'], self.dist['version']
        if self.process.returncode:
            tail = ' | '.join(output.strip().splitlines()[-3:])
            raise IndexFailure('building the sdist of %s failed: %s' % (
                source, tail))
        name = output.strip().splitlines()[-1]
        if Version(_sdist_version(name)) != Version(version):
            raise IndexFailure('the sdist of %s came out as %s, not version '
                               '%s' % (source, name, version))
        target = os.path.join(directory, name)
        shutil.move(os.path.join(self.out, name), target)
        return target

    def cleanup(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
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


# -- the pool ---------------------------------------------------------------

def add_to_pool(dist, pool_dir):
    """Store ``dist['archive']`` (or the built file) in the pool, once.

    A file already there with the same content is kept; one with other
    content is an error, never overwritten.  A new file is copied under a
    temporary name, fsynced, made read-only and hard-linked to its name
    (which fails instead of replacing a file that appeared meanwhile).
    """
    os.makedirs(pool_dir, exist_ok=True)
    name = dist['file']
    source = dist.get('archive')
    target = os.path.join(pool_dir, name)
    if os.path.exists(target):
        pooled = sha256(target)
        if pooled != dist['sha256']:
            raise Refused(
                'the pool already has a different %s (sha256 %s, this one '
                '%s); a file name is never reused for other content: rename '
                'or rebuild the distribution with a new version, or remove '
                'the pool file if it is corrupt (bin/index --verify shows '
                'which releases use it)' % (target, pooled, dist['sha256']))
        return target
    if source is None:  # a develop package's sdist, built for this release
        return None
    _store(source, target)
    return target


def _store(source, target):
    directory = os.path.dirname(target)
    tmp = os.path.join(directory, '.%s.%s.tmp' % (
        os.path.basename(target), uuid.uuid4().hex[:8]))
    try:
        shutil.copyfile(source, tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o444)
        os.link(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    fsutil.fsync_directory(directory)


def link(pool_dir, name, directory):
    """Link the pool's ``name`` into ``directory``; a file built there
    (a develop package's sdist) moves into the pool first."""
    here = os.path.join(directory, name)
    pooled = os.path.join(pool_dir, name)
    if os.path.exists(here) and not os.path.islink(here):
        if not os.path.exists(pooled):
            _store(here, pooled)
        elif sha256(here) != sha256(pooled):
            raise Refused('the pool already has a different %s; a file name '
                          'is never reused for other content' % pooled)
        os.unlink(here)
    os.symlink(os.path.relpath(pooled, directory), here)


# -- the configuration a release was built from ------------------------------

def find_configuration(path):
    """``path`` and the local files it extends, recursively."""
    found = []

    def visit(p):
        p = os.path.abspath(p)
        if p in found or not os.path.isfile(p):
            return
        found.append(p)
        parser = configparser.RawConfigParser(strict=False,
                                              interpolation=None)
        try:
            parser.read(p)
            extends = parser.get('buildout', 'extends', fallback='')
        except configparser.Error:
            return
        for item in extends.split():
            if '://' in item or '$' in item:
                continue
            visit(os.path.join(os.path.dirname(p), item))

    visit(path)
    if not found:
        raise IndexFailure('no buildout configuration at %s to record' % path)
    return found


def _relative(path, root):
    if fsutil.is_within(path, root):
        return os.path.relpath(os.path.realpath(path),
                               os.path.realpath(root))
    return os.path.basename(path)


def store_configuration(configuration, directory):
    for name, path in sorted(configuration.items()):
        target = os.path.join(directory, CONFIGURATION, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(path, target)


def check_index(tag, distributions, built):
    """Every file of the release is in compoze's index, under its name."""
    expected = {canonicalize_name(d['name']): d['file']
                for d in distributions if d['file']}
    files = {f: p for p, fs in built.items() for f in fs}
    for name, filename in expected.items():
        if files.get(filename) != name:
            raise IndexFailure('compoze indexed %s as %r, not as %s' % (
                filename, files.get(filename), name))
    if set(files) != set(expected.values()):
        raise IndexFailure('the index of %s has other files than its '
                          'distributions: %s' % (
                              tag, sorted(set(files) - set(expected.values()))))


def _same_as_published(tag, final, distributions):
    record = read_record(final)
    old = {canonicalize_name(d['name']): d['version']
           for d in record['distributions']}
    new = {canonicalize_name(d['name']): d['version'] for d in distributions}
    if old != new:
        changed = sorted(k for k in set(old) | set(new)
                         if old.get(k) != new.get(k))
        raise Refused(
            'release %s already has a package index with other versions '
            '(%s); a tag names one set of distributions: use a new tag' % (
                tag, ', '.join('%s %s -> %s' % (k, old.get(k), new.get(k))
                               for k in changed)))
    logger.info('release %s: its package index exists and matches', tag)
    return record


# -- reading, verifying, pruning --------------------------------------------

def read_record(path):
    try:
        with open(os.path.join(path, RECORD)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def tags(indexes_dir):
    """The tags with a complete index, in the order they were published."""
    try:
        names = os.listdir(indexes_dir)
    except FileNotFoundError:
        return []
    names = [n for n in names if not n.startswith('.')
             and read_record(os.path.join(indexes_dir, n)) is not None]
    order = [e['name'] for e in Journal(
        os.path.join(indexes_dir, '.journal')).entries()
        if e['event'] == 'published']
    position = {n: i for i, n in enumerate(order)}
    return sorted(names, key=lambda n: (position.get(n, len(order)), n))


def index_path(indexes_dir, tag):
    validate_name(tag)
    path = os.path.join(indexes_dir, tag)
    if read_record(path) is None:
        raise NotFound('no package index for release %s in %s; bin/index '
                       '--list shows the ones there are' % (tag, indexes_dir))
    return path


def verify(indexes_dir, pool_dir, tag):
    """Check every file of ``tag``'s index: present, linked from the pool,
    listed by the simple index, with its recorded sha256.  Returns a list
    of (file, problem or None)."""
    path = index_path(indexes_dir, tag)
    record = read_record(path)
    results = []
    for dist in record['distributions']:
        if not dist['file']:
            continue
        name = dist['file']
        here = os.path.join(path, name)
        pooled = os.path.join(pool_dir, name)
        page = os.path.join(path, 'simple', canonicalize_name(dist['name']),
                            'index.html')
        problem = None
        if not os.path.exists(pooled):
            problem = 'missing from the pool'
        elif not os.path.exists(here) or not os.path.samefile(here, pooled):
            problem = 'not linked from the pool'
        elif sha256(pooled) != dist['sha256']:
            problem = 'sha256 differs from the recorded %s (corrupted)' % (
                dist['sha256'])
        else:
            try:
                with open(page) as f:
                    if '%s#sha256=%s' % (name, dist['sha256']) not in f.read():
                        problem = 'not listed in the simple index'
            except OSError:
                problem = 'no simple index page for %s' % dist['name']
        results.append((name, problem))
    return results


def prune(tag, indexes_dir, keep_index=True):
    """A release was pruned.  Its index stays (so that bin/index --rebuild
    can recreate it) unless ``keep_index`` is false; pool files are never
    removed here, only by :func:`gc`."""
    path = os.path.join(indexes_dir, validate_name(tag))
    if not os.path.isdir(path):
        return False
    if keep_index:
        Journal(os.path.join(indexes_dir, '.journal')).append(
            'release-pruned', name=tag)
        return False
    with locked(os.path.join(indexes_dir, '.lock'),
                'a package index build or gc'):
        fsutil.remove_tree(path)
        Journal(os.path.join(indexes_dir, '.journal')).append(
            'dropped', name=tag)
    return True


def gc(indexes_dir, pool_dir):
    """Remove pool files that no index links.  Returns their names.

    With no index at all it refuses: a wrong ``indexes`` directory would
    otherwise empty the pool."""
    if not os.path.isdir(indexes_dir):
        raise NotFound('no indexes directory %s; give the right one with '
                       '--indexes' % indexes_dir)
    with locked(os.path.join(indexes_dir, '.lock'),
                'a package index build or gc'):
        fsutil.empty_trash(indexes_dir)
        used = set()
        published = tags(indexes_dir)
        if not published and os.path.isdir(pool_dir) and any(
                ARCHIVE.match(n) for n in os.listdir(pool_dir)):
            raise Refused(
                'there is no package index in %s, so --gc would remove every '
                'file of the pool %s; check --indexes (or remove the pool '
                'yourself)' % (indexes_dir, pool_dir))
        for tag in published:
            for dist in read_record(os.path.join(indexes_dir, tag))[
                    'distributions']:
                if dist['file']:
                    used.add(dist['file'])
        removed = []
        if os.path.isdir(pool_dir):
            for name in sorted(os.listdir(pool_dir)):
                path = os.path.join(pool_dir, name)
                if name.startswith('.') and name.endswith('.tmp'):
                    if os.path.isdir(path):   # left by a killed run
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        os.unlink(path)
                elif name not in used and ARCHIVE.match(name):
                    os.unlink(path)
                    removed.append(name)
            fsutil.fsync_directory(pool_dir)
        Journal(os.path.join(indexes_dir, '.journal')).append(
            'gc', removed=len(removed))
    return removed


# -- rebuilding a release from its index ------------------------------------

REBUILD_CFG = '''\
# Rebuild of release {tag} from its package index, with no network.
[buildout]
extends =
    {configuration}
    safedeploy-versions.cfg
extensions =
develop =
versions = versions
find-links = {index}
index = {no_index}
allow-hosts = {no_hosts}
newest = false
show-picked-versions = true
update-versions-file =
install-from-cache = false
download-cache = {directory}/download-cache
eggs-directory = {directory}/eggs
develop-eggs-directory = {directory}/develop-eggs
bin-directory = {directory}/bin
parts-directory = {directory}/parts
installed = {directory}/.installed.cfg
directory = {directory}
safedeploy-root-bin-directory = {directory}/bin
'''


def rebuild(indexes_dir, tag, directory, buildout=None, timeout=3600):
    """Build release ``tag`` again into ``directory`` from its index only
    (buildout's find-links; no index, no host allowed), then compare the
    versions it used with the recorded ones.  Returns the comparison
    rows; raises when they differ or the build fails."""
    path = index_path(indexes_dir, tag)
    record = read_record(path)
    directory = os.path.abspath(directory)
    if os.path.exists(directory) and os.listdir(directory):
        raise Refused('%s is not empty; rebuild into a new or empty '
                      'directory' % directory)
    buildout = buildout or os.path.join(os.path.dirname(sys.executable),
                                        'buildout')
    if not os.path.exists(buildout):
        raise ConfigurationError('no buildout command at %s; pass '
                                 '--buildout PATH' % buildout)
    configuration = record.get('configuration') or []
    if not configuration:
        raise IndexFailure('the index of %s recorded no configuration; it '
                          'cannot be rebuilt' % tag)
    shutil.copytree(os.path.join(path, CONFIGURATION), directory,
                    dirs_exist_ok=True)
    shutil.copyfile(os.path.join(path, VERSIONS),
                    os.path.join(directory, 'safedeploy-versions.cfg'))
    os.makedirs(os.path.join(directory, '.no-index'), exist_ok=True)
    main_cfg = configuration[0]
    for preferred in ('buildout.cfg', 'effective.cfg'):
        if preferred in configuration:
            main_cfg = preferred
    config = os.path.join(directory, 'safedeploy-rebuild.cfg')
    with open(config, 'w') as f:
        f.write(REBUILD_CFG.format(
            tag=tag, configuration=main_cfg, index=os.path.abspath(path),
            no_index=os.path.join(directory, '.no-index'),
            no_hosts=NO_HOSTS, directory=directory))
    env = dict(os.environ, PIP_NO_INDEX='1', PIP_NO_BUILD_ISOLATION='0')
    env.pop('PYTHONPATH', None)
    logger.info('rebuilding %s into %s from %s', tag, directory, path)
    p = subprocess.run([buildout, '-c', config], cwd=directory, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout)
    with open(os.path.join(directory, 'safedeploy-rebuild.log'), 'w') as f:
        f.write(p.stdout)
    if p.returncode:
        tail = ' | '.join(p.stdout.strip().splitlines()[-2:])
        raise IndexFailure('rebuilding %s failed (%s); the whole output is in '
                          '%s' % (tag, tail, os.path.join(
                              directory, 'safedeploy-rebuild.log')))
    rows = compare(record['distributions'], installed_versions(directory))
    bad = [r for r in rows if not r['same']]
    if bad:
        raise IndexFailure('the rebuild of %s used other versions: %s' % (
            tag, ', '.join('%s %s (recorded %s)' % (
                r['name'], r['rebuilt'], r['recorded']) for r in bad)))
    return rows


def installed_versions(directory):
    """{normalised name: version} of the eggs a build put in
    ``directory/eggs`` (and its develop-eggs)."""
    found = {}
    patterns = ['eggs/*.egg', 'eggs/*/*.egg', 'develop-eggs/*.dist-info']
    for pattern in patterns:
        for egg in glob.glob(os.path.join(directory, pattern)):
            metadata = (glob.glob(os.path.join(egg, '*.dist-info', 'METADATA'))
                        + glob.glob(os.path.join(egg, 'EGG-INFO', 'PKG-INFO'))
                        + glob.glob(os.path.join(egg, 'METADATA')))
            if not metadata:
                continue
            with open(metadata[0], encoding='utf-8') as f:
                headers = email.parser.Parser().parse(f, headersonly=True)
            found[canonicalize_name(headers['Name'])] = headers['Version']
    return found


def compare(recorded, rebuilt):
    from importlib import metadata
    rows = []
    for dist in recorded:
        key = canonicalize_name(dist['name'])
        if dist['environment'] and key not in rebuilt:
            try:
                got = metadata.version(dist['name'])
            except metadata.PackageNotFoundError:
                got = None
            where = 'environment'
        else:
            got = rebuilt.get(key)
            where = 'index'
        rows.append(dict(name=dist['name'], recorded=dist['version'],
                         rebuilt=got, source=where,
                         same=_same_version(got, dist['version'])))
    return rows


def _same_version(a, b):
    if a is None or b is None:
        return False
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='seconds')


# -- bin/index ----------------------------------------------------------------

def parser(prog='index'):
    p = cli.ArgumentParser(
        prog=prog,
        description='The package indexes of the releases: list them, verify '
                    'them, rebuild a release from its index offline, and '
                    'collect unused pool files.')
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument('--list', action='store_true',
                      help='tags and their distributions')
    mode.add_argument('--verify', metavar='TAG',
                      help='check every file of TAG\'s index against its '
                           'recorded sha256')
    mode.add_argument('--rebuild', nargs=2, metavar=('TAG', 'DIR'),
                      help='build release TAG again into the new directory '
                           'DIR from its index only, and compare versions')
    mode.add_argument('--gc', action='store_true',
                      help='remove pool files no index uses any more')
    p.add_argument('--json', action='store_true',
                   help='with --list, --verify or --rebuild: print JSON')
    p.add_argument('--indexes', metavar='DIR',
                   help='the indexes directory (default: set by the recipe, '
                        'else ./indexes)')
    p.add_argument('--pool', metavar='DIR',
                   help='the pool directory (default: set by the recipe, '
                        'else ./pool)')
    p.add_argument('--buildout', metavar='PATH',
                   help='the buildout command --rebuild runs (default: the '
                        'one beside this Python)')
    p.add_argument('-v', '--verbose', action='count', default=0)
    p.add_argument('-q', '--quiet', action='store_true')
    return p


def main(argv=None, prog='index', **options):
    """``bin/index``; ``options`` (indexes, pool, buildout) come from the
    recipe and are overridden by the command line."""
    args = parser(prog).parse_args(argv)
    cli.setup_logging(args.verbose, args.quiet)
    indexes_dir = os.path.abspath(
        args.indexes or options.get('indexes') or 'indexes')
    pool_dir = os.path.abspath(args.pool or options.get('pool') or 'pool')
    buildout = args.buildout or options.get('buildout')
    return cli.run(prog, _dispatch, args, indexes_dir, pool_dir, buildout)


def _dispatch(args, indexes_dir, pool_dir, buildout):
    if args.list:
        return do_list(indexes_dir, args.json)
    if args.verify:
        return do_verify(indexes_dir, pool_dir, args.verify, args.json)
    if args.rebuild:
        return do_rebuild(indexes_dir, args.rebuild[0], args.rebuild[1],
                          buildout, args.json)
    return do_gc(indexes_dir, pool_dir)


def do_list(indexes_dir, as_json):
    result = []
    for tag in tags(indexes_dir):
        record = read_record(os.path.join(indexes_dir, tag))
        result.append(dict(tag=tag, created=record.get('created'),
                           distributions=[
                               {k: d.get(k) for k in (
                                   'name', 'version', 'file', 'sha256',
                                   'develop', 'environment')}
                               for d in record['distributions']]))
    if as_json:
        cli.print_json(result)
        return 0
    if not result:
        print('no package indexes in %s' % indexes_dir)
        return 0
    for i, item in enumerate(result):
        if i:
            print()
        print('%s  (%d distributions, %s)' % (
            item['tag'], len(item['distributions']), item['created']))
        rows = [dict(d, where='develop' if d['develop'] else
                     'environment' if d['environment'] else 'pool')
                for d in item['distributions']]
        cli.print_table(rows, [('name', '  name'), ('version', 'version'),
                               ('where', 'from'), ('file', 'file')])
    return 0


def do_verify(indexes_dir, pool_dir, tag, as_json):
    results = verify(indexes_dir, pool_dir, tag)
    bad = [(f, p) for f, p in results if p]
    if as_json:
        cli.print_json([dict(file=f, ok=p is None, problem=p)
                        for f, p in results])
    else:
        for name, problem in results:
            print('%-4s %s%s' % ('ok' if problem is None else 'BAD', name,
                                 '' if problem is None else ': ' + problem))
    if bad:
        raise IndexFailure(
            'the index of %s has %d bad file(s) out of %d: %s; restore them '
            'from a backup of the pool (or the download cache)' % (
                tag, len(bad), len(results),
                ', '.join('%s (%s)' % b for b in bad)))
    if not as_json:
        print('%s: all %d files verified' % (tag, len(results)))
    return 0


def do_rebuild(indexes_dir, tag, directory, buildout, as_json):
    rows = rebuild(indexes_dir, tag, directory, buildout)
    if as_json:
        cli.print_json(rows)
    else:
        cli.print_table(rows, [('name', 'name'), ('recorded', 'recorded'),
                               ('rebuilt', 'rebuilt'), ('source', 'from')])
        print('%s rebuilt into %s with the recorded versions' % (
            tag, directory))
    return 0


def do_gc(indexes_dir, pool_dir):
    removed = gc(indexes_dir, pool_dir)
    for name in removed:
        print('removed %s' % name)
    print('%d unused pool file(s) removed' % len(removed))
    return 0


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
