"""A part's ``storage = relstorage`` options, and the data steps the
commands take through them: bin/snapshot's, the snapshot bin/buildout
takes before a flip, and bin/rollback's switch back and restore (the
generations themselves: :mod:`.relstorage`)."""
from ..core import options as opts
from ..core.errors import ConfigurationError

#: the options the snapshot and evolve-copy parts share for RelStorage
OPTIONS = [
    opts.Option('storage', 'filestorage', opts.choice('filestorage',
                                                      'relstorage')),
    opts.Option('dsn', '', opts.text),
    opts.Option('keep-history', '', opts.text),
    opts.Option('blob-cache', '', opts.text),
    opts.Option('client-cache', '', opts.text),
    opts.Option('shared-blob-dir', '', opts.text),
]


def is_relstorage(option):
    """The storage-kind dispatch: True when the part's options (or
    command line, ``option(name)``) say ``storage = relstorage``."""
    kind = (option('storage') or 'filestorage').strip()
    if kind not in ('filestorage', 'relstorage'):
        raise ConfigurationError('storage = %s: use filestorage (the '
                                 'default) or relstorage' % kind)
    return kind == 'relstorage'


def root_from_options(option):
    """A :class:`RelStorageRoot` from a part's options."""
    data, dsn = option('data'), option('dsn')
    if not data:
        raise ConfigurationError('no data root: set data = (the directory '
                                 'of the journal and manifests) or --data')
    if not dsn:
        raise ConfigurationError('storage = relstorage needs dsn = (the '
                                 'clients\' libpq DSN, e.g. dbname=site '
                                 'host=/run/postgresql)')
    keep = (option('keep-history') or '').strip().lower()
    if keep not in ('true', 'false', ''):
        raise ConfigurationError('keep-history = %s: use true or false (or '
                                 'leave it out: the schema says)' % keep)
    # imported only when a part says storage = relstorage: a FileStorage
    # site's commands never load it
    from .relstorage import RelStorageRoot
    return RelStorageRoot(
        data, dsn, keep_history={'true': True, 'false': False}.get(keep),
        blob_cache=option('blob-cache') or None,
        shared_blob_dir=option('shared-blob-dir') or None,
        cache_dirs=(option('client-cache') or '').split())


def options_getter(options):
    """``option(name)`` over a part's options (or keyword arguments)."""
    return lambda name: (options.get(name) or
                         options.get(name.replace('-', '_')) or None)


def switch_back_with(options, target, discard_writes=False):
    """bin/rollback's data step on RelStorage: ``target`` current again
    (see :meth:`RelStorageRoot.rollback`)."""
    return root_from_options(options_getter(options)).rollback(
        target, discard_writes=discard_writes)


def restore_with(options, name, discard_writes=False):
    """bin/rollback TAG --with-data on RelStorage: a copy of the snapshot
    paired with TAG (a data generation) made current (see
    :meth:`RelStorageRoot.restore`)."""
    return root_from_options(options_getter(options)).restore(
        name, discard_writes=discard_writes)


def take_for_release_with(options, tag):
    """The snapshot just before the flip to ``tag`` (a new data
    generation, not current); what the release journal records."""
    root = root_from_options(options_getter(options))
    with root.lock():
        return root.snapshot_for_release(tag)


def paired_generations(releases):
    """The data generations a release still there is paired with: the one
    it last ran on and the snapshot of its data (never pruned)."""
    from ..release import pairing
    from .snapshot import kept_releases
    kept = kept_releases(releases)
    if not kept:
        return set()
    result = set()
    for release in kept:
        generation, snapshot, _ = pairing.lookup(releases, release)
        result.update(n for n in (generation, snapshot and snapshot.snapshot)
                      if n)
    return result


def undo_with(options, before):
    """Put ``before`` back as the current generation (a rollback whose
    release side failed)."""
    root = root_from_options(options_getter(options))
    with root.lock():
        now = root.current_name()
        if now != before:
            root.switch_to(before, via='undo', left=now)
    return now


def snapshot_command(args, options):
    """bin/snapshot with ``storage = relstorage``: a snapshot is a data
    generation (a database ``<site>_gN``), named by its number."""
    from ..core import cli
    root = root_from_options(options_getter(options))
    if args.name or args.destroy or args.force or args.export:
        raise ConfigurationError(
            'storage = relstorage: snapshots are data generations named by '
            'number; take one with bin/snapshot, list them with --list, '
            'remove old ones with --prune')
    if args.for_release:
        cli.print_json(take_for_release_with(options, args.for_release))
        return 0
    if args.list:
        rows = root.history()
        if args.json:
            cli.print_json(rows)
        else:
            cli.print_table(rows, [('name', 'NAME'), ('built', 'BUILT'),
                                   ('database', 'DATABASE'),
                                   ('state', 'STATE')])
        return 0
    if args.adopt:
        print('adopted database %s as data generation %s' % (
            root.site, root.adopt()))
        return 0
    if args.restore:
        result = root.restore(args.restore,
                              discard_writes=args.discard_writes)
        print('restored data generation %s as data generation %s, database '
              '%s (generation %s kept; %d client cache files removed)' % (
                  result['name'], result['generation'], root.site,
                  result['left'], result['caches']))
        return 0
    with root.lock():
        if args.prune:
            keep = int(options.get('keep') or 10)
            protect = paired_generations(options.get('releases'))
            pruned = root.generations.prune(
                keep, protect=protect) if keep else []
            for name in pruned:
                print('pruned data generation %s' % name)
            if not pruned:
                print('nothing to prune: %s, keep=%d%s' % (
                    cli.count(len(root.generations.on_disk(strict=False)),
                              'data generation'), keep,
                    '' if keep else ' (all)'))
            return 0
        name = root.new_generation()
    m = root.generations.manifest(name)
    print('snapshot %s taken (database %s, %s, last transaction %s)' % (
        name, root.spare(name), m['copied_by'], m['last_tid']))
    return 0
