"""The command line every command shares (core/cli.py's parser and run):
an abbreviated long option is refused, ``-h``/``--help`` anywhere prints
the help, a closed stdout ends a command quietly, each result is said
once, and an interrupted adopt says where it left the data.

The commands run as a site's generated scripts (startupsupport: zc.buildout's
script machinery and the recipes' first lines), as real releases' bin/rollback
and bin/flip, or through their ``main(argv, **options)``.
"""
import contextlib
import importlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from collective.safedeploy.core import cli
from collective.safedeploy.data.layout import DataRoot

from . import startupsupport
from . import support
from .base import ReleaseTestCase
from .zodbsupport import make_site_data

# every command: (module, its main, its parser, the arguments it needs)
COMMANDS = [
    ('collective.safedeploy.data.snapshot', 'main', 'parser', []),
    ('collective.safedeploy.release.rollback', 'main', 'parser', []),
    ('collective.safedeploy.release.rollback', 'flip_main', 'flip_parser',
     ['1.0']),
    ('collective.safedeploy.release.processes', 'main', 'parser', []),
    ('collective.safedeploy.evolve.command', 'main', 'parser', []),
    ('collective.safedeploy.index.command', 'main', 'parser', ['--list']),
    ('collective.safedeploy.promote.command', 'main', 'parser', ['--list']),
    ('collective.safedeploy.zeo.command', 'main', 'parser',
     ['status', '--address', '127.0.0.1:1', '--state', 's']),
    ('collective.safedeploy.ansible.command', 'main', 'parser', []),
    ('collective.safedeploy.ansible.balance', 'main', 'parser',
     ['haproxy:/nonexistent', 'ready', 'www1']),
]


def call(function, argv, **options):
    """(exit code, stdout, stderr) of ``function(argv, **options)``, in
    this process; the signal handlers a command sets are put back."""
    saved = {s: signal.getsignal(s) for s in cli.SIGNAL_EXIT}
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                code = function(list(argv), **options)
            except SystemExit as e:
                code = e.code
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    return code, out.getvalue(), err.getvalue()


def commands():
    for module, main, parser, needed in COMMANDS:
        m = importlib.import_module(module)
        yield '%s:%s' % (module, main), getattr(m, main), \
            getattr(m, parser), needed


def long_options(parser):
    """(option string, whether it takes a value) of ``parser``."""
    for action in parser._actions:
        for name in action.option_strings:
            if name.startswith('--'):
                yield name, action.nargs != 0


class ShellSyntaxTests(unittest.TestCase):
    """Configured commands run without a shell: what a shell would have
    done to them is refused, quoted it is an argument."""

    def test_what_a_shell_would_expand_or_redirect(self):
        from collective.safedeploy.core.commands import shell_syntax
        cases = {
            'bin/restart': None,
            'echo hi >> x.log': '>>',
            'a | b': '|',
            'a && b': '&&',
            'a 2>&1': '2>&1',
            'test -e $HOME': '$HOME',
            'echo `date`': '`',
            '~/af.sh': '~',
            'cp a ~b/c': '~',
            "echo 'a > b' \"x; y\" a\\>b": None,
            "echo '~' \"~/x\" a~b x=~": None,
            "echo '$HOME'": None,
            'echo "$HOME"': '$HOME',
            'sleep 5': None,
        }
        for command, found in cases.items():
            with self.subTest(command):
                self.assertEqual(shell_syntax(command), found)


class EveryParserTests(unittest.TestCase):

    def test_the_list_holds_every_command(self):
        from importlib.metadata import distribution
        from ..recipes import evolve, index, promote, restart, rollback
        from ..recipes import snapshot
        listed = {name for name, _, _, _ in commands()}
        scripts = {ep.value for ep in distribution(
            'collective.safedeploy').entry_points
            if ep.group == 'console_scripts'}
        recipes = {'%s:%s' % (r.module, r.function) for r in (
            evolve.EvolveCopy, index.Recipe, promote.Promote,
            restart.Restart, rollback.Rollback, snapshot.Snapshot)}
        recipes.add('collective.safedeploy.release.rollback:flip_main')
        self.assertEqual((scripts | recipes) - listed, set())

    def test_every_command_refuses_an_abbreviation(self):
        # --hel would be --help; --lis, --dest, --dis ... below
        for name, main, _, needed in commands():
            with self.subTest(name):
                code, out, err = call(main, needed + ['--hel'])
                self.assertEqual(code, 2, (out, err))
                self.assertEqual(out, '')
                self.assertEqual(len(err.splitlines()), 1, err)
                self.assertIn('unrecognized arguments: --hel', err)

    def test_every_long_option_cut_short_is_refused(self):
        n = 0
        for name, _, parser, needed in commands():
            p = parser()
            known = set(p._option_string_actions)
            for option, takes_value in long_options(p):
                short = option[:-1]
                if short in known or short == '--':
                    continue
                n += 1
                argv = needed + [short] + (['x'] if takes_value else [])
                with self.subTest(name, argv=argv):
                    err = io.StringIO()
                    with contextlib.redirect_stderr(err), \
                            self.assertRaises(SystemExit) as e:
                        p.parse_args(argv)
                    self.assertEqual(e.exception.code, 2)
                    self.assertIn('unrecognized arguments: %s' % short,
                                  err.getvalue())
        self.assertGreater(n, 40)

    def test_help_after_an_option_that_takes_a_value(self):
        n = 0
        for name, main, parser, needed in commands():
            for option, takes_value in long_options(parser()):
                if not takes_value:
                    continue
                for asking in ('--help', '-h'):
                    n += 1
                    with self.subTest(name, option=option, asking=asking):
                        code, out, err = call(main, needed + [option, asking])
                        self.assertEqual(code, 0, err)
                        self.assertTrue(out.startswith('usage: '), out)
                        self.assertEqual(err, '')
        self.assertGreater(n, 40)

    def test_help_without_the_database(self):
        # ZODB is the site's dependency: pip-installed alone, every
        # command still shows its help
        for module, main, _, needed in COMMANDS:
            with self.subTest(module=module, main=main):
                p = startupsupport.without_database(module, main,
                                                    needed + ['--help'])
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertTrue(p.stdout.startswith('usage: '), p.stdout)
                self.assertEqual(p.stderr, '')

    def test_a_command_that_needs_the_database_says_so(self):
        work = tempfile.mkdtemp(prefix='safedeploy-cli-')
        self.addCleanup(shutil.rmtree, work)
        p = startupsupport.without_database(
            'collective.safedeploy.evolve.command', 'main',
            ['--rehearse', '--data', work, '--evolve', 'nosuch'])
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(p.stdout, '')
        self.assertEqual(p.stderr.splitlines(), [
            "evolve-copy: error: this command needs ZODB, which this Python "
            "cannot import (No module named 'ZODB'); install "
            "collective.safedeploy[zodb], or run the command the recipe "
            "generated in the site's bin directory"])

    def test_help_is_only_an_option(self):
        from ..data import snapshot
        from ..release import rollback
        # given with =, --help is the value; after --, an argument
        self.assertEqual(snapshot.parser().parse_args(
            ['--restore=--help']).restore, '--help')
        self.assertEqual(rollback.parser().parse_args(
            ['--', '--help']).tag, '--help')
        work = tempfile.mkdtemp(prefix='safedeploy-cli-')
        self.addCleanup(shutil.rmtree, work)
        code, out, err = call(snapshot.main, ['--list', '--data=--help'],
                              data=work)
        self.assertEqual(code, 1, err)
        self.assertEqual(out, '')
        self.assertIn('--help has no current data generation', err)


class ScriptTests(unittest.TestCase):
    """bin/snapshot, bin/rollback and bin/index of a small site (a data
    root with real ZODB data, adopted, snapshot s1)."""

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix='safedeploy-cli-')
        self.addCleanup(shutil.rmtree, self.work, True)
        self.scripts = startupsupport.listing_site(self.work)

    def run_script(self, name, *args, stdout=subprocess.PIPE):
        return subprocess.run(
            [sys.executable, self.scripts[name]] + list(args),
            cwd=self.work, stdout=stdout, stderr=subprocess.PIPE, text=True,
            timeout=120)

    def state(self):
        return support.tree_state(self.work)

    def snapshots(self):
        p = self.run_script('snapshot', '--list', '--json')
        self.assertEqual(p.returncode, 0, p.stderr)
        return [row['name'] for row in json.loads(p.stdout)]

    def test_an_abbreviation_changes_nothing(self):
        before = self.state()
        for name, args in (('snapshot', ['--dest', 's1']),
                           ('snapshot', ['--lis']),
                           ('snapshot', ['--restore', 's1', '--dis']),
                           ('snapshot', ['--adop']),
                           ('rollback', ['--lis']),
                           ('index', ['--list', '--jso'])):
            with self.subTest(name, args=args):
                p = self.run_script(name, *args)
                self.assertEqual(p.returncode, 2, p)
                self.assertEqual(p.stdout, '')
                self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
                self.assertIn('unrecognized arguments', p.stderr)
                self.assertEqual(self.state(), before)
        self.assertEqual(self.snapshots(), ['s1'])

    def test_help_anywhere_changes_nothing(self):
        before = self.state()
        for args in (['--restore', '--help'], ['--destroy', '-h'],
                     ['--export', 's1', '--help'], ['s2', '--help'],
                     ['--help', '--destroy', 's1']):
            with self.subTest(args=args):
                p = self.run_script('snapshot', *args)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertTrue(p.stdout.startswith('usage: snapshot'),
                                p.stdout)
                self.assertEqual(p.stderr, '')
                self.assertEqual(self.state(), before)

    def closed_stdout(self, name, *args):
        """Run with stdout a pipe nobody reads any more (the reader, as
        ``head`` does, is gone)."""
        reader, writer = os.pipe()
        os.close(reader)
        try:
            return self.run_script(name, *args, stdout=writer)
        finally:
            os.close(writer)

    def test_a_closed_stdout_ends_a_command_quietly(self):
        for name, args in (('snapshot', ['--list']),
                           ('snapshot', ['--list', '--json']),
                           ('snapshot', ['--list', '--generations']),
                           ('snapshot', ['--help']),
                           ('rollback', ['--list']),
                           ('index', ['--list']),
                           ('snapshot', ['s2'])):
            with self.subTest(name, args=args):
                p = self.closed_stdout(name, *args)
                self.assertEqual(p.stderr, '')
                self.assertEqual(p.returncode, cli.PIPE_CLOSED)
        # the work was done; only its report had no reader
        self.assertEqual(self.snapshots(), ['s1', 's2'])

    def said(self, *args):
        p = self.run_script('snapshot', *args)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.splitlines(), p.stderr.splitlines()

    def test_each_result_is_said_once(self):
        out, err = self.said('s2')
        self.assertEqual(len(out), 1, out)
        self.assertTrue(out[0].startswith('snapshot s2 taken'), out)
        self.assertEqual(err, [])
        self.assertEqual(self.said('--destroy', 's2'),
                         (['destroyed snapshot s2'], []))
        self.assertEqual(self.said('--restore', 's1'), (
            ['restored snapshot s1 as data generation 2 (generation 1 '
             'kept)'], []))
        self.said('s3')
        self.said('s4')
        self.assertEqual(self.said('--prune', '--keep', '2'),
                         (['pruned snapshot s1'], []))
        # what a snapshot prunes on its own is logged, once
        out, err = self.said('--keep', '2', 's5')
        self.assertTrue(out[0].startswith('snapshot s5 taken'), out)
        self.assertEqual(len(out), 1, out)
        self.assertEqual(err, ['pruned snapshot s3 (more than keep=2)'])
        fresh = os.path.join(self.work, 'fresh')
        make_site_data(fresh, transactions=2, blobs=1)
        out, err = self.said('--adopt', '--data', fresh)
        self.assertEqual(out, [
            'adopted %s as data generation 1; point the site at %s' % (
                fresh, os.path.join(fresh, 'current'))])
        self.assertTrue(err, err)
        for line in err:       # the steps: moved filestorage, blobstorage
            self.assertTrue(line.startswith('moved %s' % fresh), err)

    def test_a_prune_with_nothing_to_prune_says_so(self):
        before = self.state()
        self.assertEqual(self.said('--prune'), ([
            'nothing to prune: 1 snapshot, keep=10; 1 data generation, '
            'keep-generations=3'], []))
        self.assertEqual(self.state(), before)
        self.said('s2')
        self.said('s3')
        self.assertEqual(self.said('--prune', '--keep', '0'), ([
            'nothing to prune: 3 snapshots, keep=0 (all); 1 data '
            'generation, keep-generations=3'], []))
        self.assertEqual(self.said('--prune', '--keep', '2'),
                         (['pruned snapshot s1'], []))
        self.assertEqual(self.snapshots(), ['s2', 's3'])

    def test_an_interrupted_adopt_says_no_generation_is_current(self):
        """SIGINT while the adopt has moved the data into generations/1
        and not yet linked current (the process is stopped there, to
        find it at that moment)."""
        for attempt in range(10):
            fresh = os.path.join(self.work, 'fresh%d' % attempt)
            make_site_data(fresh, transactions=200, blobs=50)
            staged = os.path.join(fresh, 'generations', '1')
            p = subprocess.Popen(
                [sys.executable, self.scripts['snapshot'], '--adopt',
                 '--data', fresh], stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            self.addCleanup(p.wait)
            self.addCleanup(p.kill)
            deadline = time.monotonic() + 60
            while not os.path.isdir(staged) and p.poll() is None and \
                    time.monotonic() < deadline:
                pass
            os.kill(p.pid, signal.SIGSTOP)
            caught = not os.path.lexists(os.path.join(fresh, 'current'))
            if caught:
                os.kill(p.pid, signal.SIGINT)
            os.kill(p.pid, signal.SIGCONT)
            out, err = p.communicate(timeout=60)
            if caught:
                break
        else:
            self.fail('the adopt always finished before it was stopped')
        self.assertEqual(p.returncode, 130, (out, err))
        self.assertEqual(err.splitlines()[-1],
                         'snapshot: interrupted by SIGINT; no data '
                         'generation is current yet; run bin/snapshot '
                         '--adopt again')
        self.assertNotIn('None', err)
        self.assertIsNone(DataRoot(fresh).current_name())
        # and what it says to do finishes the job
        out, err = self.said('--adopt', '--data', fresh)
        self.assertEqual(DataRoot(fresh).current_name(), '1')


class RollbackOutputTests(ReleaseTestCase):
    """bin/rollback and bin/flip say where current went once (the flip
    step is not said again beside the result)."""

    def test_rollback_and_flip_say_it_once(self):
        self.configure()
        self.assertReleased(self.release('1.0'), '1.0')
        self.assertReleased(self.release('1.1'), '1.1')
        for script, tag, said in (
                ('rollback', '1.0', 'rolled back: current 1.1 -> 1.0'),
                ('flip', '1.1', 'flipped: current 1.0 -> 1.1')):
            with self.subTest(script):
                r = support.run([self.sample.path('bin', script), tag],
                                cwd=self.sample.directory, split=True)
                self.assertEqual(r.returncode, 0, r)
                self.assertEqual(r.output.splitlines(), [said])
                self.assertEqual(r.errors, '')


class RollbackDiscardWritesTests(unittest.TestCase):
    """``bin/rollback TAG --discard-writes`` without ``--with-data`` is the
    switch back to older data going on over newer writes
    (test_pairing.TestEvolvePairing): the flag is not a companion of
    ``--with-data``, and the help says what it does without it."""

    def test_the_help_says_what_it_does_without_with_data(self):
        from ..release import rollback
        code, out, err = call(rollback.main, ['--help'])
        self.assertEqual(code, 0, err)
        said = ' '.join(out.split())
        self.assertIn(
            '--discard-writes go on although the data step discards '
            'transactions (they are kept aside): with --with-data, those '
            'committed after the snapshot; without it, when TAG ran on an '
            'older data generation that bin/rollback switches back to (the '
            'recipe\'s evolve-copy option), those committed since '
            'bin/evolve-copy switched away from it. A rollback that moves '
            'no data has nothing to discard', said)
        self.assertIn('usage: rollback', out)


class EvolveCopyOutputTests(unittest.TestCase):

    def test_pruned_generations_are_said_once(self):
        from ..data import snapshot
        from ..evolve import command
        work = tempfile.mkdtemp(prefix='safedeploy-cli-')
        self.addCleanup(shutil.rmtree, work, True)
        make_site_data(work, transactions=2, blobs=1)
        snapshot.adopt(dict(data=work))
        options = dict(
            data=work, freeze_command='true', thaw_command='true',
            keep_generations='1',
            evolve='collective.safedeploy.tests.evolve_example.function:noop')
        for run in range(2):
            code, out, err = call(command.main, [], **options)
            self.assertEqual(code, 0, out + err)
        self.assertIn('pruned data generation(s) 1 (keep-generations = 1)',
                      out)
        self.assertNotIn('pruned', err)
