"""``zeo-server``: start, stop or ask about the data root's ZEO server (the
one bin/evolve-copy freezes and restarts)."""
import os
import sys

from ..core import cli
from ..core.errors import ConfigurationError
from .control import BLOBS
from .control import FS
from .server import ZEOServer


def parser(prog='zeo-server'):
    p = cli.parser(
        prog, 'Run the ZEO server of a data root on its current '
        'generation (the server bin/evolve-copy restarts).')
    p.add_argument('command', choices=['start', 'stop', 'status'])
    p.add_argument('--address', required=True, type=cli.value)
    p.add_argument('--state', required=True, type=cli.value,
                   help='directory for zeo.conf, zeo.pid, zeo.log')
    p.add_argument('--data', type=cli.value, help='the data root (start)')
    p.add_argument('--read-only', action='store_true')
    return p


def main(argv=None):
    """``zeo-server``: start / stop / status of the data root's server."""
    args = parser().parse_args(argv)

    def do():
        server = ZEOServer(args.address, args.state)
        if args.command == 'stop':
            server.stop()
        elif args.command == 'status':
            conf = server.configuration()
            print('%s: %s' % (server.describe(), 'running pid %s (%s, %s)' % (
                server.pid(), conf[0], 'read-only' if server.read_only()
                else 'writable') if server.pid() else 'stopped'))
        else:
            if not args.data:
                raise ConfigurationError('start needs --data DATA-ROOT')
            from ..data.layout import DataRoot
            root = DataRoot(args.data)
            if root.current_name() is None:
                # a new site: its first, empty generation
                root.create_empty()
            current = root.current_path()
            server.start(os.path.join(current, FS),
                         os.path.join(current, BLOBS), args.read_only)
    return cli.run('zeo-server', do)


if __name__ == '__main__':
    sys.exit(main())
