"""bin/rollback: back to the previous good release, or to a named one;
bin/flip: forward to a release built without a flip.

usage: rollback [TAG] [--with-data] [--discard-writes] [--dry-run]
       rollback --list [--json]
       flip TAG [--dry-run]

With no TAG, ``current`` goes back to the newest good release built
before the current one.  The same lock, atomic flip, after-flip hook and
health gate as a release build apply.  Works when the current release is
broken or the last build failed halfway: this script lives in the
buildout's own bin directory and needs nothing from any release.

Code and data move together.  ``--with-data`` restores the snapshot that
holds the data as it was when TAG was left; with an evolve-copy part, a
release that ran on an older data generation gets that generation back.
The data step runs in this process, through the library, before the code
flip; if the code flip or its health gate then fails, the data goes back
too, and the last line says where code and data are.  Either data step
refuses to discard transactions committed since (after the snapshot, or
on the newer generation) unless ``--discard-writes``: that is why the
flag goes with a plain rollback too, not only with ``--with-data``; a
rollback that moves no data has nothing to discard.
"""
import logging
import os

from . import pairing
from . import settings as configuration
from ..core import cli
from ..core.errors import HealthCheckFailed
from ..core.errors import NotFound
from ..core.errors import Refused

logger = logging.getLogger('collective.safedeploy')


def parser(prog='rollback'):
    p = cli.parser(prog, 'Point current back at an earlier good release.')
    p.add_argument('tag', nargs='?', type=cli.value,
                   help='the release to go back to (default: the previous '
                        'good release)')
    p.add_argument('--list', action='store_true',
                   help='list the releases: tag, built at, state, current')
    cli.add_json(p)
    p.add_argument('--dry-run', '-n', action='store_true',
                   help='say what would be done, change nothing')
    p.add_argument('--with-data', action='store_true',
                   help='also restore the data snapshot paired with the '
                        'release')
    p.add_argument('--discard-writes', action='store_true',
                   help='go on although the data step discards '
                        'transactions (they are kept aside): with '
                        '--with-data, those committed after the snapshot; '
                        'without it, when TAG ran on an older data '
                        'generation that bin/rollback switches back to '
                        '(the recipe\'s evolve-copy option), those '
                        'committed since bin/evolve-copy switched away '
                        'from it.  A rollback that moves no data has '
                        'nothing to discard')
    return p


def check_arguments(p, args):
    if args.list:
        for flag in ('tag', 'dry_run', 'with_data', 'discard_writes'):
            if getattr(args, flag):
                p.error('--list only lists; drop %s' % (
                    'TAG' if flag == 'tag' else
                    '--' + flag.replace('_', '-')))


def list_releases(gens, as_json=False):
    rows = gens.history(strict=False)
    for row in rows:
        row['tag'] = row.pop('name')
        row['current'] = bool(row['current'])
    if as_json:
        cli.print_json(rows)
        return 0
    table = [dict(r, current='*' if r['current'] else '',
                  tag=r['tag'] or '(line %s)' % r.get('line'),
                  built=(r['built'] or '')[:19].replace('T', ' '))
             for r in rows]
    cli.print_table(table, [('current', 'current'), ('tag', 'tag'),
                            ('built', 'built at (UTC)'), ('state', 'state')])
    return 0


class DataStep:
    """The data side of a rollback: what it does, and how it is undone."""

    def __init__(self, kind, target, options, discard_writes):
        self.kind = kind          # 'restore' (a snapshot), 'switch-back'
        self.target = target      # snapshot name, or data generation
        self.options = options
        self.discard_writes = discard_writes
        self.result = None
        self.before = None        # the data generation current before

    def describe(self):
        if self.kind == 'restore':
            text = 'data restored from snapshot %s' % self.target
        else:
            text = 'data switched back to generation %s' % self.target
        return text + self.discarded()

    def discarded(self):
        """After :meth:`run`: how many transactions the step discarded and
        where they are kept."""
        result = self.result or {}
        if result.get('discarded') is None:
            return ''
        kept = result.get('replaced') or result.get('previous')
        if result.get('backend') == 'zfs':
            kept = result.get('kept') and 'ZFS dataset %s' % result['kept']
        elif kept:
            kept = 'generation %s' % kept
        return ' (%d transaction(s) discarded%s)' % (
            result['discarded'], ', kept in %s' % kept if kept else '')

    def check(self):
        """What :meth:`run` refuses, refused the same way, changing
        nothing (``--dry-run``): a snapshot that is not there, or restoring
        one or switching back to a data generation when that discards
        writes, without ``discard_writes``.  Returns the words saying what
        the run would discard ('' on RelStorage: it checks when it
        runs)."""
        if self.kind == 'restore':
            from ..data import snapshot
            writes = snapshot.check_restore(self.options, self.target,
                                            self.discard_writes)
            return ' (%d transaction(s) would be discarded, kept aside)' % (
                writes) if writes else ''
        if self.options.get('storage') == 'relstorage':
            return ''
        from ..evolve import switchback
        data = switchback.DataRoot(self.options['data'])
        current = data.current()
        target = data.generations.resolve(self.target)
        writes = switchback.check_writes(data, current, target,
                                         self.discard_writes)
        return ' (%d transaction(s) would be discarded, kept in generation '\
            '%s)' % (writes, current) if writes else ''

    def root(self):
        from ..data.layout import DataRoot
        return DataRoot(self.options['data'],
                        self.options.get('files') or None)

    def run(self):
        self.before = self.root().current_name()
        if self.kind == 'restore':
            from ..data import snapshot
            self.result = snapshot.restore(
                self.options, self.target,
                discard_writes=self.discard_writes)
        elif self.options.get('storage') == 'relstorage':
            from ..data import relstorage_options as relstorage
            self.result = relstorage.switch_back_with(
                self.options, self.target, self.discard_writes)
        else:
            from ..evolve import switchback
            self.result = switchback.switch_data_back_with(
                self.options, self.target, self.discard_writes)
        return self.result

    def generation(self):
        """The data generation the rollback's release runs on now."""
        if self.kind == 'switch-back':
            return self.target
        return (self.result or {}).get('generation')

    def undo(self):
        """Put the data back where it was before :meth:`run` -- whether it
        finished or was interrupted half-way; returns the words saying
        where the data is."""
        if self.before is None:
            return 'the data was not changed'
        if self.options.get('storage') == 'relstorage':
            from ..data import relstorage_options as relstorage
            now = relstorage.undo_with(self.options, self.before)
            if now == self.before:
                return 'the data was not changed (generation %s)' % now
            return ('data current back on generation %s (generation %s '
                    'kept)' % (self.before, now))
        root = self.root()
        if self.kind == 'restore' and (self.result or {}).get('backend') \
                == 'zfs':
            return ('the data stays restored from snapshot %s (a zfs '
                    'rollback cannot be undone; what it discarded is kept in '
                    '%s)' % (self.target, self.result.get('kept') or
                             'no dataset: nothing was discarded'))
        with root.lock():
            now = root.current_name()
            if now != self.before:
                root.generations.flip(self.before, via='undo', left=now)
        if self.kind == 'switch-back':
            from ..evolve import switchback
            switchback.thaw_on(self.options, self.before)
        if now == self.before:
            return 'the data was not changed (generation %s)' % self.before
        return 'data current back on generation %s (generation %s kept)' % (
            self.before, now)


def plan_data(gens, target, with_data, discard_writes, snapshot,
              evolve_copy):
    """The data step rolling back to ``target`` needs, or None."""
    releases = gens.directory
    generation, paired, later_evolved = pairing.lookup(releases, target,
                                                       gens.order())
    if with_data:
        if paired is None or not snapshot:
            raise Refused(
                'no snapshot holds the data of release %s (none was taken '
                'when the release after it was flipped in); roll back the '
                'code alone, without --with-data' % target)
        return DataStep('restore', paired.snapshot, snapshot, discard_writes)
    if evolve_copy and generation and later_evolved:
        data = evolve_copy.get('data')
        link = os.path.join(data, 'current') if data else None
        current = os.path.basename(os.readlink(link)) if link and \
            os.path.islink(link) else None
        if generation != current:
            return DataStep('switch-back', generation, evolve_copy,
                            discard_writes)
    return None


def rollback(releases_directory, current, buildout_directory=None,
             tag=None, dry_run=False, with_data=False,
             discard_writes=False, snapshot=None, evolve_copy=None):
    # the release machinery (hooks, excluded parts) loads only when current
    # is to move: bin/rollback --list starts without it
    from . import lifecycle
    gens = configuration.releases(releases_directory, current)
    if dry_run:       # writes nothing, not even the lock file
        if not gens.owned():
            raise NotFound('no releases in %s' % releases_directory)
        previous, target = lifecycle.roll_back(
            gens, tag, dry_run=True, buildout_directory=buildout_directory)
        step = plan_data(gens, target, with_data, discard_writes, snapshot,
                         evolve_copy)
        # the real run's verdict: what it would refuse is refused here too
        discards = step.check() if step else ''
        print('would roll back: current %s -> %s%s' % (
            previous, target, '; %s%s' % (step.describe().replace(
                'data ', 'data would be ', 1), discards) if step else ''))
        return 0
    if not gens.owned():
        raise NotFound('no releases in %s; bin/rollback works in the '
                       'buildout directory of a site released with '
                       'collective.safedeploy' % releases_directory)
    with gens.lock('a release build or rollback'):
        previous, target = lifecycle.roll_back(
            gens, tag, dry_run=True, buildout_directory=buildout_directory)
        step = plan_data(gens, target, with_data, discard_writes, snapshot,
                         evolve_copy)
        try:
            if step is not None:
                step.run()
                print(step.describe())
                pairing.record(releases_directory, target, 'rollback',
                               generation=step.generation())
            lifecycle.roll_back(gens, target,
                                buildout_directory=buildout_directory)
        except BaseException as e:
            if step is None:
                raise
            restore = cli.ignore_signals()
            try:
                where = step.undo()
                if step.before is not None:
                    pairing.record(releases_directory, gens.current_name(),
                                   'undo', generation=step.before)
            finally:
                restore(deliver=False)
            code = getattr(e, 'safedeploy_where', None) or \
                'current still points to %s' % (gens.current_name() or
                                                'nothing')
            if isinstance(e, HealthCheckFailed):
                raise HealthCheckFailed('%s; %s' % (e, where))
            if isinstance(e, Exception):
                raise Refused('%s; %s; %s' % (e, code, where))
            e.safedeploy_where = '%s; %s' % (code, where)
            raise
        print('rolled back: current %s -> %s' % (previous, target))
        _, paired, _ = pairing.lookup(releases_directory, target)
        if paired is not None and step is None and snapshot:
            print('data was not touched; snapshot %s holds the data as it '
                  'was when %s was current (bin/rollback %s --with-data '
                  'restores it)' % (paired.snapshot, target, target))
    return 0


def locations(releases_directory, current):
    """The releases directory and current link (default: in the working
    directory), and what to say after an interrupt."""
    here = os.getcwd()
    releases_directory = releases_directory or os.path.join(here, 'releases')
    current = current or os.path.join(here, 'current')
    gens = configuration.releases(releases_directory, current)

    def where():
        try:
            return 'current points to %s' % (gens.current_name() or
                                              'nothing')
        except Exception:
            return ''
    return releases_directory, current, gens, where


def main(argv=None, releases_directory=None, current=None,
         buildout_directory=None, snapshot=None, evolve_copy=None):
    p = parser()
    args = p.parse_args(argv)
    check_arguments(p, args)
    cli.setup_logging(args.verbose, args.quiet)
    releases_directory, current, gens, where = locations(
        releases_directory, current)
    if args.list:
        return cli.run('rollback', list_releases, gens, args.json)
    return cli.run('rollback', rollback, releases_directory, current,
                   buildout_directory, args.tag, args.dry_run,
                   args.with_data, args.discard_writes, snapshot,
                   evolve_copy, on_interrupt=where)


# -- bin/flip ---------------------------------------------------------------

def flip_parser(prog='flip'):
    p = cli.parser(prog, 'Make a complete release current: one built with '
                   'safedeploy:flip = false, or any good one; the same lock, '
                   'after-flip hook and health gate as a build.')
    p.add_argument('tag', type=cli.value, help='the release to make current')
    p.add_argument('--dry-run', '-n', action='store_true',
                   help='say what would be done, change nothing')
    return p


def flip(releases_directory, current, tag, buildout_directory=None,
         dry_run=False, snapshot=None, snapshot_before_flip=False):
    """``current`` -> ``tag``.  With ``snapshot_before_flip`` the data is
    snapshotted first, as bin/buildout does before a flip."""
    from . import lifecycle   # as in rollback(): not for --list
    gens = configuration.releases(releases_directory, current)
    if not gens.owned():
        raise NotFound('no releases in %s' % releases_directory)
    if dry_run:
        previous, target = lifecycle.roll_back(gens, tag, dry_run=True,
                                               via='flip')
        print('would flip: current %s -> %s' % (previous, target))
        return 0
    with gens.lock('a release build or rollback'):
        previous, target = lifecycle.roll_back(gens, tag, dry_run=True,
                                               via='flip')
        if snapshot_before_flip and snapshot:
            from ..data import snapshot as snapshots
            taken = snapshots.take_for_release(snapshot, target)
            pairing.record(releases_directory, previous,
                           'snapshot-before-flip', snapshot=taken['name'],
                           generation=taken.get('generation'),
                           backend=taken.get('backend'),
                           last_tid=taken.get('last_tid'))
        lifecycle.roll_back(gens, target, buildout_directory=buildout_directory,
                            via='flip')
        if snapshot:
            from ..data.layout import DataRoot
            pairing.record(releases_directory, target, 'publish',
                           generation=DataRoot(snapshot['data']).current_name())
    print('flipped: current %s -> %s' % (previous, target))
    return 0


def flip_main(argv=None, releases_directory=None, current=None,
              buildout_directory=None, snapshot=None,
              snapshot_before_flip=False):
    """bin/flip TAG."""
    args = flip_parser().parse_args(argv)
    cli.setup_logging(args.verbose, args.quiet)
    releases_directory, current, gens, where = locations(
        releases_directory, current)
    return cli.run('flip', flip, releases_directory, current, args.tag,
                   buildout_directory, args.dry_run, snapshot,
                   snapshot_before_flip, on_interrupt=where)
