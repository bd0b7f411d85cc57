"""nginx (open source) through a rewritten upstream include file.

nginx has no runtime API for upstream servers (that, and ``drain``, are
NGINX Plus only).  The stage's upstream is therefore a file of its own,
included in nginx's ``http`` section, which this backend writes whole on
every change (temporary file, fsync, rename), checks with ``nginx -t``
(the old file is put back when that fails) and makes effective with
``nginx -s reload``::

    # collective.safedeploy: upstream beta, rewritten on every change
    upstream beta {
        server 127.0.0.1:8081 max_fails=0;  # main1 ready
        server 127.0.0.1:8082 max_fails=0;  # main2 ready
        server 127.0.0.1:8091 max_fails=0 down;  # twin1 maint
    }

The comment after each server is its state; the file is the state, so it
survives any restart of nginx.  ``drain`` and ``maint`` are both ``down``
for nginx: no new request goes to the server.  ``max_fails=0``: a
server answering 503 (a frozen site refusing a write it did not commit)
makes nginx try the request on the next server (``proxy_next_upstream
http_503 non_idempotent``), and is not taken out for ``fail_timeout``.  A reload starts new
worker processes with the new file; the old ones finish their requests
and exit ("worker process is shutting down", bounded by
``worker_shutdown_timeout``).  A ``drain``ed or ``maint`` server counts as
busy while old workers are still shutting down: there is no per-server
in-flight count.  A change is in effect when the master runs a worker
started after the reload and every older one is gone or shutting down.

The spec: ``nginx:UPSTREAM-FILE upstream=NAME
servers=NAME=HOST:PORT,NAME=HOST:PORT,... [conf=NGINX-CONF] [prefix=DIR]
[pid=PID-FILE] [nginx=COMMAND] [timeout=SECONDS]``.
"""
import os
import re
import time

from ..core import commands
from ..core import fsutil
from .base import (READY, STATES, Balancer, BalancerError, ServerState,
                   register)

LINE = re.compile(r'^\s*server\s+(?P<address>\S+?)(\s+max_fails=\d+)?'
                  r'(?P<down>\s+down)?\s*;'
                  r'\s*#\s*(?P<name>\S+)\s+(?P<state>\S+)\s*$')
SHUTTING_DOWN = b'is shutting down'


def render(upstream, servers, states):
    lines = ['# collective.safedeploy: upstream %s, rewritten on every '
             'change' % upstream, 'upstream %s {' % upstream]
    for name, address in servers:
        state = states[name]
        lines.append('    server %s max_fails=0%s;  # %s %s' % (
            address, '' if state == READY else ' down', name, state))
    return '\n'.join(lines + ['}', ''])


def parse(text):
    """{name: (address, state)} of an upstream file this backend wrote."""
    found = {}
    for line in text.splitlines():
        match = LINE.match(line)
        if match:
            found[match.group('name')] = (match.group('address'),
                                          match.group('state'))
    return found


def children(pid):
    """{pid: command line} of the processes whose parent is ``pid``."""
    found = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry, 'rb') as f:
                fields = f.read().rsplit(b')', 1)[1].split()
            if int(fields[1]) != pid or fields[0] == b'Z':
                continue
            with open('/proc/%s/cmdline' % entry, 'rb') as f:
                found[int(entry)] = f.read().replace(b'\0', b' ').strip()
        except (OSError, IndexError, ValueError):
            continue
    return found


class Nginx(Balancer):

    kind = 'nginx'

    def __init__(self, path, upstream=None, servers=None, conf=None,
                 prefix=None, pid=None, nginx='nginx', timeout='10'):
        if not upstream:
            raise BalancerError('nginx balancer %s: upstream=NAME is '
                                'missing' % path)
        if not servers:
            raise BalancerError(
                'nginx balancer %s: servers=NAME=HOST:PORT,... is missing' %
                path)
        self.path, self.upstream = path, upstream
        self.order = []
        for item in servers.split(','):
            name, eq, address = item.partition('=')
            if not eq or not name or not address:
                raise BalancerError(
                    'nginx balancer: servers=%s: write NAME=HOST:PORT,...' %
                    servers)
            self.order.append((name, address))
        self.conf, self.prefix, self.pid_file = conf, prefix, pid
        self.nginx = commands.split(nginx, 'nginx balancer nginx=')
        try:
            self.timeout = float(timeout)
        except ValueError:
            raise BalancerError('nginx balancer: timeout=%r is not a number '
                                'of seconds' % timeout)

    def describe(self):
        return 'nginx upstream %s in %s' % (self.upstream, self.path)

    # -- the file -----------------------------------------------------------

    def read(self):
        try:
            with open(self.path) as f:
                found = parse(f.read())
        except FileNotFoundError:
            raise BalancerError(
                '%s does not exist; write it once with every server and its '
                'state (see the promote documentation) and include it in '
                'nginx\'s http section' % self.path)
        missing = [n for n, _ in self.order if n not in found]
        if missing:
            raise BalancerError('%s: no line for server(s) %s; write one '
                                '"server ADDRESS;  # NAME STATE" each' % (
                                    self.describe(), ', '.join(missing)))
        return {n: found[n][1] for n, _ in self.order}

    def command(self, *args):
        where = []
        if self.prefix:
            where += ['-p', self.prefix]
        if self.conf:
            where += ['-c', self.conf]
        return self.nginx + where + list(args)

    def master(self):
        if not self.pid_file:
            return None
        try:
            with open(self.pid_file) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            raise BalancerError(
                '%s: no nginx master process (no pid in %s); is nginx '
                'running?' % (self.describe(), self.pid_file))

    # -- the interface ------------------------------------------------------

    def servers(self):
        states = self.read()
        master = self.master()
        busy = 0
        if master is not None:
            busy = sum(1 for line in children(master).values()
                       if SHUTTING_DOWN in line)
        return {name: ServerState(name, states[name], None,
                                  0 if states[name] == READY else busy, 0)
                for name, _ in self.order}

    def set_state(self, name, state):
        if state not in STATES:
            raise BalancerError('unknown server state %r; use one of %s' %
                                (state, ', '.join(STATES)))
        self.state(name)
        states = self.read()
        if states[name] == state:
            return self.state(name)
        with open(self.path) as f:
            before = f.read()
        states[name] = state
        fsutil.atomic_write(self.path, render(self.upstream, self.order,
                                              states))
        test = commands.run(self.command('-t', '-q'), check=False,
                            what='nginx -t')
        if test.returncode:
            fsutil.atomic_write(self.path, before)
            lines = [line.strip() for line in (
                (test.stderr or '') + (test.stdout or '')).splitlines()
                     if line.strip()]
            # what is wrong is on the [emerg] line, not the last one
            # ("configuration file ... test failed")
            why = [line for line in lines if '[emerg]' in line] or lines
            raise BalancerError(
                'nginx -t refused %s with server %s %s (put back as it '
                'was): %s' % (self.path, name, state, why[0] if why else
                              'exit %d' % test.returncode))
        self.reload()
        now = self.state(name)
        if now.admin != state:
            raise BalancerError('%s: server %s is %s after the rewrite' % (
                self.describe(), name, now.admin))
        return now

    def reload(self):
        """``nginx -s reload``; returns when a worker started after it
        runs (the new file is in effect) and the old ones are gone or
        shutting down."""
        master = self.master()
        old = set(children(master)) if master is not None else set()
        commands.run(self.command('-s', 'reload'), what='nginx -s reload')
        if master is None:
            return
        deadline = time.monotonic() + self.timeout
        while True:
            now = children(master)
            new = [pid for pid, line in now.items()
                   if pid not in old and SHUTTING_DOWN not in line]
            # and every old worker is gone or says it is shutting down
            # (until then it would not count as busy)
            stale = [pid for pid, line in now.items()
                     if pid in old and SHUTTING_DOWN not in line]
            if new and not stale:
                return
            if time.monotonic() >= deadline:
                raise BalancerError(
                    '%s: nginx started no new worker within %g s of the '
                    'reload; see its error log' % (self.describe(),
                                                    self.timeout))
            time.sleep(0.02)

    def save_state(self):
        """The file is the state: written on every change; read back."""
        self.read()
        return self.path


def _factory(address, **options):
    if not os.path.isabs(address):
        raise BalancerError('nginx balancer: the upstream file %r must be '
                            'an absolute path' % address)
    for key in list(options):
        if '-' in key:
            options[key.replace('-', '_')] = options.pop(key)
    known = ('upstream', 'servers', 'conf', 'prefix', 'pid', 'nginx',
             'timeout')
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise BalancerError('nginx balancer: unknown option(s) %s; known: '
                            '%s' % (', '.join(unknown), ', '.join(known)))
    return Nginx(address, **options)


register('nginx', _factory)
