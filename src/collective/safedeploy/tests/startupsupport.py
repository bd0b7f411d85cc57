"""The listing commands as a site's bin directory holds them.

:func:`listing_site` makes a small data root (real ZODB data, adopted, one
copy snapshot), a releases directory and an indexes directory, and
generates bin/snapshot, bin/rollback and bin/index the way the recipes do:
zc.buildout's script machinery, the recipes' first lines
(:data:`~collective.safedeploy.recipes.base.EARLY_SIGNALS`) and the
keyword arguments of their defaults.  The scripts' ``sys.path`` lists this
checkout's ``src`` and the environment's site-packages (the dependencies),
as a site's lists the environment collective.safedeploy is installed in;
not the editable install's import finder, which a site does not have.

:func:`imported_modules` runs a command with ``-X importtime`` and returns
every module it imported: what the start-up test checks and the start-up
benchmark shows.

:func:`without_database` calls a command's ``main`` in a Python that
cannot import the database (ZODB is the site's dependency, not
collective.safedeploy's: a ``pip install collective.safedeploy`` has
none).
"""
import os
import subprocess
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, '..', '..', '..'))

#: (script, the module whose main it calls, the listing's arguments)
LISTINGS = (
    ('snapshot', 'collective.safedeploy.data.snapshot', ['--list']),
    ('rollback', 'collective.safedeploy.release.rollback', ['--list']),
    ('index', 'collective.safedeploy.index.command', ['--list']),
)

#: what no listing may import: the database, the network, the package
#: index tools, a process runner -- each measurably slows every start
#: (``python -X importtime``); a listing that needs one says why here
HEAVY_PACKAGES = (
    'ZODB', 'ZEO', 'BTrees', 'persistent', 'transaction', 'ZConfig',
    'zodbpickle', 'zope', 'relstorage', 'psycopg2', 'compoze', 'pkginfo',
    'packaging', 'setuptools', 'pkg_resources', 'pyproject_hooks', 'http',
    'email', 'ssl', 'subprocess', 'uuid', 'hashlib', 'socket', 'tempfile',
    'difflib')
HEAVY_MODULES = ('urllib.request', 'zc.buildout', 'zc.recipe')

#: what an environment without the ``zodb`` extra cannot import
DATABASE_PACKAGES = ('ZODB', 'ZEO', 'transaction', 'persistent', 'BTrees',
                     'zc.beforestorage', 'ZConfig', 'zodbpickle')

#: ``python -c`` this, the packages above, a module, its main and the
#: arguments: main(arguments) with every import of those packages failing
#: as it does where they are not installed
WITHOUT_DATABASE = """
import importlib, sys
blocked = sys.argv[1].split()
class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + '.') for b in blocked):
            raise ModuleNotFoundError('No module named %r' % name, name=name)
sys.meta_path.insert(0, NotInstalled())
main = getattr(importlib.import_module(sys.argv[2]), sys.argv[3])
sys.exit(main(sys.argv[4:]))
"""


def heavy(modules):
    """The modules of ``modules`` that a listing must not import."""
    return sorted(m for m in modules if m.split('.')[0] in HEAVY_PACKAGES
                  or m.startswith(HEAVY_MODULES))


def listing_site(work):
    """Data, releases and indexes in ``work`` and the three generated
    scripts in ``work/bin``: {script name: path}."""
    import zc.buildout.easy_install

    from ..data import snapshot
    from ..data.layout import DEFAULT_FILES
    from ..recipes.base import EARLY_SIGNALS
    from .zodbsupport import make_site_data
    data = os.path.join(work, 'var')
    releases = os.path.join(work, 'releases')
    indexes = os.path.join(work, 'indexes')
    bin_directory = os.path.join(work, 'bin')
    for directory in (data, releases, indexes, bin_directory):
        os.makedirs(directory)
    make_site_data(data, transactions=5, blobs=2)
    snapshot.adopt(dict(data=data))
    snapshot.create(dict(data=data, backend='copy'), 's1')
    # what each recipe passes by default (recipes/snapshot.py, rollback.py,
    # index.py)
    arguments = {
        'snapshot': dict(backend='auto', data=data, files=DEFAULT_FILES,
                         keep='10', keep_generations='3', releases=releases,
                         storage='filestorage'),
        'rollback': dict(releases_directory=releases,
                         current=os.path.join(work, 'current'),
                         buildout_directory=work),
        'index': dict(prog='index', indexes=indexes,
                      pool=os.path.join(work, 'pool')),
    }
    scripts = {}
    for name, module, _ in LISTINGS:
        kw = ', '.join('%s=%r' % item for item in sorted(
            arguments[name].items()))
        scripts[name], = zc.buildout.easy_install.scripts(
            [(name, module, 'main')], [], sys.executable, bin_directory,
            extra_paths=[SRC, sysconfig.get_path('purelib')], arguments=kw,
            initialization=EARLY_SIGNALS)
    return scripts


def without_database(module, main, argv, cwd=None):
    """``module.main(argv)`` run in a Python that cannot import
    :data:`DATABASE_PACKAGES`: the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [SRC, sysconfig.get_path('purelib')]))
    return subprocess.run(
        [sys.executable, '-c', WITHOUT_DATABASE, ' '.join(DATABASE_PACKAGES),
         module, main] + list(argv), env=env, cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)


def imported_modules(args, env=None):
    """Run ``args`` (starting with a Python) with ``-X importtime``:
    (the CompletedProcess, the set of modules it imported)."""
    p = subprocess.run([args[0], '-X', 'importtime'] + list(args[1:]),
                       env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    modules = {line.rsplit('|', 1)[1].strip()
               for line in p.stderr.splitlines()
               if line.startswith('import time:') and '[us]' not in line}
    p.stderr = '\n'.join(line for line in p.stderr.splitlines()
                         if not line.startswith('import time:'))
    return p, modules
