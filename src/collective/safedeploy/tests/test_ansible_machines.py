"""The shipped rollout playbook on several machines: five hosts and a
balancer, each a set of namespaces of this host with its own hostname and
address (:mod:`.netnssupport`), reached with the
``community.docker.nsenter`` connection of the ``ansible`` package.

``db`` runs the ZEO server, ``c1`` .. ``c4`` each a WSGI client
(``promote_app.py``, restarted from its current release on the ZEO
address that release's ``client`` part wrote), ``lb`` a real HAProxy in
front of them and the load generator.  Needs root; skipped otherwise."""
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
import unittest

from collective.safedeploy import balancer
from . import haproxysupport
from . import machine_commands
from . import netnssupport
from . import promotesupport
from . import support
from .test_ansible import Cluster
from .test_ansible import ansible_playbook_skip_reason

HOSTS = ('db', 'c1', 'c2', 'c3', 'c4')
CLIENTS = HOSTS[1:]
MACHINES = ('lb',) + HOSTS
# rollouts killed on the machines; the local rollout test kills three more
KILLS = int(os.environ.get('SAFEDEPLOY_ROLLOUT_KILLS', '5'))
ZEO_PORT = 8100
CLIENT_PORT = 8080
COMMANDS = [sys.executable, machine_commands.__file__]


def zeo_address():
    return netnssupport.SUBNET + str(MACHINES.index('db') + 1) + ':%d' % (
        ZEO_PORT)


def client_config(sample, zeo=None, parts='client rollback'):
    """A client site: its release's ``client`` part names the database."""
    sample.write_config('''\
        extensions = collective.safedeploy
        find-links += %s
        parts = %s

        [safedeploy]
        index = off

        [client]
        recipe = testrecipes:write
        content = %s

        [rollback]
        recipe = collective.safedeploy:rollback

        [broken]
        recipe = testrecipes:fail
        message = the broken part fails on purpose
        ''' % (support.built_wheels(), parts, zeo or zeo_address()))


def skip_reason():
    reason = ansible_playbook_skip_reason()
    if reason:
        return reason
    if importlib.util.find_spec('ansible_collections') is None or \
            importlib.util.find_spec(
                'ansible_collections.community.docker') is None:
        return ('no community.docker collection (its nsenter connection): '
                'pip install ansible')
    if haproxysupport.HAPROXY is None:
        return 'haproxy is not installed (apt-get install haproxy)'
    return netnssupport.skip_reason()


class Cleanups:
    """addCleanup for a layer (what the test support classes call)."""

    def __init__(self):
        self.functions = []

    def addCleanup(self, function, *args, **kw):
        self.functions.append((function, args, kw))

    def skipTest(self, reason):
        raise unittest.SkipTest(reason)

    def run(self):
        errors = []
        while self.functions:
            function, args, kw = self.functions.pop()
            try:
                function(*args, **kw)
            except Exception as e:
                errors.append('%s: %s' % (function, e))
        if errors:
            raise AssertionError('cleanup failed: ' + '; '.join(errors))


class MachinesCluster(Cluster):
    """The five site roots, and what runs on the machines."""

    def __init__(self, network, cleanups):
        self.network = network
        super().__init__(HOSTS, client_config)
        cleanups.addCleanup(self.cleanup)
        self.zeo = zeo_address()
        promotesupport.make_data(os.path.join(self.directory, 'data'))
        network['db'].run([
            sys.executable, '-m', 'collective.safedeploy.zeo.command',
            'start', '--address', self.zeo,
            '--state', os.path.join(self.directory, 'zeo'),
            '--data', os.path.join(self.directory, 'data')])
        for c in CLIENTS:
            network[c].run(self.restart(c))
        self.proxy = haproxysupport.HAProxy(
            cleanups, [(c, self.listen(c), True) for c in CLIENTS],
            backend='zeoclients', prefix=network['lb'].enter_network())
        self.balancer = balancer.open(self.proxy.spec)

    def listen(self, host):
        return '%s:%d' % (self.network[host].address, CLIENT_PORT)

    def restart(self, host):
        return COMMANDS + ['restart-client', self.sites[host].directory,
                           self.listen(host)]

    def check(self, host, seconds=5):
        return COMMANDS + ['check-client', self.sites[host].directory,
                           self.listen(host), str(seconds)]

    def inventory(self, **host_vars):
        def host(name):
            m = self.network[name]
            found = dict(ansible_host=m.address, ansible_nsenter_pid=m.pid)
            if name == 'db':
                found.update(safedeploy_check=COMMANDS + [
                    'check-zeo', self.zeo])
            if name in CLIENTS:
                found.update(safedeploy_restart=self.restart(name),
                             safedeploy_check=self.check(name))
            if name in self.sites:
                found.update(safedeploy_root=self.sites[name].directory)
            found.update(host_vars.get(name, {}))
            return found
        data = {'all': {
            'vars': {
                'ansible_connection': 'community.docker.nsenter',
                'ansible_python_interpreter': sys.executable,
                'safedeploy_buildout': support.BUILDOUT,
                'safedeploy_balancer': self.proxy.spec,
            },
            'children': {
                'balancer': {'hosts': {'lb': host('lb')}},
                'zeoserver': {'hosts': {'db': host('db')}},
                'zeoclients': {'hosts': {c: host(c) for c in CLIENTS}},
            }}}
        path = os.path.join(self.directory, 'inventory.yml')
        with open(path, 'w') as f:
            json.dump(data, f)
        return path

    def environment(self):
        env = super().environment()
        # safedeploy-balance (the role's default balancer command) is found
        # on the balancer machine; the playbook's output comes line by line
        env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env.get(
            'PATH', os.defpath)
        env['PYTHONUNBUFFERED'] = '1'
        return env

    def states(self):
        return {n: s.admin for n, s in self.balancer.servers().items()}

    def running(self):
        """{client: the release its process runs}, asked from lb."""
        found = {}
        for c in CLIENTS:
            p = self.network['lb'].run([
                sys.executable, '-c', 'import sys, urllib.request; print('
                'urllib.request.urlopen(sys.argv[1], timeout=5).read()'
                '.decode())', 'http://%s/release' % self.listen(c)])
            found[c] = p.stdout.strip()
        return found

    def load(self):
        """The load generator, on lb, through HAProxy."""
        p = subprocess.Popen(
            self.network['lb'].enter_network() + COMMANDS + [
                'load', self.proxy.url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return Load(p)


class Load:

    def __init__(self, process):
        self.process = process
        self.result = None

    def stop(self):
        if self.result is None:
            out, _ = self.process.communicate('', timeout=120)
            self.result = json.loads(out)
        return self.result

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


class MachinesLayer:
    """The machines, the sites released at 1.0 and their processes."""
    cluster = None
    cleanups = None

    @classmethod
    def setUp(cls):
        if skip_reason() is not None:
            return
        cls.cleanups = Cleanups()
        try:
            network = netnssupport.Network(MACHINES)
            cls.cleanups.addCleanup(network.stop)
            cls.cluster = MachinesCluster(network, cls.cleanups)
        except BaseException:
            cls.tearDown()
            raise

    @classmethod
    def tearDown(cls):
        cls.cluster = None
        if cls.cleanups is not None:
            cleanups, cls.cleanups = cls.cleanups, None
            cleanups.run()


@support.skip_unless(skip_reason() is None, skip_reason() or '')
class TestMachines(unittest.TestCase):

    layer = MachinesLayer

    def setUp(self):
        self.cluster = MachinesLayer.cluster
        self.before = self.cluster.current()
        self.assertEqual(len(set(self.before.values())), 1, self.before)
        self.assertEqual(set(self.cluster.states().values()),
                         {balancer.READY})
        self.release = self.before['db']

    def load(self):
        load = self.cluster.load()
        self.addCleanup(load.kill)
        return load

    def assert_no_request_failed(self, load):
        result = load.stop()
        self.assertEqual((result['failures'], result['failed']), (0, []),
                         result)
        self.assertEqual(result['lost'], [], result)
        self.assertEqual(result['dump'], 200, result)
        self.assertGreater(result['acked'], 20, result)
        return result

    def test_0_each_machine_is_a_host_of_its_own(self):
        ansible = os.path.join(os.path.dirname(sys.executable), 'ansible')
        p = subprocess.run(
            [ansible, 'all', '-i', self.cluster.inventory(), '-o',
             '-m', 'ansible.builtin.shell', '-a', 'hostname; hostname -I'],
            env=self.cluster.environment(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stdout)
        for name in MACHINES:
            address = self.cluster.network[name].address
            self.assertIn('%s | CHANGED | rc=0 | (stdout) %s\\n%s' % (
                name, name, address), p.stdout)

    def test_1_a_rollout_under_load_fails_no_request(self):
        load = self.load()
        started = time.monotonic()
        r = self.cluster.play('rollout.yml', '2.0')
        took = time.monotonic() - started
        result = self.assert_no_request_failed(load)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn('all 5 hosts agree: current is 2.0', r.output)
        self.assertEqual(set(self.cluster.current().values()), {'2.0'})
        self.assertEqual(self.cluster.running(), dict.fromkeys(CLIENTS,
                                                               '2.0'))
        self.assertEqual(set(self.cluster.states().values()),
                         {balancer.READY})
        print('\nrollout of 5 hosts under load in %.0f s: %d requests, '
              '%d writes, none failed' % (took, result['requests'],
                                          result['acked']), file=sys.stderr)

    def test_2_a_failed_build_on_one_host_flips_no_host(self):
        c2 = self.cluster.sites['c2']
        client_config(c2, parts='client rollback broken')
        self.addCleanup(client_config, c2)
        r = self.cluster.play('rollout.yml', '3.0')
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn('3.0 not built on c2: nothing flipped', r.output)
        self.assertEqual(self.cluster.current(), self.before)
        for host in HOSTS:
            self.assertEqual(self.cluster.published(host, '3.0'), [], host)
        self.assertEqual(self.cluster.running(), dict.fromkeys(
            CLIENTS, self.release))
        self.assertEqual(set(self.cluster.states().values()),
                         {balancer.READY})

    def test_3_a_client_failing_its_check_puts_every_host_back(self):
        # c3's release 4.0 names a database address nothing listens on
        c3 = self.cluster.sites['c3']
        client_config(c3, zeo=zeo_address().replace(
            ':%d' % ZEO_PORT, ':%d' % (ZEO_PORT + 99)))
        self.addCleanup(client_config, c3)
        load = self.load()
        r = self.cluster.play('rollout.yml', '4.0')
        result = load.stop()
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn('"c3: check failed: ', r.output)
        self.assertEqual(self.cluster.current(), self.before, r)
        for host in ('db', 'c1', 'c2', 'c3'):
            self.assertRegex(r.output, '"%s: [^"]*flipped back from 4.0 to '
                             '%s"' % (host, self.release))
            back = self.cluster.published(host, self.release)[-1]
            self.assertEqual(back['previous'], '4.0')
        self.assertIn('"c4: not flipped; current is %s"' % self.release,
                      r.output)
        self.assertEqual(self.cluster.published('c4', '4.0'), [])
        self.assertEqual(self.cluster.running(), dict.fromkeys(
            CLIENTS, self.release))
        self.assertEqual(set(self.cluster.states().values()),
                         {balancer.READY})
        self.assertEqual(result['lost'], [], result)
        # the clients flipped back were drained first, one at a time
        self.assertEqual(result['failures'], 0, result)

    def test_4_a_killed_rollout_converges_when_run_again(self):
        args = self.cluster.command('rollout.yml', '5.0')
        env = self.cluster.environment()
        seed = os.environ.get('SAFEDEPLOY_SEED') or str(
            random.randrange(10**6))
        rng = random.Random(seed)
        tasks = 60          # about the tasks of a run; measured on the way
        kills, runs, seen, moments = 0, 0, set(), []
        spread = support.spread(KILLS, rng)
        load = self.load()
        while kills < KILLS:
            runs += 1
            self.assertLess(runs, 3 * KILLS,
                            'the runs finish before the kills')
            # a moment in a slice of its own of the run: after that many
            # of its tasks started, plus a little
            wanted = int(next(spread) * tasks)
            p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)
            self.addCleanup(p.wait)
            started = 0
            for line in p.stdout:
                if line.startswith('TASK ['):
                    started += 1
                    if started > wanted:
                        break
            time.sleep(rng.uniform(0, 1.0))
            if p.poll() is not None:       # finished before the kill
                p.stdout.close()
                tasks = max(started, 10)
                continue
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            p.stdout.close()
            kills += 1
            moments.append(started)
            now = self.cluster.current()
            seen.add(tuple(sorted(now.items())))
            for host, site in self.cluster.sites.items():
                self.assertIn(now[host], (self.before[host], '5.0'))
                self.assertTrue(os.path.exists(site.path(
                    'current', 'safedeploy-manifest.json')), host)
        r = self.cluster.play('rollout.yml', '5.0')
        result = self.assert_no_request_failed(load)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn('all 5 hosts agree: current is 5.0', r.output)
        self.assertEqual(set(self.cluster.current().values()), {'5.0'})
        self.assertEqual(self.cluster.running(), dict.fromkeys(CLIENTS,
                                                               '5.0'))
        self.assertEqual(set(self.cluster.states().values()),
                         {balancer.READY})
        r = self.cluster.play('state.yml', '5.0')
        self.assertEqual(r.returncode, 0, r)
        print('\n%d kills after tasks %s (SAFEDEPLOY_SEED=%s), %d cluster '
              'states; under load: %d requests, none failed' % (
                  kills, moments, seed, len(seen), result['requests']),
              file=sys.stderr)
