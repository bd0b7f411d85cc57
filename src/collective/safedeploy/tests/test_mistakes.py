"""Ordinary mistakes, made the way a new user makes them: every option of
[safedeploy] and of each recipe, every flag of the five commands, hostile
directories and damaged records.

Each refusal is checked for the same four things: a non-zero exit code,
exactly one line on stderr, no traceback, and a byte-identical tree (every
path, mode, link target and content, before and after).
"""
import json
import os
import shutil
import sys
import textwrap
import unittest

from . import support
from .zodbsupport import make_site_data

EVOLVE = 'collective.safedeploy.tests.evolve_example.function:noop'

BASE = '''\
extensions = collective.safedeploy
find-links += {wheels}
parts = hello snapshot evolve-copy index rollback

[safedeploy]
index = off
{safedeploy}

[hello]
recipe = zc.recipe.egg
eggs = hello
{hello}

[snapshot]
recipe = collective.safedeploy:snapshot
data = ${{buildout:directory}}/var
backend = copy
{snapshot}

[evolve-copy]
recipe = collective.safedeploy:evolve-copy
data = ${{snapshot:data}}
evolve = {evolve}
freeze-command = true
thaw-command = true
{evolve_copy}

[index]
recipe = collective.safedeploy:index
{index}

[rollback]
recipe = collective.safedeploy:rollback
snapshot = snapshot
evolve-copy = evolve-copy
{rollback}
{extra}'''


def configuration(**sections):
    values = dict(wheels=support.built_wheels(), evolve=EVOLVE, safedeploy='',
                  hello='', snapshot='', evolve_copy='', index='',
                  rollback='', extra='')
    values.update({k: textwrap.dedent(v) for k, v in sections.items()})
    return BASE.format(**values)


# (what, {section: extra lines}, extra bin/buildout arguments, error text)
BUILD = [
    # [safedeploy]: misspelt names
    ('misspelt health-check', dict(safedeploy='helth-check = false'), [],
     'did you mean health-check?'),
    ('misspelt releases-directory', dict(safedeploy='releases-dir = x'), [],
     'did you mean releases-directory?'),
    ('misspelt keep', dict(safedeploy='kep = 3'), [], 'did you mean keep?'),
    ('misspelt after-flip', dict(safedeploy='afterflip = true'), [],
     'did you mean after-flip?'),
    ('misspelt exclude-parts', dict(safedeploy='exclude-part = hello'), [],
     'did you mean exclude-parts?'),
    ('unknown option', dict(safedeploy='colour = blue'), [],
     'unknown option safedeploy:colour'),
    # numbers
    ('keep 0', dict(safedeploy='keep = 0'), [], 'safedeploy:keep'),
    ('keep negative', dict(safedeploy='keep = -1'), [], 'safedeploy:keep'),
    ('keep a fraction', dict(safedeploy='keep = 1.5'), [], 'safedeploy:keep'),
    ('keep a word', dict(safedeploy='keep = many'), [], 'safedeploy:keep'),
    ('keep empty', dict(safedeploy='keep ='), [], 'safedeploy:keep'),
    ('health-timeout nan', dict(safedeploy='health-timeout = nan'), [],
     'safedeploy:health-timeout'),
    ('health-timeout inf', dict(safedeploy='health-timeout = inf'), [],
     'safedeploy:health-timeout'),
    ('health-timeout negative', dict(safedeploy='health-timeout = -1'), [],
     'safedeploy:health-timeout'),
    ('health-timeout a year', dict(safedeploy='health-timeout = 31536000'),
     [], 'safedeploy:health-timeout'),
    ('health-timeout a word', dict(safedeploy='health-timeout = soon'), [],
     'safedeploy:health-timeout'),
    # booleans and choices
    ('rebuild maybe', dict(safedeploy='rebuild = maybe'), [],
     'safedeploy:rebuild'),
    ('index-fetch perhaps', dict(safedeploy='index-fetch = perhaps'), [],
     'safedeploy:index-fetch'),
    ('allow-dirty sure', dict(safedeploy='allow-dirty = sure'), [],
     'safedeploy:allow-dirty'),
    ('index mode unknown', dict(safedeploy='index = sometimes'), [],
     'safedeploy:index'),
    # commands and URLs
    ('after-flip unbalanced quote',
     dict(safedeploy='after-flip = echo "restart'), [], 'balance the quotes'),
    ('health-check unbalanced quote',
     dict(safedeploy="health-check = test -e 'x"), [], 'balance the quotes'),
    ('after-flip shell redirection',
     dict(safedeploy='after-flip = echo flipped >> flips.log'), [],
     "safedeploy:after-flip: 'echo flipped >> flips.log' uses shell "
     "syntax (>>); commands run without a shell: put it in a script"),
    ('health-check shell pipe',
     dict(safedeploy='health-check = curl -s localhost | grep ok'), [],
     'uses shell syntax (|)'),
    ('health-check shell variable',
     dict(safedeploy='health-check = test -e /srv/$SAFEDEPLOY_TAG'),
     [], 'uses shell syntax ($SAFEDEPLOY_TAG)'),
    ('health-check URL without host',
     dict(safedeploy='health-check = http://'), [], 'invalid URL'),
    ('health-check URL port out of range',
     dict(safedeploy='health-check = http://127.0.0.1:99999/'), [],
     'invalid URL'),
    ('health-check ftp URL', dict(safedeploy='health-check = ftp://host/'),
     [], 'invalid URL'),
    ('health-check misspelt scheme',
     dict(safedeploy='health-check = htp://127.0.0.1/'), [], 'invalid URL'),
    # shared
    ('shared absolute', dict(safedeploy='shared = /etc'), [],
     'safedeploy:shared'),
    ('shared escaping', dict(safedeploy='shared = ../outside'), [],
     'safedeploy:shared'),
    ('shared bin', dict(safedeploy='shared = bin'), [], 'safedeploy:shared'),
    ('shared parts', dict(safedeploy='shared = parts/x'), [],
     'safedeploy:shared'),
    ('shared src', dict(safedeploy='shared = src'), [], 'safedeploy:shared'),
    ('shared the buildout', dict(safedeploy='shared = .'), [],
     'safedeploy:shared'),
    # directories that must not be used
    ('releases-directory is the data',
     dict(safedeploy='releases-directory = ${buildout:directory}/var'), [],
     'overlap'),
    ('releases-directory inside the data',
     dict(safedeploy='releases-directory = ${buildout:directory}/var/r'), [],
     'overlap'),
    ('releases-directory holds the data',
     dict(safedeploy='releases-directory = ${buildout:directory}',
          ), [], 'must not be the buildout directory'),
    ('releases-directory is the parent of the buildout',
     dict(safedeploy='releases-directory = ${buildout:directory}/..'), [],
     'holds it'),
    ('releases-directory is /', dict(safedeploy='releases-directory = /'),
     [], 'safedeploy:releases-directory is /'),
    ('releases-directory is an unrelated directory',
     dict(safedeploy='releases-directory = ${buildout:directory}/src'), [],
     'was not made by collective.safedeploy'),
    ('releases-directory inside a shared directory',
     dict(safedeploy='shared = log\nreleases-directory = '
                     '${buildout:directory}/log/releases'), [], 'overlap'),
    ('releases-directory is the shared directory',
     dict(safedeploy='shared = log\nreleases-directory = '
                     '${buildout:directory}/log'), [], 'overlap'),
    ('indexes-directory is the releases',
     dict(safedeploy='indexes-directory = ${buildout:directory}/releases'),
     [], 'overlap'),
    ('pool-directory inside the releases',
     dict(safedeploy='pool-directory = ${buildout:directory}/releases/p'),
     [], 'overlap'),
    ('pool-directory is the buildout',
     dict(safedeploy='pool-directory = ${buildout:directory}'), [],
     'holds it'),
    ('indexes-directory is the data',
     dict(safedeploy='indexes-directory = ${buildout:directory}/var'), [],
     'overlap'),
    ('current inside releases',
     dict(safedeploy='current = ${buildout:directory}/releases/x'), [],
     'inside releases-directory'),
    ('current empty', dict(safedeploy='current ='), [],
     'safedeploy:current is empty'),
    ('current is the data directory',
     dict(safedeploy='current = ${buildout:directory}/var'), [],
     'is not a symlink, so it is not the current link of the releases'),
    ('current is the current link of the data',
     dict(safedeploy='current = ${buildout:directory}/var/current'), [],
     'it is the current link of the data generations in'),
    ('current is /', dict(safedeploy='current = /'), [],
     'is not the current link of the releases'),
    ('releases-directory is the current link',
     dict(safedeploy='releases-directory = ${buildout:directory}/current'),
     [], 'is a symbolic link (to releases/1.0)'),
    ('releases-directory is a release',
     dict(safedeploy='releases-directory = '
                     '${buildout:directory}/releases/0.9'),
     [], 'is one of the releases in'),
    ('releases-directory empty', dict(safedeploy='releases-directory ='),
     [], 'safedeploy:releases-directory is empty'),
    # parts named in [safedeploy]
    ('exclude-parts unknown', dict(safedeploy='exclude-parts = nosuchpart'),
     [], 'nosuchpart'),
    ('snapshot-before-flip unknown',
     dict(safedeploy='snapshot-before-flip = nosnapshot'), [], 'nosnapshot'),
    ('snapshot-before-flip not a snapshot part',
     dict(safedeploy='snapshot-before-flip = hello'), [],
     'not collective.safedeploy:snapshot'),
    # tags
    ('tag with a slash', {}, ['safedeploy:tag=../etc'], 'invalid tag'),
    ('tag starting with a dot', {}, ['safedeploy:tag=.hidden'],
     'invalid tag'),
    ('tag starting with a dash', {}, ['safedeploy:tag=-rf'], 'invalid tag'),
    ('tag with a space', {}, ['safedeploy:tag=a b'], 'invalid tag'),
    ('tag of 101 characters', {}, ['safedeploy:tag=' + 'x' * 101],
     'invalid tag'),
    ('tag with a backslash', {}, ['safedeploy:tag=a\\b'], 'invalid tag'),
    ('tag empty and no git tag', {}, ['safedeploy:tag='],
     'no tag to release'),
    ('tag of the current release with rebuild', {},
     ['safedeploy:tag=1.0', 'safedeploy:rebuild=true'],
     'never rebuilt in place'),
    ('tag of an existing release', {}, ['safedeploy:tag=0.9'],
     'releases are immutable'),
    ('install one part', {}, ['safedeploy:tag=1.1', 'install', 'hello'],
     'would build a release of only some parts'),
    # [snapshot]
    ('snapshot backend unknown', dict(snapshot='backend = zfsx'), [],
     '[snapshot] backend'),
    ('snapshot zfs without dataset', dict(snapshot='backend = zfs'), [],
     'needs dataset'),
    ('snapshot keep negative', dict(snapshot='keep = -1'), [],
     '[snapshot] keep'),
    ('snapshot keep a word', dict(snapshot='keep = all'), [],
     '[snapshot] keep'),
    ('snapshot files absolute', dict(snapshot='files = /etc/passwd'), [],
     'must be a path relative'),
    ('snapshot files escaping', dict(snapshot='files = ../Data.fs'), [],
     'must be a path relative'),
    ('snapshot files too many', dict(snapshot='files = a.fs b c'), [],
     'more than a Data.fs'),
    ('snapshot files blobs on a line of their own',
     dict(snapshot='files =\n    filestorage/Data.fs\n    blobstorage'), [],
     'name them on one line'),
    ('snapshot misspelt backend', dict(snapshot='bakend = copy'), [],
     'did you mean backend?'),
    ('snapshot misspelt keep', dict(snapshot='kepp = 3'), [],
     'did you mean keep?'),
    ('snapshot data is the releases',
     dict(snapshot='data = ${buildout:directory}/releases'), [], 'overlap'),
    # [rollback]
    ('rollback snapshot part unknown', dict(rollback='snapshot = nosuch'),
     [], 'nosuch is not a section'),
    ('rollback evolve-copy part unknown',
     dict(rollback='evolve-copy = nosuch'), [], 'nosuch is not a section'),
    ('rollback evolve-copy not an evolve-copy part',
     dict(rollback='evolve-copy = hello'), [],
     'not collective.safedeploy:evolve-copy'),
    ('rollback misspelt option', dict(rollback='evolve_copy = x'), [],
     'did you mean evolve-copy?'),
    # [evolve-copy]
    ('evolve-copy without evolve', dict(evolve_copy='evolve ='), [],
     '[evolve-copy] evolve is empty'),
    ('evolve-copy zeo and commands',
     dict(evolve_copy='zeo = hello'), [], 'not both'),
    ('evolve-copy thaw without freeze',
     dict(evolve_copy='freeze-command ='), [], 'go together'),
    ('evolve-copy neither zeo nor commands',
     dict(evolve_copy='freeze-command =\nthaw-command ='), [],
     'needs a way to make production read-only'),
    ('evolve-copy zeo part unknown',
     dict(evolve_copy='freeze-command =\nthaw-command =\nzeo = nosuch'),
     [], 'nosuch is not a section'),
    ('evolve-copy zeo-address port out of range',
     dict(evolve_copy='freeze-command =\nthaw-command =\n'
                      'zeo-address = 127.0.0.1:99999'), [],
     '[evolve-copy] zeo-address'),
    ('evolve-copy zeo-address port a word',
     dict(evolve_copy='freeze-command =\nthaw-command =\n'
                      'zeo-address = localhost:zeo'), [],
     '[evolve-copy] zeo-address'),
    ('evolve-copy freeze-command unbalanced',
     dict(evolve_copy='freeze-command = "stop'), [], 'balance the quotes'),
    ('evolve-copy freeze-command shell redirection',
     dict(evolve_copy='freeze-command = echo FREEZE >> /tmp/freeze.log'), [],
     "freeze-command: 'echo FREEZE >> /tmp/freeze.log' uses shell syntax "
     "(>>)"),
    ('evolve-copy thaw-command shell variable',
     dict(evolve_copy='thaw-command = /x/th.sh {data} $SAFEDEPLOY_DATA'), [],
     'uses shell syntax ($SAFEDEPLOY_DATA)'),
    ('evolve-copy client-start-command command substitution',
     dict(evolve_copy='client-start-command = start `cat clients`'), [],
     'uses shell syntax (`)'),
    ('evolve-copy client-stop-command unbalanced',
     dict(evolve_copy="client-stop-command = 'x"), [], 'balance the quotes'),
    ('evolve-copy misspelt option',
     dict(evolve_copy='evolve-contxt = site'), [],
     'did you mean evolve-context?'),
    ('evolve-copy data empty', dict(evolve_copy='data ='), [],
     '[evolve-copy] data is empty'),
    # [index]
    ('index misspelt option', dict(index='pol = x'), [], 'did you mean pool?'),
    ('index unknown option', dict(index='colour = red'), [],
     'unknown option [index] colour'),
]

# (what, script, arguments, error text or None)
COMMANDS = [
    # bin/rollback
    ('rollback to a missing release', 'rollback', ['nosuch'],
     'no release nosuch'),
    ('rollback to a failed release', 'rollback', ['1.1'],
     'was not completed'),
    ('rollback to the current release', 'rollback', ['1.0'],
     'already current'),
    ('rollback to a path', 'rollback', ['../1.0'], 'invalid tag'),
    ('rollback to the journal', 'rollback', ['.journal'], 'invalid tag'),
    ('rollback with an empty tag', 'rollback', [''], 'empty value'),
    ('rollback with an unknown flag', 'rollback', ['--bogus'],
     'unrecognized arguments'),
    ('rollback with two tags', 'rollback', ['a', 'b'],
     'unrecognized arguments'),
    ('rollback --json without --list', 'rollback', ['--json'],
     '--json goes with --list'),
    ('rollback --list with a tag', 'rollback', ['--list', '0.9'],
     '--list only lists'),
    ('rollback --list --dry-run', 'rollback', ['--list', '--dry-run'],
     '--list only lists'),
    ('rollback --list --with-data', 'rollback', ['--list', '--with-data'],
     '--list only lists'),
    ('rollback --with-data without a snapshot', 'rollback',
     ['0.9', '--with-data'], 'no snapshot holds the data'),
    ('rollback --dry-run to a missing release', 'rollback',
     ['nosuch', '--dry-run'], 'no release nosuch'),
    ('rollback -q to a missing release', 'rollback', ['-q', 'nosuch'],
     'no release nosuch'),
    # bin/snapshot
    ('snapshot with an empty name', 'snapshot', [''], 'empty value'),
    ('snapshot named with a slash', 'snapshot', ['../x'],
     'invalid snapshot name'),
    ('snapshot named with a dot', 'snapshot', ['.hidden'],
     'invalid snapshot name'),
    ('snapshot of a taken name', 'snapshot', ['taken'], 'exists already'),
    ('snapshot --restore empty', 'snapshot', ['--restore', ''],
     'empty value'),
    ('snapshot --restore missing', 'snapshot', ['--restore', 'nosuch'],
     'no snapshot nosuch'),
    ('snapshot --restore a path', 'snapshot', ['--restore', '../x'],
     'invalid snapshot name'),
    ('snapshot --destroy empty', 'snapshot', ['--destroy', ''],
     'empty value'),
    ('snapshot --destroy missing', 'snapshot', ['--destroy', 'nosuch'],
     'no snapshot nosuch'),
    ('snapshot --for-release empty', 'snapshot', ['--for-release', ''],
     'empty value'),
    ('snapshot --for-release a path', 'snapshot', ['--for-release', 'a/b'],
     'invalid tag'),
    ('snapshot --json alone', 'snapshot', ['--json'],
     '--json goes with --list'),
    ('snapshot --json with a name', 'snapshot', ['--json', 'x'],
     '--json goes with --list'),
    ('snapshot --list with a name', 'snapshot', ['--list', 'x'],
     'NAME is only for taking a snapshot'),
    ('snapshot --restore and --destroy', 'snapshot',
     ['--restore', 'taken', '--destroy', 'taken'], 'not allowed with'),
    ('snapshot --list and --prune', 'snapshot', ['--list', '--prune'],
     'not allowed with'),
    ('snapshot --force alone', 'snapshot', ['--force'],
     '--force goes with --restore or --destroy'),
    ('snapshot --discard-writes alone', 'snapshot', ['--discard-writes'],
     '--discard-writes goes with --restore'),
    ('snapshot --backend unknown', 'snapshot', ['--backend', 'tar'],
     'invalid choice'),
    ('snapshot --keep negative', 'snapshot', ['--keep', '-1', 'x'],
     'keep'),
    ('snapshot --keep a word', 'snapshot', ['--keep', 'all', 'x'], 'keep'),
    ('snapshot --data empty', 'snapshot', ['--data', ''], 'empty value'),
    ('snapshot --data missing', 'snapshot', ['--data', '/nonexistent/d',
                                             'x'], 'no current data'),
    ('snapshot --adopt again', 'snapshot', ['--adopt'],
     'already in generations'),
    ('snapshot --restore while the database runs', 'snapshot',
     ['--restore', 'taken'], 'is in use'),
    ('snapshot unknown flag', 'snapshot', ['--all'], 'unrecognized'),
    # an abbreviated long option is never taken for the option
    ('snapshot --dest abbreviated', 'snapshot', ['--dest', 'taken'],
     'unrecognized arguments: --dest'),
    ('snapshot --res abbreviated', 'snapshot', ['--res', 'taken'],
     'unrecognized arguments: --res'),
    ('snapshot --dis abbreviated', 'snapshot',
     ['--restore', 'taken', '--dis'], 'unrecognized arguments: --dis'),
    ('snapshot --lis abbreviated', 'snapshot', ['--lis'],
     'unrecognized arguments: --lis'),
    ('rollback --with abbreviated', 'rollback', ['0.9', '--with'],
     'unrecognized arguments: --with'),
    ('flip --dry abbreviated', 'flip', ['0.9', '--dry'],
     'unrecognized arguments: --dry'),
    ('index --jso abbreviated', 'index', ['--list', '--jso'],
     'unrecognized arguments: --jso'),
    ('evolve-copy --switch abbreviated', 'evolve-copy', ['--switch', '1'],
     'unrecognized arguments: --switch'),
    # bin/index
    ('index without a mode', 'index', [], 'one of the arguments'),
    ('index --verify empty', 'index', ['--verify', ''], 'empty value'),
    ('index --verify missing', 'index', ['--verify', 'nosuch'],
     'no package index'),
    ('index --verify a path', 'index', ['--verify', '../x'], 'invalid tag'),
    ('index --rebuild one argument', 'index', ['--rebuild', '1.0'],
     'expected 2 arguments'),
    ('index --rebuild missing', 'index', ['--rebuild', 'nosuch', 'x'],
     'no package index'),
    ('index --rebuild empty directory name', 'index',
     ['--rebuild', '1.0', ''], 'empty value'),
    ('index --gc --json', 'index', ['--gc', '--json'],
     '--json goes with'),
    ('index --buildout without --rebuild', 'index',
     ['--list', '--buildout', 'x'], '--buildout goes with --rebuild'),
    ('index --indexes empty', 'index', ['--list', '--indexes', ''],
     'empty value'),
    ('index --gc of a missing directory', 'index',
     ['--gc', '--indexes', '/nonexistent/i'], 'no package indexes'),
    ('index --gc of an unrelated directory', 'index',
     ['--gc', '--indexes', '{site}/src'], 'was not made by'),
    ('index --list and --gc', 'index', ['--list', '--gc'],
     'not allowed with'),
    ('index --pool of an unrelated directory', 'index',
     ['--gc', '--pool', '{site}/src'], None),
    # bin/evolve-copy
    ('evolve-copy --switch-back empty', 'evolve-copy', ['--switch-back', ''],
     'empty value'),
    ('evolve-copy --switch-back missing', 'evolve-copy',
     ['--switch-back', '99'], 'no data generation 99'),
    ('evolve-copy --switch-back a path', 'evolve-copy',
     ['--switch-back', '../1'], 'invalid generation'),
    ('evolve-copy --keep-sandbox alone', 'evolve-copy', ['--keep-sandbox'],
     '--keep-sandbox goes with --rehearse'),
    ('evolve-copy --json alone', 'evolve-copy', ['--json'],
     '--json goes with --rehearse'),
    ('evolve-copy --discard-writes alone', 'evolve-copy',
     ['--discard-writes'], '--discard-writes goes with --switch-back'),
    ('evolve-copy --resume and --rehearse', 'evolve-copy',
     ['--resume', '--rehearse'], 'not allowed with'),
    ('evolve-copy --resume with nothing to resume', 'evolve-copy',
     ['--resume'], 'to resume'),
    ('evolve-copy --data empty', 'evolve-copy', ['--data', ''],
     'empty value'),
    ('evolve-copy --evolve missing', 'evolve-copy',
     ['--rehearse', '--evolve', 'no.such.package'], 'cannot import'),
    ('evolve-copy --freeze-command with shell syntax', 'evolve-copy',
     ['--freeze-command', 'echo FREEZE >> {site}/freeze.log'],
     "freeze-command: 'echo FREEZE >> "),
    ('evolve-copy --thaw-command with a shell variable', 'evolve-copy',
     ['--thaw-command', '{site}/th.sh {data} $SAFEDEPLOY_DATA'],
     'uses shell syntax ($SAFEDEPLOY_DATA)'),
    ('evolve-copy --zeo-address beside the freeze commands', 'evolve-copy',
     ['--zeo-address', '127.0.0.1:8100'], 'not both'),
    # zeo-server
    ('zeo-server without a command', 'zeo-server', ['--address', '1',
                                                    '--state', 's'],
     'the following arguments are required'),
    ('zeo-server unknown command', 'zeo-server',
     ['restart', '--address', '1', '--state', 's'], 'invalid choice'),
    ('zeo-server port out of range', 'zeo-server',
     ['status', '--address', '127.0.0.1:99999', '--state', 's'],
     'port'),
    ('zeo-server port a word', 'zeo-server',
     ['status', '--address', 'localhost:zeo', '--state', 's'], 'port'),
    ('zeo-server start without data', 'zeo-server',
     ['start', '--address', '127.0.0.1:1', '--state', 's'],
     'start needs --data'),
    ('zeo-server empty state', 'zeo-server',
     ['status', '--address', '1', '--state', ''], 'empty value'),
    ('evolve-copy unknown flag', 'evolve-copy', ['--force'],
     'unrecognized'),
]


class Site:
    """zope.testrunner layer: one site for every case: releases 0.9 and 1.0
    (current), a failed 1.1, data in generations with a snapshot
    ``taken``."""

    @classmethod
    def setUp(cls):
        cls.sample = sample = support.SampleBuildout()
        try:
            sample.add_package('hello', '1.0')
            make_site_data(sample.path('var'), transactions=3, blobs=2)
            sample.write('log/site.log', 'the site log\n')
            cls.configure()
            for tag in ('0.9', '1.0'):
                r = sample.buildout('safedeploy:tag=%s' % tag)
                assert r.returncode == 0, r
            for args in (['--adopt'], ['taken']):
                r = support.run([sample.path('bin', 'snapshot')] + args)
                assert r.returncode == 0, r
            cls.configure(hello='recipe = zc.recipe.egg:nosuchentry')
            r = sample.buildout('safedeploy:tag=1.1')
            assert r.returncode == 1, r
            cls.configure()
        except BaseException:
            sample.cleanup()
            raise

    @classmethod
    def tearDown(cls):
        cls.sample.cleanup()

    @classmethod
    def configure(cls, **sections):
        cls.sample.write_config(configuration(**sections))


class MistakesTests(unittest.TestCase):

    layer = Site

    @property
    def sample(self):
        return Site.sample

    def configure(self, **sections):
        Site.configure(**sections)

    def state(self):
        return support.tree_state(self.sample.directory)

    def assertRefused(self, result, expected, what):
        self.assertNotEqual(result.returncode, 0, (what, result))
        text = result.output + result.errors
        self.assertNotIn('Traceback', text, what)
        lines = [line for line in result.errors.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, (what, result.errors))
        if expected:
            self.assertIn(expected, lines[0], what)

    def test_every_option_of_the_configuration(self):
        self.assertGreaterEqual(len(BUILD), 80)
        before = self.state()
        try:
            for what, sections, args, expected in BUILD:
                with self.subTest(what):
                    self.configure(**sections)
                    state = self.state()
                    args = args or ['safedeploy:tag=1.1']
                    r = support.run([support.BUILDOUT] + list(args),
                                    cwd=self.sample.directory, split=True)
                    self.assertRefused(r, expected, what)
                    self.assertEqual(state, self.state(), what)
        finally:
            self.configure()
        self.assertEqual(before, self.state())

    def test_every_flag_of_the_commands(self):
        self.assertGreaterEqual(len(COMMANDS), 70)
        lock = self.hold_data_lock()
        try:
            before = self.state()
            for what, script, args, expected in COMMANDS:
                with self.subTest(what):
                    if 'while the database runs' not in what:
                        lock.close()
                    else:
                        lock = self.hold_data_lock()
                    args = [a.replace('{site}', self.sample.directory)
                            for a in args]
                    command = [self.sample.path('bin', script)]
                    if script == 'zeo-server':
                        command = [support.SITE_PYTHON, '-m',
                                   'collective.safedeploy.zeo.command']
                    r = support.run(command + args,
                                    cwd=self.sample.directory, split=True)
                    self.assertRefused(r, expected, what)
                    self.assertEqual(before, self.state(), what)
        finally:
            lock.close()

    def hold_data_lock(self):
        """As a running site does: a process holding Data.fs.lock."""
        import zc.lockfile
        return zc.lockfile.LockFile(self.sample.path(
            'var', 'current', 'filestorage', 'Data.fs.lock'))

    def test_damaged_records_are_one_line_and_listed(self):
        journal = self.sample.path('releases', '.journal')
        manifest = self.sample.path('releases', '0.9',
                                    'safedeploy-manifest.json')
        snapshot = self.sample.path('var', 'snapshots', 'taken',
                                    'safedeploy-manifest.json')
        saved = {}
        for p in (journal, manifest, snapshot):
            with open(p, 'rb') as f:
                saved[p] = f.read()
        try:
            # a journal line that is not ours, in the middle
            lines = saved[journal].split(b'\n')
            lines.insert(2, b'{"event": 3}')
            with open(journal, 'wb') as f:
                f.write(b'\n'.join(lines))
            state = self.state()
            r = support.run([self.sample.path('bin', 'rollback'), '0.9'],
                            split=True)
            self.assertRefused(r, 'is damaged at line 3', 'journal')
            self.assertIn(journal, r.errors)
            r = support.run([self.sample.path('bin', 'rollback'), '--list',
                             '--json'], split=True)
            self.assertEqual(r.returncode, 0, r)
            rows = json.loads(r.output)
            self.assertIn('damaged', [row['state'] for row in rows])
            self.assertIn('1.0', [row['tag'] for row in rows])
            self.assertEqual(state, self.state())
            with open(journal, 'wb') as f:
                f.write(saved[journal])
            # a manifest that is not a JSON object
            with open(manifest, 'w') as f:
                f.write('["not", "an", "object"]')
            state = self.state()
            r = support.run([self.sample.path('bin', 'rollback'), '0.9'],
                            split=True)
            self.assertRefused(r, 'damaged', 'manifest')
            r = support.run([self.sample.path('bin', 'rollback'), '--list'],
                            split=True)
            self.assertEqual(r.returncode, 0, r)
            self.assertIn('damaged', r.output)
            self.assertEqual(state, self.state())
            # a snapshot's manifest: listed as damaged, never removed by the
            # next bin/snapshot
            with open(snapshot, 'w') as f:
                f.write('{"name": ')
            r = support.run([self.sample.path('bin', 'snapshot'), '--list',
                             '--json'], split=True)
            self.assertEqual(r.returncode, 0, r)
            self.assertEqual(
                {row['name']: row['state'] for row in json.loads(r.output)},
                {'taken': 'damaged'})
            r = support.run([self.sample.path('bin', 'snapshot'), 'next'],
                            split=True)
            self.assertEqual(r.returncode, 0, r)
            self.assertTrue(os.path.isdir(self.sample.path(
                'var', 'snapshots', 'taken')))
            r = support.run([self.sample.path('bin', 'snapshot'),
                             '--restore', 'taken'], split=True)
            self.assertRefused(r, 'damaged', 'snapshot restore')
        finally:
            for path, data in saved.items():
                with open(path, 'wb') as f:
                    f.write(data)
        # with every manifest whole again, the pool bytes only ``next``
        # used go with it (while one was damaged, the pool was left alone)
        r = support.run([self.sample.path('bin', 'snapshot'),
                         '--destroy', 'next'], split=True)
        self.assertEqual(r.returncode, 0, r)
        self.assertFalse(os.path.exists(self.sample.path(
            'var', 'snapshots', '.pool', 'filestorage%Data.fs', '2.fs')))

    def test_a_held_index_lock_is_refused_before_the_build(self):
        import zc.lockfile
        from collective.safedeploy.index import records
        records.store(self.sample.path('indexes')).claim()
        held = zc.lockfile.LockFile(self.sample.path('indexes', '.lock'))
        try:
            self.configure(safedeploy='index = required')
            before = self.state()
            r = support.run([support.BUILDOUT, 'safedeploy:tag=1.1'],
                            cwd=self.sample.directory, split=True)
            self.assertRefused(r, 'a package index build or gc is already '
                               'running here', 'held index lock')
            self.assertEqual(before, self.state())
        finally:
            held.close()
            shutil.rmtree(self.sample.path('indexes'))
            self.configure()

    def test_a_tree_that_is_not_ours_is_never_touched(self):
        """The two deletions this suite was written for: a releases
        directory that is the data, or an existing directory with
        somebody's content, is refused -- nothing in it is pruned."""
        site = self.sample.directory
        elsewhere = os.path.join(site, 'srv')
        os.makedirs(os.path.join(elsewhere, 'www', 'htdocs'))
        os.makedirs(os.path.join(elsewhere, 'backups'))
        with open(os.path.join(elsewhere, 'www', 'htdocs', 'index.html'),
                  'w') as f:
            f.write('somebody else\'s site')
        try:
            for releases in ('${buildout:directory}/var',
                             '${buildout:directory}/srv'):
                with self.subTest(releases):
                    self.configure(safedeploy='releases-directory = %s\n'
                                              'keep = 1' % releases)
                    before = self.state()
                    r = support.run([support.BUILDOUT, 'safedeploy:tag=2.0'],
                                    cwd=site, split=True)
                    self.assertRefused(r, None, releases)
                    self.assertEqual(before, self.state())
                    self.assertTrue(os.path.exists(os.path.join(
                        site, 'var', 'current', 'filestorage', 'Data.fs')))
        finally:
            shutil.rmtree(elsewhere)
            self.configure()


class GitTagTests(unittest.TestCase):
    """The tag comes from git: exactly one tag, no uncommitted changes."""

    def setUp(self):
        self.sample = support.SampleBuildout()
        self.addCleanup(self.sample.cleanup)
        self.sample.add_package('hello', '1.0')
        self.sample.write_config(textwrap.dedent('''\
            extensions = collective.safedeploy
            find-links += %s
            parts = hello
            [safedeploy]
            index = off
            [hello]
            recipe = zc.recipe.egg
            eggs = hello
            ''') % support.built_wheels())
        for args in (['init', '-q'], ['add', 'buildout.cfg', 'src'],
                     ['commit', '-qm', 'site']):
            self.assertEqual(self.sample.git(*args).returncode, 0)

    def build(self, *args):
        return support.run([support.BUILDOUT] + list(args),
                           cwd=self.sample.directory, split=True)

    def test_two_tags_and_a_dirty_checkout(self):
        self.sample.git('tag', '1.0')
        self.sample.git('tag', '1.0-final')
        state = support.tree_state(self.sample.directory)
        r = self.build()
        self.assertNotEqual(r.returncode, 0, r)
        self.assertEqual(len(r.errors.strip().splitlines()), 1, r.errors)
        self.assertIn('is at 2 tags (1.0, 1.0-final)', r.errors)
        self.assertEqual(state, support.tree_state(self.sample.directory))
        # the override the message names works
        r = self.build('safedeploy:tag=1.0')
        self.assertEqual(r.returncode, 0, r)
        self.sample.git('tag', '-d', '1.0-final')
        self.sample.git('tag', '1.1')
        self.sample.git('tag', '-d', '1.0')
        with open(self.sample.path('src', 'hello', 'src', 'hello',
                                   '__init__.py'), 'a') as f:
            f.write('# changed after the tag\n')
        state = support.tree_state(self.sample.directory)
        r = self.build()
        self.assertNotEqual(r.returncode, 0, r)
        self.assertEqual(len(r.errors.strip().splitlines()), 1, r.errors)
        self.assertIn('uncommitted changes to src/hello/src/hello/'
                      '__init__.py', r.errors)
        self.assertEqual(state, support.tree_state(self.sample.directory))
        r = self.build('safedeploy:allow-dirty=true')
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(support.current_tag(self.sample.directory), '1.1')


if __name__ == '__main__':  # pragma: no cover
    unittest.main(argv=[sys.argv[0]])
