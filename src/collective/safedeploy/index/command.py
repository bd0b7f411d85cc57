"""``bin/index``: list, verify, rebuild from, and collect the package
indexes."""
import os
import sys

from ..core import cli
from .records import IndexFailure
from .records import read_record
from .records import store
from .records import verify


def parser(prog='index'):
    p = cli.parser(
        prog, 'The package indexes of the releases: list them, verify them, '
        'rebuild a release from its index offline, and collect unused pool '
        'files.')
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument('--list', action='store_true',
                      help='tags and their distributions')
    mode.add_argument('--verify', metavar='TAG', type=cli.value,
                      help='check every file of TAG\'s index against its '
                           'recorded sha256')
    mode.add_argument('--rebuild', nargs=2, metavar=('TAG', 'DIR'),
                      type=cli.value,
                      help='build release TAG again into the new directory '
                           'DIR from its index only, and compare versions')
    mode.add_argument('--gc', action='store_true',
                      help='remove pool files no index uses any more')
    cli.add_json(p, '--list', '--verify', '--rebuild')
    p.add_argument('--indexes', metavar='DIR', type=cli.value,
                   help='the indexes directory (default: set by the recipe, '
                        'else ./indexes)')
    p.add_argument('--pool', metavar='DIR', type=cli.value,
                   help='the pool directory (default: set by the recipe, '
                        'else ./pool)')
    p.add_companion(('--rebuild',), '--buildout', metavar='PATH',
                    type=cli.value,
                    help='the buildout command --rebuild runs (default: '
                         'the one beside this Python)')
    return p


def main(argv=None, prog='index', **options):
    """``bin/index``; ``options`` (indexes, pool, buildout) come from the
    recipe and are overridden by the command line."""
    p = parser(prog)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose, args.quiet)
    indexes_dir = os.path.abspath(
        args.indexes or options.get('indexes') or 'indexes')
    pool_dir = os.path.abspath(args.pool or options.get('pool') or 'pool')
    buildout = args.buildout or options.get('buildout')
    return cli.run(prog, _dispatch, args, indexes_dir, pool_dir, buildout)


def _dispatch(args, indexes_dir, pool_dir, buildout):
    if args.list:
        return do_list(indexes_dir, args.json)
    if args.verify:
        return do_verify(indexes_dir, pool_dir, args.verify, args.json)
    if args.rebuild:
        return do_rebuild(indexes_dir, args.rebuild[0], args.rebuild[1],
                          buildout, args.json)
    return do_gc(indexes_dir, pool_dir)


def do_list(indexes_dir, as_json):
    """The indexes in the order they were built; a damaged one (its record
    is not what we write) is listed as such, and the listing goes on."""
    result = []
    for row in store(indexes_dir).history(strict=False):
        tag = row['name']
        if row['state'] == 'damaged':
            result.append(dict(tag=tag, created=None, distributions=[],
                               damaged=row.get('reason') or 'its record is '
                               'damaged', line=row.get('line')))
            continue
        if not row['exists'] or row['state'] != 'built':
            continue
        record = read_record(os.path.join(indexes_dir, tag))
        result.append(dict(tag=tag, created=record.get('created'),
                           distributions=[
                               {k: d.get(k) for k in (
                                   'name', 'version', 'file', 'sha256',
                                   'develop', 'environment')}
                               for d in record.get('distributions', [])]))
    if as_json:
        cli.print_json(result)
        return 0
    if not result:
        print('no package indexes in %s' % indexes_dir)
        return 0
    for i, item in enumerate(result):
        if i:
            print()
        if item.get('damaged'):
            print('%s  DAMAGED: %s' % (
                item['tag'] or 'journal line %s' % item.get('line'),
                item['damaged']))
            continue
        print('%s  (%d distributions, %s)' % (
            item['tag'], len(item['distributions']), item['created']))
        rows = [dict(d, where='develop' if d['develop'] else
                     'environment' if d['environment'] else 'pool')
                for d in item['distributions']]
        cli.print_table(rows, [('name', '  name'), ('version', 'version'),
                               ('where', 'from'), ('file', 'file')])
    return 0


def do_verify(indexes_dir, pool_dir, tag, as_json):
    results = verify(indexes_dir, pool_dir, tag)
    bad = [(f, p) for f, p in results if p]
    if as_json:
        cli.print_json([dict(file=f, ok=p is None, problem=p)
                        for f, p in results])
    else:
        for name, problem in results:
            print('%-4s %s%s' % ('ok' if problem is None else 'BAD', name,
                                 '' if problem is None else ': ' + problem))
    if bad:
        raise IndexFailure(
            'the index of %s has %d bad file(s) out of %d: %s; restore them '
            'from a backup of the pool (or the download cache)' % (
                tag, len(bad), len(results),
                ', '.join('%s (%s)' % b for b in bad)))
    if not as_json:
        print('%s: all %d files verified' % (tag, len(results)))
    return 0


def do_rebuild(indexes_dir, tag, directory, buildout, as_json):
    from .rebuild import rebuild   # pkginfo: only when rebuilding
    rows = rebuild(indexes_dir, tag, directory, buildout)
    if as_json:
        cli.print_json(rows)
    else:
        cli.print_table(rows, [('name', 'name'), ('recorded', 'recorded'),
                               ('rebuilt', 'rebuilt'), ('source', 'from')])
        print('%s rebuilt into %s with the recorded versions' % (
            tag, directory))
    return 0


def do_gc(indexes_dir, pool_dir):
    from .pool import gc
    removed = gc(indexes_dir, pool_dir)
    for name in removed:
        print('removed %s' % name)
    print('%d unused pool file(s) removed' % len(removed))
    return 0


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
