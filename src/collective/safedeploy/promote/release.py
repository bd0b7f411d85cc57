"""The release a promotion brings to a stage: the one current on the
previous stage, built from that release's own package index, offline.

Each set of the stage is a safedeploy site (a buildout directory with
``releases/`` and ``current``).  :func:`build` runs that site's own
bin/buildout on a configuration that extends the site's ``buildout.cfg``
(its own parts, ports and paths) with the release's recorded pins
(``versions.cfg`` of its index), and takes distributions from the index
only: ``find-links`` is the index, ``index`` an empty directory,
``allow-hosts`` a pattern no host matches, no develop packages (the
site's own checkouts would be built instead of the released ones), so
nothing is resolved again and nothing is fetched.  The release extension
builds, verifies, publishes and flips the release as for any tag; then
the versions the build used (the ``versions.cfg`` of the release's own
new index, which the next stage builds from) are compared with the
recorded ones.

A set whose ``current`` already is that release is left alone, so the
step is idempotent: a promotion killed during the build runs it again,
and the extension discards what the killed build left.
"""
import os

from ..core import commands
from ..core import fsutil
from ..core.errors import ConfigurationError
from ..core.errors import Refused
from ..index.records import VERSIONS
from ..index.records import IndexFailure
from ..index.records import NO_HOSTS
from ..index.records import index_path
from ..index.records import read_record

CONFIG = '.safedeploy-promote.cfg'
NO_INDEX = '.safedeploy-promote-no-index'

TEMPLATE = '''\
# Written by bin/promote: release {tag}, current on stage {previous},
# from its package index only.
[buildout]
extends =
    {configuration}
    {versions}
develop =
versions = versions
find-links = {index}
index = {no_index}
allow-hosts = {no_hosts}
newest = false
update-versions-file =

[safedeploy]
tag = {tag}
'''


def current_tag(root):
    """The tag ``root/current`` names, or None."""
    link = os.path.join(root, 'current')
    if not os.path.islink(link):
        return None
    return os.path.basename(os.readlink(link).rstrip('/'))


def source_release(previous, root, indexes):
    """(tag, index directory) of the release current on the previous
    stage (its site at ``root``, its indexes in ``indexes``)."""
    tag = current_tag(root)
    if tag is None:
        raise Refused('stage %s has no current release (%s is not a link '
                      'to a release); release it first' % (
                          previous, os.path.join(root, 'current')))
    return tag, index_path(indexes, tag)


def pins(path):
    """{lower-case name: version} of a ``[versions]`` file."""
    import configparser
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(path)
    if not parser.has_section('versions'):
        return {}
    return {k.lower(): v.strip() for k, v in parser.items('versions')}


def build(root, buildout, tag, index, previous, timeout=3600):
    """Release ``tag`` built in the site ``root`` from ``index`` (see the
    module's docstring).  Returns a one-line summary."""
    if current_tag(root) == tag:
        return 'release %s already current in %s' % (tag, root)
    configuration = os.path.join(root, 'buildout.cfg')
    if not os.path.exists(configuration):
        raise ConfigurationError(
            '%s has no buildout.cfg: a set of a stage that gets releases '
            'is a safedeploy site; set release = none otherwise' % root)
    args = commands.split(buildout, 'buildout')
    if not args:
        raise ConfigurationError('buildout = is empty')
    os.makedirs(os.path.join(root, NO_INDEX), exist_ok=True)
    config = os.path.join(root, CONFIG)
    fsutil.atomic_write(config, TEMPLATE.format(
        tag=tag, previous=previous, configuration=configuration,
        versions=os.path.join(index, VERSIONS), index=index,
        no_index=os.path.join(root, NO_INDEX), no_hosts=NO_HOSTS))
    # sdists (the site's own packages, released into the index) build
    # with what is installed: no isolated build environment to fetch
    env = dict(os.environ, PIP_NO_INDEX='1', PIP_NO_BUILD_ISOLATION='0')
    env.pop('PYTHONPATH', None)
    p = commands.run(args + ['-c', config], cwd=root, env=env,
                     timeout=timeout, check=False)
    log = os.path.join(root, 'var', 'safedeploy-promote-build.log')
    os.makedirs(os.path.dirname(log), exist_ok=True)
    output = (p.stdout or '') + (p.stderr or '')
    with open(log, 'w') as f:
        f.write(output)
    if p.returncode or current_tag(root) != tag:
        tail = ' | '.join(output.strip().splitlines()[-2:])
        raise IndexFailure(
            'building release %s in %s from its index failed (%s); the '
            'whole output is in %s' % (tag, root, tail, log))
    recorded = pins(os.path.join(index, VERSIONS))
    used = os.path.join(root, 'releases', tag, VERSIONS)
    if not os.path.exists(used):
        raise IndexFailure(
            'release %s in %s has no %s (its [safedeploy] index = off?): the '
            'versions its build used cannot be compared with the recorded '
            'ones, and the next stage has no index to build it from; set '
            'index = required' % (tag, root, VERSIONS))
    built = pins(used)
    other = sorted('%s %s (recorded %s)' % (name, built.get(name), version)
                   for name, version in recorded.items()
                   if name in built and built[name] != version)
    if other:
        raise IndexFailure('release %s built in %s with other versions: '
                           '%s' % (tag, root, ', '.join(other)))
    distributions = len((read_record(index) or {}).get('distributions', ()))
    return 'release %s built in %s from its index (%d distributions), ' \
        'current' % (tag, root, distributions)
