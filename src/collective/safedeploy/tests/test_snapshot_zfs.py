"""The zfs backend on a real pool (Debian's zfs-fuse, a pool on a file).

When the zfs-fuse daemon is not running and we may start it, the test
starts it and stops it again.  Mountpoints are never nested inside a
zfs-fuse mount (zfs-fuse deadlocks removing a mountpoint inside its own
filesystem): the pool has ``mountpoint=none``.
"""
import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from collective.safedeploy.tests import support
from collective.safedeploy.tests.snapshotsupport import BackendContract
from collective.safedeploy.tests.snapshotsupport import make_data_root

CAN_ZFS = (os.geteuid() == 0 and shutil.which('zpool') is not None
           and os.path.exists('/dev/fuse'))
WHY = 'zfs tests need root, /dev/fuse and zfs-fuse (apt: zfs-fuse)'


def zfs(*args, check=True, timeout=60):
    return subprocess.run(['zfs'] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, check=check,
                          timeout=timeout)


def daemon_running():
    try:
        return subprocess.run(['zpool', 'list'], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL,
                              timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


_started = []


def ensure_daemon():
    if daemon_running():
        return
    if shutil.which('zfs-fuse') is None:
        raise unittest.SkipTest('zfs-fuse is not installed')
    pidfile = os.path.join(tempfile.mkdtemp(prefix='safedeploy-zfsd-'),
                           'zfs-fuse.pid')
    subprocess.run(['zfs-fuse', '--pidfile', pidfile], check=True)
    for _ in range(50):
        if daemon_running():
            break
        time.sleep(0.2)
    else:
        raise unittest.SkipTest('zfs-fuse did not start')
    with open(pidfile) as f:
        _started.append((int(f.read().strip()), os.path.dirname(pidfile)))
    atexit.register(stop_daemon)   # once the test run is over


def stop_daemon():
    """Stop the zfs-fuse daemon a test started (none, when it ran
    before the tests); wait until it is gone."""
    for pid, directory in _started:
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(150):
                os.kill(pid, 0)
                time.sleep(0.1)
        except OSError:
            pass
        shutil.rmtree(directory, True)
    del _started[:]



_count = []


def destroy_pool(pool):
    # zfs-fuse reports "busy" for a moment after an unmount
    for _ in range(50):
        if subprocess.run(['zpool', 'destroy', '-f', pool],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=60).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError('could not destroy the test pool %s' % pool)


def make_pool(test):
    """A pool on a file with a dataset ``POOL/site`` mounted on a
    temporary directory; destroyed on cleanup."""
    ensure_daemon()
    work = tempfile.mkdtemp(prefix='safedeploy-zfs-')
    test.addCleanup(shutil.rmtree, work, True)
    image = os.path.join(work, 'pool.img')
    subprocess.run(['truncate', '-s', '160M', image], check=True)
    _count.append(1)
    pool = 'sdtest%d-%d' % (os.getpid(), len(_count))
    subprocess.run(['zpool', 'create', '-f', '-o', 'cachefile=none',
                    '-m', 'none', pool, image], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    test.addCleanup(destroy_pool, pool)
    site = os.path.join(work, 'site')
    os.mkdir(site)
    zfs('create', '-o', 'mountpoint=%s' % site, pool + '/site')
    test.addCleanup(zfs, 'unmount', pool + '/site', check=False)
    return pool, site


@support.skip_unless(CAN_ZFS, WHY)
class ZfsBackendTests(BackendContract, unittest.TestCase):

    backend = 'zfs'

    def setUp(self):
        self.pool, site = make_pool(self)
        self.dataset = self.pool + '/site'
        self.data = make_data_root(site)
        self.options = dict(data=self.data, backend='zfs',
                            dataset=self.dataset)

    def snapshot_files(self, name):
        mnt = tempfile.mkdtemp(prefix='safedeploy-zfscheck-')
        self.addCleanup(shutil.rmtree, mnt, True)
        clone = '%s/check-%s' % (self.pool, name)
        zfs('clone', '-o', 'mountpoint=%s' % mnt,
            '%s@%s' % (self.dataset, name), clone)
        self.addCleanup(zfs, 'destroy', clone, check=False)
        gen = os.readlink(os.path.join(mnt, 'current'))
        path = os.path.join(mnt, gen)
        return (os.path.join(path, 'filestorage', 'Data.fs'),
                os.path.join(path, 'blobstorage'))

    def check_discarded_kept(self, changed):
        names = zfs('list', '-H', '-o', 'name').stdout.split()
        kept = [n for n in names if n.startswith(self.dataset +
                                                 '-discarded-')]
        self.assertEqual(len(kept), 1, names)

    def test_auto_detects_the_dataset(self):
        self.options = dict(data=self.data)
        self.assertIn('(zfs', self.ok('auto'))

    def test_rollback_refuses_to_destroy_newer_snapshots(self):
        self.ok('a')
        self.ok('b')
        message = self.fails('--restore', 'a')
        self.assertIn('would destroy the newer snapshot(s) b', message)
        self.ok('--restore', 'a', '--force')
        self.assertEqual([r['name'] for r in self.listing()], ['a'])

    def test_dataset_that_does_not_exist(self):
        self.options['dataset'] = self.pool + '/nosuch'
        self.assertIn('no ZFS dataset %s/nosuch' % self.pool,
                      self.fails())
