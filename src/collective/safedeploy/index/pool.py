"""The pool: every archive any release used, each once, read-only.

::

    pool/
      .safedeploy-store.json
      zodb-6.4-py3-none-any.whl
      hello-0.1+tag.v1.tar.gz        a develop package, released for tag v1

A file is never overwritten: one of the same name with other content is
an error.  The pool only grows (pruning a release keeps its files);
``bin/index --gc`` removes the files no index links any more.
"""
import os
import re
import shutil
import uuid

from ..core import fsutil
from ..core.errors import NotFound
from ..core.errors import Refused
from ..core.fsutil import sha256
from ..core.store import claim
from .records import read_record
from .records import store
from .records import tags

ARCHIVE = re.compile(r'.*(\.whl|\.tar\.gz|\.tgz|\.tar\.bz2|\.tbz|\.zip)\Z')
KIND = 'package pool'


def claim_pool(pool_dir):
    """The pool directory is ours (made with our marker; one an earlier
    version made holds nothing but archives)."""
    def legacy():
        return all(ARCHIVE.match(n) or n.startswith('.')
                   for n in os.listdir(pool_dir))
    claim(pool_dir, KIND, legacy)


def used_files(indexes_dir):
    """The pool files the complete indexes link."""
    used = set()
    for tag in tags(indexes_dir):
        for dist in read_record(os.path.join(indexes_dir, tag))[
                'distributions']:
            if dist['file']:
                used.add(dist['file'])
    return used


def add_to_pool(dist, pool_dir, indexes_dir=None, built=None):
    """Store ``dist['archive']`` (or ``built``, a develop package's sdist
    built for this release) in the pool, once.

    A file already there with the same content is kept.  One with other
    content is an error, never overwritten -- unless no complete index
    in ``indexes_dir`` links it: then a build killed before its index was
    complete left it, nobody uses it, and it is replaced (a develop
    package's sdist built again differs in its time stamps).  A new file is
    copied under a temporary name, fsynced, made read-only and hard-linked
    to its name (which fails instead of replacing a file that appeared
    meanwhile).
    """
    claim_pool(pool_dir)
    name = dist['file']
    source = built or dist.get('archive')
    target = os.path.join(pool_dir, name)
    if os.path.exists(target):
        pooled = sha256(target)
        if pooled == dist['sha256']:
            return target
        if indexes_dir is not None and source is not None and \
                name not in used_files(indexes_dir):
            _store(source, target, replace=True)
            return target
        raise Refused(
            'the pool already has a different %s (sha256 %s, this one '
            '%s); a file name is never reused for other content: rename '
            'or rebuild the distribution with a new version, or remove '
            'the pool file if it is corrupt (bin/index --verify shows '
            'which releases use it)' % (target, pooled, dist['sha256']))
    if source is None:
        return None
    _store(source, target)
    return target


def _store(source, target, replace=False):
    directory = os.path.dirname(target)
    tmp = os.path.join(directory, '.%s.%s.tmp' % (
        os.path.basename(target), uuid.uuid4().hex[:8]))
    try:
        shutil.copyfile(source, tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o444)
        if replace:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    fsutil.fsync_directory(directory)


def link(pool_dir, name, directory):
    """Link the pool's ``name`` into ``directory``."""
    here = os.path.join(directory, name)
    pooled = os.path.join(pool_dir, name)
    os.symlink(os.path.relpath(pooled, directory), here)


def gc(indexes_dir, pool_dir):
    """Remove pool files that no index links.  Returns their names.

    With no index at all it refuses: a wrong ``indexes`` directory would
    otherwise empty the pool."""
    indexes = store(indexes_dir)
    if not indexes.owned():
        raise NotFound('no package indexes in %s; give the right directory '
                       'with --indexes' % indexes_dir)
    if os.path.isdir(pool_dir):
        claim_pool(pool_dir)
    with indexes.lock('a package index build or gc'):
        indexes.recover()
        published = tags(indexes_dir)
        if not published and os.path.isdir(pool_dir) and any(
                ARCHIVE.match(n) for n in os.listdir(pool_dir)):
            raise Refused(
                'there is no package index in %s, so --gc would remove every '
                'file of the pool %s; check --indexes (or remove the pool '
                'yourself)' % (indexes_dir, pool_dir))
        used = used_files(indexes_dir)
        removed = []
        if os.path.isdir(pool_dir):
            fsutil.empty_trash(pool_dir)
            for name in sorted(os.listdir(pool_dir)):
                if name not in used and ARCHIVE.match(name):
                    os.unlink(os.path.join(pool_dir, name))
                    removed.append(name)
            fsutil.fsync_directory(pool_dir)
        indexes.journal.append('gc', removed=len(removed))
    return removed
