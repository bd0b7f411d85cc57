"""``python -m collective.safedeploy.zeo.bootstrap CONF PIDFILE``: runzeo,
with its imports done before the go, serving on a listening socket it is
handed.

:meth:`~collective.safedeploy.zeo.server.ZEOServer.prepare` starts this
while the copy is made; it imports ZEO and ZODB, says ``ready`` and waits
for its go on its stdin, a unix socket: ``go [POSITION]`` and the
listening socket of the server's address (:mod:`.listener`; end of file:
it exits).  Then it writes its pid file, sets the server up
(:func:`~collective.safedeploy.zeo.freeze.server_setup`) and runs runzeo
with the configuration written meanwhile -- on that socket, not binding
the address: the port stays open from one server process to the next,
and ZEO clients reconnecting meanwhile are not refused (a refused client
waits a second or two before it tries again).  Once it serves, it says
``serving`` on its stdin socket and offers the socket to the next server.
A restart inside the read-only window then costs the stop and the storage
open only.
"""
import os
import socket
import stat
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    conf, pidfile = argv[0], argv[1]
    import ZEO.runzeo
    import ZEO.StorageServer  # noqa: F401 (imported before the go)
    import ZODB.blob  # noqa: F401
    import ZODB.FileStorage  # noqa: F401
    from . import listener
    from .freeze import server_setup
    options = ZEO.runzeo.ZEOOptions()
    options.load_schema()
    print('ready', flush=True)
    go, sock, control = read_go()
    if go is None:
        return 0
    tmp = pidfile + '.%d.tmp' % os.getpid()
    with open(tmp, 'w') as f:
        f.write('%d freezable\n' % os.getpid())
    os.replace(tmp, pidfile)
    state_dir = os.path.dirname(pidfile)
    server_setup(state_dir, int(go[0]) if go else None)
    os.dup2(2, 1)

    def serving(serving_on):
        listener.offer(serving_on, state_dir)
        if control is not None:
            try:
                control.sendall(b'serving\n')
            except OSError:
                pass    # the starting command went away: we serve anyway
            control.close()

    options.realize(['-C', conf])
    runzeo_on(options, listener.acceptor_on(sock, serving)).main()
    return 0


def read_go():
    """(words after 'go', listening socket, control socket) from our stdin;
    words None: no go, exit.  Started by
    :meth:`~collective.safedeploy.zeo.server.ZEOServer.prepare`, stdin is a
    unix socket and the go comes with the listening socket.  Otherwise (a
    process manager running this in the foreground, its stdin a line
    ``go``) there is none: the server binds the address itself, and offers
    that socket to the next server all the same."""
    try:
        fd = sys.stdin.fileno()
        is_socket = stat.S_ISSOCK(os.fstat(fd).st_mode)
    except (AttributeError, OSError, ValueError):
        is_socket = False
    if not is_socket:
        words = sys.stdin.readline().split()
        return (words[1:] if words[:1] == ['go'] else None), None, None
    from . import listener
    control = socket.socket(fileno=os.dup(fd))
    go, sock = listener.receive_go(control)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
    return go, sock, control


def runzeo_on(options, acceptor):
    """runzeo's server, with ``acceptor`` (:func:`.listener.acceptor_on`)."""
    import ZEO.runzeo
    from ZEO.StorageServer import StorageServer

    class Server(ZEO.runzeo.ZEOServer):

        def check_socket(self):
            """Nothing to check when the address is ours (runzeo's check
            connects to it, and the socket handed over accepts)."""
            if not acceptor.handed_over:
                super().check_socket()

        def clear_socket(self):
            """Leave a unix socket's file once this server listens: the
            next server serves the same socket (a stale file is removed
            before a bind)."""
            if not acceptor.handed_over and not acceptor.listening:
                super().clear_socket()

        def create_server(self):
            """runzeo's create_server, with our acceptor."""
            o = self.options
            self.server = StorageServer(
                o.address, self.storages, read_only=o.read_only,
                client_conflict_resolution=o.client_conflict_resolution,
                msgpack=(o.msgpack if isinstance(o.msgpack, bool)
                         else os.environ.get('ZEO_MSGPACK')),
                invalidation_queue_size=o.invalidation_queue_size,
                invalidation_age=o.invalidation_age,
                transaction_timeout=o.transaction_timeout,
                ssl=o.ssl, Acceptor=acceptor)

    return Server(options)


if __name__ == '__main__':
    sys.exit(main())
