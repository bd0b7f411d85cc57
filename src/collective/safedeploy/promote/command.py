"""``bin/promote STAGE``: the command line of :mod:`.procedure`."""
import sys

from ..core import cli
from ..core.errors import ConfigurationError
from . import procedure
from . import stages as configuration


def parser():
    p = cli.parser(
        'promote',
        'Upgrade a stage through its twin behind the load balancer: the '
        'twin takes the traffic and the writes, the main set is brought '
        'up on the data, traffic goes back.  Resumes an unfinished '
        'promotion.')
    p.add_argument('stage', nargs='?', type=cli.value,
                   help='the stage to promote (see --list)')
    p.add_argument('--dry-run', action='store_true',
                   help='print the steps (those done by an unfinished '
                        'promotion marked) and change nothing')
    p.add_argument('--discard-writes', action='store_true',
                   help='with data-from = previous: go on although the '
                        'stage\'s data holds transactions the previous '
                        'stage\'s does not (they are discarded; without '
                        'this the promotion is refused, saying how many)')
    p.add_argument('--list', action='store_true',
                   help='list the stages, what each runs and its last '
                        'promotion; changes nothing')
    cli.add_json(p)
    p.add_argument('--config', type=cli.value,
                   help='the stages file ([stages], [stage:NAME])')
    p.add_argument('--directory', type=cli.value,
                   help='where each stage\'s journal is kept')
    return p


def listing(stages, directory):
    rows = []
    for name, stage in stages.items():
        row = dict(stage=name, promotable=stage is not None)
        if stage is not None:
            row.update(stage.as_dict())
            row['last'] = procedure.last_promotion(directory, name)
        rows.append(row)
    return rows


def main(argv=None, **options):
    p = parser()
    args = p.parse_args(argv)
    if args.list and (args.stage or args.dry_run):
        p.error('--list takes no stage and no --dry-run')
    if not args.list and not args.stage:
        p.error('name the stage to promote, or --list')
    cli.setup_logging(args.verbose, args.quiet)

    def do():
        config = args.config or options.get('config')
        directory = args.directory or options.get('directory')
        if not config or not directory:
            raise ConfigurationError(
                'no stages file or journal directory: set config = and '
                'directory = in the promote part, or pass --config and '
                '--directory')
        stages = configuration.load(config)
        if args.list:
            rows = listing(stages, directory)
            if args.json:
                cli.print_json(rows)
            else:
                for row in rows:
                    row['last'] = ('%(state)s %(run)s' % row['last']
                                   if row.get('last') else '-')
                    row['servers'] = ' '.join(row.get('servers', ()))
                cli.print_table(rows, [
                    ('stage', 'stage'), ('data_from', 'data from'),
                    ('servers', 'servers'), ('last', 'last promotion')])
            return 0
        stage = configuration.get(stages, args.stage, config)
        return procedure.Promotion(
            stage, directory, discard_writes=args.discard_writes).run(
                dry_run=args.dry_run)
    return cli.run('promote', do)


if __name__ == '__main__':
    sys.exit(main())
