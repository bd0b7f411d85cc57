"""The zfs backend: ``zfs snapshot`` of the dataset whose mountpoint is
the data root, ``zfs rollback`` in place.

::

    zfs snapshot DATASET@NAME          # instant, consistent
    zfs clone DATASET@NAME ...          # verified through a temporary clone
    zfs rollback DATASET@NAME           # restore (refused when it would
                                        # destroy newer snapshots, unless
                                        # --force)

A snapshot's details are ZFS user properties (``safedeploy:time``,
``safedeploy:release``, ``safedeploy:generation``);
``safedeploy:verified`` is set last, so a snapshot without it (its run was
killed) is never listed and is destroyed by the next run.

Writes a rollback would discard are first kept in a dataset of their own,
``DATASET-discarded-<time>`` (``zfs send | zfs receive``; a clone would
block the rollback).
"""
import datetime
import errno
import logging
import os
import shutil
import subprocess
import tempfile
import time

from .. import filestorage
from .. import verify as fsverify
from ...core.errors import CommandFailed
from ...core.errors import ConfigurationError
from ...core.errors import NotFound
from ...core.errors import Refused
from ..mounts import command
from .base import Backend
from .base import now

logger = logging.getLogger('collective.safedeploy')

PROPS = ('time', 'release', 'generation', 'verified', 'backend')


UNITS = {'': 1, 'B': 1, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30,
         'T': 1 << 40, 'P': 1 << 50}


def size(text):
    """A size from ``zfs list``: exact bytes with ``-p``; zfs-fuse's zfs
    has no ``-p`` and prints rounded ones (``1.5M``); ``-`` for none."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if text in ('-', ''):
        return None
    unit = text[-1].upper() if text[-1].isalpha() else ''
    try:
        return int(float(text[:-1] if unit else text) * UNITS[unit])
    except (ValueError, KeyError):
        return None


_EXACT = []     # whether this zfs has ``list -p`` (asked once)


def exact_sizes():
    if not _EXACT:
        try:
            command(['zfs', 'list', '-Hp', '-o', 'name', '-d', '0'])
            _EXACT.append(True)
        except CommandFailed:
            _EXACT.append(False)
    return _EXACT[0]


class ZfsBackend(Backend):

    name = 'zfs'

    def __init__(self, config):
        super().__init__(config)
        self.dataset = config.dataset

    def check(self):
        if not self.dataset:
            raise ConfigurationError(
                'backend = zfs needs the dataset option (e.g. dataset = '
                'tank/site); "zfs list" shows the datasets')
        if shutil.which('zfs') is None:
            raise ConfigurationError(
                'backend = zfs but the zfs command is not installed; '
                'install ZFS or use backend = copy')
        try:
            out = command(['zfs', 'list', '-H', '-o', 'name,mountpoint',
                           self.dataset])
        except CommandFailed:
            raise NotFound('no ZFS dataset %s; check the dataset option '
                           '("zfs list" shows the datasets)' % self.dataset)
        mountpoint = out.strip().split('\t')[-1]
        if os.path.realpath(mountpoint) != os.path.realpath(self.root.path):
            raise ConfigurationError(
                'the mountpoint of ZFS dataset %s is %s, not data = %s; set '
                'data to the mountpoint' % (self.dataset, mountpoint,
                                            self.root.path))
        self.root.current_path()

    def snap(self, name):
        return '%s@%s' % (self.dataset, name)

    # -- listing -----------------------------------------------------------

    def _all(self):
        """Every snapshot of the dataset (ours or not), oldest first:
        dicts with name, used, referenced and our properties."""
        cols = ['name', 'used', 'referenced'] + [
            'safedeploy:%s' % p for p in PROPS]
        out = command(['zfs', 'list', '-Hp' if exact_sizes() else '-H',
                       '-t', 'snapshot', '-d', '1',
                       '-s', 'creation', '-o', ','.join(cols),
                       self.dataset])
        rows = []
        for line in out.splitlines():
            fields = line.split('\t')
            if len(fields) != len(cols):
                continue
            row = dict(snapshot=fields[0],
                       name=fields[0].partition('@')[2],
                       used=size(fields[1]),
                       referenced=size(fields[2]))
            for p, v in zip(PROPS, fields[3:]):
                row[p] = None if v == '-' else v
            rows.append(row)
        return rows

    def _row(self, r):
        """``safedeploy:verified`` holds, per FileStorage, the copy's
        ``last_tid:inode:end:first_tid`` (set last, once verified)."""
        storages = []
        fss = [s for s in self.root.storages if s.fs]
        for s, text in zip(fss, (r.get('verified') or '').split(',')):
            tid, _, rest = text.partition(':')
            entry = dict(fs=s.fs, last_tid=tid or None)
            try:
                inode, end, first = rest.split(':')
                entry['source'] = dict(inode=int(inode), device=None,
                                       end=int(end), last_tid=tid,
                                       first_tid=first)
            except ValueError:
                pass
            storages.append(entry)
        return dict(name=r['name'], backend=self.name, time=r['time'],
                    release=r['release'], generation=r['generation'],
                    last_tid=storages[0]['last_tid'] if storages else None,
                    storages=storages, size=r['referenced'],
                    holds=r['used'])

    def snapshots(self, sizes=False, damaged=False):
        return [self._row(r) for r in self._all()
                if r['backend'] == self.name and r['verified']]

    # -- operations --------------------------------------------------------

    def cleanup(self, rows):
        """Destroy what killed runs left: verification clones, then
        snapshots that were never verified."""
        prefix = '%s-verify-' % self.dataset
        out = command(['zfs', 'list', '-H', '-o', 'name,mountpoint',
                       '-t', 'filesystem'])
        for line in out.splitlines():
            name, _, mountpoint = line.partition('\t')
            if name.startswith(prefix):
                self._destroy(name)
                if os.path.basename(mountpoint).startswith(
                        'safedeploy-verify-'):
                    remove_mountpoint(mountpoint)
        for r in rows:
            if r['backend'] == self.name and not r['verified']:
                self._destroy(r['snapshot'])
        # mountpoints a run killed before its clone existed left behind
        stem = os.path.basename(self.verify_mountpoint(''))
        tmp = tempfile.gettempdir()
        for entry in os.listdir(tmp):
            path = os.path.join(tmp, entry)
            if entry.startswith(stem) and not os.path.ismount(path):
                remove_mountpoint(path)

    def verify_mountpoint(self, name):
        """Where the verification clone of snapshot ``name`` is mounted:
        outside the dataset (zfs-fuse deadlocks unmounting a mount inside
        its own), named after the dataset so that a later run finds what
        a killed one left."""
        # neither % nor + can be in a dataset name: one stem per dataset
        return os.path.join(tempfile.gettempdir(), 'safedeploy-verify-%s+%s'
                            % (self.dataset.replace('/', '%'), name))

    def _destroy(self, what):
        for attempt in range(20):
            try:
                return command(['zfs', 'destroy', what])
            except CommandFailed as e:
                if 'busy' not in str(e) or attempt == 19:
                    raise
                time.sleep(0.1)

    def create(self, name, release=None, durable=False):
        with self.lock():
            self.check()
            rows = self._all()
            self.cleanup(rows)
            if '+' in name:
                raise ConfigurationError(
                    'ZFS snapshot names cannot contain "+" (%s); choose '
                    'another name' % name)
            if any(r['name'] == name for r in rows):
                raise Refused('snapshot %s exists already; choose another '
                              'name or destroy it first' % name)
            generation = self.root.current_name()
            time = now()
            args = ['zfs', 'snapshot',
                    '-o', 'safedeploy:backend=%s' % self.name,
                    '-o', 'safedeploy:time=%s' % time,
                    '-o', 'safedeploy:generation=%s' % generation]
            if release:
                args += ['-o', 'safedeploy:release=%s' % release]
            command(args + [self.snap(name)])
            try:
                hints = [e for r in rows if r['verified']
                         for e in self._row(r)['storages']]
                verified = self._verify(name, generation, hints)
                command(['zfs', 'set', 'safedeploy:verified=%s' % verified,
                         self.snap(name)])
            except BaseException:
                self._destroy(self.snap(name))
                raise
            return self._row(dict(
                name=name, time=time, release=release,
                generation=generation, verified=verified, referenced=None,
                used=None))

    def _verify(self, name, generation, hints):
        """Open the snapshot's data through a temporary clone; check the
        blobs of the transactions after the newest earlier snapshot that
        the data still extends.  Returns the ``safedeploy:verified``
        value."""
        live = self.root.generations.path(generation)
        hinted = {}
        for fs_rel, _ in [(s.fs, s.blobs) for s in self.root.storages
                          if s.fs]:
            live_fs = os.path.join(live, fs_rel)
            device = os.stat(live_fs).st_dev
            usable = self.root.hints()      # the generation's own record
            for e in hints:
                if e['fs'] == fs_rel and e.get('source'):
                    usable.append(dict(e, source=dict(e['source'],
                                                      device=device)))
            hinted[fs_rel] = fsverify.since(fsverify.best_hint(live_fs, fs_rel, usable))
        mountpoint = self.verify_mountpoint(name)
        os.makedirs(mountpoint, 0o700, exist_ok=True)   # a killed run's
        clone = '%s-verify-%s' % (self.dataset, name)
        try:
            command(['zfs', 'clone', '-o', 'mountpoint=%s' % mountpoint,
                     self.snap(name), clone])
            try:
                inside = os.path.join(mountpoint, 'generations', generation)
                values = []
                for s in [s for s in self.root.storages if s.fs]:
                    fs = os.path.join(inside, s.fs)
                    blobs = os.path.join(inside, s.blobs) if s.blobs \
                        else None
                    pos = filestorage.committed_end(fs)
                    if blobs:
                        fsverify.prepare_blob_dir(blobs)
                    fsverify.verify(fs, blobs, expected_tid=pos.last_tid,
                                    **hinted[s.fs])
                    values.append('%s:%d:%d:%s' % (
                        filestorage.tid_hex(pos.last_tid) or '',
                        os.stat(fs).st_ino, pos.end,
                        filestorage.tid_hex(filestorage.first_tid_of(
                            fs, pos.end)) or ''))
                return ','.join(values)
            finally:
                self._destroy(clone)
        finally:
            remove_mountpoint(mountpoint)

    def discards_kept_in(self):
        return 'a ZFS dataset of their own'

    def restore(self, name, force=False, discard_writes=False):
        with self.lock():
            self.check()
            info = self.info(name)
            self.refuse_running()
            everything = self._all()
            names = [r['name'] for r in everything]
            newer = names[names.index(name) + 1:]
            if newer and not force:
                raise Refused(
                    'zfs rollback to %s would destroy the newer snapshot(s) '
                    '%s; run again with --force to destroy them' % (
                        name, ', '.join(newer)))
            count = self.discarded(info)
            stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')
            keeper = '%s-discarded-%s' % (self.dataset, stamp)
            self.refuse_discarding(name, count, discard_writes,
                                   'ZFS dataset %s' % keeper)
            if count:
                self._keep(keeper)
            command(['zfs', 'rollback'] + (['-r'] if newer or count else []) +
                    [self.snap(name)])
            logger.debug('rolled %s back to %s', self.dataset, name)
            return dict(name=name, backend=self.name, discarded=count,
                        kept=keeper if count else None,
                        destroyed=newer, last_tid=info.get('last_tid'))

    def _keep(self, keeper):
        """Copy the data as it is now into the dataset ``keeper``."""
        snap = '%s@%s' % (self.dataset, keeper.rsplit('/', 1)[-1])
        command(['zfs', 'snapshot', snap])
        send = subprocess.Popen(['zfs', 'send', snap],
                                stdout=subprocess.PIPE)
        receive = subprocess.run(['zfs', 'receive', '-u', keeper],
                                 stdin=send.stdout, stderr=subprocess.PIPE,
                                 text=True)
        send.stdout.close()
        send.wait()
        if send.returncode or receive.returncode:
            raise CommandFailed('zfs send | zfs receive %s failed: %s; '
                                'nothing was rolled back' % (
                                    keeper, receive.stderr.strip()))
        logger.info('kept the data being discarded in ZFS dataset %s',
                    keeper)

    def destroy(self, name):
        with self.lock():
            self.check()
            self.info(name)
            self._destroy(self.snap(name))


def remove_mountpoint(path, timeout=10):
    """Remove the empty directory a verification clone was mounted on;
    zfs-fuse may still be letting go of it just after the destroy."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                logger.warning('could not remove %s: %s', path, e)
                return
        time.sleep(0.05)
