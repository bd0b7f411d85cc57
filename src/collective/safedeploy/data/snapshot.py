"""bin/snapshot: consistent snapshots of a site's data, restored in seconds.

Usage::

    bin/snapshot [NAME]              take a snapshot (default name: the time)
    bin/snapshot --list [--json]     list snapshots, the space they hold and
                                     the release each is paired with
    bin/snapshot --list --generations [--json]
                                     list the data generations: what each
                                     holds, and why it is kept
    bin/snapshot --restore NAME      put the data back to that snapshot
                 [--force] [--discard-writes]
    bin/snapshot --destroy NAME      remove a snapshot (one a release still
                 [--force]           there is paired with: with --force)
    bin/snapshot --export NAME DIR   write a snapshot's files into DIR (copy
                                     backend)
    bin/snapshot --prune             remove snapshots beyond ``keep`` and
                 [--discard-writes]  data generations beyond
                                     ``keep-generations``
    bin/snapshot --adopt             move var/filestorage, var/blobstorage ...
                                     into the data generations layout

The options of the ``[snapshot]`` part (``backend``, ``data``, ``dataset``,
``keep``, ``keep-generations``, ``files``, ``releases``) reach :func:`main`
as keyword arguments; ``--data``, ``--backend``, ``--dataset``, ``--keep``
and ``--keep-generations`` override them.

Data generations are pruned after each restore (and after each
bin/evolve-copy) down to ``keep-generations``: failed and killed copies
first, then the oldest -- never the current one, one a release still
there ran on, the previous good one, nor one holding transactions a
restore or rollback discarded (``bin/snapshot --prune --discard-writes``
lets those go too).
"""
import logging
import os
import time

from . import backends
from . import relstorage_options
from ..core import cli
from ..core import options as opts
from ..core.errors import ConfigurationError
from ..core.errors import Refused
from ..core.store import validate_name
from .layout import DEFAULT_FILES
from .layout import DataRoot

logger = logging.getLogger('collective.safedeploy')

DEFAULT_KEEP = 10


def _files(raw, where):
    from .layout import parse_files
    text = (raw or '').strip() or DEFAULT_FILES
    parse_files(text, where)    # its messages name the option (where)
    return text


SCHEMA = opts.Schema([
    opts.Option('backend', 'auto', opts.choice(*backends.NAMES)),
    opts.Option('data', '', opts.required(
        example='${buildout:directory}/var')),
    opts.Option('dataset', '', opts.text),
    opts.Option('keep', str(DEFAULT_KEEP), opts.integer(0)),
    opts.Option('files', DEFAULT_FILES, _files),
    opts.Option('releases', '', opts.text),
    opts.Option('keep-generations', str(DataRoot.DEFAULT_KEEP),
                opts.integer(0)),
] + relstorage_options.OPTIONS, allowed=('recipe', 'eggs', 'find-links', 'index', 'extra-paths'))


class Config:
    """The snapshot part's options, checked (the recipe checks them with
    the same :data:`SCHEMA` when buildout reads the part)."""

    def __init__(self, where=opts.section_where('snapshot'), **values):
        values = {k.replace('_', '-'): v for k, v in values.items()
                  if v is not None}
        o = SCHEMA.parse(values, where)
        if o['backend'] == 'zfs' and not o['dataset']:
            raise ConfigurationError(
                '%s: backend = zfs needs dataset (e.g. dataset = tank/site)'
                % where('dataset'))
        self.data = os.path.abspath(o['data'])
        self.backend = o['backend']
        self.dataset = o['dataset'] or None
        self.keep = o['keep']
        self.files = o['files']
        self.releases = o['releases'] or None
        self.keep_generations = o['keep-generations']


def backend_for(options):
    config = options if isinstance(options, Config) else Config(**options)
    backend = backends.get(config)
    backend.check()
    return backend


def default_name(taken):
    """A time-based name, unique even when taken twice in one second."""
    base = time.strftime('%Y%m%d-%H%M%S')
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
        pruned(prune_snapshots(backend), backend)
    return info


def take_for_release(options, tag, new_site=False):
    """A snapshot named after the release ``tag`` (``tag-2`` ... when that
    name is taken) just before the flip.  Returns {name, backend, time,
    last_tid}: what the release journal records.  The snapshot is on disk
    before the release that relies on it is flipped in.

    ``new_site`` (the first release, no release current yet): a data root
    with no data at all gets its first data generation, empty, for the
    site to start in, and there is nothing to snapshot: returns {name:
    None, generation, made: True}.  Data already there but not adopted is
    refused (:meth:`~.layout.DataRoot.create_empty`).  Nor is there
    anything to snapshot while that generation is as it was made, before
    the site wrote its first data: {name: None, generation, made:
    False}."""
    if relstorage_options.is_relstorage(
            relstorage_options.options_getter(options)):
        return relstorage_options.take_for_release_with(options, tag)
    config = Config(**options)
    root = DataRoot(config.data, config.files)
    if new_site and root.current_name() is None:
        return dict(name=None, generation=root.create_empty(), made=True)
    if root.still_empty():
        # made empty for a site that has not written anything yet
        return dict(name=None, generation=root.current_name(), made=False)
    backend = backend_for(options)
    name = unique(validate_name(tag), {r['name'] for r in
                                       backend.snapshots()})
    info = backend.create(name, release=tag, durable=True)
    pruned(prune_snapshots(backend), backend)
    return dict(name=info['name'], backend=backend.name, time=info['time'],
                last_tid=info.get('last_tid'),
                generation=info.get('generation'))


def restore(options, name, force=False, discard_writes=False):
    """Put the data back to snapshot ``name``.  Refuses (nothing changed)
    when transactions were committed after it, unless ``discard_writes``;
    what is discarded is kept (a data generation, or a zfs clone)."""
    if relstorage_options.is_relstorage(
            relstorage_options.options_getter(options)):
        return relstorage_options.restore_with(options, name, discard_writes)
    backend = backend_for(options)
    validate_name(name, 'snapshot name')
    return backend.restore(name, force=force, discard_writes=discard_writes)


def check_restore(options, name, discard_writes=False):
    """What :func:`restore` of snapshot ``name`` would refuse for want of
    ``discard_writes``, refused the same way, changing nothing (the
    ``--dry-run`` of ``bin/rollback --with-data``): the snapshot must be
    there, and the transactions committed after it are counted.  Returns
    that count (None on RelStorage: it checks when it restores)."""
    if relstorage_options.is_relstorage(
            relstorage_options.options_getter(options)):
        return None
    validate_name(name, 'snapshot name')
    return backend_for(options).check_restore(name, discard_writes)


def destroy(options, name, force=False):
    """Remove snapshot ``name``.  Refused (nothing changed) when a release
    still in the releases directory is paired with it -- the release it
    was taken for, or one whose ``bin/rollback --with-data`` restores it
    --, unless ``force``: what keep and prune never remove, a mistyped
    name must not either."""
    backend = backend_for(options)
    validate_name(name, 'snapshot name')
    if not force:
        refuse_paired(backend, backend.info(name))
    backend.destroy(name)
    logger.debug('snapshot %s destroyed', name)


def paired_releases(backend, row):
    """The releases still in the releases directory that snapshot ``row``
    is paired with: ``(taken for, restored by bin/rollback --with-data)``
    -- the release it was taken for (its own record, what prune keeps it
    for) and those the pairing record gives it as the snapshot of their
    data.  Nothing when no releases directory is known."""
    releases = backend.config.releases
    kept = kept_releases(releases)
    if not kept:
        return [], []
    from ..release import pairing
    taken_for = [row['release']] if row.get('release') in kept else []
    restores = []
    for release in sorted(kept):
        _, paired, _ = pairing.lookup(releases, release)
        if paired is not None and paired.snapshot == row['name']:
            restores.append(release)
    return taken_for, restores


def refuse_paired(backend, row):
    taken_for, restores = paired_releases(backend, row)
    releases = sorted(set(taken_for) | set(restores))
    if not releases:
        return
    raise Refused(
        'snapshot %s is paired with release%s %s, still in %s%s; destroy it '
        'with --force if you mean it, or remove the release%s first' % (
            row['name'], 's' if len(releases) > 1 else '',
            ', '.join(releases), backend.config.releases,
            ' (bin/rollback %s --with-data restores it)' % ' or '.join(
                restores) if restores else '',
            's' if len(releases) > 1 else ''))


def verify(options, name):
    """Check snapshot ``name`` completely (copy backend): every byte of its
    Data.fs against the recorded checksums, every blob its transactions
    reference.  A dict ``name``, ``bytes``, ``transactions``, ``blobs``."""
    backend = backend_for(options)
    validate_name(name, 'snapshot name')
    if not hasattr(backend, 'verify'):
        raise ConfigurationError(
            '--verify is for the copy backend; %s checks every block of a '
            '%s snapshot itself (run a scrub of the pool or filesystem)'
            % (backend.name, backend.name))
    return backend.verify(name)


def export(options, name, directory):
    """Write snapshot ``name`` into the new directory ``directory``: its
    Data.fs exactly the recorded prefix, its blob tree, its other files
    (copy backend)."""
    backend = backend_for(options)
    validate_name(name, 'snapshot name')
    if not hasattr(backend, 'export'):
        raise ConfigurationError(
            '--export is for the copy backend; a %s snapshot is a '
            'filesystem snapshot: copy its files from there' % backend.name)
    return backend.export(name, directory)


def kept_releases(releases):
    """The releases still there (None: no releases directory known)."""
    if not releases or not os.path.isdir(releases):
        return None
    from ..core.store import RELEASE
    from ..core.store import Store
    return set(Store(releases, RELEASE).on_disk(strict=False))


def prune_snapshots(backend):
    """Destroy the oldest snapshots beyond ``keep`` (0: keep all), never
    one paired with a release that is still there.  Returns their names:
    bin/snapshot --prune prints them, :func:`create` logs them
    (:func:`pruned`)."""
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
    return removed


def pruned(names, backend):
    """What a snapshot pruned on its own: logged (what bin/snapshot
    --prune was asked to prune, it prints)."""
    for name in names:
        logger.info('pruned snapshot %s (more than keep=%d)', name,
                    backend.config.keep)


def nothing_to_prune(backend):
    """What bin/snapshot --prune says when it removed nothing: what there
    is, and what is kept."""
    config = backend.config
    return 'nothing to prune: %s, %s; %s, %s' % (
        cli.count(len(backend.snapshots()), 'snapshot'),
        keep_setting('keep', config.keep),
        cli.count(len(backend.root.generations.on_disk(strict=False)),
                  'data generation'),
        keep_setting('keep-generations', config.keep_generations))


def keep_setting(option, value):
    return '%s=%d%s' % (option, value, ' (all)' if not value else '')


def generations_listing(options):
    config = options if isinstance(options, Config) else Config(**options)
    root = DataRoot(config.data, config.files)
    return root.listing(config.keep_generations, config.releases)


def prune_generations(options, discard_writes=False):
    backend = backend_for(options)
    with backend.lock():
        backend.root.generations.recover()
        return backend.root.prune(backend.config.keep_generations,
                                  backend.config.releases,
                                  discard_writes=discard_writes)


def listing(options):
    backend = backend_for(options)
    rows = backend.snapshots(sizes=True, damaged=True)
    for row in rows:
        row.pop('storages', None)
        row.setdefault('state', 'ok')
    return backend.name, rows


def adopt(options):
    config = options if isinstance(options, Config) else Config(**options)
    name = DataRoot(config.data, config.files).adopt()
    logger.debug('data moved into %s', os.path.join(
        config.data, 'generations', name))
    return name


# -- the command -----------------------------------------------------------

def parser(prog='snapshot'):
    p = cli.parser(
        prog, 'Consistent snapshots of the site data (Data.fs and blobs), '
        'taken while the site runs, restored in seconds.')
    p.add_argument('name', nargs='?', type=cli.value,
                   help='name of the snapshot to take (default: the '
                   'current time)')
    mode = p.add_mutually_exclusive_group()
    mode.add_argument('--list', action='store_true',
                      help='list the snapshots')
    mode.add_argument('--restore', metavar='NAME', type=cli.value,
                      help='put the data back to snapshot NAME')
    mode.add_argument('--destroy', metavar='NAME', type=cli.value,
                      help='remove snapshot NAME')
    mode.add_argument('--export', nargs=2, metavar=('NAME', 'DIR'),
                      type=cli.value,
                      help='write snapshot NAME into the new directory DIR '
                      '(its Data.fs, blobs and other files)')
    mode.add_argument('--verify', metavar='NAME', type=cli.value,
                      help='check snapshot NAME completely: every byte '
                      'against its recorded checksums, every blob it '
                      'references (copy backend; a restore checks less, '
                      'to be quick)')
    mode.add_argument('--prune', action='store_true',
                      help='remove snapshots beyond keep')
    mode.add_argument('--for-release', metavar='TAG', type=cli.value,
                      help='take the snapshot paired with release TAG '
                      '(named TAG, or TAG-2 ... when taken) and print it as '
                      'JSON; bin/buildout does this just before a flip when '
                      'safedeploy:snapshot-before-flip is set')
    p.add_companion(('--for-release',), '--new-site', action='store_true',
                    help='with --for-release: when the data root holds no '
                    'data at all, make its first data generation, empty, '
                    'instead (bin/buildout does this for the first release)')
    mode.add_argument('--adopt', action='store_true',
                      help='move existing data (filestorage/, blobstorage/) '
                      'into generations/1 and link current (site stopped)')
    cli.add_json(p)
    p.add_companion(('--list',), '--generations', action='store_true',
                    help='with --list: list the data generations (what '
                    'each holds, why it is kept) instead of the snapshots')
    p.add_companion(('--restore', '--destroy'), '--force',
                    action='store_true',
                    help='with --restore, zfs: restore even when newer '
                    'snapshots would be destroyed; with --destroy: destroy '
                    'a snapshot a release still there is paired with')
    p.add_companion(('--restore', '--prune'), '--discard-writes',
                    action='store_true',
                    help='with --restore or --prune: restore or prune even '
                    'when transactions were committed after the snapshot '
                    '(they are kept, not deleted)')
    p.add_argument('--data', type=cli.value,
                   help='the data root (default: from the part)')
    p.add_argument('--backend', choices=backends.NAMES,
                   help='the backend (default: from the part)')
    p.add_argument('--dataset', type=cli.value, help='zfs: the dataset')
    p.add_argument('--keep', type=cli.value,
                   help='snapshots to keep (0: all)')
    p.add_argument('--keep-generations', type=cli.value,
                   help='data generations to keep (0: all)')
    cli.add_storage(p)
    return p


def check_arguments(p, args):
    """What argparse cannot say: which flags go together (a refusal here
    changes nothing)."""
    modes = [m for m in ('list', 'restore', 'destroy', 'export', 'verify',
                         'prune', 'for_release', 'adopt')
             if getattr(args, m)]
    if args.name and modes:
        p.error('NAME is only for taking a snapshot; drop it or --%s'
                % modes[0].replace('_', '-'))


def main(argv=None, **options):
    """bin/snapshot; ``options`` come from the recipe."""
    prog = cli.prog_name('snapshot') if argv is None else 'snapshot'
    p = parser(prog)
    args = p.parse_args(argv)
    check_arguments(p, args)
    options = cli.with_command_line(
        options, args, ('data', 'backend', 'dataset', 'keep',
                        'keep_generations', 'storage', 'dsn'))
    cli.setup_logging(args.verbose, args.quiet)

    def where():
        config = Config(**options)
        name = DataRoot(config.data, config.files).current_name()
        if name is None:
            # an adopt cut short: running it again finishes it
            return 'no data generation is current yet%s' % (
                '; run bin/snapshot --adopt again' if args.adopt else '')
        return 'the data\'s current points to generation %s' % name
    return cli.run(prog, dispatch, args, options, on_interrupt=where)


def dispatch(args, options):
    if relstorage_options.is_relstorage(
            relstorage_options.options_getter(options)):
        return relstorage_options.snapshot_command(args, options)
    if args.list and args.generations:
        rows = generations_listing(options)
        if args.json:
            cli.print_json(rows)
            return 0
        for row in rows:
            row['current'] = '*' if row['current'] else ''
            row['size'] = cli.human(row.get('size'))
            row['holds'] = cli.human(row.get('holds'))
            row['built'] = (row['built'] or '')[:19].replace('T', ' ')
            row['kept'] = row['kept'] or 'no: the next prune removes it'
        cli.print_table(rows, [
            ('current', 'CURRENT'), ('name', 'GENERATION'),
            ('built', 'BUILT (UTC)'), ('made', 'MADE BY'),
            ('source', 'FROM'), ('release', 'RELEASE'),
            ('state', 'STATE'), ('holds', 'HOLDS'), ('kept', 'KEPT BECAUSE')])
        return 0
    if args.list:
        name, rows = listing(options)
        if args.json:
            cli.print_json(rows)
        else:
            for row in rows:
                row['size'] = cli.human(row.get('size'))
                row['holds'] = cli.human(row.get('holds'))
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
        destroy(options, args.destroy, force=args.force)
        print('destroyed snapshot %s' % args.destroy)
        return 0
    if args.verify:
        result = verify(options, args.verify)
        print('snapshot %s verified: %s of Data.fs as recorded, %d '
              'transactions, %d blob files' % (
                  result['name'], cli.human(result['bytes']),
                  result['transactions'], result['blobs']))
        return 0
    if args.export:
        directory = export(options, *args.export)
        print('exported snapshot %s to %s' % (args.export[0], directory))
        return 0
    if args.prune:
        backend = backend_for(options)
        snapshots = prune_snapshots(backend)
        for name in snapshots:
            print('pruned snapshot %s' % name)
        generations = prune_generations(options, args.discard_writes)
        for name in generations:
            print('pruned data generation %s' % name)
        if not snapshots and not generations:
            print(nothing_to_prune(backend))
        return 0
    if args.for_release:
        cli.print_json(take_for_release(options, args.for_release,
                                        new_site=args.new_site))
        return 0
    if args.adopt:
        name = adopt(options)
        data = Config(**options).data
        print('adopted %s as data generation %s; point the site at %s' % (
            data, name, os.path.join(data, 'current')))
        return 0
    info = create(options, args.name)
    print('snapshot %s taken (%s, last transaction %s)' % (
        info['name'], info['backend'], info.get('last_tid')))
    return 0
