"""``bin/evolve-copy``: the command line of the evolve-copy procedure
(:mod:`.procedure`), its rehearsal (:mod:`.rehearse`) and the switch back
(:mod:`.switchback`)."""
import os
import sys

from ..core import cli
from ..core import options as opts
from ..core.errors import ConfigurationError
from ..data.layout import DEFAULT_KEEP_GENERATIONS
from ..zeo.control import make_control
from .procedure import EvolveCopy
from .rehearse import rehearse
from .switchback import switch_data_back


def parser():
    p = cli.parser(
        'evolve-copy',
        'Run the evolve on a copy of the database and switch to it only '
        'when it succeeded; production is read-only only while the writes '
        'made since the copy are caught up and the evolve runs.')
    mode = p.add_mutually_exclusive_group()
    mode.add_argument('--resume', action='store_true',
                      help='continue a killed or failed run on its copy '
                           'from the last committed evolve step')
    mode.add_argument('--rehearse', action='store_true',
                      help='run the evolve in a copy-on-write sandbox over '
                           'production; nothing is copied or switched')
    mode.add_argument('--switch-back', metavar='GENERATION', type=cli.value,
                      help='make the older data generation GENERATION '
                           'current again (bin/rollback does this for a '
                           'release paired with older data); refuses to '
                           'discard writes made since the switch unless '
                           '--discard-writes')
    p.add_companion(('--rehearse',), '--keep-sandbox', metavar='DIR',
                    nargs='?', const='', default=None,
                    help='with --rehearse: keep the sandbox (in DIR) with '
                         'a zodb.conf to serve it from')
    cli.add_json(p, '--rehearse')
    p.add_companion(('--switch-back',), '--discard-writes',
                    action='store_true',
                    help='with --switch-back: go back even though '
                         'transactions were committed since the switch '
                         '(the abandoned generation is kept)')
    p.add_argument('--data', type=cli.value,
                   help='the data root (generations/, current)')
    p.add_argument('--evolve', type=cli.value,
                   help='package, package:schema_manager or '
                        'module:function(root, commit)')
    p.add_argument('--evolve-context', type=cli.value,
                   help='root key of the object evolveN modules get')
    p.add_argument('--keep-generations', metavar='N', type=cli.value,
                   help='data generations kept after a successful run '
                        '(0: all; default: from the part, else %d)'
                        % DEFAULT_KEEP_GENERATIONS)
    p.add_argument('--zeo-address', type=cli.value)
    p.add_argument('--zeo-state', type=cli.value)
    p.add_argument('--freeze-command', type=cli.value)
    p.add_argument('--thaw-command', type=cli.value)
    cli.add_storage(p)
    return p


def current_release(link):
    """The tag of the code release ``link`` (safedeploy:current) points
    to, and the releases directory; (None, None) without one."""
    if link and os.path.islink(link):
        target = os.path.realpath(link)
        return os.path.basename(target), os.path.dirname(target)
    return None, None


def main(argv=None, **options):
    """bin/evolve-copy; ``options`` come from the recipe."""
    p = parser()
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose, args.quiet)

    def option(name):
        value = getattr(args, name.replace('-', '_'), None)
        return value if value else (options.get(name.replace('-', '_')) or
                                    options.get(name) or None)

    def do():
        data = option('data')
        if not data:
            raise ConfigurationError('no data root: set data = in the '
                                     'evolve-copy part or pass --data')
        evolve = option('evolve')
        from ..data.relstorage_options import is_relstorage
        if is_relstorage(option):
            from . import relstorage
            if args.resume or args.rehearse or args.switch_back:
                raise ConfigurationError(
                    'storage = relstorage: --resume, --rehearse and '
                    '--switch-back are not available; run bin/evolve-copy '
                    '(a killed run starts again on a fresh copy) or '
                    'bin/rollback --with-data')
            release, releases = current_release(option('current'))
            return relstorage.main(option, release, releases)
        if args.rehearse:
            keep = args.keep_sandbox is not None
            result = rehearse(data, evolve, sandbox=args.keep_sandbox or None,
                              keep_sandbox=keep,
                              evolve_context=option('evolve-context'),
                              evolve_key=option('evolve-key'),
                              out=sys.stderr if args.json else sys.stdout)
            if args.json:
                cli.print_json(result)
            return 1 if result['errors'] else 0
        control = make_control(option('zeo-address'), option('zeo-state'),
                               option('runzeo'), option('freeze-command'),
                               option('thaw-command'))
        if args.switch_back:
            caches = (option('client-cache') or '').split()
            result = switch_data_back(
                data, args.switch_back, control,
                discard_writes=args.discard_writes,
                client_stop_command=option('client-stop-command'),
                client_start_command=option('client-start-command'),
                client_caches=caches)
            print('data current -> generation %s (was %s; %d transaction(s) '
                  'discarded, kept in generation %s)' % (
                      result['current'], result['previous'],
                      result['discarded'], result['previous']))
            return 0
        keep = opts.integer(0)(
            option('keep-generations') or str(DEFAULT_KEEP_GENERATIONS),
            '--keep-generations')
        # the data is paired with the release current now
        release, releases = current_release(option('current'))
        return EvolveCopy(
            data, evolve, control, evolve_context=option('evolve-context'),
            evolve_key=option('evolve-key'),
            release=release or option('release') or os.environ.get(
                'SAFEDEPLOY_RELEASE_TAG'),
            releases=releases, keep=keep).run(resume=args.resume)
    return cli.run('evolve-copy', do)


if __name__ == '__main__':
    sys.exit(main())
