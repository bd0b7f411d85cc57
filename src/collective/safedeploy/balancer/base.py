"""The balancer interface.

A balancer routes a backend's traffic to some of its servers.  The
interface is deliberately small; every backend implements it the same way:

``servers()``
    ``{name: ServerState}`` for the servers of the backend;
``state(name)``
    one server's :class:`ServerState` (``BalancerError`` if unknown);
``set_state(name, state)``
    ``READY`` (takes traffic), ``DRAIN`` (no new traffic, in-flight
    requests finish), ``MAINT`` (no traffic at all); the runtime state is
    then saved (``save_state``) and read back, so it survives a reload of
    the balancer and is known to be in effect when the call returns;
``wait_drained(names, timeout)``
    polls until the servers have no current and no queued sessions;
    returns True when drained, False at the timeout;
``save_state()``
    writes the runtime state where the balancer reloads it from, and
    verifies what was written.

``switch(to, away)`` is built on those: ``to`` set ready, ``away`` drained
(waited for) and put into maintenance.

A stage names its balancer with one line, ``KIND:ADDRESS key=value ...``,
e.g. ``haproxy:/run/haproxy/admin.sock backend=beta
state-file=/var/lib/haproxy/server-state``; :func:`open` returns the
backend ``KIND`` registered (see :func:`register`).
"""
import collections
import time

from ..core.errors import SafeDeployError

READY = 'ready'
DRAIN = 'drain'
MAINT = 'maint'
STATES = (READY, DRAIN, MAINT)


class BalancerError(SafeDeployError):
    """The balancer refused a command or cannot be reached."""


class ServerState(collections.namedtuple(
        'ServerState', 'name admin up sessions queued')):
    """``admin``: one of STATES; ``up``: the balancer's own view (health
    checks) -- True, False or None when it does not check; ``sessions``,
    ``queued``: in-flight and waiting requests."""

    @property
    def idle(self):
        return not self.sessions and not self.queued

    def as_dict(self):
        return dict(self._asdict())


class Balancer:
    """The interface; see the module's docstring."""

    kind = None

    def servers(self):
        raise NotImplementedError

    def state(self, name):
        servers = self.servers()
        if name not in servers:
            raise BalancerError(
                '%s has no server %r (it has: %s); check the stage\'s '
                'servers and twin-servers' % (
                    self.describe(), name, ', '.join(sorted(servers))
                    or 'none'))
        return servers[name]

    def set_state(self, name, state):
        raise NotImplementedError

    def save_state(self):
        raise NotImplementedError

    def describe(self):
        return self.kind

    def wait_drained(self, names, timeout=30.0, interval=0.1):
        deadline = time.monotonic() + timeout
        while True:
            servers = self.servers()
            busy = [n for n in names if not servers[n].idle]
            if not busy:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def switch(self, to, away, timeout=30.0):
        """Traffic to the servers ``to`` only: ready them, drain ``away``,
        wait for their in-flight requests (up to ``timeout``), then put
        them into maintenance.  Returns True when ``away`` drained within
        the timeout."""
        for name in to:
            self.state(name)
        for name in away:
            self.state(name)
        for name in to:
            self.set_state(name, READY)
        for name in away:
            if self.state(name).admin == READY:
                self.set_state(name, DRAIN)
        drained = self.wait_drained(away, timeout) if away else True
        for name in away:
            self.set_state(name, MAINT)
        return drained


_backends = {}


def register(kind, factory):
    """``factory(address, **options)`` -> Balancer, for specs ``kind:...``."""
    _backends[kind] = factory


def parse_spec(spec):
    """``'KIND:ADDRESS k=v ...'`` -> (kind, address, {k: v})."""
    words = spec.split()
    if not words or ':' not in words[0]:
        raise BalancerError(
            'balancer %r: write KIND:ADDRESS key=value ..., e.g. '
            'haproxy:/run/haproxy/admin.sock backend=www' % spec)
    kind, address = words[0].split(':', 1)
    options = {}
    for word in words[1:]:
        key, eq, value = word.partition('=')
        if not eq or not key or not value:
            raise BalancerError(
                'balancer %r: %r is not key=value' % (spec, word))
        options[key] = value
    if not address:
        raise BalancerError('balancer %r: the address after %s: is '
                            'missing' % (spec, kind))
    return kind, address, options


def open(spec):
    kind, address, options = parse_spec(spec)
    if kind not in _backends:
        raise BalancerError(
            'balancer %r: unknown kind %r; known: %s' % (
                spec, kind, ', '.join(sorted(_backends))))
    return _backends[kind](address, **options)
