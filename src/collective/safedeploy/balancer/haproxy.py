"""HAProxy through its runtime API, spoken directly over the admin socket.

The socket (``stats socket PATH level admin`` in HAProxy's ``global``)
takes one command per connection: send ``command\\n``, read to EOF.

* ``show stat`` (CSV) gives each server's ``scur`` (current sessions),
  ``qcur`` (queued) and ``status`` (UP, DOWN, DRAIN, MAINT, no check);
* ``show servers state BACKEND`` gives ``srv_admin_state``, a bit mask
  (0x01 forced maintenance, 0x02 inherited, 0x04 ``disabled`` in the
  configuration -- still set after ``state ready`` has put the server
  back into service, so it does not count --, 0x08 forced drain, 0x10
  inherited drain, 0x20 DNS resolution);
* ``set server BACKEND/SERVER state ready|drain|maint`` changes it.

Runtime state is lost when HAProxy reloads unless it is in the file named
by ``server-state-file`` (``global``; ``load-server-state-from-file
global`` in ``defaults``).  Given ``state-file=PATH``, every change is
followed by ``show servers state`` written to PATH (temporary file, fsync,
rename) and read back from there to verify it.
"""
import csv
import io
import os
import socket

from ..core import fsutil
from .base import (DRAIN, MAINT, READY, STATES, Balancer, BalancerError,
                   ServerState, register)

MAINT_BITS = 0x01 | 0x02 | 0x20
DRAIN_BITS = 0x08 | 0x10
ERRORS = ('No such', 'Unknown command', 'Permission denied',
          'Require ', 'expects ', 'Invalid', "'set server <srv>",
          'cannot', 'not found')


def admin_state(mask):
    if mask & MAINT_BITS:
        return MAINT
    if mask & DRAIN_BITS:
        return DRAIN
    return READY


def parse_servers_state(text):
    """``show servers state`` (or a server-state file) -> {(backend,
    server): fields}."""
    lines = text.splitlines()
    found = {}
    names = None
    for line in lines:
        if line.startswith('#'):
            names = line.lstrip('# ').split()
            continue
        words = line.split()
        if names is None or len(words) < 7:
            continue          # the version line, blank lines
        row = dict(zip(names, words))
        found[(row['be_name'], row['srv_name'])] = row
    return found


def parse_stat(text):
    """``show stat`` CSV -> list of dicts (one per proxy line)."""
    text = text.lstrip()
    if not text.startswith('# '):
        raise BalancerError('HAProxy answered "show stat" with %r' %
                            text[:80])
    return list(csv.DictReader(io.StringIO(text[2:])))


class HAProxy(Balancer):

    kind = 'haproxy'

    def __init__(self, socket_path, backend=None, timeout='5', **options):
        if options.get('state-file') is not None:
            options['state_file'] = options.pop('state-file')
        self.state_file = options.pop('state_file', None)
        if options:
            raise BalancerError(
                'haproxy balancer: unknown option(s) %s; known: backend, '
                'state-file, timeout' % ', '.join(sorted(options)))
        if not backend:
            raise BalancerError(
                'haproxy balancer %s: backend=NAME is missing' %
                socket_path)
        self.socket_path = socket_path
        self.backend = backend
        try:
            self.timeout = float(timeout)
        except ValueError:
            raise BalancerError('haproxy balancer: timeout=%r is not a '
                                'number of seconds' % timeout)

    def describe(self):
        return 'HAProxy backend %s at %s' % (self.backend, self.socket_path)

    # -- the socket ---------------------------------------------------------

    def command(self, line):
        """Send one command, return HAProxy's whole answer."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.socket_path)
                sock.sendall(line.encode('ascii') + b'\n')
                chunks = []
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
            except OSError as e:
                raise BalancerError(
                    'cannot talk to HAProxy at %s (%s); is it running with '
                    '"stats socket %s level admin"?' % (
                        self.socket_path, e.strerror or e,
                        self.socket_path))
        finally:
            sock.close()
        return b''.join(chunks).decode('utf-8', 'replace')

    def _checked(self, line):
        answer = self.command(line)
        stripped = answer.strip()
        if stripped and any(stripped.startswith(e) or e in stripped
                            for e in ERRORS):
            raise BalancerError('HAProxy refused %r: %s' % (
                line, stripped.splitlines()[0]))
        return answer

    # -- the interface ------------------------------------------------------

    def servers(self):
        stats = {row['svname']: row
                 for row in parse_stat(self._checked('show stat'))
                 if row['pxname'] == self.backend
                 and row['svname'] not in ('FRONTEND', 'BACKEND')}
        if not stats:
            raise BalancerError(
                '%s: HAProxy has no such backend, or it has no servers; '
                'check backend= in the stage\'s balancer' % self.describe())
        admin = parse_servers_state(
            self._checked('show servers state %s' % self.backend))
        found = {}
        for name, row in stats.items():
            mask = int(admin.get((self.backend, name),
                                 {}).get('srv_admin_state', '0'))
            status = row.get('status', '')
            up = (None if status.startswith('no check')
                  else status.split()[0] in ('UP', 'DRAIN') if status
                  else None)
            found[name] = ServerState(
                name, admin_state(mask), up,
                int(row.get('scur') or 0), int(row.get('qcur') or 0))
        return found

    def set_state(self, name, state):
        if state not in STATES:
            raise BalancerError('unknown server state %r; use one of %s' %
                                (state, ', '.join(STATES)))
        self.state(name)
        self._checked('set server %s/%s state %s' % (
            self.backend, name, state))
        now = self.state(name)
        if now.admin != state:
            raise BalancerError(
                '%s: server %s is %s after "set server ... state %s"' % (
                    self.describe(), name, now.admin, state))
        if self.state_file:
            self.save_state()
        return now

    def save_state(self):
        """Write ``show servers state`` to the state file (all backends, as
        ``load-server-state-from-file global`` reads it) and verify that
        the file says what HAProxy says."""
        if not self.state_file:
            raise BalancerError(
                '%s: no state-file= given; add state-file=PATH (the '
                'server-state-file of HAProxy\'s global section)' %
                self.describe())
        text = self._checked('show servers state')
        if not text.strip() or not text.lstrip()[0].isdigit():
            raise BalancerError('HAProxy answered "show servers state" '
                                'with %r' % text[:80])
        fsutil.atomic_write(self.state_file, text)
        with io.open(self.state_file) as f:
            written = parse_servers_state(f.read())
        live = self.servers()
        for name, state in live.items():
            row = written.get((self.backend, name))
            if row is None or admin_state(
                    int(row['srv_admin_state'])) != state.admin:
                raise BalancerError(
                    '%s: the state file %s does not say what HAProxy says '
                    'about server %s' % (self.describe(), self.state_file,
                                          name))
        return self.state_file


def _factory(address, **options):
    if not os.path.isabs(address):
        raise BalancerError('haproxy balancer: the admin socket %r must be '
                            'an absolute path' % address)
    return HAProxy(address, **options)


register('haproxy', _factory)
