"""The listening socket of the ZEO server, kept open across its restarts.

A ZEO client whose connection is *dropped* reconnects at once; one whose
connect is *refused* (nothing listens on the port) waits 1 s plus up to
1 s at random before it tries again (``ZEO.asyncio.client``: ZEO 6's
ClientStorage ignores ``min-disconnect-poll``).  Every restart the
evolve-copy does -- the thaw onto the new generation above all -- used
to close the port between the old server's end and the new one's start:
the clients that tried then lost that second, on top of the read-only
window.

So the port is never closed.  The listening socket is bound once, by the
command that starts the first server (:func:`bind`), and handed on, the
same open socket, from each server process to the next:

- a server safedeploy starts (:mod:`.bootstrap`) gets it with its go,
  as a file descriptor passed over its control socket (:func:`send_go`,
  :func:`receive_go`), serves ZEO on it (:func:`acceptor_on`) instead of
  binding, and hands it to whoever asks next (:func:`offer`) on a unix
  socket of Linux's abstract namespace named after its state directory
  (only to a process of the same user);
- a restart takes it from the running server (:func:`take`) before
  stopping that one, and gives it to the next process.

Meanwhile the kernel goes on accepting connections into the socket's
backlog: a client connecting while no server process runs is connected
and waits for the new server's handshake -- it is never refused.

What a kill does: the socket stays open as long as one process holds it
(the old server, the restarting command, the in-flight go message, the
new server).  When the last holder dies -- the restarting command
SIGKILLed between taking it and handing it on, after stopping the old
server -- nobody listens, as before: the evolve-copy guard restarts the
server, which binds the port again.  The order that keeps two servers
from writing is unchanged: the next server opens the data only after
the old one has exited.
"""
import hashlib
import logging
import os
import socket
import struct
import sys
import threading

logger = logging.getLogger('collective.safedeploy')

# connections the kernel accepts while no server process does (capped at
# net.core.somaxconn): a client beyond it is not refused, but its SYN is
# dropped and retried a second later
BACKLOG = 4096


class ListenerError(OSError):
    """The address cannot be bound (something else listens there)."""


def family(address):
    return socket.AF_UNIX if isinstance(address, str) else socket.AF_INET


def bind(address):
    """A new listening socket on ``address`` ((host, port) or a unix socket
    path), as ZEO binds one (``SO_REUSEADDR``).  Not inheritable: it is
    passed on explicitly."""
    s = socket.socket(family(address), socket.SOCK_STREAM)
    try:
        if isinstance(address, tuple):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(address)
        s.listen(BACKLOG)
    except OSError as e:
        s.close()
        raise ListenerError(e.errno, e.strerror)
    return s


def offer_name(state_dir):
    """The abstract unix socket on which the server of ``state_dir`` hands
    its listening socket on (abstract: no file to leave behind after a
    SIGKILL, no path length limit)."""
    digest = hashlib.sha256(
        os.path.realpath(state_dir).encode('utf-8')).hexdigest()[:32]
    return '\0collective.safedeploy.zeo-listener.' + digest


def serves(sock, address):
    """True when ``sock`` is a listening socket on ``address``."""
    try:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return False
        name = sock.getsockname()
    except OSError:
        return False
    if isinstance(address, str):
        return sock.family == socket.AF_UNIX and name == address
    return sock.family == socket.AF_INET and name[1] == address[1] and (
        name[0] == address[0] or address[0] in ('', '0.0.0.0') or
        socket.gethostbyname(address[0]) == name[0])


def take(state_dir, address, timeout=5):
    """The listening socket of the running server of ``state_dir``, a
    duplicate the caller must pass on or close; None when no server offers
    one (not running, started by another runzeo or an older safedeploy)
    or it does not listen on ``address``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(offer_name(state_dir))
        s.sendall(b'listener\n')
        message, fds, _, _ = socket.recv_fds(s, 64, 1)
    except OSError as e:
        logger.debug('no listening socket handed over (%s)', e)
        return None
    finally:
        s.close()
    if not fds:
        return None
    sock = socket.socket(fileno=fds[0])
    if message.strip() != b'listener' or not serves(sock, address):
        sock.close()
        return None
    sock.set_inheritable(False)
    return sock


def offer(sock, state_dir):
    """Hand ``sock`` (this server's listening socket) to the processes of
    our user that ask on :func:`offer_name`, from a daemon thread, for as
    long as this process runs.  False when another process offers there
    already (then a restart binds the port again)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(offer_name(state_dir))
        server.listen(8)
    except OSError as e:
        server.close()
        logger.warning('cannot offer the listening socket to the next '
                       'server (%s): its clients will wait for a reconnect',
                       e)
        return False

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            try:
                _, uid, _ = struct.unpack('3i', conn.getsockopt(
                    socket.SOL_SOCKET, socket.SO_PEERCRED,
                    struct.calcsize('3i')))
                conn.settimeout(5)
                if uid in (os.getuid(), 0) and \
                        conn.recv(64).strip() == b'listener':
                    socket.send_fds(conn, [b'listener\n'], [sock.fileno()])
            except OSError:
                pass
            finally:
                conn.close()

    threading.Thread(target=serve, name='listener-offer', daemon=True).start()
    return True


def control_pair():
    """(ours, the child's): the control socket of a server process safedeploy
    starts (its stdin): the go comes with the listening socket."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def send_go(control, words, sock):
    """Send ``go WORDS...`` and ``sock`` over ``control``."""
    socket.send_fds(control, [(' '.join(['go'] + list(words)) + '\n'
                               ).encode('ascii')], [sock.fileno()])


def receive_go(control):
    """(words after 'go', listening socket) from :func:`send_go`, or
    (None, None): the starting command went away without a go."""
    try:
        message, fds, _, _ = socket.recv_fds(control, 256, 1)
    except OSError:
        return None, None
    words = message.decode('ascii', 'replace').split()
    if words[:1] != ['go'] or not fds:
        for fd in fds:
            os.close(fd)
        return None, None
    return words[1:], socket.socket(fileno=fds[0])


def acceptor_on(sock, serving):
    """A ``ZEO.asyncio.server.Acceptor`` class that serves on ``sock``, the
    listening socket handed over, instead of binding the address (which is
    taken: by ``sock`` itself); ``sock`` None: it binds, as ZEO's does.
    It calls ``serving(listening_socket)`` once it accepts.  The rest --
    protocol, closing -- is ZEO's."""
    import asyncio
    from ZEO.asyncio import server as zeoserver

    class Acceptor(zeoserver.Acceptor):

        handed_over = sock is not None
        listening = False

        def __init__(self, storage_server, addr, ssl, msgpack):
            if sock is None:
                super().__init__(storage_server, addr, ssl, msgpack)
                Acceptor.listening = True
                serving(self.server.sockets[0])
                return
            self.storage_server = storage_server
            self.addr = addr
            self.ssl_context = ssl
            self.msgpack = msgpack
            self.event_loop = loop = zeoserver.new_event_loop()
            if sock.family == socket.AF_UNIX:
                # Python 3.13 removes a unix socket's file when the server
                # closes: the next server serves it
                kw = dict(cleanup_socket=False) if sys.version_info >= (
                    3, 13) else {}
                cr = loop.create_unix_server(self.factory, sock=sock, ssl=ssl,
                                             backlog=BACKLOG, **kw)
            else:
                # asyncio listens again: with our backlog, not its 100
                cr = loop.create_server(self.factory, sock=sock, ssl=ssl,
                                        backlog=BACKLOG)
            self.server = loop.run_until_complete(
                asyncio.ensure_future(cr, loop=loop))
            if isinstance(addr, tuple):
                self.addr = sock.getsockname()[:2]
            Acceptor.listening = True
            zeoserver.logger.info('listening on %s (socket handed over)',
                                  str(self.addr))
            serving(sock)

    return Acceptor
