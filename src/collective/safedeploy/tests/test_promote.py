"""bin/promote through a real HAProxy, real ZEO servers and WSGI clients,
under load, killed, with failing checks."""
import json
import os
import random
import signal
import subprocess
import threading
import time
import unittest
import urllib.request

from collective.safedeploy.core.journal import Journal
from collective.safedeploy.promote import procedure
from collective.safedeploy.promote import stages as configuration
from collective.safedeploy.zeo import server as zeoserver
from . import promotesupport


class PromoteUnderLoadTests(unittest.TestCase):

    def test_promote_twice_under_load_fails_no_request_loses_no_write(self):
        stage = promotesupport.Stage(self)
        stage.write_config(evolve=promotesupport.EVOLVE,
                           evolve_context='site')
        load = promotesupport.Load(stage.proxy.url)
        self.addCleanup(load.stop)
        time.sleep(0.3)
        for run in range(2):
            result = stage.promote()
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stderr, '')
            self.assertIn('promoted beta: traffic on main1 main2',
                          result.stdout)
            # the evolve ran on the twin's copy, once
            self.assertRegex(result.stdout, r'to_twin.catch_up: .*package '
                             r'%s .*: %d step' % (promotesupport.EVOLVE,
                                                 3 if run == 0 else 0))
            self.assertRegex(result.stdout, r'back.catch_up: .* 0 step')
            self.assertEqual(stage.evolved(), 3)
            time.sleep(0.3)
        load.stop()
        self.assertEqual(load.failed, [], stage.logs())
        self.assertGreater(len(load.acked), 20)
        final = stage.dump()
        self.assertEqual([k for k in load.acked if k not in final], [])
        self.assertEqual(stage.states(), {'main1': 'ready', 'main2': 'ready',
                                          'twin1': 'maint'})
        self.assertIsNone(stage.twin_server.pid())
        # main data: 1 -> 2 -> 3 through the twin's 1 -> 2
        self.assertEqual(stage.main_data.current(), '3')
        self.assertEqual(stage.twin_data.current(), '2')
        journal = Journal(os.path.join(stage.stages, 'beta', '.journal'))
        events = [e['event'] for e in journal.entries()]
        self.assertEqual(events.count('promotion-finished'), 2)
        # listing and dry run change nothing
        listed = stage.promote('--list', '--json')
        self.assertEqual(listed.returncode, 0, listed.stderr)
        rows = {r['stage']: r for r in json.loads(listed.stdout)}
        self.assertFalse(rows['dev']['promotable'])
        self.assertEqual(rows['beta']['last']['state'], 'finished')
        dry = stage.promote('--dry-run', 'beta')
        self.assertEqual(dry.returncode, 0, dry.stderr)
        self.assertIn('to_twin.freeze', dry.stdout)
        self.assertEqual(len(journal.entries()), len(events))


class PromoteBehindNginxTests(unittest.TestCase):

    def test_promote_under_load_behind_nginx(self):
        """The same handovers behind nginx: the upstream file rewritten,
        checked and reloaded at each change.  nginx tries a request on
        each server of the upstream at most once (it cannot wait and try
        again, as HAProxy does): a write that reaches the main set while it
        is frozen is answered 503 -- nothing committed -- once both main
        servers refused it.  No read fails, no acknowledged write is
        lost."""
        stage = promotesupport.Stage(self, balancer='nginx')
        load = promotesupport.Load(stage.proxy.url)
        self.addCleanup(load.stop)
        time.sleep(0.3)
        result = stage.promote()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('promoted beta: traffic on main1 main2', result.stdout)
        self.assertIn('to_twin.switch', result.stdout)
        time.sleep(0.3)
        load.stop()
        refused = [f for f in load.failed
                   if f.startswith('POST /write') and 'Error 503' in f]
        self.assertEqual([f for f in load.failed if f not in refused], [],
                         stage.logs())
        print('\n  behind nginx: %d of %d writes answered 503 (not '
              'committed), 0 other failures' % (
                  len(refused), len(refused) + len(load.acked)))
        twin = stage.ports['twin1']
        self.assertIn(twin, load.served.values())   # the twin took writes
        final = stage.dump()
        self.assertEqual([k for k in load.acked if k not in final], [])
        self.assertEqual(stage.states(), {'main1': 'ready', 'main2': 'ready',
                                          'twin1': 'maint'})


class PromoteFromPreviousTests(unittest.TestCase):

    def test_refused_without_discard_writes_then_no_request_fails(self):
        """data-from = previous, twice under load: refused in one line
        while the stage takes writes, then done with --discard-writes; the
        twin's clients, whose data goes back the second time, start with
        their persistent caches dropped."""
        stage = promotesupport.Stage(self, data_from='previous')
        # the stage's data is a copy of dev's: nothing would be discarded
        self.assertEqual(procedure.writes_to_discard(
            stage.main_data.path, stage.dev_data.path), 0)
        load = promotesupport.Load(stage.proxy.url)
        self.addCleanup(load.stop)
        journal = Journal(os.path.join(stage.stages, 'beta', '.journal'))
        twin = stage.ports['twin1']
        marks = []
        for run in range(2):
            time.sleep(0.5)
            before = (stage.states(), stage.main_data.current(),
                      stage.twin_data.generations.current_name(),
                      len(journal.entries()))
            refused = stage.promote()
            self.assertEqual(refused.returncode, 1, refused.stdout)
            lines = (refused.stdout + refused.stderr).strip().splitlines()
            self.assertEqual(len(lines), 1, lines)
            self.assertRegex(lines[0], r'stage beta takes writes: its data '
                             r'holds [1-9]\d* transaction\(s\) the data of '
                             r'stage dev does not.*--discard-writes')
            self.assertEqual((stage.states(), stage.main_data.current(),
                              stage.twin_data.generations.current_name(),
                              len(journal.entries())), before)
            marks.append(len(load.acked))
            if run == 1:
                # what the twin's client reads while it serves dev's data
                # again: not the write it took the first time (from a
                # stale cache)
                stale = [k for k in load.acked[marks[0]:marks[1]]
                         if load.served[k] == twin][-1:]
                self.assertTrue(stale)
                watch = threading.Thread(target=read_while_serving, args=(
                    stage, journal, stale[0], stale), daemon=True)
                watch.start()
            result = stage.promote('beta', '--discard-writes')
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stderr, '')
            self.assertIn('promoted beta: traffic on main1 main2',
                          result.stdout)
        # the second time the twin's client had a cache of other data:
        # dropped, it does not read from it
        watch.join(30)
        self.assertGreater(len(stale), 1)
        self.assertEqual(stale[1:], ['null'] * (len(stale) - 1))
        self.assertRegex(result.stdout, r'to_twin.start: .* [1-9]\d* '
                         r'client cache file')
        time.sleep(0.3)
        load.stop()
        self.assertEqual(load.failed, [], stage.logs())
        final = stage.dump()
        self.assertIn('from-dev', final)
        # writes before the last promotion's twin took them are discarded,
        # none acknowledged since is lost
        last = load.acked[marks[1]:]
        twin_served = [k for k in last if load.served[k] == twin]
        self.assertTrue(twin_served)
        kept = []
        for writer in {k.split('-')[0] for k in last}:
            mine = [k for k in last if k.startswith(writer + '-')]
            first = next((i for i, k in enumerate(mine)
                          if load.served[k] == twin), len(mine))
            kept += mine[first:]
        self.assertEqual([k for k in kept if k not in final], [])
        self.assertTrue([k for k in load.acked[:marks[1]]
                         if k not in final])
        self.assertEqual(stage.states(), {'main1': 'ready', 'main2': 'ready',
                                          'twin1': 'maint'})
        # dev's data is what it was
        self.assertEqual(stage.dev_data.current(), '1')


def read_while_serving(stage, journal, key, answers):
    """Read ``key`` from the twin's client directly while the twin serves
    in the running promotion (its to_twin.start done, to_twin.stop not)."""
    before = len(journal.entries())

    def done():
        steps = [e.get('step') for e in journal.entries()[before:]]
        return 'to_twin.start' in steps, 'to_twin.stop' in steps
    while not done()[0]:
        time.sleep(0.02)
    url = 'http://127.0.0.1:%d/read?k=%s' % (stage.ports['twin1'], key)
    while not done()[1]:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                answers.append(r.read().decode())
        except OSError:
            pass
        time.sleep(0.02)


class PromoteKilledTests(unittest.TestCase):

    def kill_repeatedly(self, stage, times, *args):
        """Run ``bin/promote beta ARGS`` and SIGKILL it, ``times`` times;
        returns the steps journaled as done meanwhile."""
        rnd = random.Random(int(os.environ.get('PROMOTE_SEED', '15')))
        kills = 0
        steps_seen = set()
        journal = Journal(os.path.join(stage.stages, 'beta', '.journal'))
        while kills < times:
            process = subprocess.Popen(
                stage.command('beta', *args), stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=zeoserver.child_env())
            # kill inside the step after the next one journaled (or, one
            # time in four, while it starts): every step is hit, each run
            # is cheap
            done = len(journal.entries())
            if rnd.random() > 0.25:
                while process.poll() is None and \
                        len(journal.entries()) == done:
                    time.sleep(0.01)
            time.sleep(rnd.uniform(0.0, 0.4))
            if process.poll() is not None:
                process.wait()
                continue          # finished before the kill: go again
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            steps_seen.update(e.get('step') for e in journal.entries()
                              if e['event'] == 'step-done')
            # every server the balancer sends traffic to has its ZEO
            # server running
            states = stage.states()
            for name, admin in states.items():
                if admin == 'ready':
                    server = stage.twin_server if name.startswith('twin') \
                        else stage.main_server
                    self.assertIsNotNone(server.pid(), (name, states))
        return steps_seen - {None}

    def test_sigkill_at_random_moments_then_a_run_converges(self):
        stage = promotesupport.Stage(self)
        load = promotesupport.Load(stage.proxy.url, writers=1, readers=0)
        self.addCleanup(load.stop)
        steps_seen = self.kill_repeatedly(stage, 30)
        result = stage.promote()
        self.assertEqual(result.returncode, 0, result.stderr)
        load.stop()
        final = stage.dump()
        self.assertEqual([k for k in load.acked if k not in final], [])
        self.assertEqual(stage.states(), {'main1': 'ready', 'main2': 'ready',
                                          'twin1': 'maint'})
        self.assertGreater(len(steps_seen), 5, steps_seen)
        print('\n  30 kills, steps reached: %d of %d, %d writes acked, %d '
              'requests failed' % (len(steps_seen), len(procedure.plan()),
                                   len(load.acked), len(load.failed)))

    def test_sigkill_with_data_from_previous_then_a_run_converges(self):
        """Killed also between stopping clients and starting them again,
        dropping caches, packing the copy: the next run converges."""
        stage = promotesupport.Stage(self, data_from='previous')
        stage.write_config(pack='true')
        load = promotesupport.Load(stage.proxy.url, writers=1, readers=0)
        self.addCleanup(load.stop)
        steps_seen = self.kill_repeatedly(stage, 12, '--discard-writes')
        mark = len(load.acked)
        result = stage.promote('beta', '--discard-writes')
        self.assertEqual(result.returncode, 0, result.stderr)
        time.sleep(0.3)
        load.stop()
        self.assertEqual(stage.states(), {'main1': 'ready', 'main2': 'ready',
                                          'twin1': 'maint'})
        # the site works on the promoted data: dev's, and what was
        # written since the last run's twin took the writes
        final = stage.dump()
        self.assertIn('from-dev', final)
        after = load.acked[mark:]
        served = [load.served[k] for k in after]
        if stage.ports['twin1'] in served:
            first = served.index(stage.ports['twin1'])
            self.assertEqual([k for k in after[first:] if k not in final],
                             [])
        self.assertGreater(len(steps_seen), 5, steps_seen)
        print('\n  12 kills (data from previous), steps reached: %d of %d, '
              '%d requests failed' % (len(steps_seen), len(procedure.plan()),
                                      len(load.failed)))


class PromoteCheckFailsTests(unittest.TestCase):

    def test_a_failing_check_at_each_handover_sends_traffic_back(self):
        stage = promotesupport.Stage(self)
        stage.write_config(check_timeout=3)
        stages = configuration.load(stage.config)
        load = promotesupport.Load(stage.proxy.url, writers=1, readers=0)
        self.addCleanup(load.stop)
        out = open(os.devnull, 'w')
        self.addCleanup(out.close)
        for failing, client in [('to_twin.check', 'twin1'),
                                ('back.check', 'main2')]:
            def before(step):
                if step == failing:
                    stage.stop_client(client)
            promotion = procedure.Promotion(stages['beta'], stage.stages,
                                            out=out, before_step=before)
            with self.assertRaises(procedure.CheckFailed) as caught:
                promotion.run()
            message = str(caught.exception)
            self.assertNotIn('\n', message)
            self.assertIn('traffic is back on', message)
            good = ['main1', 'main2'] if client == 'twin1' else ['twin1']
            ready = [n for n, s in stage.states().items() if s == 'ready']
            self.assertEqual(sorted(ready), good)
            # writes go through on the good servers again
            self.assertTrue(load.request('/write?k=after-%s&v=1' % client,
                                         'POST'))
            stage.start_client(client)
        result = stage.promote()
        self.assertEqual(result.returncode, 0, result.stderr)
        load.stop()
        final = stage.dump()
        self.assertEqual([k for k in load.acked if k not in final], [])
        self.assertIn('after-twin1', final)
        self.assertIn('after-main2', final)


class PromoteEvolveFailsTests(unittest.TestCase):

    def test_a_failing_evolve_step_leaves_the_stage_serving_writable(self):
        stage = promotesupport.Stage(self)
        stage.write_config(evolve=promotesupport.EVOLVE,
                           evolve_context='site')
        load = promotesupport.Load(stage.proxy.url, writers=1, readers=0)
        self.addCleanup(load.stop)
        env = dict(zeoserver.child_env(), SAFEDEPLOY_EXAMPLE_FAIL='2')
        result = stage.promote(env=env)
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1,
                         result.stderr)
        self.assertIn('the evolve on the copy for the twin set failed: '
                      'evolve step', result.stderr)
        self.assertIn('traffic is back on main1 main2', result.stderr)
        self.assertEqual(stage.states(), {'main1': 'ready', 'main2': 'ready',
                                          'twin1': 'maint'})
        self.assertFalse(stage.main_server.read_only())
        self.assertTrue(load.request('/write?k=after-evolve&v=1', 'POST'))
        self.assertEqual(stage.evolved(), None)     # the main's data
        result = stage.promote()
        self.assertEqual(result.returncode, 0, result.stderr)
        load.stop()
        self.assertEqual(load.failed, [], stage.logs())
        final = stage.dump()
        self.assertEqual([k for k in load.acked + ['after-evolve']
                          if k not in final], [])
        self.assertEqual(stage.evolved(), 3)


class StagesFileTests(unittest.TestCase):

    def test_mistakes_are_one_line(self):
        import tempfile
        from collective.safedeploy.core.errors import ConfigurationError
        tmp = tempfile.mkdtemp()
        self.addCleanup(__import__('shutil').rmtree, tmp)
        path = os.path.join(tmp, 'stages.cfg')
        base = ('[stages]\norder = dev beta\n[stage:beta]\nroot = /r\n'
                'twin = /t\nbalancer = haproxy:/s backend=b\nservers = a\n'
                'twin-servers = b\nzeo = 1\ntwin-zeo = 2\nrelease = none\n')
        for extra, message in [
                ('', None),
                ('colour = red\n', 'unknown option colour'),
                ('data-from = elsewhere\n', 'use self or previous'),
                ('pack = maybe\n', 'pack = true or false'),
                ('client-stop-command = stop main1 && stop main2\n',
                 r'\[stage:beta\] client-stop-command: .* uses shell '
                 r'syntax \(&&\); commands run without a shell'),
                ('twin-client-start-command = start > log\n',
                 r'twin-client-start-command: .* \(>\)'),
                ('[stage:gamma]\n', 'not in \\[stages\\] order')]:
            with open(path, 'w') as f:
                f.write(base + extra)
            if message is None:
                stages = configuration.load(path)
                self.assertIsNone(stages['dev'])
                self.assertEqual(stages['beta'].main.servers, ['a'])
                continue
            with self.assertRaisesRegex(ConfigurationError, message):
                configuration.load(path)
