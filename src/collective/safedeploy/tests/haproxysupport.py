"""A real HAProxy on loopback for tests: its own configuration, admin
socket and server-state file in a temporary directory; stopped (and the
directory removed) in cleanup.  With ``prefix`` (e.g. an ``nsenter``
command) it runs in another network namespace: its loopback there."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HAPROXY = shutil.which('haproxy') or next(
    (p for p in ('/usr/sbin/haproxy', '/usr/local/sbin/haproxy')
     if os.path.exists(p)), None)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def skip_unless_haproxy(test):
    if HAPROXY is None:
        test.skipTest('haproxy is not installed (apt-get install haproxy)')


CONFIG = '''\
global
    stats socket {socket} level admin
    server-state-file {state}
    maxconn 500

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout queue 10s
    # a site answers 503 to a write it did not commit (its database is
    # frozen or away): HAProxy tries it again on another server
    retries 40
    option redispatch 1
    retry-on 503 conn-failure empty-response
    load-server-state-from-file global

frontend www
    bind 127.0.0.1:{port}
    default_backend {backend}

backend {backend}
    balance roundrobin
{servers}
'''


class HAProxy:
    """``servers``: [(name, port or 'host:port', initially_ready)]."""

    def __init__(self, test, servers, backend='site', check=None,
                 prefix=()):
        skip_unless_haproxy(test)
        self.directory = tempfile.mkdtemp(prefix='haproxy-')
        test.addCleanup(shutil.rmtree, self.directory, True)
        self.socket = os.path.join(self.directory, 'admin.sock')
        self.state_file = os.path.join(self.directory, 'server-state')
        self.config = os.path.join(self.directory, 'haproxy.cfg')
        # another network namespace has every port free
        self.port = 8000 if prefix else free_port()
        self.prefix = list(prefix)
        self.backend = backend
        lines = []
        if check:
            lines.append('    option httpchk GET %s' % check)
            lines.append('    default-server inter 300ms fall 2 rise 1')
        for name, address, ready in servers:
            if isinstance(address, int):
                address = '127.0.0.1:%d' % address
            lines.append('    server %s %s%s%s' % (
                name, address, ' check' if check else '',
                '' if ready else ' disabled'))
        with open(self.config, 'w') as f:
            f.write(CONFIG.format(socket=self.socket, state=self.state_file,
                                  port=self.port, backend=backend,
                                  servers='\n'.join(lines)))
        self.process = None
        self.start()
        test.addCleanup(self.stop)

    @property
    def spec(self):
        return 'haproxy:%s backend=%s state-file=%s' % (
            self.socket, self.backend, self.state_file)

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.port

    def start(self):
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        self.process = subprocess.Popen(
            self.prefix + [HAPROXY, '-db', '-f', self.config],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError('haproxy did not start: %s' %
                                     self.process.stderr.read().decode())
            if os.path.exists(self.socket) and self.listening():
                return
            time.sleep(0.02)
        raise AssertionError('haproxy did not open its socket in 10 s')

    def listening(self):
        if self.prefix:     # ask from inside its network namespace
            return subprocess.run(self.prefix + [
                sys.executable, '-c', 'import socket; socket.create_connection'
                '(("127.0.0.1", %d), 1).close()' % self.port],
                stderr=subprocess.DEVNULL).returncode == 0
        try:
            with socket.create_connection(('127.0.0.1', self.port), 1):
                return True
        except OSError:
            return False

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self.process.stderr.close()
        self.process = None

    def restart(self):
        """Stop and start again: runtime state comes back only from the
        server-state file."""
        self.stop()
        self.start()
