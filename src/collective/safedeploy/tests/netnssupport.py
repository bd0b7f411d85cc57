"""Several machines on this one for tests: each a set of namespaces made
with ``unshare`` -- its own network (an address on a private /24), its
own hostname (UTS), its own processes (PID, with its /proc) -- joined by
veth pairs to a bridge in the first machine.  Reached like Ansible's
``community.docker.nsenter`` connection reaches them: ``nsenter
--target PID`` of the machine's first process.

Nothing is made in this host's own namespaces and nothing is named: a
machine lives as long as its first process (``unshare --kill-child``
ends that process with it, and ``unshare`` ends with the test process),
and when it ends the kernel ends every process in the machine and
removes its interfaces and addresses."""
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time

UNSHARE = shutil.which('unshare')
NSENTER = shutil.which('nsenter')
IP = shutil.which('ip') or next(
    (p for p in ('/usr/sbin/ip', '/sbin/ip') if os.path.exists(p)), None)

# inside the machines only: no host route or address names it
SUBNET = '10.77.0.'

# the first process of a machine: sets its hostname, reaps the
# processes left to it (a restarted daemon's parent exits) and waits
INIT = '''\
import signal, socket, sys
socket.sethostname(sys.argv[1])
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
print('ready', flush=True)
while True:
    signal.pause()
'''

PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # in the child between fork and exec: unshare gets SIGKILL when the
    # test process ends, however it ends
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def skip_reason():
    """Why machines cannot be made here, or None."""
    if not sys.platform.startswith('linux'):
        return 'network namespaces need Linux'
    if os.geteuid() != 0:
        return 'making network namespaces needs root'
    for name, path in (('unshare', UNSHARE), ('nsenter', NSENTER),
                       ('ip', IP)):
        if path is None:
            return ('no %s command (apt-get install util-linux iproute2)' %
                    name)
    p = subprocess.run(
        [UNSHARE, '--net', '--uts', '--ipc', '--pid', '--mount-proc',
         '--fork', '--kill-child', 'sh', '-c',
         'hostname probe && %s link add name br0 type bridge && '
         '%s link add name v0 type veth peer name v1' % (IP, IP)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        timeout=60)
    if p.returncode:
        return ('cannot make network namespaces with a bridge and veth '
                'pairs here: %s' % (p.stderr.strip().splitlines() or
                                    ['exit code %d' % p.returncode])[-1])
    return None


class Machine:
    """One machine: ``name`` (its hostname), ``address``, ``pid`` (of its
    first process, as this host sees it)."""

    def __init__(self, name, address):
        self.name = name
        self.address = address
        self.process = subprocess.Popen(
            [UNSHARE, '--net', '--uts', '--ipc', '--pid', '--mount-proc',
             '--fork', '--kill-child', sys.executable, '-c', INIT, name],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            preexec_fn=_die_with_parent)
        try:
            line = self.process.stdout.readline()
            if line.strip() != b'ready':
                raise AssertionError('machine %s did not start' % name)
            with open('/proc/%d/task/%d/children' % (
                    self.process.pid, self.process.pid)) as f:
                self.pid = int(f.read().split()[0])
        except BaseException:
            self.stop()
            raise

    def __repr__(self):
        return '<Machine %s %s pid %s>' % (self.name, self.address,
                                           getattr(self, 'pid', None))

    def enter(self):
        """The command prefix that runs a command in the machine, as the
        nsenter connection does it (a child in its PID namespace)."""
        return [NSENTER, '--ipc', '--mount', '--net', '--pid', '--uts',
                '--preserve-credentials', '--target=%d' % self.pid, '--']

    def enter_network(self):
        """A prefix that runs a command on the machine's network only:
        the command is the process started (no fork), a process of this
        host that a test stops itself."""
        return [NSENTER, '--net', '--uts', '--target=%d' % self.pid, '--']

    def run(self, args, check=True, timeout=120, **kw):
        p = subprocess.run(self.enter() + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True,
                           timeout=timeout, **kw)
        if check and p.returncode:
            raise AssertionError('on %s: %s exited with %d:\n%s' % (
                self.name, ' '.join(args), p.returncode, p.stdout))
        return p

    def ip(self, *args):
        # network namespace only: a PID given to ip is one of this host
        p = subprocess.run(self.enter_network() + [IP] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=60)
        if p.returncode:
            raise AssertionError('on %s: ip %s: %s' % (
                self.name, ' '.join(args), p.stdout.strip()))

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()

    def stop(self):
        """End the machine and every process in it."""
        self.kill()
        self.process.wait()
        self.process.stdout.close()
        pid = getattr(self, 'pid', None)
        deadline = time.monotonic() + 10
        while pid and os.path.exists('/proc/%d' % pid):
            if time.monotonic() > deadline:
                raise AssertionError('machine %s (pid %d) did not end' % (
                    self.name, pid))
            time.sleep(0.02)


class Network:
    """Machines named ``names`` on one /24: the first (.1) holds the
    bridge, the others (.2, .3, ...) each an ``eth0`` paired with a port
    of it."""

    def __init__(self, names):
        self.machines = {}
        try:
            for i, name in enumerate(names, 1):
                self.machines[name] = Machine(name, SUBNET + str(i))
            hub, *others = self.machines.values()
            hub.ip('link', 'set', 'lo', 'up')
            hub.ip('link', 'add', 'name', 'br0', 'type', 'bridge')
            hub.ip('addr', 'add', hub.address + '/24', 'dev', 'br0')
            hub.ip('link', 'set', 'br0', 'up')
            for m in others:
                port = 'to-' + m.name
                hub.ip('link', 'add', 'name', port, 'type', 'veth',
                       'peer', 'name', 'eth0', 'netns', str(m.pid))
                hub.ip('link', 'set', port, 'master', 'br0')
                hub.ip('link', 'set', port, 'up')
                m.ip('link', 'set', 'lo', 'up')
                m.ip('addr', 'add', m.address + '/24', 'dev', 'eth0')
                m.ip('link', 'set', 'eth0', 'up')
        except BaseException:
            self.stop()
            raise

    def __getitem__(self, name):
        return self.machines[name]

    def stop(self):
        errors = []
        for m in self.machines.values():
            m.kill()        # all at once: each takes the kernel a while
        for m in self.machines.values():
            try:
                m.stop()
            except AssertionError as e:
                errors.append(str(e))
        if errors:
            raise AssertionError('; '.join(errors))
