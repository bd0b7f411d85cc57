"""Processes run the release that is current: a real zdaemon-run program
and a real supervisord (collective.recipe.supervisor), restarted by
bin/restart as ``after-flip``.

- release 1.0 starts both (supervisord is started by bin/restart: it was
  not running);
- release 1.1: the zdaemon program and the supervisor program run 1.1's
  code (zdaemon's own ``restart`` would restart 1.0's program), and the
  supervisor configuration of the release names ``current/bin``;
- bin/rollback: both run 1.0's code again.
"""
import os
import signal
import time
import unittest

from collective.safedeploy.tests import support
from collective.safedeploy.zeo.server import free_port

APP = '''\
import os, sys, time
VERSION = %r


def main():
    path = sys.argv[1]
    with open(path + '.tmp', 'w') as f:
        f.write('%%s %%d\\n' %% (VERSION, os.getpid()))
    os.replace(path + '.tmp', path)
    while True:
        time.sleep(1)
'''

CONFIG = '''\
extensions = collective.safedeploy
find-links += {wheels}
develop = src/app
parts = app appconf appctl supervisor restart rollback

[safedeploy]
shared = var
index = off
after-flip = ${{buildout:directory}}/bin/restart

[app]
recipe = zc.recipe.egg
eggs = app

[appconf]
recipe = testrecipes:write
content =
    <runner>
      program ${{buildout:bin-directory}}/app ${{buildout:directory}}/var/zd.txt
      socket-name ${{buildout:directory}}/var/app.zdsock
      daemon true
      transcript ${{buildout:directory}}/var/app.log
    </runner>

[appctl]
recipe = zc.recipe.egg
eggs = zdaemon
scripts = zdaemon=appctl
arguments = ['-C', '${{buildout:parts-directory}}/appconf/content'] + sys.argv[1:]

[supervisor]
recipe = collective.recipe.supervisor
port = 127.0.0.1:{port}
programs =
    10 sv ${{buildout:bin-directory}}/app [${{buildout:directory}}/var/sv.txt] ${{buildout:directory}} true

[restart]
recipe = collective.safedeploy:restart
zdaemon = appctl
supervisorctl = ${{buildout:directory}}/current/bin/supervisorctl
supervisord = ${{buildout:directory}}/current/bin/supervisord
programs = sv
timeout = 30

[rollback]
recipe = collective.safedeploy:rollback
'''


class ProcessesFollowCurrentTests(unittest.TestCase):

    def setUp(self):
        self.sample = support.SampleBuildout()
        self.addCleanup(self.sample.cleanup)
        self.addCleanup(self.stop_processes)
        support.add_test_recipes(self.sample)
        self.sample.write_config(CONFIG.format(
            wheels=support.built_wheels(), port=free_port()))

    def stop_processes(self):
        """Whatever the test started is stopped, also on failure."""
        d = self.sample.directory
        ctl = os.path.join(d, 'current', 'bin', 'supervisorctl')
        if os.path.exists(ctl):
            support.run([ctl, 'shutdown'], cwd=d, timeout=30)
        ctl = os.path.join(d, 'current', 'bin', 'appctl')
        if os.path.exists(ctl):
            support.run([ctl, 'stop'], cwd=d, timeout=30)
        for name in ('supervisord.pid', 'zd.txt', 'sv.txt'):
            path = os.path.join(d, 'var', name)
            if os.path.exists(path):
                with open(path) as f:
                    self._kill((f.read().split() or [''])[-1])

    @staticmethod
    def _kill(pid):
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ValueError, OSError):
            pass

    def release(self, version):
        self.sample.write('src/app/src/app/__init__.py', APP % version)
        r = self.sample.buildout('safedeploy:tag=%s' % version, timeout=300)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(support.current_tag(self.sample.directory),
                         version, r)
        return r

    def running(self, name):
        path = self.sample.path('var', name + '.txt')
        with open(path) as f:
            version, pid = f.read().split()
        return version, int(pid)

    def wait_for(self, name, version, not_pid=None, timeout=30):
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            try:
                seen = self.running(name)
            except (OSError, ValueError):
                seen = None
            if seen and seen[0] == version and seen[1] != not_pid:
                try:
                    os.kill(seen[1], 0)
                except OSError:
                    pass
                else:
                    return seen
            time.sleep(0.2)
        self.fail('%s: expected %s running (not pid %s), saw %r' % (
            name, version, not_pid, seen))

    def test_restarted_processes_run_the_current_release(self):
        self.sample.add_package('app', '1.0', script=APP % '1.0')
        # the package's console script: bin/app
        self.sample.write('src/app/pyproject.toml', '''\
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "app"
            version = "0.1"

            [project.scripts]
            app = "app:main"

            [tool.setuptools.packages.find]
            where = ["src"]
            ''')
        r = self.release('1.0')
        self.assertIn('restarted onto release 1.0', r.output)
        zd10 = self.wait_for('zd', '1.0')
        sv10 = self.wait_for('sv', '1.0')

        # the supervisor configuration built into a release names the
        # programs through current, and supervisord loads it through it
        conf = self.sample.read('releases', '1.0', 'parts', 'supervisor',
                                'supervisord.conf')
        current = self.sample.path('current')
        self.assertIn('command = %s/bin/app' % current, conf)
        self.assertNotIn(self.sample.path('releases'), conf)
        self.assertIn('%s/parts/supervisor/supervisord.conf' % current,
                      self.sample.read('releases', '1.0', 'bin',
                                       'supervisord'))

        r = support.run([self.sample.path('bin', 'restart'), '--dry-run'],
                        cwd=self.sample.directory)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn('would restart %s/bin/appctl: stop, then start '
                      '(release 1.0)' % current, r.output)
        self.assertEqual(self.running('zd'), zd10)     # nothing was done

        self.release('1.1')
        zd11 = self.wait_for('zd', '1.1', not_pid=zd10[1])
        sv11 = self.wait_for('sv', '1.1', not_pid=sv10[1])

        # zdaemon's own restart from the new release's script would have
        # restarted 1.0's program: the daemon manager runs 1.1's now
        r = support.run([self.sample.path('current', 'bin', 'appctl'),
                         'status'], cwd=self.sample.directory)
        self.assertNotIn('different program', r.output)

        r = support.run([self.sample.path('bin', 'rollback')],
                        cwd=self.sample.directory, timeout=120)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')
        self.wait_for('zd', '1.0', not_pid=zd11[1])
        self.wait_for('sv', '1.0', not_pid=sv11[1])


class RestartMistakesTests(unittest.TestCase):

    def test_a_restart_part_that_restarts_nothing_is_refused(self):
        sample = support.SampleBuildout()
        self.addCleanup(sample.cleanup)
        sample.write_config('''\
            extensions = collective.safedeploy
            parts = restart

            [safedeploy]
            index = off

            [restart]
            recipe = collective.safedeploy:restart
            ''')
        r = sample.buildout('safedeploy:tag=1.0', timeout=300)
        self.assertEqual(r.returncode, 1, r)
        self.assertNotIn('Traceback', r.output)
        self.assertIn('Error: [restart] zdaemon and [restart] supervisorctl '
                      'are both empty: bin/restart would restart nothing; '
                      'name the zdaemon scripts or the supervisorctl',
                      r.output)
        self.assertIsNone(support.current_tag(sample.directory))
