"""bin/snapshot: consistent snapshots of a site's data, restored in seconds.

Usage::

    bin/snapshot [NAME]              take a snapshot (default name: the time)
    bin/snapshot --list [--json]     list snapshots, the space they hold and
                                     the release each is paired with
    bin/snapshot --restore NAME      put the data back to that snapshot
                 [--force] [--discard-writes]
    bin/snapshot --destroy NAME      remove a snapshot
    bin/snapshot --prune             remove snapshots beyond ``keep``
    bin/snapshot --adopt             move var/filestorage, var/blobstorage ...
                                     into the data generations layout

The options of the ``[snapshot]`` part (``backend``, ``data``, ``dataset``,
``keep``, ``files``, ``releases``) reach :func:`main` as keyword arguments;
``--data``, ``--backend``, ``--dataset`` and ``--keep`` override them.
"""
import datetime
import logging
import os
import sys

from . import backends
from . import cli
from .datagen import DataRoot
from .datagen import DEFAULT_FILES
from .errors import ConfigurationError
from .errors import NotFound
from .errors import Refused
from .generations import validate_name

logger = logging.getLogger('collective.safedeploy')

DEFAULT_KEEP = 10


class Config:
    """The snapshot part's options, checked."""

    def __init__(self, data=None, backend='auto', dataset='', keep=None,
                 files=None, releases=None, **ignored):
        if not data:
            raise ConfigurationError(
                'data is not set; set it to the data root, e.g. '
                '${buildout:directory}/var')
        self.data = os.path.abspath(data)
        self.backend = (backend or 'auto').strip()
        self.dataset = (dataset or '').strip() or None
        try:
            self.keep = DEFAULT_KEEP if keep in (None, '') else int(keep)
            if self.keep < 0:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigurationError(
                'keep = %s is not a number; use 0 (keep all) or more' % keep)
        self.files = files or DEFAULT_FILES
        self.releases = releases or None


def backend_for(options):
    config = options if isinstance(options, Config) else Config(**options)
    backend = backends.get(config)
    backend.check()
    return backend


def default_name(taken):
    """A time-based name, unique even when taken twice in one second."""
    base = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    return unique(base, taken)


def unique(base, taken):
    name, n = base, 1
    while name in taken:
        n += 1
        name = '%s-%d' % (base, n)
    return validate_name(name, 'snapshot name')


# -- operations (callable without buildout) --------------------------------

def create(options, name=None, release=None, prune=True):
    backend = backend_for(options)
    taken = {r['name'] for r in backend.snapshots()}
    if name is None:
        name = default_name(taken)
    validate_name(name, 'snapshot name')
    info = backend.create(name, release=release)
    logger.debug('snapshot %s taken (%s backend, last transaction %s)',
                name, backend.name, info.get('last_tid'))
    if prune:
        prune_snapshots(backend)
    return info


def take_for_release(options, tag):
    """A snapshot named after the release ``tag`` (``tag-2`` ... when that
    name is taken) just before the flip.  Returns {name, backend, time,
    last_tid}: what the release journal records.  The snapshot is on disk
    before the release that relies on it is flipped in."""
    backend = backend_for(options)
    name = unique(validate_name(tag), {r['name'] for r in
                                       backend.snapshots()})
    info = backend.create(name, release=tag, durable=True)
    prune_snapshots(backend)
    return dict(name=info['name'], backend=backend.name, time=info['time'],
                last_tid=info.get('last_tid'))


def restore(options, name, force=False, discard_writes=False):
    """Put the data back to snapshot ``name``.  Refuses (nothing changed)
    when transactions were committed after it, unless ``discard_writes``;
    what is discarded is kept (a data generation, or a zfs clone)."""
    backend = backend_for(options)
    validate_name(name, 'snapshot name')
    return backend.restore(name, force=force, discard_writes=discard_writes)


def destroy(options, name):
    backend = backend_for(options)
    validate_name(name, 'snapshot name')
    backend.destroy(name)
    logger.info('snapshot %s destroyed', name)


def kept_releases(releases):
    if not releases or not os.path.isdir(releases):
        return None
    return set(n for n in os.listdir(releases)
               if os.path.isdir(os.path.join(releases, n)))


def prune_snapshots(backend):
    """Destroy the oldest snapshots beyond ``keep`` (0: keep all), never
    one paired with a release that is still there."""
    keep = backend.config.keep
    if not keep:
        return []
    rows = backend.snapshots()
    kept = kept_releases(backend.config.releases)
    removed = []
    excess = rows[:-keep]
    for row in excess:
        release = row.get('release')
        if release and (kept is None or release in kept):
            continue   # paired with a release we may roll back to
        backend.destroy(row['name'])
        removed.append(row['name'])
        logger.info('pruned snapshot %s (more than keep=%d)',
                    row['name'], keep)
    return removed


def listing(options):
    backend = backend_for(options)
    try:
        rows = backend.snapshots(sizes=True)
    except TypeError:
        rows = backend.snapshots()
    for row in rows:
        row.pop('storages', None)
        row.setdefault('state', 'ok')
    return backend.name, rows


def adopt(options):
    config = options if isinstance(options, Config) else Config(**options)
    name = DataRoot(config.data, config.files).adopt()
    logger.info('data moved into %s; point the site at %s', os.path.join(
        config.data, 'generations', name), os.path.join(
            config.data, 'current'))
    return name


# -- the command -----------------------------------------------------------

def human(n):
    if n is None:
        return '?'
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if abs(n) < 1024 or unit == 'TiB':
            return ('%d %s' if unit == 'B' else '%.1f %s') % (n, unit)
        n /= 1024.0


def parser(prog='snapshot'):
    p = cli.ArgumentParser(
        prog=prog, description='Consistent snapshots of the site data '
        '(Data.fs and blobs), taken while the site runs, restored in '
        'seconds.')
    p.add_argument('name', nargs='?', help='name of the snapshot to take '
                   '(default: the current time)')
    mode = p.add_mutually_exclusive_group()
    mode.add_argument('--list', action='store_true',
                      help='list the snapshots')
    mode.add_argument('--restore', metavar='NAME',
                      help='put the data back to snapshot NAME')
    mode.add_argument('--destroy', metavar='NAME', help='remove snapshot NAME')
    mode.add_argument('--prune', action='store_true',
                      help='remove snapshots beyond keep')
    mode.add_argument('--for-release', metavar='TAG',
                      help='take the snapshot paired with release TAG '
                      '(named TAG, or TAG-2 ... when taken) and print it as '
                      'JSON; bin/buildout does this just before a flip when '
                      'safedeploy:snapshot-before-flip is set')
    mode.add_argument('--adopt', action='store_true',
                      help='move existing data (filestorage/, blobstorage/) '
                      'into generations/1 and link current (site stopped)')
    p.add_argument('--json', action='store_true',
                   help='with --list: print JSON')
    p.add_argument('--force', action='store_true',
                   help='zfs: restore even when newer snapshots would be '
                   'destroyed')
    p.add_argument('--discard-writes', action='store_true',
                   help='restore even when transactions were committed '
                   'after the snapshot (they are kept, not deleted)')
    p.add_argument('--data', help='the data root (default: from the part)')
    p.add_argument('--backend', choices=backends.NAMES,
                   help='the backend (default: from the part)')
    p.add_argument('--dataset', help='zfs: the dataset')
    p.add_argument('--keep', help='snapshots to keep (0: all)')
    p.add_argument('-v', '--verbose', action='count', default=0)
    p.add_argument('-q', '--quiet', action='store_true')
    return p


def main(argv=None, **options):
    prog = os.path.basename(sys.argv[0]) if argv is None else 'snapshot'
    if prog in ('', '-c', '__main__.py'):
        prog = 'snapshot'
    args = parser(prog).parse_args(argv)
    cli.setup_logging(args.verbose, args.quiet)
    for key in ('data', 'backend', 'dataset', 'keep'):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.name and (args.list or args.restore or args.destroy or
                      args.prune or args.adopt or args.for_release):
        sys.stderr.write('%s: error: NAME is only for taking a snapshot; '
                         'drop it or the option (see %s --help)\n'
                         % (prog, prog))
        return 2
    return cli.run(prog, dispatch, args, options)


def dispatch(args, options):
    if args.list:
        name, rows = listing(options)
        if args.json:
            cli.print_json(rows)
        else:
            for row in rows:
                row['size'] = human(row.get('size'))
                row['holds'] = human(row.get('holds'))
            cli.print_table(rows, [
                ('name', 'NAME'), ('time', 'TIME'), ('backend', 'BACKEND'),
                ('size', 'SIZE'), ('holds', 'HOLDS'),
                ('release', 'RELEASE'), ('state', 'STATE')])
        return 0
    if args.restore:
        result = restore(options, args.restore, force=args.force,
                         discard_writes=args.discard_writes)
        print('restored snapshot %s%s' % (result['name'], (
            ' as data generation %s (generation %s kept)' % (
                result['generation'], result['replaced']))
            if result.get('generation') else ''))
        return 0
    if args.destroy:
        destroy(options, args.destroy)
        print('destroyed snapshot %s' % args.destroy)
        return 0
    if args.prune:
        backend = backend_for(options)
        for name in prune_snapshots(backend):
            print('pruned snapshot %s' % name)
        return 0
    if args.for_release:
        cli.print_json(take_for_release(options, args.for_release))
        return 0
    if args.adopt:
        name = adopt(options)
        print('adopted %s as data generation %s' % (
            Config(**options).data, name))
        return 0
    info = create(options, args.name)
    print('snapshot %s taken (%s, last transaction %s)' % (
        info['name'], info['backend'], info.get('last_tid')))
    return 0


__all__ = ['main', 'create', 'take_for_release', 'restore', 'destroy',
           'prune_snapshots', 'adopt', 'listing', 'Config', 'NotFound',
           'Refused']
