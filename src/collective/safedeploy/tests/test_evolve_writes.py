"""No acknowledged write is lost: evolve-copy and switching data back with
a writer committing through ZEO the whole time, while evolve-copy is
killed or interrupted and the ZEO server is killed, restarted and
reloaded behind its back."""
import collections
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time

from collective.safedeploy.core.errors import Refused
from collective.safedeploy.evolve import state
from collective.safedeploy.evolve import switchback
from collective.safedeploy.zeo import server as zeoserver
from collective.safedeploy.zeo import freeze as zeofreeze
from collective.safedeploy.tests import support
from collective.safedeploy.tests import writersupport
from collective.safedeploy.tests import zeosupport
from collective.safedeploy.tests import zodbsupport
from collective.safedeploy.tests.test_evolve_copy import EvolveCopyTestCase

KILLS = int(os.environ.get('SAFEDEPLOY_EVOLVE_KILLS', '24'))
SERVER_KILLS = 10
# the guard's promise (docs/evolve.rst): production writable again within
# this many seconds of any end of evolve-copy
WRITABLE_WITHIN = 10.0


def children(pid):
    """The pids of the descendants of ``pid`` (from /proc)."""
    parents = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                ppid = int(f.read().rpartition(')')[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def dump_stacks(pid):
    """py-spy's dump of the Python process ``pid`` (every thread), or why
    there is none."""
    spy = shutil.which('py-spy') or os.path.join(
        os.path.dirname(sys.executable), 'py-spy')
    if not os.path.exists(spy):
        return 'pid %d: no py-spy to dump its stack (pip install py-spy)' % pid
    try:
        r = subprocess.run([spy, 'dump', '--pid', str(pid)],
                           capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return 'pid %d: py-spy dump did not finish within 30 s' % pid
    return 'pid %d (%s):\n%s%s' % (pid, ' '.join(cmdline(pid)), r.stdout,
                                   r.stderr)


def cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid) as f:
            return f.read().split('\0')[:6]
    except OSError:
        return ['?']


class WriterTestCase(EvolveCopyTestCase):

    def writer(self, key='writer'):
        w = writersupport.Writer(self.server.address,
                                 os.path.join(self.dir, 'writers'), key=key)
        self.addCleanup(w.stop)
        return w

    def assert_acknowledged_in(self, log, name=None, foreign_server=False):
        """Every write ``log`` says was acknowledged is in generation
        ``name`` (default: current), and no attempt failed but by a refusal
        (ReadOnlyError, ClientDisconnected, ConflictError: retried).
        ``foreign_server``: a server safedeploy did not start served the
        writer; restarted, such a server hands out object ids again that
        the writer fetched before (stock ZEO), and the writer's next new
        object may fail on it ("A different object already has the same
        oid", or a POSKeyError loading it): those failures only."""
        name = name or self.data.current()
        self.assertTrue(log.acknowledged)
        self.assertEqual(log.missing_from(self.data.fs(name)), [],
                         'acknowledged writes missing from generation %s'
                         % name)
        errors = log.errors
        if foreign_server:
            errors = [t for t in log.tracebacks() if
                      'A different object already has the same oid' not in t]
        counts = collections.Counter(log.errors)
        self.assertEqual(errors, [], 'writer: failed attempts %s\n%s' % (
            ', '.join('%s x%d' % kv for kv in sorted(counts.items())),
            log.around_errors()))

    def evolve_copy_process(self, *args, env=None, **kw):
        """evolve-copy in a session of its own: a Ctrl-C reaches its whole
        process group, as on a terminal."""
        # -X faulthandler: on SIGABRT it prints every thread's stack
        argv = [sys.executable, '-X', 'faulthandler',
                '-m', 'collective.safedeploy.evolve.command',
                '--data', self.data.path,
                '--evolve', zeosupport.EXAMPLE, '--evolve-context', 'site']
        if 'freeze' not in kw:
            argv += ['--zeo-address', self.server.address,
                     '--zeo-state', self.server.state_dir]
        else:
            argv += ['--freeze-command', kw['freeze'],
                     '--thaw-command', kw['thaw']]
        return subprocess.Popen(
            argv + list(args), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env=dict(os.environ, **(env or {})))

    def communicate_or_dump(self, process, timeout, what):
        """The output of ``process`` once it ended; if it has not ended
        within ``timeout`` s, fail showing where it and its children hang:
        py-spy's dump of every one of them, and the Python stacks of
        evolve-copy itself (faulthandler on SIGABRT, see
        :meth:`evolve_copy_process`)."""
        try:
            return process.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            pass
        dumps = [dump_stacks(pid) for pid in [process.pid] + children(
            process.pid)]
        process.send_signal(signal.SIGABRT)
        try:
            out = process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            out = process.communicate()[0]
        self.fail('evolve-copy did not end within %d s after %s\n%s\n'
                  '-- its output (and its stacks at SIGABRT):\n%s' % (
                      timeout, what, '\n'.join(dumps), out))

    def phase(self):
        """The phase of the copy evolve-copy works on (from '1')."""
        for n in self.data.generations.on_disk():
            found = state.load_state(self.data.dir(n)) if n != '1' else None
            if found:
                return found.get('phase')
        return None

    def wait_frozen(self, process, phases=('evolving',), timeout=60):
        """Wait until the run is frozen and caught up, in ``phases``."""
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if self.phase() in phases:
                self.assertTrue(os.path.exists(zeofreeze.frozen_mark_path(
                    self.data.dir('1'))))
                return True
            time.sleep(0.005)
        return False


class WriterTests(WriterTestCase):

    def test_writer_log(self):
        w = self.writer()
        self.assertTrue(w.wait_acknowledged(5))
        log = w.stop()
        self.assertGreaterEqual(len(log.acknowledged), 6)
        self.assertEqual(sorted(log.acknowledged),
                         list(range(1, len(log.acknowledged) + 1)))
        self.assert_acknowledged_in(log)
        self.assertEqual(log.longest_refusal(), 0.0)

    def test_evolve_copy_with_a_writer(self):
        w = self.writer()
        code, out = self.evolve_copy()
        self.assertEqual(code, 0, out)
        self.assertTrue(w.wait_acknowledged(3), 'not writable after the run')
        log = w.stop()
        self.assertEqual(self.data.current(), '2')
        self.assert_acknowledged_in(log)
        self.assertFalse(os.path.exists(
            zeofreeze.frozen_mark_path(self.data.dir('1'))))


def first_new_oid(address):
    """The first new object id a ZEO client gets from the server at
    ``address`` (it fetches a batch and keeps the rest)."""
    from ZEO.ClientStorage import ClientStorage
    from ZODB.utils import u64
    host, port = address.rsplit(':', 1)
    storage = ClientStorage((host, int(port)), wait_timeout=30)
    try:
        return u64(storage.new_oid())
    finally:
        storage.close()


class ObjectIdTests(WriterTestCase):
    """A client keeps the object ids it fetched across a reconnect: no
    server safedeploy starts hands them out again -- restarted on the same
    generation, on the evolved copy, or back on an older one."""

    def test_ids_handed_out_are_never_handed_out_again(self):
        batch = 100        # ZEO's new_oids
        handed = [first_new_oid(self.server.address)]
        self.server.control.thaw(self.data.dir('1'))    # a restart
        handed.append(first_new_oid(self.server.address))
        code, out = self.evolve_copy('--keep-generations', '0')
        self.assertEqual(code, 0, out)
        handed.append(first_new_oid(self.server.address))
        switchback.switch_data_back(self.data, '1', self.server.control)
        handed.append(first_new_oid(self.server.address))
        for before, after in zip(handed, handed[1:]):
            # past the whole batch the earlier client may still use
            self.assertGreaterEqual(after, before + batch, [
                hex(o) for o in handed])


class RestartInTheWindowTests(WriterTestCase):
    """The ZEO server killed and restarted, or reloaded, while frozen."""

    def restart_as_supervisor_would(self, process=None):
        """Start the server with the configuration it ran with (after a
        crash: a process manager starts the same command again).
        ``process``: that command started already, its imports done (a
        quicker restart, so that many fit into one window)."""
        path, blobs, read_only = self.server.zeo.configuration()
        zeoserver.ZEOServer(self.server.address, self.server.state_dir
                            ).start(path, blobs, read_only, process=process)

    def test_server_killed_and_restarted_comes_up_frozen(self):
        rng = random.Random(18)
        w = self.writer()
        # the restarts' processes, imports done before the window (on a
        # busy machine the imports take seconds; the restart itself not)
        followers = [self.server.zeo.prepare() for _ in range(SERVER_KILLS)]
        self.addCleanup(lambda: [(p.kill(), p.wait()) for p in followers])
        for following in followers:
            self.server.zeo.wait_ready(following)
        process = self.evolve_copy_process(
            env=dict(SAFEDEPLOY_EXAMPLE_SLEEP='2.5'))
        self.addCleanup(zeosupport.kill, process)
        self.assertTrue(self.wait_frozen(process))
        kills = 0
        # kill only while the evolve steps run: the switch restarts the
        # server itself
        while kills < SERVER_KILLS and process.poll() is None:
            if self.phase() != 'evolving':
                time.sleep(0.01)
                continue
            time.sleep(rng.uniform(0, 0.2))
            pid = self.server.zeo.pid()
            if pid is None or self.phase() != 'evolving':
                continue
            following = followers[kills]
            os.kill(pid, signal.SIGKILL)
            while zeoserver.alive(pid):
                time.sleep(0.002)
            self.restart_as_supervisor_would(following)
            kills += 1
            if os.path.realpath(self.server.zeo.configuration()[0]) == \
                    os.path.realpath(self.data.fs('1')):
                # came up frozen: the writer is still refused
                n = len(w.log().acknowledged)
                time.sleep(0.1)
                self.assertEqual(len(w.log().acknowledged), n)
        out, _ = process.communicate(timeout=120)
        self.assertEqual(kills, SERVER_KILLS, out)
        self.assertEqual(process.returncode, 0, out)
        self.assertTrue(w.wait_acknowledged(3))
        log = w.stop()
        self.assertEqual(self.data.current(), '2')
        self.assert_acknowledged_in(log)

    def test_restarted_writable_behind_its_back_no_switch(self):
        # a server safedeploy's hooks do not run in (a custom runzeo) is
        # restarted writable while frozen: evolve-copy sees the writes on
        # the old generation and thaws it instead of switching
        w = self.writer()
        process = self.evolve_copy_process(
            env=dict(SAFEDEPLOY_EXAMPLE_SLEEP='1.5'))
        self.addCleanup(zeosupport.kill, process)
        self.assertTrue(self.wait_frozen(process))
        self.server.zeo.stop()
        runzeo = os.path.join(os.path.dirname(sys.executable), 'runzeo')
        other = zeoserver.ZEOServer(self.server.address,
                                    self.server.state_dir, runzeo=runzeo)
        other.start(self.data.fs('1'), self.data.blobs('1'))
        self.assertTrue(w.wait_acknowledged(3))
        self.assertEqual(self.phase(), 'evolving')    # written meanwhile
        out, _ = process.communicate(timeout=120)
        self.assertNotEqual(process.returncode, 0, out)
        self.assertIn('after it was frozen', out)
        self.assertIn('not switching', out)
        self.assertIn('writable on its old data (generation 1',
                      out.strip().splitlines()[-1])
        self.assertEqual(self.data.current(), '1')
        self.assertTrue(w.wait_acknowledged(3))
        log = w.stop()
        self.assert_acknowledged_in(log, '1', foreign_server=True)

    def test_supervisorctl_reload_with_freeze_and_thaw_commands(self):
        # a real supervisord runs the server: the writable program and a
        # read-only one; freeze-command and thaw-command switch between
        # them (as example/etc/freeze.sh and thaw.sh do).  A reload in the
        # window starts the writable program on the old generation again:
        # it comes up frozen, and the switch and thaw go on
        self.server.stop()
        supervisor = Supervisor(os.path.join(self.dir, 'supervisor'),
                                self.data, self.server.address)
        self.addCleanup(supervisor.shutdown)
        supervisor.start()
        ctl = shlex.join(supervisor.ctl)
        freeze = shlex.join(['sh', '-c', '%s stop zeo && %s start '
                             'zeo-readonly' % (ctl, ctl)])
        # restart, not start: after a reload the writable one runs already
        thaw = shlex.join(['sh', '-c', '%s stop zeo-readonly; %s restart '
                           'zeo' % (ctl, ctl)])
        w = self.writer()
        go = os.path.join(self.dir, 'go')
        process = self.evolve_copy_process(
            env=dict(SAFEDEPLOY_EXAMPLE_WAIT=go), freeze=freeze, thaw=thaw)
        self.addCleanup(zeosupport.kill, process)
        self.assertTrue(self.wait_frozen(process))
        self.assertEqual(supervisor.status(), dict(
            zeo='STOPPED', **{'zeo-readonly': 'RUNNING'}))
        reloaded = supervisor.reload()
        self.assertEqual(reloaded['zeo'], 'RUNNING')
        self.assertNotEqual(reloaded['zeo-readonly'], 'RUNNING')
        # RUNNING is supervisord's startsecs, not the port: a loaded machine
        # may take longer to open the storage and bind
        address = zeoserver.parse_address(self.server.address)
        deadline = time.monotonic() + 20
        while not zeoserver.listening(address) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(zeoserver.listening(address), supervisor.status())
        # the writable program, restarted on the frozen generation: frozen
        n = len(w.log().acknowledged)
        time.sleep(0.5)
        self.assertEqual(len(w.log().acknowledged), n)
        self.assertEqual(self.phase(), 'evolving')
        with open(go, 'w'):
            pass
        out, _ = process.communicate(timeout=120)
        self.assertEqual(process.returncode, 0, out)
        self.assertEqual(self.data.current(), '2')
        self.assertEqual(supervisor.status(), dict(
            zeo='RUNNING', **{'zeo-readonly': 'STOPPED'}))
        self.assertTrue(w.wait_acknowledged(3))
        log = w.stop()
        self.assert_acknowledged_in(log)
        self.assertFalse(os.path.exists(
            zeofreeze.frozen_mark_path(self.data.dir('1'))))


SUPERVISORD_CONF = """\
[unix_http_server]
file = {dir}/supervisor.sock

[supervisord]
directory = {dir}
logfile = {dir}/supervisord.log
pidfile = {dir}/supervisord.pid
childlogdir = {dir}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = unix://{dir}/supervisor.sock

[program:zeo]
command = {python} -c "{serve}" {dir}/zeo/zeo.conf {dir}/zeo/zeo.pid
startsecs = 1
stopwaitsecs = 10
redirect_stderr = true
stdout_logfile = {dir}/zeo.log

[program:zeo-readonly]
command = {python} -c "{serve}" {dir}/zeo-readonly/zeo.conf {dir}/zeo-readonly/zeo.pid
autostart = false
startsecs = 1
stopwaitsecs = 10
redirect_stderr = true
stdout_logfile = {dir}/zeo-readonly.log
"""

# the ZEO server safedeploy runs (collective.safedeploy.zeo.bootstrap), in
# the foreground: what a process manager's program runs
SERVE = ("import io, sys; sys.stdin = io.StringIO('go'); "
         "from collective.safedeploy.zeo.bootstrap import main; "
         "sys.exit(main())")


class Supervisor:
    """A real supervisord running the data root's ZEO server twice, on
    ``DATA/current`` (whatever generation it points to when a program
    starts): ``zeo`` writable, ``zeo-readonly`` read-only."""

    def __init__(self, directory, data, address):
        self.dir = directory
        os.makedirs(directory)
        for name, read_only in (('zeo', False), ('zeo-readonly', True)):
            zeoserver.ZEOServer(address, os.path.join(directory, name)
                                ).write_conf(
                os.path.join(data.path, 'current', state.FS),
                os.path.join(data.path, 'current', state.BLOBS), read_only)
        self.conf = os.path.join(directory, 'supervisord.conf')
        with open(self.conf, 'w') as f:
            f.write(SUPERVISORD_CONF.format(dir=directory,
                                            python=sys.executable,
                                            serve=SERVE))
        self.ctl = [sys.executable, '-m', 'supervisor.supervisorctl', '-c',
                    self.conf]
        self.started = False

    def start(self):
        subprocess.run([sys.executable, '-m', 'supervisor.supervisord',
                        '-c', self.conf], check=True)
        self.started = True
        self.wait_for(lambda s: s.get('zeo') == 'RUNNING')

    def status(self):
        r = subprocess.run(self.ctl + ['status'], capture_output=True,
                           text=True)
        return dict(line.split()[:2] for line in r.stdout.splitlines()
                    if len(line.split()) >= 2)

    def wait_for(self, condition, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if condition(status):
                return status
            time.sleep(0.1)
        raise AssertionError('supervisord: %s' % self.status())

    def reload(self):
        """``supervisorctl reload``: every program stopped, the
        configuration read again, the autostart ones started; returns the
        status once they run."""
        subprocess.run(self.ctl + ['reload'], check=True,
                       stdout=subprocess.DEVNULL)
        # done when the writable program runs (again), the other not
        return self.wait_for(lambda s: s.get('zeo') == 'RUNNING' and
                             s.get('zeo-readonly') == 'STOPPED')

    def shutdown(self):
        if not self.started:
            return
        self.started = False
        pidfile = os.path.join(self.dir, 'supervisord.pid')
        try:
            with open(pidfile) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            pid = None
        subprocess.run(self.ctl + ['shutdown'], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while pid and zeoserver.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid and zeoserver.alive(pid):
            # it did not shut down: it and its programs go
            for other in [pid] + children(pid):
                try:
                    os.kill(other, signal.SIGKILL)
                except ProcessLookupError:
                    pass


class KillWithAWriterTests(WriterTestCase):
    """SIGKILL, Ctrl-C and SIGTERM at random moments of evolve-copy, a writer
    committing throughout: writable again within WRITABLE_WITHIN seconds,
    nothing acknowledged missing, a re-run finishes."""

    def test_sigkill_and_sigint_at_random_moments(self):
        rng = random.Random(int(os.environ.get('SAFEDEPLOY_SEED', '18')))
        env = {}
        w = self.writer()
        code, out = zeosupport.evolve_copy(self.data, self.server, env=env)
        self.assertEqual(code, 0, out)
        # the runs killed have no evolve step left to do: kills are spread
        # over the duration of such a run
        started = time.monotonic()
        code, out = zeosupport.evolve_copy(self.data, self.server, env=env)
        duration = time.monotonic() - started
        self.assertEqual(code, 0, out)
        longest, signals = 0.0, {}
        runs = 0
        moments = support.spread(KILLS, rng)
        while sum(signals.values()) < KILLS:
            runs += 1
            self.assertLess(runs, 2 * KILLS, signals)
            sig = rng.choice((signal.SIGKILL, signal.SIGINT,
                              signal.SIGTERM))
            process = self.evolve_copy_process(env=env)
            time.sleep(0.05 + next(moments) * max(duration - 0.05, 0))
            if process.poll() is None:
                if sig == signal.SIGINT:     # Ctrl-C: the process group
                    os.killpg(process.pid, signal.SIGINT)
                else:
                    process.send_signal(sig)
                signals[sig.name] = signals.get(sig.name, 0) + 1
            out = self.communicate_or_dump(process, 60, sig.name)
            ended = time.monotonic()
            last = (out.strip().splitlines() or [''])[-1]
            if 'writable' in last or 'thawed' in last:
                # the last line says so: it is so, now
                serving = self.server.serving()
                self.assertTrue(serving and not serving[1], out)
            self.assertTrue(w.wait_acknowledged(1, timeout=WRITABLE_WITHIN),
                            'not writable %s s after %s:\n%s' % (
                                WRITABLE_WITHIN, sig.name, out))
            longest = max(longest, time.monotonic() - ended)
            self.assertFalse(self.server.serving()[1])
            self.assert_acknowledged_in(w.log())
        code, out = zeosupport.evolve_copy(self.data, self.server, env=env)
        self.assertEqual(code, 0, out)
        self.assertTrue(w.wait_acknowledged(3))
        log = w.stop()
        self.assert_acknowledged_in(log)
        print('\n%d runs, %d signalled %s (the others ended first); writable '
              'again at most %.2f s after the end' % (
                  runs, sum(signals.values()), signals, longest))


class ChainTests(WriterTestCase):
    """Three switches, writes on each generation, then back to the
    first."""

    def evolve_copy(self, *args, **kw):
        # the chain goes back to generation 1: keep every generation
        return super().evolve_copy('--keep-generations', '0', *args, **kw)

    def test_count_along_the_chain(self):
        acknowledged = set()
        for expected in ('2', '3', '4'):
            w = self.writer(key='w%s' % expected)
            code, out = self.evolve_copy()
            self.assertEqual(code, 0, out)
            self.assertEqual(self.data.current(), expected)
            self.assertTrue(w.wait_acknowledged(5))
            log = w.stop()
            self.assert_acknowledged_in(log)
            acknowledged |= log.tids()
        # the writes made on 1 before the first switch are in 1 too
        made_later = acknowledged - set(
            t.hex() for t in zodbsupport.transaction_ids(self.data.fs('1')))
        lacking = switchback.writes_lacking(self.data, '4', '1')
        # (a commit whose acknowledgement a restart cut off counts too)
        self.assertGreaterEqual(lacking, len(made_later))
        self.assertLessEqual(lacking, len(made_later) + 3)
        # only writes made on generation 4 are not in generation 3
        self.assertLess(switchback.writes_lacking(self.data, '4', '3'),
                        lacking)
        with self.assertRaises(Refused) as e:
            switchback.switch_data_back(self.data, '1', self.server.control)
        self.assertIn('%d transactions were committed in data generation 4 '
                      'that generation 1 does not hold' % lacking,
                      str(e.exception))
        self.assertIn('--discard-writes', str(e.exception))
        self.assertIn('generation 4 is kept', str(e.exception))
        self.assertEqual(self.data.current(), '4')
        result = switchback.switch_data_back(
            self.data, '1', self.server.control, discard_writes=True)
        self.assertEqual(result['discarded'], lacking)
        self.assertEqual(self.data.current(), '1')
        self.assertEqual(self.journal('rolled-back')[-1]['discarded_writes'],
                         lacking)
        # and forward again to 4: nothing of 1 is lacking there
        self.assertEqual(switchback.writes_lacking(self.data, '1', '4'), 0)
        switchback.switch_data_back(self.data, '4', self.server.control)
        self.assertEqual(self.data.current(), '4')

    def test_no_writes_no_consent(self):
        for expected in ('2', '3'):
            code, out = self.evolve_copy()
            self.assertEqual(code, 0, out)
        self.assertEqual(switchback.writes_lacking(self.data, '3', '1'), 0)
        switchback.switch_data_back(self.data, '1', self.server.control)
        self.assertEqual(self.data.current(), '1')

