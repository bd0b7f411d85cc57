"""The release lifecycle, one test per behaviour, on real buildouts."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

from . import support
from .base import ReleaseTestCase


class TestStageAndBuild(ReleaseTestCase):

    def test_parts_bin_develop_eggs_and_installed_are_inside_the_release(self):
        self.configure()
        result = self.release('1.0')
        self.assertReleased(result, '1.0')
        release = self.sample.path('releases', '1.0')
        for name in ('bin', 'parts', 'develop-eggs', '.installed.cfg',
                     'bin/hello'):
            self.assertTrue(os.path.lexists(os.path.join(release, name)),
                            name)
        # nothing of the release in the buildout's own directories
        self.assertFalse(self.exists('parts'))
        self.assertFalse(self.exists('develop-eggs'))
        self.assertFalse(self.exists('.installed.cfg'))
        # only the root scripts the rollback recipe installs
        self.assertEqual(sorted(os.listdir(self.sample.path('bin'))),
                         ['flip', 'rollback'])
        self.assertEqual(os.readlink(self.sample.path('current')),
                         'releases/1.0')
        self.assertEqual(self.hello(), 'hello 1.0')

    def test_eggs_and_download_cache_stay_shared(self):
        self.configure()
        self.release('1.0')
        self.release('1.1')
        eggs = support.shared_directory('eggs')
        for tag in ('1.0', '1.1'):
            text = self.sample.read('releases', tag, 'bin', 'rollback')
            self.assertNotIn('releases/%s/eggs' % tag, text)
        self.assertTrue(os.listdir(os.path.join(eggs, 'v5')))
        self.assertFalse(os.path.exists(self.sample.path('releases', '1.1',
                                                         'eggs')))

    def test_a_new_release_does_not_uninstall_the_previous_ones_scripts(self):
        self.configure()
        self.release('1.0')
        self.release('1.1')
        self.assertTrue(self.exists('releases', '1.0', 'bin', 'hello'))
        self.assertEqual(self.hello('releases/1.0'), 'hello 1.0')


class TestFrozenSources(ReleaseTestCase):

    def test_an_old_release_keeps_running_its_own_code(self):
        self.configure(develop='src/hello')
        self.assertReleased(self.release('1.0'), '1.0')
        self.sample.add_package('hello', '1.1')   # the working copy moves on
        self.assertReleased(self.release('1.1'), '1.1')
        self.assertEqual(self.hello(), 'hello 1.1')
        self.assertEqual(self.hello('releases/1.0'), 'hello 1.0')
        script = self.sample.read('releases', '1.0', 'bin', 'hello')
        self.assertNotIn(self.sample.path('src', 'hello'), script)


class TestPublish(ReleaseTestCase):

    def test_manifest(self):
        self.configure(develop='src/hello')
        self.release('1.0')
        m = self.manifest('1.0')
        self.assertEqual(m['tag'], '1.0')
        for key in ('time', 'user', 'host', 'configuration-sha256',
                    'distributions', 'parts'):
            self.assertTrue(m.get(key), key)
        self.assertEqual(len(m['configuration-sha256']), 64)
        names = {d['name']: d for d in m['distributions']}
        self.assertEqual(names['hello']['version'], '0.1')
        self.assertTrue(names['hello']['develop'])
        self.assertEqual(m['parts'], ['hello', 'rollback'])
        self.assertTrue(self.exists('releases', '1.0', 'effective.cfg'))

    def test_configuration_hash_changes_with_the_configuration(self):
        self.configure()
        self.release('1.0')
        self.configure(extra='\n[hello]\nrecipe = zc.recipe.egg\n'
                             'eggs = hello\ninterpreter = py\n')
        self.release('1.1')
        self.assertNotEqual(self.manifest('1.0')['configuration-sha256'],
                            self.manifest('1.1')['configuration-sha256'])

    def test_install_part_does_not_publish_a_partial_release(self):
        self.configure()
        self.release('1.0')
        before = self.state()
        result = self.release('1.1', 'install', 'hello')
        self.assertNotEqual(result.returncode, 0, result)
        # refused up front, before anything was built or written
        self.assertEqual(result.last_line, 'Error: bin/buildout install hello'
                         ' would build a release of only some parts; run '
                         'bin/buildout without part names')
        self.assertEqual(before, self.state())
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')
        self.assertFalse(self.exists('releases', '1.1',
                                     'safedeploy-manifest.json'))

    def test_current_is_never_missing_while_flipping(self):
        # a reader resolves current/ in a tight loop while releases flip
        self.configure()
        self.release('1.0')
        self.release('1.1')
        from collective.safedeploy.release.settings import releases as Generations
        gens = Generations(self.sample.path('releases'),
                           self.sample.path('current'))
        misses = []
        reads = [0]
        stop = threading.Event()

        def reader():
            path = self.sample.path('current', 'safedeploy-manifest.json')
            while not stop.is_set():
                reads[0] += 1
                if not os.path.exists(path):
                    misses.append(reads[0])
        t = threading.Thread(target=reader)
        t.start()
        try:
            for i in range(1000):
                gens.flip('1.0' if i % 2 else '1.1')
        finally:
            stop.set()
            t.join()
        self.assertGreater(reads[0], 100)
        self.assertEqual(misses, [])


class TestFailure(ReleaseTestCase):

    def test_story_fail_fix_rollback(self):
        # 1.0 -> 1.1 fails in a part -> 1.1 fixed -> rollback -> 1.0
        self.configure(develop='src/hello')
        self.assertReleased(self.release('1.0'), '1.0')
        self.configure(parts='hello broken rollback', develop='src/hello')
        result = self.release('1.1')
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(result.last_line, 'current still points to 1.0')
        self.assertIn('the broken part fails on purpose',
                      self.sample.read('releases', '1.1',
                                       'safedeploy-failed.txt'))
        self.assertEqual(self.hello(), 'hello 1.0')
        events = [(e['event'], e['name']) for e in self.journal()]
        self.assertIn(('failed', '1.1'), events)
        # fixed: the same tag builds (the failed attempt is cleaned up)
        self.configure(develop='src/hello')
        self.sample.add_package('hello', '1.1')
        self.assertReleased(self.release('1.1'), '1.1')
        self.assertEqual(self.hello(), 'hello 1.1')
        result = self.rollback()
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(self.hello(), 'hello 1.0')
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')

    def test_interrupt_leaves_current_untouched(self):
        self.configure()
        self.release('1.0')
        self.configure(parts='hello slow rollback')
        p = self.start_release('1.1')
        time.sleep(0.5)
        p.send_signal(2)  # Ctrl-C
        out, _ = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 130, out)
        self.assertEqual(out.strip().splitlines()[-1],
                         'bin/buildout: interrupted by SIGINT; current still '
                         'points to 1.0')
        self.assertNotIn('Traceback', out)
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')
        self.assertIn('interrupted', self.sample.read(
            'releases', '1.1', 'safedeploy-failed.txt'))

    def test_sigterm_leaves_current_untouched(self):
        self.configure()
        self.release('1.0')
        self.configure(parts='hello slow rollback')
        p = self.start_release('1.1')
        p.terminate()
        out, _ = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 143, out)
        self.assertEqual(out.strip().splitlines()[-1],
                         'bin/buildout: interrupted by SIGTERM; current still '
                         'points to 1.0')
        self.assertNotIn('Traceback', out)

    def test_sigkill_is_marked_failed_by_the_next_run(self):
        self.configure()
        self.release('1.0')
        self.configure(parts='hello slow rollback')
        p = self.start_release('1.1')
        p.kill()
        p.wait()
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')
        self.configure()
        self.assertReleased(self.release('1.2'), '1.2')
        self.assertIn('killed', self.sample.read(
            'releases', '1.1', 'safedeploy-failed.txt'))
        states = {r['tag']: r['state'] for r in __import__('json').loads(
            self.rollback('--list', '--json').output)}
        self.assertEqual(states['1.1'], 'failed')

    @support.skip_unless(os.geteuid() == 0 and os.path.exists('/bin/mount'),
                         'a full disk needs root to mount a small tmpfs')
    def test_disk_full(self):
        releases = self.sample.path('releases')
        os.makedirs(releases)
        r = support.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs',
                         releases])
        if r.returncode:
            self.skipTest('cannot mount a tmpfs: %s' % r.output)
        self.addCleanup(support.run, ['umount', '-l', releases])
        self.configure()
        self.assertReleased(self.release('1.0'), '1.0')
        # fill the disk but a few KiB
        filler = os.path.join(releases, '1.0', 'parts', 'filler')
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b'x' * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        os.truncate(filler, os.path.getsize(filler) - 8192)
        self.configure(develop='src/hello')
        result = self.release('1.1')
        self.assertNotEqual(result.returncode, 0, result)
        self.assertEqual(result.last_line, 'current still points to 1.0')
        self.assertNotIn('Traceback', result.output)
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')
        self.assertEqual(self.hello(), 'hello 1.0')
        # space again: the next run cleans up and succeeds
        os.unlink(filler)
        self.assertReleased(self.release('1.1'), '1.1')


class TestImmutable(ReleaseTestCase):

    def test_a_complete_release_is_not_rebuilt(self):
        self.configure()
        self.release('1.0')
        self.release('1.1')
        before = self.state()
        result = self.release('1.0')
        self.assertEqual(result.returncode, 1, result)
        self.assertIn('already exists and releases are immutable',
                      result.output)
        self.assertEqual(before, self.state())

    def test_the_current_release_again_is_nothing_to_do(self):
        # cron, Ansible, -N: the same tag again exits 0 and changes nothing
        self.configure()
        self.release('1.0')
        before = self.state()
        for args in ((), ('-N',)):
            result = self.release('1.0', *args)
            self.assertEqual(result.returncode, 0, result)
            self.assertIn('release 1.0 is current and complete; nothing to '
                          'do', result.output)
            self.assertEqual(before, self.state())

    def test_annotate_shows_what_a_release_is_built_with(self):
        self.configure(develop='src/hello')
        self.release('1.0')
        # buildout 6 loads no extension for annotate: the configuration as
        # written, and nothing built
        before = self.state()
        result = self.sample.buildout('annotate', 'buildout')
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(before, self.state())
        self.assertRegex(result.output, r'\nbin-directory= bin\n')
        # the release's annotate.txt: the values it was built with, and
        # who set them
        text = self.sample.read('releases', '1.0', 'annotate.txt')
        release = self.sample.path('releases', '1.0')
        self.assertIn('bin-directory= %s/bin\n    release 1.0 build\n'
                      % release, text)
        self.assertIn('develop= %s/src/hello\n    release 1.0 build\n'
                      % release, text)

    def test_rebuild_takes_an_explicit_option(self):
        self.configure(develop='src/hello')
        self.release('1.0')
        self.release('1.1')
        self.sample.add_package('hello', '1.0-rebuilt')
        result = self.release('1.0', 'safedeploy:rebuild=true')
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(self.hello('releases/1.0'), 'hello 1.0-rebuilt')
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')

    def test_rebuild_never_touches_the_current_release(self):
        self.configure()
        self.release('1.0')
        before = self.state()
        result = self.release('1.0', 'safedeploy:rebuild=true')
        self.assertEqual(result.returncode, 1, result)
        self.assertIn('is current and is never rebuilt in place',
                      result.output)
        self.assertEqual(before, self.state())


class TestLock(ReleaseTestCase):

    def test_a_second_run_fails_at_once_naming_the_holder(self):
        self.configure()
        self.release('1.0')
        self.configure(parts='hello slower rollback')
        p = self.start_release('1.1')
        started = time.time()
        second = self.release('1.2')
        self.assertLess(time.time() - started, 10)
        self.assertNotEqual(second.returncode, 0, second)
        self.assertIn('pid %d' % p.pid, second.output)
        self.assertIn('already running', second.output)
        rollback = self.rollback()
        self.assertNotEqual(rollback.returncode, 0, rollback)
        self.assertIn('pid %d' % p.pid, rollback.output)
        out, _ = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 0, out)
        self.assertEqual(support.current_tag(self.sample.directory), '1.1')
        self.assertFalse(self.exists('releases', '1.2'))

    def test_a_lock_left_by_a_killed_run_does_not_block(self):
        self.configure(parts='hello slow rollback')
        p = self.start_release('1.0')
        p.kill()
        p.wait()
        self.assertTrue(self.exists('releases', '.lock'))
        self.configure()
        self.assertReleased(self.release('1.1'), '1.1')


class TestJournalAndPruning(ReleaseTestCase):

    safedeploy = 'keep = 2\n'

    def test_order_comes_from_the_journal_and_pruning_keeps_the_protected(
            self):
        self.configure()
        for tag in ('b-1', 'a-2', 'c-3'):   # names do not sort as built
            self.assertReleased(self.release(tag), tag)
        rows = __import__('json').loads(self.rollback('--list', '--json'
                                                      ).output)
        self.assertEqual([r['tag'] for r in rows if r['exists']],
                         ['a-2', 'c-3'])
        self.assertFalse(self.exists('releases', 'b-1'))
        events = [(e['event'], e['name']) for e in self.journal()]
        self.assertIn(('pruned', 'b-1'), events)
        # roll back to a-2: current is a-2, newest good c-3, both kept
        self.assertEqual(self.rollback().returncode, 0)
        self.assertReleased(self.release('d-4'), 'd-4')
        on_disk = sorted(n for n in os.listdir(self.sample.path('releases'))
                         if not n.startswith('.'))
        # d-4 current; a-2 ran before it (c-3 was rolled back from, and
        # built before a-2 ran again: it goes)
        self.assertEqual(on_disk, ['a-2', 'd-4'])
        r = self.rollback('--dry-run')
        self.assertIn('would roll back: current d-4 -> a-2', r.output)

    def test_mtimes_do_not_matter(self):
        self.configure()
        self.release('1.0')
        self.release('1.1')
        os.utime(self.sample.path('releases', '1.1'), (0, 0))
        self.assertEqual(self.rollback('--dry-run').output.strip(),
                         'would roll back: current 1.1 -> 1.0')


class TestOnlyWhenListed(ReleaseTestCase):

    def test_nothing_happens_without_the_extension_listed(self):
        # another extension is listed: buildout calls every installed
        # extension's hooks, ours must do nothing
        self.sample.write('src/otherext/pyproject.toml', '''\
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "otherext"
            version = "0.1"
            [project.entry-points."zc.buildout.extension"]
            default = "otherext:load"
            [tool.setuptools.packages.find]
            where = ["src"]
            ''')
        self.sample.write('src/otherext/src/otherext/__init__.py', '''\
            def load(buildout):
                print('otherext loaded')
            ''')
        wheels = self.sample.path('wheels')
        r = support.run([sys.executable, '-m', 'pip', 'wheel', '-q',
                         '--no-deps', '--no-build-isolation', '-w', wheels,
                         self.sample.path('src', 'otherext')])
        self.assertEqual(r.returncode, 0, r)
        self.configure(extensions='otherext',
                       extra='\n[buildout]\nfind-links += %s\n' % wheels)
        result = self.sample.buildout()
        self.assertEqual(result.returncode, 0, result)
        self.assertIn('otherext loaded', result.output)
        self.assertFalse(self.exists('releases'))
        self.assertFalse(self.exists('current'))
        self.assertTrue(self.exists('bin', 'hello'))

    def test_load_is_idempotent(self):
        import zc.buildout.buildout
        from collective.safedeploy.release import extension
        self.configure()
        here = os.getcwd()
        os.chdir(self.sample.directory)
        self.addCleanup(os.chdir, here)
        b = zc.buildout.buildout.Buildout(
            self.sample.path('buildout.cfg'),
            [('safedeploy', 'tag', '1.0')], False, 'install')
        extension.load(b)
        run = b._safedeploy_run
        self.addCleanup(lambda: run.lock and run.lock.close())
        bin_directory = b['buildout']['bin-directory']
        extension.load(b)   # buildout restarted itself: no second stage
        self.assertIs(b._safedeploy_run, run)
        self.assertEqual(b['buildout']['bin-directory'], bin_directory)
        run.recorder.stop()
        run.done = True


class TestHooks(ReleaseTestCase):

    def test_after_flip_and_a_failing_health_check_flip_back(self):
        log = self.sample.path('after-flip.log')
        self.configure(safedeploy='''\
            after-flip = %s -c "import os; open(%r, 'a').write(os.environ['SAFEDEPLOY_TAG'] + '\\\\n')"
            health-check = %s -c "import os, sys; sys.exit(os.environ['SAFEDEPLOY_TAG'] == '1.1')"
            health-timeout = 1
            ''' % (sys.executable, log, sys.executable))
        self.assertReleased(self.release('1.0'), '1.0')
        result = self.release('1.1')
        self.assertEqual(result.returncode, 1, result)
        self.assertIn('release 1.1 is bad', result.output)
        self.assertIn('current flipped back to 1.0', result.output)
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')
        with open(log) as f:
            self.assertEqual(f.read().split(), ['1.0', '1.1', '1.0'])
        events = [(e['event'], e['name']) for e in self.journal()]
        self.assertIn(('bad', '1.1'), events)
        # a bad release is refused as a rollback target
        r = self.rollback('1.1')
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('marked bad', r.output)

    def test_a_run_killed_in_after_flip_leaves_the_release_unchecked(self):
        # after-flip says it started, then takes its time: the run is
        # killed while it runs, after the flip, before the health gate
        started = self.sample.path('after-flip.started')
        hooks = textwrap.dedent('''\
            after-flip = %s -c "import os, sys, time; open(%r, 'w').close(); time.sleep(float(sys.argv[1]) if os.environ['SAFEDEPLOY_TAG'] == '1.1' else 0)" %s
            health-check = %s -c "import sys; sys.exit(%d)"
            health-timeout = 1
            ''')
        self.configure(safedeploy=hooks % (
            sys.executable, started, 0, sys.executable, 0))
        self.assertReleased(self.release('1.0'), '1.0')
        os.unlink(started)
        self.configure(safedeploy=hooks % (
            sys.executable, started, 30, sys.executable, 1))
        p = subprocess.Popen(
            [support.BUILDOUT, 'safedeploy:tag=1.1'],
            cwd=self.sample.directory, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        self.addCleanup(p.wait)
        deadline = time.monotonic() + 120
        while not os.path.exists(started) and time.monotonic() < deadline \
                and p.poll() is None:
            time.sleep(0.01)
        self.assertTrue(os.path.exists(started), 'after-flip never ran')
        os.killpg(p.pid, signal.SIGKILL)     # bin/buildout and its hook
        p.wait()
        # current points to the complete 1.1, which nothing checked
        self.assertEqual(support.current_tag(self.sample.directory), '1.1')
        states = {r['tag']: r['state'] for r in json.loads(
            self.rollback('--list', '--json').output)}
        self.assertEqual(states, {'1.0': 'published', '1.1': 'unchecked'})
        r = support.run([self.sample.path('bin', 'flip'), '1.1'],
                        cwd=self.sample.directory)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn('its health gate never passed', r.output)
        # the next bin/buildout of 1.1 builds nothing and runs the gate
        # again: unhealthy, current goes back to 1.0
        manifest = self.manifest('1.1')
        result = self.release('1.1')
        self.assertEqual(result.returncode, 1, result)
        self.assertIn('health gate never passed', result.output)
        self.assertIn('release 1.1 is bad', result.output)
        self.assertIn('current flipped back to 1.0', result.output)
        self.assertNotIn('Traceback', result.output)
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')
        self.assertEqual(self.manifest('1.1'), manifest)
        states = {r['tag']: r['state'] for r in json.loads(
            self.rollback('--list', '--json').output)}
        self.assertEqual(states, {'1.0': 'published', '1.1': 'bad'})

    def test_an_unchecked_release_that_passes_the_gate_again_stays(self):
        self.configure(safedeploy='health-check = true\n')
        self.assertReleased(self.release('1.0'), '1.0')
        self.assertReleased(self.release('1.1'), '1.1')
        # what a run killed after its flip leaves in the journal: 1.1
        # flipped to, its gate still to pass
        from ..core.store import RELEASE, Store
        gens = Store(self.sample.path('releases'), RELEASE,
                     current=self.sample.path('current'))
        gens.flip('1.0', via='test')
        gens.flip('1.1', via='publish', checking=True)
        self.assertEqual(gens.states()['1.1'], 'unchecked')
        result = self.release('1.1')
        self.assertReleased(result, '1.1')
        self.assertIn('health gate never passed', result.output)
        self.assertIn('current -> 1.1', result.output)
        self.assertEqual(gens.states()['1.1'], 'published')
        # checked: the next run has nothing to do again
        result = self.release('1.1')
        self.assertReleased(result, '1.1')
        self.assertIn('nothing to do', result.output)

    def test_health_check_url(self):
        import http.server
        healthy = {'ok': True}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if healthy['ok'] else 503)
                self.end_headers()

            def log_message(self, *args):
                pass
        server = http.server.HTTPServer(('127.0.0.1', 0), Handler)
        t = threading.Thread(target=server.serve_forever)
        t.start()
        self.addCleanup(t.join)
        self.addCleanup(server.shutdown)
        url = 'http://127.0.0.1:%d/health' % server.server_port
        self.configure(safedeploy='health-check = %s\nhealth-timeout = 1\n'
                       % url)
        self.assertReleased(self.release('1.0'), '1.0')
        healthy['ok'] = False
        result = self.release('1.1')
        self.assertEqual(result.returncode, 1, result)
        self.assertIn('HTTP 503', result.output)
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')
        # healthy again: the next release passes the URL gate
        healthy['ok'] = True
        self.assertReleased(self.release('1.2'), '1.2')


class TestRollback(ReleaseTestCase):

    def setUp(self):
        super().setUp()
        for tag in ('1.0', '1.1', '1.2'):
            self.configure(says=tag)
            self.assertReleased(self.release(tag), tag)

    def hello(self, where='current'):
        return super().hello(where).splitlines()[0]

    def test_no_argument_goes_to_the_previous_good_release(self):
        r = self.rollback()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.hello(), '1.1')
        r = self.rollback()
        self.assertEqual(self.hello(), '1.0')
        r = self.rollback()
        self.assertEqual(r.returncode, 1)
        self.assertIn('no good release older than 1.0', r.output)

    def test_named_release(self):
        r = self.rollback('1.0')
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.hello(), '1.0')

    def test_list_and_json(self):
        r = self.rollback('--list')
        self.assertEqual(r.returncode, 0, r)
        lines = r.output.splitlines()
        self.assertEqual(lines[0].split(), ['current', 'tag', 'built', 'at',
                                            '(UTC)', 'state'])
        self.assertTrue(lines[-1].startswith('*'))
        rows = __import__('json').loads(self.rollback('--list', '--json'
                                                      ).output)
        self.assertEqual([(r['tag'], r['current'], r['state']) for r in rows],
                         [('1.0', False, 'published'),
                          ('1.1', False, 'published'),
                          ('1.2', True, 'published')])
        self.assertEqual([r['tag'] for r in rows], ['1.0', '1.1', '1.2'])
        self.assertEqual([r['current'] for r in rows], [False, False, True])

    def test_dry_run_changes_nothing(self):
        before = self.state()
        r = self.rollback('--dry-run')
        self.assertEqual(r.output.strip(), 'would roll back: current 1.2 -> 1.1')
        self.assertEqual(before, self.state())

    def test_rollback_works_when_the_current_release_is_broken(self):
        import shutil
        shutil.rmtree(self.sample.path('releases', '1.2', 'bin'))
        r = self.rollback()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.hello(), '1.1')

    def test_rollback_works_after_a_build_failed_halfway(self):
        self.configure(parts='hello broken rollback')
        self.assertEqual(self.release('1.3').returncode, 1)
        r = self.rollback()
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.hello(), '1.1')
        r = self.rollback('1.3')
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('was not completed', r.output)

    def test_help(self):
        r = self.rollback('--help')
        self.assertEqual(r.returncode, 0)
        self.assertIn('usage: rollback', r.output)


class TestBuildWithoutFlip(ReleaseTestCase):
    """safedeploy:flip = false builds, verifies and publishes a release and
    leaves current; bin/flip TAG makes it current, with the health gate."""

    def test_build_then_flip(self):
        self.configure()
        self.assertReleased(self.release('1.0'), '1.0')
        rollback = self.sample.read('bin', 'rollback')
        r = self.release('1.1', 'safedeploy:flip=false')
        self.assertEqual(r.returncode, 0, r)
        self.assertIn('release 1.1 is built and complete; current still '
                      'points to 1.0 (bin/flip 1.1 makes it current)',
                      r.output)
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')
        self.assertTrue(self.exists('releases', '1.1',
                                    'safedeploy-manifest.json'))
        self.assertEqual(self.sample.read('bin', 'rollback'), rollback)
        # a re-run (Ansible, cron) has nothing to do
        before = self.state()
        r = self.release('1.1', 'safedeploy:flip=false')
        self.assertEqual(r.returncode, 0, r)
        self.assertIn('release 1.1 is built and complete; nothing to do',
                      r.output)
        self.assertEqual(before, self.state())
        flip = self.sample.path('bin', 'flip')
        r = support.run([flip, '1.1', '--dry-run'])
        self.assertEqual(r.output.strip(), 'would flip: current 1.0 -> 1.1')
        self.assertEqual(before, self.state())
        r = support.run([flip, '1.1'], cwd=self.sample.directory)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(support.current_tag(self.sample.directory), '1.1')
        rows = {row['tag']: row for row in __import__('json').loads(
            self.rollback('--list', '--json').output)}
        self.assertEqual(rows['1.1']['previous'], '1.0')
        self.assertEqual(rows['1.1']['state'], 'published')
        self.assertEqual(rows['1.0']['state'], 'published')  # not rolled back
        # the same gate as a build: an unhealthy release flips back
        self.configure(safedeploy='health-check = false\n'
                       'health-timeout = 0\n')
        self.assertEqual(self.release('1.2', 'safedeploy:flip=false')
                         .returncode, 0)
        r = support.run([flip, '1.2'], cwd=self.sample.directory)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn('release 1.2 is bad', r.output)
        self.assertIn('current flipped back to 1.1', r.output)
        self.assertEqual(support.current_tag(self.sample.directory), '1.1')
        for bad, why in (('1.2', 'marked bad'), ('9.9', 'no release 9.9'),
                         ('', 'empty value'), ('1.1', 'already current')):
            before = self.state()
            r = support.run([flip, bad], cwd=self.sample.directory,
                            split=True)
            self.assertNotEqual(r.returncode, 0, r)
            self.assertEqual(len(r.errors.strip().splitlines()), 1, r)
            self.assertIn(why, r.errors)
            self.assertEqual(before, self.state())
