"""Make compoze 1.0 work on today's setuptools, and make its index PEP 503.

compoze (2013) builds a "simple" package index from a directory of
archives.  On a current Python stack it has four problems; this module
is the only place that knows about them:

1. ``compoze.compozer`` imports ``pkg_resources`` at startup (to find its
   sub-commands).  setuptools 82 removed ``pkg_resources``.  zc.buildout
   ships the last copy (from setuptools 81) and, when imported, installs
   it as ``pkg_resources``: importing ``zc.buildout`` first is the fix.

2. ``compoze.index`` (used by ``fetch`` and ``show``) imports
   ``setuptools.package_index``, which setuptools removed in 80.3.  We
   provide zc.buildout's vendored copy under that name, with buildout's
   name-normalising ``EnvironmentMixin`` mixed into ``PackageIndex``;
   without it ``fetch`` finds only stale versions of dotted names whose
   new files use PEP 625 names (``zc_lockfile-4.0.tar.gz``).  We do not
   use ``fetch``: archives come from buildout's download cache (or pip).

3. ``compoze index`` names each project directory after the ``Name``
   in the metadata, verbatim (``simple/ZODB/``, ``simple/zc.lockfile/``).
   pip asks for the PEP 503 normalised name (``simple/zodb/``,
   ``simple/zc-lockfile/``) and finds nothing.  :func:`pep503` renames the
   directories to the normalised names, keeps the verbatim names as
   symlinks (for clients that use them), and adds a ``#sha256=`` fragment
   to every file link so that pip checks what it downloads.

4. ``compoze pool`` moves only sdists (``.tar.gz``, ``.zip``, ...) and,
   when the pool already has a file of the same name, silently throws the
   new one away and links to the pooled one, even if their contents
   differ.  We therefore keep the pool ourselves
   (:mod:`collective.safedeploy.index.pool`): every file once, and a file of
   the same name with other content is an error.

What we would send upstream (one pull request each):

- look up sub-commands with ``importlib.metadata.entry_points`` instead of
  ``pkg_resources.iter_entry_points``;
- replace ``setuptools.package_index`` in ``fetch``/``show`` by
  ``packaging`` + pip's index client (or at least compare
  ``packaging.utils.canonicalize_name`` keys), and default ``-u`` to
  ``https://pypi.org/simple/``;
- in ``Indexer.make_index``, name project directories with
  ``canonicalize_name`` and write ``#sha256=`` fragments (PEP 503);
- in ``Pooler``, pool wheels too (``.whl``) and refuse a same-named file
  with different content instead of dropping it;
- ``Indexer.__call__`` makes (and removes) an unused temporary directory
  in the *current* directory: drop it.

Everything here is tested in ``tests/test_index_compoze.py``: compoze's
own command line (``compoze index``) runs through :func:`compozer_main`.
"""
import html
import logging
import os
import re
import sys
import types

from packaging.utils import canonicalize_name

from ..core.fsutil import sha256
from .pool import ARCHIVE

logger = logging.getLogger('collective.safedeploy')

INDEX_NAME = 'simple'


def install():
    """Provide ``pkg_resources`` and ``setuptools.package_index`` for
    compoze when setuptools no longer has them.  Idempotent."""
    import zc.buildout  # noqa: F401  (installs the vendored pkg_resources)
    try:
        import setuptools.package_index  # noqa: F401 (setuptools < 80.3)
        return
    except ImportError:
        pass
    import setuptools
    import zc.buildout.easy_install
    from zc.buildout import _package_index

    class PackageIndex(zc.buildout.easy_install.EnvironmentMixin,
                       _package_index.PackageIndex):
        """setuptools' PackageIndex, with normalised project keys."""

    module = types.ModuleType('setuptools.package_index')
    module.__dict__.update(
        (k, v) for k, v in vars(_package_index).items()
        if not k.startswith('__'))
    module.PackageIndex = PackageIndex
    module.__doc__ = ('setuptools.package_index, as vendored by zc.buildout '
                      '(provided by collective.safedeploy.index.compoze)')
    sys.modules['setuptools.package_index'] = module
    setuptools.package_index = module


def compozer_main(argv):
    """Run compoze's own command line (``compoze index -p DIR`` ...)."""
    install()
    from compoze import compozer
    return compozer.main(list(argv))


def build_index(directory, hashes=None):
    """Build ``directory/simple/`` from the archives in ``directory`` with
    compoze's ``index`` command, then make it PEP 503 (see :func:`pep503`).

    ``hashes`` maps file names to their sha256; missing ones are computed.
    Returns ``{normalised project name: [file name, ...]}``.

    A directory without archives gets an empty index: compoze refuses one
    ("No distributions"), but a release whose every distribution came from
    the environment bin/buildout runs in, with no archive found for any,
    has nothing to serve -- and is no less complete for it.
    """
    if not any(ARCHIVE.match(name) for name in os.listdir(directory)):
        return empty_index(os.path.join(directory, INDEX_NAME))
    install()
    from compoze.indexer import Indexer

    messages = []
    indexer = Indexer(None, '--quiet', '--path', directory,
                      '--index-name', INDEX_NAME, logger=messages.append)
    try:
        indexer.make_index()
    except Exception as e:  # compoze lets zipfile's, tarfile's... through
        raise ValueError('compoze index %s: %s' % (
            directory, (str(e) or type(e).__name__).splitlines()[0]))
    return pep503(os.path.join(directory, INDEX_NAME), hashes or {})


_HREF = re.compile(r'href="([^"]*)"')


def empty_index(index_dir):
    """``index_dir/index.html`` listing no project, as compoze writes the
    top page of one that lists some."""
    os.makedirs(index_dir)
    with open(os.path.join(index_dir, 'index.html'), 'w') as f:
        f.write('<html>\n<body>\n<h1>Package Index</h1>\n<ul>\n</ul>\n'
                '</body>\n</html>\n')
    return {}


def pep503(simple, hashes):
    """Turn compoze's ``simple/`` into a PEP 503 index, in place.

    Each project directory gets its normalised name (the verbatim name
    stays as a symlink to it), the root page links normalised names, and
    each file link carries ``#sha256=<hex>``.
    """
    projects = {}
    names = sorted(n for n in os.listdir(simple)
                   if os.path.isdir(os.path.join(simple, n))
                   and not os.path.islink(os.path.join(simple, n)))
    for name in names:
        normal = canonicalize_name(name)
        if normal in projects:
            raise ValueError('two projects in %s normalise to %s' % (
                simple, normal))
        if normal != name:
            os.rename(os.path.join(simple, name), os.path.join(simple, normal))
            os.symlink(normal, os.path.join(simple, name))
        page = os.path.join(simple, normal, 'index.html')
        files = []

        def with_hash(match):
            href = match.group(1).split('#', 1)[0]
            filename = os.path.basename(href)
            files.append(filename)
            digest = hashes.get(filename)
            if digest is None:
                digest = sha256(os.path.join(simple, normal, href))
            return 'href="%s#sha256=%s"' % (href, digest)

        with open(page) as f:
            text = f.read()
        text = _HREF.sub(with_hash, text)
        with open(page, 'w') as f:
            f.write(text)
        projects[normal] = files
    with open(os.path.join(simple, 'index.html'), 'w') as f:
        f.write('<!DOCTYPE html>\n<html>\n<body>\n<h1>Package Index</h1>\n')
        for normal in sorted(projects):
            f.write('<a href="%s/">%s</a><br/>\n' % (
                html.escape(normal), html.escape(normal)))
        f.write('</body>\n</html>\n')
    return projects
