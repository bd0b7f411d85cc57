"""bin/promote builds on each set the release current on the previous
stage, from that release's package index, with no network: real
bin/buildout and the release extension on three sites, a real HAProxy and
load in front of the stage."""
import os
import time
import unittest

from collective.safedeploy.promote import release
from . import promotesupport
from . import support
from .test_index_support import unshare_network

NO_NETWORK = unshare_network()

SITE = '''\
extensions = collective.safedeploy
develop = src/hello
find-links += %s
parts = hello

[safedeploy]
index = required

[hello]
recipe = zc.recipe.egg
eggs = hello
'''


def site(directory, version):
    """A safedeploy site whose checkout of hello is at ``version``."""
    sample = support.SampleBuildout(directory)
    sample.add_package('hello', version)
    sample.write_config(SITE % support.built_wheels())
    return sample


def hello(root):
    return support.run([os.path.join(root, 'current', 'bin', 'hello')]
                       ).output.strip()


@support.skip_unless(NO_NETWORK is not None,
                     'unshare -n (a network namespace) is not available '
                     'here: an offline build cannot be proven')
class PromoteReleaseTests(unittest.TestCase):

    def test_both_sets_get_the_previous_stage_release_offline(self):
        stage = promotesupport.Stage(self)
        dev = site(os.path.join(stage.tmp, 'dev'), '1.0')
        result = dev.buildout('safedeploy:tag=v1')
        self.assertEqual(result.returncode, 0, result)
        # the stage's own checkouts have moved on: not what it gets
        for root in (stage.root, stage.twin):
            site(root, '2.0')
        offline = ' '.join(NO_NETWORK + [support.BUILDOUT])
        stage.write_config(release='previous', previous_root=dev.directory,
                           buildout=offline, twin_buildout=offline)
        load = promotesupport.Load(stage.proxy.url, writers=1, readers=1)
        self.addCleanup(load.stop)
        time.sleep(0.3)
        started = time.monotonic()
        result = stage.promote()
        seconds = time.monotonic() - started
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertRegex(result.stdout, r'to_twin.release: .*release v1 '
                         r'built in %s from its index' % stage.twin)
        self.assertRegex(result.stdout, r'back.release: .*release v1 '
                         r'built in %s from its index' % stage.root)
        for root in (stage.root, stage.twin):
            self.assertEqual(release.current_tag(root), 'v1')
            self.assertEqual(hello(root), 'hello 1.0')
            self.assertEqual(
                release.pins(os.path.join(root, 'releases', 'v1',
                                          'versions.cfg')),
                release.pins(os.path.join(dev.directory, 'indexes', 'v1',
                                          'versions.cfg')))
        # the next stage builds from this one's index
        self.assertTrue(os.path.exists(os.path.join(
            stage.root, 'indexes', 'v1', 'versions.cfg')))
        # again: nothing to build
        again = stage.promote()
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn('release v1 already current in %s' % stage.twin,
                      again.stdout)
        load.stop()
        self.assertEqual(load.failed, [], stage.logs())
        final = stage.dump()
        self.assertEqual([k for k in load.acked if k not in final], [])
        print('\n  first promotion with two builds: %.1f s' % seconds)

    def test_no_current_release_on_the_previous_stage_is_refused(self):
        stage = promotesupport.Stage(self)
        dev = os.path.join(stage.tmp, 'dev')
        os.mkdir(dev)
        stage.write_config(release='previous', previous_root=dev)
        result = stage.promote()
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1,
                         result.stderr)
        self.assertIn('stage dev has no current release', result.stderr)
        self.assertEqual(stage.states(), {'main1': 'ready', 'main2': 'ready',
                                          'twin1': 'maint'})
        self.assertFalse(os.path.exists(os.path.join(stage.stages, 'beta',
                                                     '.journal')))
