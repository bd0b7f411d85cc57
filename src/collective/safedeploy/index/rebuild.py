"""Rebuilding a release from its index, offline, and checking it used the
recorded versions."""
import glob
import logging
import os
import shutil
import sys

import pkginfo

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion
from packaging.version import Version

from ..core import commands
from ..core.errors import ConfigurationError
from ..core.errors import Refused
from .records import CONFIGURATION
from .records import IndexFailure
from .records import NO_HOSTS
from .records import VERSIONS
from .records import index_path
from .records import read_record

logger = logging.getLogger('collective.safedeploy')


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
    p = commands.run([buildout, '-c', config], cwd=directory, env=env,
                     timeout=timeout, check=False)
    p.stdout = (p.stdout or '') + (p.stderr or '')
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
            info = pkginfo.Distribution()
            with open(metadata[0], encoding='utf-8') as f:
                info.parse(f.read())
            found[canonicalize_name(info.name)] = info.version
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
