"""bin/rollback: back to the previous good release, or to a named one.

usage: rollback [TAG] [--list] [--json] [--dry-run]

With no TAG, ``current`` goes back to the newest good release built
before the current one.  The same lock, atomic flip, after-flip hook and
health gate as a release build apply.  Works when the current release is
broken or the last build failed halfway: this script lives in the
buildout's root bin directory and needs nothing from any release.
"""
import logging
import os

from . import cli
from . import release
from .generations import Generations

logger = logging.getLogger('collective.safedeploy')


def parser(prog='rollback'):
    p = cli.ArgumentParser(
        prog=prog,
        description='Point current back at an earlier good release.')
    p.add_argument('tag', nargs='?',
                   help='the release to go back to (default: the previous '
                        'good release)')
    p.add_argument('--list', action='store_true',
                   help='list the releases: tag, built at, state, current')
    p.add_argument('--json', action='store_true',
                   help='with --list: print JSON for scripts')
    p.add_argument('--dry-run', '-n', action='store_true',
                   help='say what would be done, change nothing')
    p.add_argument('--with-data', action='store_true',
                   help='also restore the data snapshot paired with the '
                        'release')
    p.add_argument('--discard-writes', action='store_true',
                   help='allow discarding transactions committed after the '
                        'snapshot (--with-data) or since bin/evolve-copy '
                        'switched the data (they are kept aside)')
    p.add_argument('-q', '--quiet', action='store_true')
    return p


def list_releases(gens, as_json=False):
    rows = gens.history()
    for row in rows:
        row['tag'] = row.pop('name')
        row['current'] = bool(row['current'])
    if as_json:
        cli.print_json(rows)
        return 0
    table = [dict(r, current='*' if r['current'] else '',
                  built=(r['built'] or '')[:19].replace('T', ' '))
             for r in rows]
    cli.print_table(table, [('current', 'current'), ('tag', 'tag'),
                            ('built', 'built at (UTC)'), ('state', 'state')])
    return 0


def rollback(releases_directory, current, buildout_directory=None,
             tag=None, dry_run=False, with_data=False,
             discard_writes=False, evolve_copy=None, data=None):
    gens = Generations(releases_directory, current, kind='release',
                       what='tag')
    with gens.lock():
        previous, target = release.roll_back(
            gens, tag, dry_run=True, buildout_directory=buildout_directory)
        if dry_run:
            print('would roll back: current %s -> %s' % (previous, target))
            return 0
        pair = paired_snapshot(gens, target)
        if with_data and pair is None:
            raise release.Refused(
                'no snapshot holds the data of release %s (none was taken '
                'when the release after it was flipped in); roll back the '
                'code alone, without --with-data' % target)
        if with_data:
            restore_data(pair, discard_writes)
        elif evolve_copy:
            switch_data_back(gens, target, evolve_copy, data, discard_writes)
        release.roll_back(gens, target,
                          buildout_directory=buildout_directory)
        print('rolled back: current %s -> %s' % (previous, target))
        if pair is not None and not with_data:
            print('data was not touched; snapshot %s holds the data as it '
                  'was when %s was current (bin/rollback %s --with-data '
                  'restores it)' % (pair['snapshot'], target, target))
    return 0


def data_generation_for(gens, target, data):
    """The data generation release ``target`` runs on, when bin/evolve-copy
    has since switched the data for a later release: the generation that
    was current before the first such switch.  None: no later switch, the
    current data is ``target``'s."""
    from .generations import Generations
    order = gens.order()
    if target not in order:
        return None
    later = set(order[order.index(target) + 1:])
    data_gens = Generations(os.path.join(data, 'generations'),
                            os.path.join(data, 'current'),
                            kind='data generation', what='generation')
    for entry in data_gens.journal.entries():
        if (entry['event'] == 'published' and entry.get('release') in later
                and entry.get('previous')):
            return entry['previous']
    return None


def switch_data_back(gens, target, evolve_copy, data, discard_writes):
    """Put the data back on the generation ``target`` was paired with,
    through bin/evolve-copy (which restarts the database server on it and
    runs the client hooks)."""
    generation = data_generation_for(gens, target, data)
    if generation is None:
        return
    current = os.path.basename(os.readlink(os.path.join(data, 'current'))) \
        if os.path.islink(os.path.join(data, 'current')) else None
    if generation == current:
        return
    run_data_command([evolve_copy, '--switch-back', generation],
                     discard_writes,
                     'data not switched back to generation %s' % generation)


def paired_snapshot(gens, tag):
    """The newest snapshot holding the data as it was while ``tag`` was
    current: taken just before a later release was flipped in
    (safedeploy:snapshot-before-flip records it as ``data-of`` the release
    it replaced)."""
    pair = None
    for entry in gens.journal.entries():
        if (entry['event'] == 'paired' and entry.get('data-of') == tag
                and entry.get('script')):
            pair = entry
    return pair


def restore_data(pair, discard_writes):
    """The data back to the snapshot taken just before ``pair``'s release
    was flipped in, by the snapshot part's own bin/snapshot.  It refuses
    (nothing changed) when that would discard transactions committed
    since, unless ``discard_writes``, and while the database runs."""
    run_data_command([pair['script'], '--restore', pair['snapshot']],
                     discard_writes, 'data not restored')


def run_data_command(args, discard_writes, failure):
    """Run bin/snapshot or bin/evolve-copy for the data side of a rollback
    (the code has not been touched yet); its one-line error becomes ours."""
    import subprocess
    if discard_writes:
        args = args + ['--discard-writes']
    try:
        p = subprocess.run(args, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise release.Refused('cannot run %s: %s; nothing was rolled back'
                              % (args[0], e.strerror))
    if p.returncode:
        reason = (p.stderr.strip().splitlines() or ['it failed'])[-1]
        reason = reason.split('error: ', 1)[-1]
        raise release.Refused('%s: %s; the code was not rolled back either'
                              % (failure, reason))
    print(p.stdout.strip())


def main(argv=None, releases_directory=None, current=None,
         buildout_directory=None, evolve_copy=None, data=None):
    args = parser().parse_args(argv)
    cli.setup_logging(quiet=args.quiet)
    if releases_directory is None or current is None:
        here = os.getcwd()
        releases_directory = releases_directory or os.path.join(
            here, 'releases')
        current = current or os.path.join(here, 'current')
    gens = Generations(releases_directory, current, kind='release',
                       what='tag')
    if args.list:
        return cli.run('rollback', list_releases, gens, args.json)
    return cli.run('rollback', rollback, releases_directory, current,
                   buildout_directory, args.tag, args.dry_run,
                   args.with_data, args.discard_writes, evolve_copy, data)
