"""Versioned package indexes: one per release, built with compoze from a
shared pool, so that any release can be rebuilt exactly, offline.

The pool and the indexes are laid out as :mod:`.records` shows.

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

(One module on purpose: the five steps above, in that order, and the
helpers only they use; the records, the pool and the compoze call are
in :mod:`.records`, :mod:`.pool` and :mod:`.compoze`.)
"""
import configparser
import datetime
import logging
import os
import shutil
import sys
import tempfile
import time

from packaging.utils import canonicalize_name
from packaging.version import Version

from ..core import commands
from ..core import fsutil
from ..core.errors import ConfigurationError
from ..core.errors import Refused
from ..core.errors import SafeDeployError
from ..core.fsutil import sha256
from ..core.store import validate_name
from ..release.distributions import archive_key
from .compoze import build_index
from .pool import _store
from .pool import claim_pool
from .pool import add_to_pool
from .pool import link
from .records import CONFIGURATION
from .records import IndexFailure
from .records import VERSIONS
from .records import read_record
from .records import store
from .sdist import finish_develop_builds
from .sdist import start_develop_builds
from .sdist import tag_build
from .sdist import tag_version

logger = logging.getLogger('collective.safedeploy')

MODES = ('required', 'best-effort', 'off')


# -- publishing -----------------------------------------------------------

def publish(tag, manifest, release_dir, pool_dir, indexes_dir,
            mode='required', configuration=None, download_cache=None,
            fetch=False, find_links=()):
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
                          configuration, download_cache, fetch, find_links)
        logger.info('release %s: package index %s (%d distributions) in '
                    '%.2f s', tag, os.path.join(indexes_dir, tag),
                    len(record['distributions']),
                    time.perf_counter() - started)
        return record
    except (SafeDeployError, OSError, ValueError) as e:
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
    """What the release extension calls once a release is built (the
    directories and the mode come from [safedeploy]:
    ``indexes-directory``, ``pool-directory``, ``index``,
    ``index-fetch``)."""
    return publish(
        settings.tag, manifest,
        os.path.join(settings.releases_directory, settings.tag),
        settings.pool_directory, settings.indexes_directory,
        mode=settings.index,
        download_cache=buildout['buildout'].get('download-cache') or None,
        fetch=settings.index_fetch,
        find_links=local_find_links(buildout))


def local_find_links(buildout):
    """The local directories of buildout's ``find-links`` (archives an
    egg may have been unpacked from)."""
    found = []
    for where in buildout['buildout'].get('find-links', '').split():
        if where.startswith('file://'):
            where = where[len('file://'):]
        if '://' not in where and os.path.isdir(where):
            found.append(where)
    return found


def _publish(tag, manifest, release_dir, pool_dir, indexes_dir,
             configuration, download_cache, fetch, find_links=()):
    validate_name(tag)
    root = (manifest.get('buildout-directory')
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

    indexes = store(indexes_dir)
    with indexes.lock('a package index build or gc'):
        indexes.recover()
        if indexes.entry(tag) == 'complete':
            return _same_as_published(tag, os.path.join(indexes_dir, tag),
                                      distributions)
        staging = indexes.stage(tag, distributions=len(distributions))
        builds = []
        try:
            builds = start_develop_builds(distributions, indexes_dir)
            fetch_environment(distributions, pool_dir, download_cache, fetch,
                              find_links)
            for dist in distributions:
                if dist['file']:
                    add_to_pool(dist, pool_dir, indexes_dir)
                    link(pool_dir, dist['file'], staging)
            for build, built in zip(builds, finish_develop_builds(builds)):
                add_to_pool(build.dist, pool_dir, indexes_dir, built=built)
                link(pool_dir, build.dist['file'], staging)
            built = build_index(staging, {
                d['file']: d['sha256'] for d in distributions if d['file']})
            check_index(tag, distributions, built)
            store_configuration(configuration, staging)
            fsutil.atomic_write(os.path.join(staging, VERSIONS), versions)
            record = indexes.complete(tag, dict(
                tag=tag, created=_now(), distributions=distributions,
                configuration=sorted(configuration)))
        except BaseException as e:
            indexes.mark_failed(tag, str(e) or type(e).__name__)
            try:
                indexes.discard(tag, 'its build failed')
            except Exception:
                pass      # the next build removes it
            raise
        finally:
            for build in builds:
                build.cleanup()
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
            # an egg unpacked before the download cache kept its archive
            # (or before the buildout had one): looked up by
            # :func:`fetch_environment`, fetched with index-fetch
            entry['egg'] = dist.get('location')
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
                      fetch=False, find_links=()):
    """Find archives for the environment's own distributions (setuptools,
    zc.lockfile, ...: buildout took them from its venv, so the download
    cache may not have them): in the pool, in the download cache, and
    with ``fetch`` by ``pip download`` (pip's own configuration applies:
    index-url, find-links, no-index).  What is not found is only logged:
    buildout rebuilds take those from the venv; pip users need them."""
    wanted = [d for d in distributions if (d['environment'] or d.get('egg'))
              and not d['file']]
    if not wanted:
        return
    places = [pool_dir]
    if download_cache:
        places.append(os.path.join(download_cache, 'dist'))
    places.extend(find_links)
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
    missing_env = [d for d in missing if not d.get('egg')]
    if missing_env and not fetch:
        logger.info('not in the index (taken from the environment buildout '
                    'runs in): %s', ', '.join(
                        '%s %s' % (d['name'], d['version'])
                        for d in missing_env))
    if missing and fetch:
        claim_pool(pool_dir)
        work = tempfile.mkdtemp(prefix='.fetch-', suffix='.tmp', dir=pool_dir)
        try:
            for dist in missing:
                p = commands.run(
                    [sys.executable, '-m', 'pip', 'download', '--no-deps',
                     '--disable-pip-version-check', '--quiet', '--dest', work,
                     '%s==%s' % (dist['name'], dist['version'])],
                    check=False)
                if p.returncode and not dist.get('egg'):
                    logger.warning(
                        'no archive of %s %s (taken from the environment '
                        'buildout runs in); pip users of the index need it '
                        'installed', dist['name'], dist['version'])
            for name in os.listdir(work):
                key = archive_key(name)
                if key and key not in found:
                    target = os.path.join(pool_dir, name)
                    if not os.path.exists(target):
                        _store(os.path.join(work, name), target)
                    found[key] = target
        finally:
            shutil.rmtree(work, ignore_errors=True)
    lost = []
    for dist in wanted:
        key = (canonicalize_name(dist['name']), str(Version(dist['version'])))
        if key in found:
            dist.update(file=os.path.basename(found[key]),
                        sha256=sha256(found[key]), archive=found[key])
        elif dist.get('egg'):
            lost.append(dist)
        dist.pop('egg', None)
    if lost:
        # advice that works when followed: nothing to delete (the eggs
        # are shared with the releases already built)
        raise IndexFailure(
            '%s: no archive in the download cache or the pool (%s was '
            'installed before the download cache kept archives); set '
            '[safedeploy] index-fetch = true to download %s, or copy %s '
            'into %s, and run bin/buildout again' % (
                ', '.join('%s %s' % (d['name'], d['version']) for d in lost),
                'its egg' if len(lost) == 1 else 'their eggs',
                'it' if len(lost) == 1 else 'them',
                'its archive' if len(lost) == 1 else 'their archives',
                os.path.join(download_cache, 'dist') if download_cache
                else pool_dir))


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


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='seconds')
