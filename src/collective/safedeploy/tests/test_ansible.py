"""The shipped Ansible playbooks, run for real with ansible-playbook on an
inventory of four hosts (ansible_connection=local, one site root each):
a ZEO server side ``db`` and clients ``c1`` .. ``c3``, behind a balancer
reached with delegate_to (a command recording what it is told).  The
same plays run on six machines in test_ansible_machines."""
import concurrent.futures
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

from . import support

ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable),
                                'ansible-playbook')
HOSTS = ('db', 'c1', 'c2', 'c3')
CLIENTS = HOSTS[1:]

BALANCER = '''\
import sys
action, server = sys.argv[2:]
if action not in ('drain', 'ready'):
    sys.exit('unknown action %s' % action)
with open(sys.argv[1], 'a') as f:
    f.write('%s %s\\n' % (action, server))
'''


def site_config(sample, parts='hello rollback'):
    sample.write_config(textwrap.dedent('''\
        extensions = collective.safedeploy
        find-links += %s
        parts = %s

        [safedeploy]
        index = off

        [hello]
        recipe = zc.recipe.egg
        eggs = hello

        [rollback]
        recipe = collective.safedeploy:rollback

        [broken]
        recipe = testrecipes:fail
        message = the broken part fails on purpose
        ''') % (support.built_wheels(), parts))


def ansible_playbook_skip_reason():
    if sys.version_info < (3, 11):
        return 'ansible-core needs Python >= 3.11'
    if not os.path.exists(ANSIBLE_PLAYBOOK):
        return ('no %s: ansible-core is in the test extra; run "bash dev.sh '
                'setup"' % ANSIBLE_PLAYBOOK)
    return None


class Cluster:
    """Site roots (one per host of ``hosts``, its buildout.cfg written by
    ``configure``), each released at 1.0 with a real bin/buildout."""

    def __init__(self, hosts=HOSTS, configure=site_config):
        self.directory = tempfile.mkdtemp(prefix='safedeploy-ansible-')
        self.sites = {}
        for host in hosts:
            sample = support.SampleBuildout(os.path.join(self.directory,
                                                         host))
            sample.add_package('hello', '1.0')
            support.add_test_recipes(sample)
            configure(sample)
            self.sites[host] = sample
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            results = list(pool.map(
                lambda s: s.buildout('safedeploy:tag=1.0'),
                self.sites.values()))
        for r in results:
            if r.returncode:
                raise AssertionError(r)
        self.balancer = os.path.join(self.directory, 'balancer.py')
        with open(self.balancer, 'w') as f:
            f.write(BALANCER)
        self.balancer_log = os.path.join(self.directory, 'balancer.log')
        self.home = os.path.join(self.directory, 'ansible-home')
        os.mkdir(self.home)
        with open(os.path.join(self.home, 'ansible.cfg'), 'w') as f:
            f.write('[defaults]\n')

    def cleanup(self):
        shutil.rmtree(self.directory, ignore_errors=True)

    def inventory(self, **host_vars):
        """``host_vars``: host -> extra variables of that host."""
        def host(name):
            return dict(safedeploy_root=self.sites[name].directory,
                        **host_vars.get(name, {}))
        data = {'all': {
            'vars': {
                'ansible_connection': 'local',
                'ansible_python_interpreter': sys.executable,
                'safedeploy_buildout': support.BUILDOUT,
                'safedeploy_balancer_host': 'localhost',
                'safedeploy_balancer_command': [
                    sys.executable, self.balancer, self.balancer_log],
            },
            'children': {
                'zeoserver': {'hosts': {'db': host('db')}},
                'zeoclients': {'hosts': {c: host(c) for c in CLIENTS}},
            }}}
        path = os.path.join(self.directory, 'inventory.yml')
        with open(path, 'w') as f:
            json.dump(data, f)      # JSON is YAML
        return path

    def environment(self):
        env = dict(os.environ)
        env.pop('PYTHONPATH', None)
        env.update(
            HOME=self.home, ANSIBLE_HOME=self.home,
            ANSIBLE_LOCAL_TEMP=os.path.join(self.home, 'tmp'),
            ANSIBLE_REMOTE_TEMP=os.path.join(self.home, 'remote'),
            ANSIBLE_FORKS='6', ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0',
            ANSIBLE_RETRY_FILES_ENABLED='0', ANSIBLE_PIPELINING='1',
            ANSIBLE_CONFIG=os.path.join(self.home, 'ansible.cfg'),
            ANSIBLE_DEPRECATION_WARNINGS='0', ANSIBLE_LOCALHOST_WARNING='0',
            ANSIBLE_COLLECTIONS_PATH=os.path.join(self.home, 'collections'),
            PIP_NO_BUILD_ISOLATION='0')
        return env

    def command(self, playbook, tag, **host_vars):
        from collective.safedeploy import ansible
        args = [ANSIBLE_PLAYBOOK, '-i', self.inventory(**host_vars),
                ansible.path(playbook)]
        if tag is not None:
            args += ['-e', json.dumps({'safedeploy_tag': tag})]
        return args

    def play(self, playbook, tag, **host_vars):
        p = subprocess.run(self.command(playbook, tag, **host_vars),
                           env=self.environment(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=600,
                           # a session of its own: nothing Ansible signals
                           # reaches the test runner's process group
                           start_new_session=True)
        return support.Result(p.args, p.returncode, p.stdout)

    def current(self):
        return {h: support.current_tag(s.directory)
                for h, s in self.sites.items()}

    def journal(self, host):
        with open(self.sites[host].path('releases', '.journal')) as f:
            return [json.loads(line) for line in f if line.strip()]

    def published(self, host, tag):
        return [e for e in self.journal(host)
                if e['event'] == 'published' and e.get('name') == tag]

    def balancer_count(self):
        try:
            with open(self.balancer_log) as f:
                return len(f.read().splitlines())
        except FileNotFoundError:
            return 0

    def balancer_calls(self):
        if not os.path.exists(self.balancer_log):
            return []
        with open(self.balancer_log) as f:
            lines = f.read().splitlines()
        os.remove(self.balancer_log)
        return lines


class TestShippedFiles(unittest.TestCase):

    def test_every_variable_of_the_role_is_documented(self):
        from collective.safedeploy import ansible
        with open(ansible.path('roles', 'safedeploy', 'defaults',
                               'main.yml')) as f:
            names = re.findall(r'^#? ?(safedeploy_[a-z_]+):', f.read(),
                               re.M)
        with open(os.path.join(support.CHECKOUT, 'docs', 'ansible.rst')) as f:
            doc = f.read()
        self.assertGreater(len(names), 8)
        self.assertEqual([n for n in names if '``%s``' % n not in doc], [])

    def test_the_balance_command_refuses_a_bad_balancer_in_one_line(self):
        for argv, why in ((['nonsense', 'drain', 'c1'], 'write KIND:ADDRESS'),
                          (['varnish:/x', 'ready', 'c1'], 'unknown kind'),
                          (['haproxy:/nonexistent/admin.sock', 'drain', 'c1'],
                           '/nonexistent/admin.sock')):
            r = support.run([sys.executable, '-m',
                             'collective.safedeploy.ansible.balance'] + argv,
                            split=True)
            self.assertEqual(r.returncode, 1, r)
            self.assertEqual(len(r.errors.strip().splitlines()), 1, r)
            self.assertIn(why, r.errors)

    def test_the_module_prints_where_the_playbooks_are(self):
        r = support.run([sys.executable, '-m', 'collective.safedeploy.ansible'])
        self.assertEqual(r.returncode, 0, r)
        directory = r.output.strip()
        for name in ('rollout.yml', 'state.yml',
                     'roles/safedeploy/tasks/flip.yml'):
            self.assertTrue(os.path.exists(os.path.join(directory, name)),
                            name)
        r = support.run([sys.executable, '-m', 'collective.safedeploy.ansible',
                         '--playbook', 'rollout'])
        self.assertEqual(r.output.strip(),
                         os.path.join(directory, 'rollout.yml'))
        r = support.run([sys.executable, '-m', 'collective.safedeploy.ansible',
                         '--playbook', 'nope'], split=True)
        self.assertEqual(r.returncode, 2, r)
        self.assertEqual(len(r.errors.strip().splitlines()[-1:]), 1)
        self.assertIn("invalid choice: 'nope'", r.errors)


class ClusterLayer:
    """The four sites, built once for the rollout tests."""
    cluster = None

    @classmethod
    def setUp(cls):
        if ansible_playbook_skip_reason() is None:
            cls.cluster = Cluster()

    @classmethod
    def tearDown(cls):
        if cls.cluster is not None:
            cls.cluster.cleanup()
            cls.cluster = None


@support.skip_unless(ansible_playbook_skip_reason() is None,
                     ansible_playbook_skip_reason() or '')
class TestRollout(unittest.TestCase):

    layer = ClusterLayer

    def setUp(self):
        self.cluster = ClusterLayer.cluster
        self.before = self.cluster.current()
        self.assertEqual(len(set(self.before.values())), 1, self.before)
        self.cluster.balancer_calls()

    def test_1_a_failed_build_on_one_host_flips_no_host(self):
        c2 = self.cluster.sites['c2']
        site_config(c2, parts='hello rollback broken')
        self.addCleanup(site_config, c2)
        r = self.cluster.play('rollout.yml', '2.0')
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn('2.0 not built on c2: nothing flipped', r.output)
        self.assertEqual(self.cluster.current(), self.before)
        for host in HOSTS:
            self.assertEqual(self.cluster.published(host, '2.0'), [], host)
        self.assertEqual(self.cluster.balancer_calls(), [])
        for host in ('db', 'c1', 'c3'):      # built, ready for a re-run
            self.assertTrue(os.path.exists(self.cluster.sites[host].path(
                'releases', '2.0', 'safedeploy-manifest.json')), host)

    def test_2_a_client_failing_its_check_puts_every_host_back(self):
        before = self.before['db']
        check = [sys.executable, '-c', 'import os, sys; '
                 'sys.exit(os.readlink("current") == "releases/2.0")']
        r = self.cluster.play('rollout.yml', '2.0', c2=dict(
            safedeploy_check=check))
        self.assertNotEqual(r.returncode, 0, r)
        self.assertEqual(self.cluster.current(), self.before, r)
        lines = [line for line in r.output.splitlines()
                 if line.startswith('fatal: [') and '"msg": "' in line
                 and line.split('"msg": "')[1].split(':')[0] in HOSTS]
        self.assertEqual(len(lines), len(HOSTS), r)
        for host in ('db', 'c1'):
            self.assertIn('"%s: flipped back from 2.0 to %s"' % (
                host, before), r.output)
        self.assertIn('"c2: check failed: ', r.output)
        self.assertIn('; flipped back from 2.0 to %s"' % before, r.output)
        self.assertIn('"c3: not flipped; current is %s"' % before, r.output)
        self.assertEqual(self.cluster.published('c3', '2.0'), [])
        # the server side first, then the clients one at a time
        times = [self.cluster.published(h, '2.0')[0]['time']
                 for h in ('db', 'c1', 'c2')]
        self.assertEqual(times, sorted(times))
        calls = self.cluster.balancer_calls()
        # forward until c2 failed its check; back one at a time, each
        # client drained before its restart (c3 was never flipped)
        self.assertEqual(calls, ['drain c1', 'ready c1',
                                 'drain c2',
                                 'drain c1', 'ready c1',
                                 'drain c2', 'ready c2',
                                 'ready c3'], r)
        # flipped back to what the journal says, not to the newest other
        for host in ('db', 'c1', 'c2'):
            back = self.cluster.published(host, before)[-1]
            self.assertEqual(back['previous'], '2.0')

    def test_3_a_killed_rollout_converges_when_run_again(self):
        args = self.cluster.command('rollout.yml', '2.0')
        env = self.cluster.environment()
        seed = os.environ.get('SAFEDEPLOY_SEED') or str(random.randrange(10**6))
        rng = random.Random(seed)
        kills, runs, seen = 0, 0, set()
        # ten kills; three when the rollout is killed on real machines
        # too (test_ansible_machines), which costs minutes
        from .test_ansible_machines import skip_reason
        wanted = 10 if skip_reason() else 3
        while kills < wanted:
            runs += 1
            self.assertLess(runs, 3 * wanted,
                            'the runs finish before the kills')
            # a random moment: after a random number of the run's balancer
            # calls (each client: drain, ready), plus a little
            calls = rng.randint(0, 2 * len(CLIENTS))
            self.cluster.balancer_calls()
            p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL,
                                 start_new_session=True)
            self.addCleanup(p.wait)
            while p.poll() is None and self.cluster.balancer_count() < calls:
                time.sleep(0.05)
            time.sleep(rng.uniform(0, 1.0))
            if p.poll() is not None:       # finished before the kill
                continue
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            kills += 1
            now = self.cluster.current()
            seen.add(tuple(sorted(now.items())))
            for host, site in self.cluster.sites.items():
                self.assertIn(now[host], (self.before[host], '2.0'))
                self.assertTrue(os.path.exists(site.path(
                    'current', 'safedeploy-manifest.json')), host)
        r = self.cluster.play('rollout.yml', '2.0')
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(set(self.cluster.current().values()), {'2.0'})
        self.assertIn('all %d hosts agree: current is 2.0' % len(HOSTS),
                      r.output)
        r = self.cluster.play('state.yml', '2.0')
        self.assertEqual(r.returncode, 0, r)
        self.assertIn('db: current 2.0', r.output)
        print('\n%d kills (SAFEDEPLOY_SEED=%s), %d different cluster states'
              % (kills, seed, len(seen)), file=sys.stderr)
