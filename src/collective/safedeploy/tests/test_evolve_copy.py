"""bin/evolve-copy against a real ZEO server and real FileStorages."""
import io
import json
import os
import random
import subprocess
import sys
import time
import unittest

import ZODB.config
from collective.safedeploy.evolve import procedure
from collective.safedeploy.evolve import state
from collective.safedeploy.evolve import guard
from collective.safedeploy.zeo import server as zeoserver
from collective.safedeploy.zeo import control as zeocontrol
from collective.safedeploy.zeo import freeze as zeofreeze
from collective.safedeploy.tests import zeosupport
from collective.safedeploy.tests import zodbsupport
from collective.safedeploy.tests.support import skip_unless

EXAMPLE = zeosupport.EXAMPLE
# three kills aimed at each of the eight steps of KillTests.TARGETS
KILLS = int(os.environ.get('SAFEDEPLOY_EVOLVE_KILLS', '24'))


class EvolveCopyTestCase(unittest.TestCase):

    documents = 5

    def setUp(self):
        self.dir = zeosupport.temporary_directory(self)
        self.data = zeosupport.make_data_root(
            os.path.join(self.dir, 'data'), self.documents, history=3)
        self.server = zeosupport.Server(self.data)
        self.addCleanup(self.server.stop)
        self.addCleanup(os.environ.pop, 'SAFEDEPLOY_EXAMPLE_FAIL', None)

    def site(self, name=None):
        name = name or self.data.current()
        return zeosupport.read_site(self.data.fs(name), self.data.blobs(name))

    def evolve_copy(self, *args, **kw):
        return zeosupport.evolve_copy(self.data, self.server, *args, **kw)

    def journal(self, event):
        return [e for e in self.data.generations.journal.entries()
                if e['event'] == event]


class ProcedureTests(EvolveCopyTestCase):

    def test_the_whole_procedure_with_a_writer(self):
        writer = zeosupport.LoopWriter(self.server.address, self.dir)
        time.sleep(0.3)      # writes before and during prepare
        code, out = self.evolve_copy()
        time.sleep(1.0)      # and after the thaw, on the evolved data
        ok, refused = writer.stop()
        self.assertEqual(code, 0, out)
        lines = out.splitlines()
        steps = [line.split(':')[0] for line in lines
                 if line.split(':')[0] in ('prepare', 'freeze', 'catch-up',
                                           'evolve', 'verify', 'switch',
                                           'thaw')]
        self.assertEqual(steps, ['prepare', 'freeze', 'catch-up', 'evolve',
                                 'verify', 'switch', 'thaw'])
        self.assertRegex(lines[-1], r'^read-only window: \d+\.\d{3} s '
                                    r'\(catch-up \d+\.\d{3} s, evolve '
                                    r'\d+\.\d{3} s\)$')
        self.assertEqual(self.data.current(), '2')
        site = self.site()
        # the evolve ran on the copy: titles stripped, bodies upper-cased
        self.assertEqual(site[1], ('title 1', b'BODY OF 1'))
        # nothing a client was told was committed is lost ...
        self.assertTrue(ok)
        missing = [d for d in ok if d not in site]
        self.assertEqual(missing, [])
        # ... including what it wrote after the thaw, on the new data
        self.assertTrue(any(site[d][0] == 'written %d' % (d - 100000)
                            for d in ok))
        # while frozen, writes were refused, and none of those is there
        self.assertTrue(refused, out)
        self.assertEqual([d for d in refused if d in site], [])
        # writes committed before the freeze but after the copy were
        # caught up (and evolved: upper-cased blobs)
        caught = [line for line in lines if line.startswith('catch-up:')]
        self.assertNotIn('(0 bytes appended', caught[0])
        self.assertTrue(all(site[d][1] == (b'W%d' % (d - 100000)) or
                            site[d][1] == (b'w%d' % (d - 100000))
                            for d in ok))
        # old generation kept as it was; journal pairs release and data
        self.assertEqual(self.site('1')[1], (' title 1 ', b'body of 1'))
        published = self.journal('published')[-1]
        self.assertEqual((published['name'], published['previous'],
                          published['evolve']), ('2', '1', EXAMPLE))
        manifest = self.data.generations.manifest('2')
        self.assertEqual(manifest['source'], '1')
        self.assertEqual(len(manifest['steps']), 3)
        serving = self.server.serving()
        self.assertEqual((os.path.realpath(serving[0]), serving[1]),
                         (os.path.realpath(self.data.fs('2')), False))

    def test_a_failing_step_thaws_production_unchanged_then_resume(self):
        before = zeosupport.production_fingerprint(self.data, '1')
        code, out = self.evolve_copy(
            env=dict(SAFEDEPLOY_EXAMPLE_FAIL='2'))
        self.assertEqual(code, 1, out)
        last = out.strip().splitlines()[-1]
        self.assertTrue(last.startswith('evolve-copy: error: evolve step '),
                        out)
        self.assertIn('example step 2 fails on purpose', last)
        self.assertIn('--resume', last)
        self.assertNotIn('Traceback', out)
        self.assertEqual(self.data.current(), '1')
        self.assertTrue(self.server.wait_writable_on_current())
        self.assertEqual(zeosupport.production_fingerprint(self.data, '1'),
                         before)
        # the copy is kept, with a report
        with open(os.path.join(self.data.dir('2'), state.REPORT)) as f:
            report = f.read()
        self.assertIn('example step 2 fails on purpose', report)
        self.assertIn('committed step %s.evolve1' % EXAMPLE, report)
        self.assertFalse(self.data.generations.is_complete('2'))
        # production is writable again
        client = zeosupport.Client(self.server.address)
        self.addCleanup(client.stop)
        self.assertEqual(client.ask('wait writable'), 'connected writable')
        self.assertTrue(client.ask('write').startswith('ok'))
        # resume: step 1 is not run again; the new write is caught up
        code, out = self.evolve_copy('--resume')
        self.assertEqual(code, 0, out)
        self.assertIn('resuming on data generation 2', out)
        self.assertIn('evolve starts again', out)
        self.assertEqual(self.data.current(), '2')
        site = self.site()
        self.assertEqual(site[1], ('title 1', b'BODY OF 1'))
        self.assertEqual(site[10001], ('written 1', b'WRITTEN'))

    def test_resume_when_production_did_not_change(self):
        code, out = self.evolve_copy(env=dict(SAFEDEPLOY_EXAMPLE_FAIL='3'))
        self.assertEqual(code, 1, out)
        code, out = self.evolve_copy('--resume')
        self.assertEqual(code, 0, out)
        self.assertIn('production unchanged since the killed run', out)
        self.assertNotIn('.evolve1:', out)
        self.assertNotIn('.evolve2:', out)
        self.assertIn('.evolve3:', out)
        self.assertEqual(self.site()[1], ('title 1', b'BODY OF 1'))

    def test_resume_without_a_run(self):
        code, out = self.evolve_copy('--resume')
        self.assertEqual(code, 1)
        self.assertEqual(len(out.strip().splitlines()), 1, out)
        self.assertIn('no killed or failed evolve-copy', out)

    def test_zope_generations_and_function_runners(self):
        for spec in (zeosupport.GENERATIONS, zeosupport.FUNCTION):
            code, out = self.evolve_copy(evolve=spec, context=None)
            self.assertEqual(code, 0, out)
            self.assertEqual(out.count('  evolve step'), 3, out)
            self.assertEqual(self.site()[3], ('title 3', b'BODY OF 3'))
            # start again from unevolved data for the next kind
            self.data.generations.flip('1')
            self.server.control.thaw(self.data.dir('1'))
        self.assertEqual(self.data.generations.manifest('3')['evolve'],
                         zeosupport.FUNCTION)

    def test_new_objects_never_reuse_ids_clients_prefetched(self):
        # a client that committed before the freeze holds prefetched ids;
        # after the switch it must not store over objects the evolve made
        client = zeosupport.Client(self.server.address)
        self.addCleanup(client.stop)
        self.assertTrue(client.ask('write').startswith('ok'))
        code, out = self.evolve_copy(evolve=zeosupport.GENERATIONS,
                                     context=None)
        self.assertEqual(code, 0, out)
        self.assertEqual(client.ask('wait writable'), 'connected writable')
        for i in range(3):
            self.assertTrue(client.ask('write').startswith('ok'))
        titles = json.loads(client.ask('titles')[len('titles '):])
        self.assertIn('title 1', titles)
        self.assertIn('written 4', titles)

    def test_freeze_and_thaw_commands(self):
        self.server.stop()
        log = os.path.join(self.dir, 'commands.log')
        script = os.path.join(self.dir, 'record.py')
        with open(script, 'w') as f:
            f.write('import os, sys\n'
                    'with open(%r, "a") as f:\n'
                    '    f.write(sys.argv[1] + " " + '
                    'os.environ["SAFEDEPLOY_DATA"] + "\\n")\n' % log)
        argv = [sys.executable, '-m', 'collective.safedeploy.evolve.command',
                '--data', self.data.path, '--evolve', EXAMPLE,
                '--evolve-context', 'site',
                '--freeze-command', '%s %s freeze' % (sys.executable, script),
                '--thaw-command', '%s %s thaw' % (sys.executable, script)]
        p = subprocess.run(argv, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        self.assertEqual(p.returncode, 0, p.stdout)
        with open(log) as f:
            self.assertEqual(f.read().splitlines(), [
                'freeze ' + self.data.dir('1'),
                'thaw ' + self.data.dir('2')])

    def test_freeze_and_thaw_commands_run_without_a_shell(self):
        # shell syntax would be passed on as arguments: refused before
        # anything is frozen or copied; quoted, it is an argument
        self.server.stop()
        log = os.path.join(self.dir, 'commands.log')
        script = os.path.join(self.dir, 'record.py')
        with open(script, 'w') as f:
            f.write('import sys\n'
                    'with open(%r, "a") as f:\n'
                    '    f.write(sys.argv[1] + "\\n")\n' % log)
        record = '%s %s' % (sys.executable, script)

        def evolve_copy(freeze, thaw):
            return subprocess.run(
                [sys.executable, '-m', 'collective.safedeploy.evolve.command',
                 '--data', self.data.path, '--evolve', EXAMPLE,
                 '--evolve-context', 'site', '--freeze-command', freeze,
                 '--thaw-command', thaw], stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
        for freeze, thaw, said in (
                ('echo FREEZE >> %s' % log, record + ' thaw',
                 "evolve-copy: error: freeze-command: 'echo FREEZE >> %s' "
                 "uses shell syntax (>>); commands run without a shell: put "
                 "it in a script and name the script (quote an argument "
                 "that holds such characters)" % log),
                (record + ' freeze', record + ' {data} $SAFEDEPLOY_DATA',
                 "evolve-copy: error: thaw-command: '%s {data} "
                 "$SAFEDEPLOY_DATA' uses shell syntax ($SAFEDEPLOY_DATA); "
                 "commands run without a shell: put it in a script and name "
                 "the script (quote an argument that holds such "
                 "characters)" % record)):
            with self.subTest(freeze=freeze, thaw=thaw):
                p = evolve_copy(freeze, thaw)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertEqual(p.stdout, '')
                self.assertEqual(p.stderr.splitlines(), [said])
                self.assertFalse(os.path.exists(log))
                self.assertEqual(self.data.generations.on_disk(), ['1'])
        p = evolve_copy(record + " 'freeze >> $HOME'",
                        record + ' "thaw {data}; a | b"')
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(log) as f:
            self.assertEqual(f.read().splitlines(), [
                'freeze >> $HOME', 'thaw %s; a | b' % self.data.dir('2')])

    def test_without_a_way_to_freeze(self):
        p = subprocess.run(
            [sys.executable, '-m', 'collective.safedeploy.evolve.command',
             '--data', self.data.path, '--evolve', EXAMPLE],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(len(p.stdout.strip().splitlines()), 1, p.stdout)
        self.assertIn('freeze-command', p.stdout)
        self.assertEqual(self.data.generations.on_disk(), ['1'])

    def test_help(self):
        p = subprocess.run(
            [sys.executable, '-m', 'collective.safedeploy.evolve.command',
             '--help'], stdout=subprocess.PIPE, text=True)
        self.assertEqual(p.returncode, 0)
        self.assertIn('--rehearse', p.stdout)


class PackingEvolveCopy(procedure.EvolveCopy):
    """Production is packed between prepare and catch-up: through its
    server, as zeopack does, just before the freeze."""

    def freeze(self):
        import tempfile
        from ZEO.ClientStorage import ClientStorage
        from ZODB.serialize import referencesf
        with tempfile.TemporaryDirectory() as cache:
            storage = ClientStorage(self.control.server.address,
                                    wait_timeout=30, blob_dir=cache)
            try:
                storage.pack(time.time() + 1, referencesf, wait=True)
            finally:
                storage.close()
        return super().freeze()


class PackTests(EvolveCopyTestCase):

    def test_a_pack_since_prepare_means_a_full_recopy(self):
        inode = os.stat(self.data.fs('1')).st_ino
        out = io.StringIO()
        run = PackingEvolveCopy(self.data.path, EXAMPLE, self.server.control,
                                evolve_context='site', out=out,
                                progress=False)
        run.run()
        self.assertNotEqual(os.stat(self.data.fs('1')).st_ino, inode)
        self.assertIn('production was packed since prepare: copying it '
                      'again in full', out.getvalue())
        self.assertIn('full recopy after a pack', out.getvalue())
        self.assertEqual(self.data.current(), '2')
        site = self.site()
        self.assertEqual(site[1002], ('h 2', b'HISTORY'))
        self.assertEqual(len(site), self.documents + 3)


class FreezeInPlaceTests(EvolveCopyTestCase):
    """A server safedeploy started freezes without a restart."""

    def test_writes_refused_reads_served_then_thawed_by_a_restart(self):
        client = zeosupport.Client(self.server.address)
        self.addCleanup(client.stop)
        self.assertTrue(client.ask('write').startswith('ok'))
        documents = client.ask('read')
        before = zeosupport.production_fingerprint(self.data, '1')
        pid = self.server.zeo.pid()
        started = time.monotonic()
        self.server.control.freeze(self.data.dir('1'))
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(self.server.zeo.pid(), pid)     # no restart
        self.assertEqual(self.server.serving()[1], True)
        self.assertTrue(self.server.zeo.read_only())
        self.assertEqual(client.ask('write'), 'refused ReadOnlyError')
        self.assertEqual(client.ask('read'), documents)
        # a pack is refused too: the file stays what it is
        from ZEO.ClientStorage import ClientStorage
        from ZODB.POSException import ReadOnlyError
        from ZODB.serialize import referencesf
        cache = zeosupport.temporary_directory(self)
        storage = ClientStorage(self.server.zeo.address, wait_timeout=30,
                                blob_dir=cache)
        try:
            with self.assertRaises(ReadOnlyError):
                storage.pack(time.time() + 1, referencesf, wait=True)
        finally:
            storage.close()
        self.assertEqual(zeosupport.production_fingerprint(self.data, '1'),
                         before)
        # its index is saved while frozen: a stop need not write it
        deadline = time.monotonic() + 30
        while 'indexed' not in (self.server.zeo.frozen() or ()):
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.01)
        self.server.control.thaw(self.data.dir('1'))
        self.assertNotEqual(self.server.zeo.pid(), pid)
        self.assertEqual(self.server.serving()[1], False)
        self.assertEqual(client.ask('wait writable'), 'connected writable')
        self.assertTrue(client.ask('write').startswith('ok'))
        self.assertEqual(client.ask('read'), 'read %d' % (
            int(documents.split()[1]) + 1))

    def test_a_custom_runzeo_is_restarted_read_only_instead(self):
        self.server.stop()
        runzeo = os.path.join(os.path.dirname(sys.executable), 'runzeo')
        zeo = zeoserver.ZEOServer(self.server.address, self.server.state_dir,
                               runzeo=runzeo)
        control = zeocontrol.DataServer(zeo, state.FS, state.BLOBS)
        self.addCleanup(zeo.stop)
        control.thaw(self.data.dir('1'))
        pid = zeo.pid()
        self.assertFalse(zeo.freezable())
        control.freeze(self.data.dir('1'))
        self.assertNotEqual(zeo.pid(), pid)
        self.assertEqual(control.serving()[1], True)
        self.assertEqual(zeo.configuration()[2], True)

    def test_invalidations_from_headers_are_filestorage_s(self):
        from ZODB.FileStorage import FileStorage
        storage = FileStorage(self.data.fs('1'), read_only=True)
        try:
            for count in (0, 1, 2, 5, 1000):
                self.assertEqual(zeofreeze.last_invalidations(storage, count),
                                 storage.lastInvalidations(count))
        finally:
            storage.close()


class RehearseTests(EvolveCopyTestCase):

    def test_rehearse_leaves_production_untouched(self):
        client = zeosupport.Client(self.server.address)
        self.addCleanup(client.stop)
        self.assertTrue(client.ask('write').startswith('ok'))
        before = zeosupport.production_fingerprint(self.data, '1')
        code, out = self.evolve_copy('--rehearse')
        self.assertEqual(code, 0, out)
        self.assertIn('rehearsing', out)
        self.assertEqual(out.count('  %s.evolve' % EXAMPLE), 3, out)
        self.assertRegex(out, r'rehearsal: \d+\.\d+ s, 3 steps, \d+ objects '
                              r'changed, 0 errors, version 3 of 3')
        self.assertEqual(zeosupport.production_fingerprint(self.data, '1'),
                         before)
        self.assertEqual(self.data.generations.on_disk(), ['1'])
        self.assertEqual(os.listdir(self.data.path).count('generations'), 1)
        self.assertFalse([n for n in os.listdir(self.data.path)
                          if n.startswith('evolve-rehearsal-')])
        # production still writable and not evolved
        self.assertTrue(client.ask('write').startswith('ok'))
        self.assertEqual(self.server.serving()[1], False)

    def test_rehearse_reports_errors(self):
        code, out = self.evolve_copy(
            '--rehearse', '--json', env=dict(SAFEDEPLOY_EXAMPLE_FAIL='2'))
        self.assertEqual(code, 1, out)
        report = json.loads(out[out.index('{'):])
        self.assertEqual(len(report['steps']), 1)
        self.assertIn('example step 2 fails on purpose', report['errors'][0])

    def test_keep_sandbox_and_serve_it(self):
        sandbox = os.path.join(self.dir, 'sandbox')
        before = zeosupport.production_fingerprint(self.data, '1')
        code, out = self.evolve_copy('--rehearse', '--keep-sandbox', sandbox)
        self.assertEqual(code, 0, out)
        conf = os.path.join(sandbox, 'zodb.conf')
        self.assertIn(conf, out)
        # a development instance opens the sandbox with that configuration
        with open(conf) as f:
            db = ZODB.config.databaseFromString(f.read())
        try:
            with db.transaction() as conn:
                doc = conn.root()['site'].documents[1]
                with doc.body.open('r') as f:
                    self.assertEqual((doc.title, f.read()),
                                     ('title 1', b'BODY OF 1'))
                # and can keep changing it
                doc.title = 'changed in QA'
        finally:
            db.close()
        self.assertEqual(zeosupport.production_fingerprint(self.data, '1'),
                         before)
        self.assertEqual(self.site()[1], (' title 1 ', b'body of 1'))


class SplitBrainTests(EvolveCopyTestCase):
    """A zeo-address that is not production's server is refused before
    anything is frozen or copied."""

    def assertRefusedUnchanged(self, argv, expected):
        before = zeosupport.production_fingerprint(self.data, '1')
        # (the data root's lock file aside: taking the lock makes it)
        gens = sorted(set(os.listdir(os.path.join(
            self.data.path, 'generations'))) - {'.lock'})
        process = subprocess.run(
            [sys.executable, '-m', 'collective.safedeploy.evolve.command',
             '--data', self.data.path, '--evolve', EXAMPLE,
             '--evolve-context', 'site'] + argv,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            timeout=120)
        self.assertNotEqual(process.returncode, 0, process)
        lines = process.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, process.stderr)
        self.assertNotIn('Traceback', process.stderr)
        self.assertIn(expected, lines[0])
        self.assertNotIn('read-only', process.stdout)
        self.assertEqual(self.data.current(), '1')
        self.assertEqual(sorted(set(os.listdir(os.path.join(
            self.data.path, 'generations'))) - {'.lock'}), gens)
        self.assertEqual(zeosupport.production_fingerprint(self.data, '1'),
                         before)
        # production's own server still serves, writable
        serving = self.server.serving()
        self.assertTrue(serving and not serving[1], serving)

    def test_nothing_answers_while_production_runs(self):
        address = '127.0.0.1:%d' % zeoserver.free_port()
        self.assertRefusedUnchanged(
            ['--zeo-address', address,
             '--zeo-state', os.path.join(self.dir, 'other-state')],
            'production runs at another address')

    def test_another_server_answers(self):
        other = zeosupport.make_data_root(
            os.path.join(self.dir, 'other'), 2, history=1)
        server = zeosupport.Server(other,
                                   state_dir=os.path.join(self.dir, 'o'))
        self.addCleanup(server.stop)
        self.assertRefusedUnchanged(
            ['--zeo-address', server.address, '--zeo-state', server.state_dir],
            'does not serve')


class KillTests(EvolveCopyTestCase):
    """SIGKILL at random moments of every step."""

    def evolve_copy(self, *args, **kw):
        # generation 1 is gone back to between runs: keep every generation
        return super().evolve_copy('--keep-generations', '0', *args, **kw)

    def fresh(self):
        """Back to the unevolved generation 1 (kept, complete)."""
        self.data.generations.flip('1', via='rollback')
        self.server.control.thaw(self.data.dir('1'))

    def check_after_kill(self, source, fingerprint):
        if not self.server.wait_writable_on_current():
            with open(self.server.zeo.log) as f:
                log = f.read()[-3000:]
            self.fail('production was not thawed: serving %s, current %s, '
                      'guard file %s, pid %s\n%s' % (
                          self.server.serving(), self.data.current(),
                          os.path.exists(guard.guard_path(self.data)),
                          self.server.zeo.pid(), log))
        current = self.data.current()
        self.assertTrue(self.data.generations.is_complete(current))
        if current == source:
            self.assertEqual(
                zeosupport.production_fingerprint(self.data, source),
                fingerprint)
        else:
            self.assertEqual(self.site()[1], ('title 1', b'BODY OF 1'))
        return current

    # the moments to kill at: when the run's state shows a step has
    # started, plus a random delay
    TARGETS = ('preparing', 'prepared', 'frozen', 'caught-up', 'evolving',
               'evolved', 'verified', 'switched')

    def test_sigkill_at_random_moments(self):
        rng = random.Random(int(os.environ.get('SAFEDEPLOY_SEED', '42')))
        env = dict(SAFEDEPLOY_EXAMPLE_SLEEP='0.01')
        phases = {}
        kills = resumed = attempts = 0
        self.round = 0
        # the caught-up step lasts a millisecond or less: after KILLS kills,
        # go on aiming at the steps no kill has reached yet
        while kills < KILLS or len(phases) < len(self.TARGETS):
            attempts += 1
            self.assertLess(attempts, KILLS * 4, 'steps reached: %s' % phases)
            source = self.data.current()
            fingerprint = zeosupport.production_fingerprint(
                self.data, source)
            resumable = any(
                state.load_state(self.data.dir(n)) for n in
                self.data.generations.on_disk()
                if not self.data.generations.is_complete(n))
            args = ('--resume',) if resumable else ()
            targets = self.TARGETS if kills < KILLS else [
                t for t in self.TARGETS if t not in phases]
            target = targets[attempts % len(targets)]
            t_start = time.monotonic()
            process = self.evolve_copy(*args, env=env, wait=False)
            reached = self.wait_for(process, source, target)
            if reached:
                time.sleep(rng.uniform(0, 0.03))
            if reached and process.poll() is None:
                zeosupport.kill(process)
                kills += 1
                phases[target] = phases.get(target, 0) + 1
            else:
                process.communicate()
            t_kill = time.monotonic()
            current = self.check_after_kill(source, fingerprint)
            if os.environ.get('SAFEDEPLOY_DEBUG_KILLS'):
                print('%s %s: run %.2f s, recovery %.2f s' % (
                    target, reached, t_kill - t_start,
                    time.monotonic() - t_kill))
            if current != source:
                # switched: start again from unevolved data
                self.round += 1
                self.fresh()
            # now and then, --resume must finish what the kill left
            elif resumable and rng.random() < 0.15:
                code, out = self.evolve_copy('--resume', env=env)
                self.assertEqual(code, 0, out)
                self.assertEqual(self.site()[1], ('title 1', b'BODY OF 1'))
                resumed += 1
                self.round += 1
                self.fresh()
        print('\n%d kills by step reached: %s; %d resumed runs finished' % (
            kills, json.dumps(phases, sort_keys=True), resumed))
        self.assertEqual(len(phases), len(self.TARGETS))

    def wait_for(self, process, source, target, timeout=30):
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if self.phase(source) == target or (
                    target == 'preparing' and self.phase(source) not in (
                        None, 'failed')):
                return True
            time.sleep(0.0005)
        return False

    def phase(self, source):
        try:
            if self.data.current() != source:
                return 'switched'
        except Exception:
            return None
        names = [n for n in self.data.generations.on_disk()
                 if not self.data.generations.is_complete(n)]
        if not names:
            return None
        found = state.load_state(self.data.dir(max(names, key=int)))
        if found is None:
            return None
        if found['phase'] == 'prepared' and os.path.exists(
                guard.guard_path(self.data)):
            return 'frozen'
        return found['phase']


def can_mount_tmpfs():
    try:
        with open('/proc/filesystems') as f:
            return os.geteuid() == 0 and 'tmpfs' in f.read()
    except OSError:
        return False


class FullDiskTests(unittest.TestCase):

    @skip_unless(can_mount_tmpfs(), 'mounting a small tmpfs needs root')
    def test_a_full_disk(self):
        mount = zeosupport.temporary_directory(self)
        p = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=400k',
                            'tmpfs', mount], stderr=subprocess.PIPE,
                           text=True)
        if p.returncode:
            self.skipTest('cannot mount a tmpfs: %s' % p.stderr.strip())
        self.addCleanup(subprocess.run, ['umount', '-l', mount])
        data = zeosupport.make_data_root(os.path.join(mount, 'data'), 3)
        # history enough that a copy does not fit
        db = zodbsupport.open_db(data.fs('1'), data.blobs('1'))
        for i in range(4):
            with db.transaction() as conn:
                conn.root()['padding'] = os.urandom(60000)
        db.close()
        server = zeosupport.Server(data, os.path.join(
            zeosupport.temporary_directory(self), 'zeo'))
        self.addCleanup(server.stop)
        before = zeosupport.production_fingerprint(data, '1')
        code, out = zeosupport.evolve_copy(data, server)
        self.assertEqual(code, 1, out)
        self.assertEqual(len(out.strip().splitlines()), 1, out)
        self.assertIn('No space left on device', out)
        self.assertEqual(data.current(), '1')
        self.assertEqual(zeosupport.production_fingerprint(data, '1'),
                         before)
        self.assertEqual(server.serving()[1], False)
        client = zeosupport.Client(server.address)
        self.addCleanup(client.stop)
        self.assertTrue(client.ask('write').startswith('ok'))


class ZEOServerCommandTests(unittest.TestCase):

    def zeo_server(self, *args):
        return subprocess.run(
            [sys.executable, '-m', 'collective.safedeploy.zeo.command'] +
            list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)

    def test_start_status_stop(self):
        d = zeosupport.temporary_directory(self)
        data = zeosupport.make_data_root(os.path.join(d, 'data'))
        address = '127.0.0.1:%d' % zeoserver.free_port()
        state = os.path.join(d, 'state')
        common = ['--address', address, '--state', state]
        p = self.zeo_server('start', '--data', data.path, *common)
        self.addCleanup(self.zeo_server, 'stop', *common)
        self.assertEqual(p.returncode, 0, p.stdout)
        p = self.zeo_server('status', *common)
        self.assertIn('running pid', p.stdout)
        self.assertIn('writable', p.stdout)
        self.assertEqual(self.zeo_server('stop', *common).returncode, 0)
        self.assertIn('stopped', self.zeo_server('status', *common).stdout)

    def test_bad_address_is_one_line(self):
        p = self.zeo_server('status', '--address', 'host:port', '--state',
                            '/nonexistent')
        self.assertEqual(p.returncode, 1)
        self.assertEqual(len(p.stdout.strip().splitlines()), 1, p.stdout)
        self.assertIn('invalid ZEO address', p.stdout)
