"""The package indexes: one per release, in the one store type.

::

    pool/                          every archive any release used, each once
      zodb-6.4-py3-none-any.whl      (read-only; never overwritten)
      hello-0.1+tag.v1.tar.gz        a develop package, released for tag v1
    indexes/
      .safedeploy-store.json  .journal  .lock
      v1/
        safedeploy-index.json      what the index holds: name, version,
                                   file, sha256 of every distribution
        versions.cfg               the [versions] the release was built with
        buildout/buildout.cfg      the configuration it was built from
        zodb-6.4-py3-none-any.whl -> ../../pool/zodb-6.4-py3-none-any.whl
        simple/zodb/index.html     compoze's index, PEP 503 names

An index is staged, filled and completed (its record, the store's
manifest, written last) like a release: a killed build leaves no index
that looks complete.
"""
import os

from ..core.errors import NotFound
from ..core.errors import SafeDeployError
from ..core.fsutil import sha256
from ..core.store import PACKAGE_INDEX
from ..core.store import Store
from ..core.store import validate_name

# a host pattern no real host matches: buildout's allow-hosts with it
# refuses every URL but file: ones (builds from a release's own index)
NO_HOSTS = '*.invalid'

RECORD = 'safedeploy-index.json'
VERSIONS = 'versions.cfg'
CONFIGURATION = 'buildout'


class IndexFailure(SafeDeployError):
    """A release's index could not be built, or does not verify."""


def store(indexes_dir):
    return Store(indexes_dir, PACKAGE_INDEX, manifest=RECORD)


def read_record(path):
    """The record of the index in ``path`` (None when it has none)."""
    directory, tag = os.path.split(os.path.normpath(path))
    try:
        return store(directory).manifest(tag)
    except (OSError, ValueError):
        return None


def tags(indexes_dir):
    """The tags with a complete index, in the order they were built."""
    s = store(indexes_dir)
    present = [n for n in s.on_disk() if s.entry(n) == 'complete']
    order = s.order()
    position = {n: i for i, n in enumerate(order)}
    return sorted(present, key=lambda n: (position.get(n, len(order)), n))


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
    # packaging.utils (typing, packaging.tags ...) only for a check:
    # bin/index --list starts without it
    from packaging.utils import canonicalize_name
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
    removed here, only by :func:`~collective.safedeploy.index.pool.gc`."""
    s = store(indexes_dir)
    if s.entry(validate_name(tag)) != 'complete':
        return False
    if keep_index:
        s.journal.append('release-pruned', name=tag)
        return False
    with s.lock('a package index build or gc'):
        s.discard(tag, 'its release was pruned')
    return True
