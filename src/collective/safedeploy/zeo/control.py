"""How evolve-copy makes production read-only and writable again.

- :class:`DataServer`: the ZEO server safedeploy runs (:mod:`.server`):
  frozen in place, or restarted read-only; thawed by a restart on the
  generation to serve;
- :class:`CommandControl`: a ``freeze-command`` / ``thaw-command`` pair,
  for setups where safedeploy does not run the database server.

:func:`make_control` makes one from the options; :func:`control_config`
and :func:`control_from_config` let a guard process rebuild it.
"""
import logging
import os
import time

from ..core import commands
from ..core.errors import ConfigurationError
from .server import ZEOServer
from .server import alive
from .server import format_address
from .server import listening
from .freeze import unmark_frozen

logger = logging.getLogger('collective.safedeploy')

FS = os.path.join('filestorage', 'Data.fs')
BLOBS = 'blobstorage'


def check_choice(zeo, freeze_command, thaw_command, required=False):
    """The one rule for how production is frozen: the ZEO server (``zeo``)
    or a freeze-command / thaw-command pair, not both; one of them when
    ``required``."""
    if zeo and (freeze_command or thaw_command):
        raise ConfigurationError(
            'set either zeo (the ZEO server to freeze) or freeze-command '
            'and thaw-command, not both')
    if (freeze_command or thaw_command) and not (freeze_command and
                                                 thaw_command):
        raise ConfigurationError(
            'freeze-command and thaw-command go together; set both, or set '
            'zeo = <ZEO part>')
    if required and not zeo and not freeze_command:
        raise ConfigurationError(
            'evolve-copy needs a way to make production read-only: set '
            'zeo = <ZEO part>, or freeze-command and thaw-command')


def make_control(zeo_address=None, zeo_state=None, runzeo=None,
                 freeze_command=None, thaw_command=None):
    check_choice(zeo_address, freeze_command, thaw_command)
    if zeo_address:
        if not zeo_state:
            raise ConfigurationError(
                'zeo needs a state directory for the server\'s zeo.conf and '
                'pid (zeo-state)')
        return DataServer(
            ZEOServer(zeo_address, zeo_state, runzeo), FS, BLOBS)
    if freeze_command or thaw_command:
        return CommandControl(freeze_command, thaw_command)
    return None


def control_config(control):
    if isinstance(control, DataServer):
        s = control.server
        return dict(kind='zeo', address=format_address(s.address),
                    state=s.state_dir, runzeo=s.runzeo)
    return dict(kind='commands', freeze=control.freeze_command,
                thaw=control.thaw_command)


def control_from_config(config):
    if config['kind'] == 'zeo':
        return make_control(config['address'], config['state'],
                            config.get('runzeo'))
    return make_control(freeze_command=config['freeze'],
                        thaw_command=config['thaw'])


class DataServer:
    """Freeze / thaw a data generation by restarting a ZEO server."""

    def __init__(self, server, data_path, blob_path):
        self.server = server
        # relative to a generation directory
        self.data_path = data_path
        self.blob_path = blob_path

        self._next = []

    def describe(self):
        return self.server.describe()

    def prepare(self, count=1):
        """Get the next server processes ready (imports done) so that the
        restarts inside the read-only window are short.  A server that
        freezes in place needs one restart less."""
        if count > 1 and self.server.freezable():
            count -= 1
        self._next = [p for p in self._next if p.poll() is None]
        while len(self._next) < count:
            self._next.append(self.server.prepare())

    def ready(self):
        for process in self._next:
            self.server.wait_ready(process)

    def prepared_pids(self):
        return [p.pid for p in self._next]

    def settle(self, pids, timeout=30):
        """Wait until prepared processes of a dead run have either ended
        (no go: they exit) or become the server (their pid file)."""
        deadline = time.monotonic() + timeout
        for pid in pids:
            while alive(pid) and self.server.pid() != pid and \
                    time.monotonic() < deadline:
                time.sleep(0.01)

    def discard(self):
        for process in self._next:
            if process.poll() is None:
                process.kill()   # it waits for its go: nothing to lose
                process.wait()
            self.server.close_control(process)
        self._next = []

    def serve(self, generation_dir, read_only):
        process = self._next.pop(0) if self._next else None
        self.server.restart(
            os.path.join(generation_dir, self.data_path),
            os.path.join(generation_dir, self.blob_path), read_only,
            process=process)

    def freeze(self, generation_dir):
        """Production read-only: in place when the server can (its reads
        go on undisturbed), else by a restart read-only."""
        serving = self.serving()
        if serving and not serving[1] and os.path.realpath(serving[0]) == \
                os.path.realpath(os.path.join(generation_dir,
                                              self.data_path)) and \
                self.server.freeze():
            return
        self.serve(generation_dir, read_only=True)

    def thaw(self, generation_dir):
        unmark_frozen(generation_dir)
        self.serve(generation_dir, read_only=False)

    def check_serves(self, fs_path, lock_held, timeout=10):
        """No split brain: before anything is frozen, the ZEO server at the
        configured address must be the one serving ``fs_path`` (the data
        root's current Data.fs).  A server answering there must report the
        file's last transaction; when none answers, nothing else may have
        the file open for writing (``lock_held``: production runs, reached
        at another address).  Refused with one line otherwise."""
        where = format_address(self.server.address)
        if not listening(self.server.address):
            if lock_held:
                raise ConfigurationError(
                    'no ZEO server answers at %s, yet %s is open for '
                    'writing: production runs at another address; set '
                    'zeo-address to the address production\'s ZEO server '
                    'listens on' % (where, fs_path))
            return
        from ZEO.ClientStorage import ClientStorage
        from ..data import filestorage
        try:
            storage = ClientStorage(self.server.address, read_only=True,
                                    wait_timeout=timeout)
        except Exception as e:
            raise ConfigurationError(
                'something listens at %s but does not answer as a ZEO '
                'server of storage "1" (%s): set zeo-address to the '
                'address of the server of this data root' % (
                    where, type(e).__name__))
        try:
            for _ in range(50):
                served = storage.lastTransaction()
                on_disk = filestorage.committed_end(fs_path).last_tid
                if served == (on_disk or b'\0' * 8):
                    return
                time.sleep(0.02)    # a commit in flight: look again
        finally:
            storage.close()
        raise ConfigurationError(
            'the ZEO server at %s does not serve %s (its last transaction '
            'is %s, the file\'s %s): zeo-address names another server; set '
            'it to the address of the server of this data root' % (
                where, fs_path, served.hex(),
                on_disk.hex() if on_disk else 'none'))

    def serving(self):
        """(data path, read_only) the server runs with, or None."""
        conf = self.server.configuration()
        if not conf or not self.server.pid():
            return None
        return conf[0], bool(conf[2] or self.server.frozen())


class CommandControl:
    """``freeze-command`` / ``thaw-command`` for other setups.

    The thaw command gets the data generation directory to serve in the
    environment variable ``SAFEDEPLOY_DATA`` (and as ``{data}`` in the
    command); it must make production writable on that generation.
    """

    def __init__(self, freeze_command, thaw_command):
        check_choice(None, freeze_command, thaw_command, required=True)
        # checked now: a bad quote is refused before anything is frozen
        self.freeze_args = commands.split(freeze_command, 'freeze-command')
        self.thaw_args = commands.split(thaw_command, 'thaw-command')
        self.freeze_command = freeze_command
        self.thaw_command = thaw_command

    def describe(self):
        return 'freeze-command / thaw-command'

    def prepare(self, count=1):
        pass

    def ready(self):
        pass

    def discard(self):
        pass

    def prepared_pids(self):
        return []

    def settle(self, pids, timeout=30):
        pass

    def _run(self, args, what, generation_dir):
        args = [a.replace('{data}', generation_dir) for a in args]
        commands.run(args, what=what,
                     env=dict(os.environ, SAFEDEPLOY_DATA=generation_dir))

    def freeze(self, generation_dir):
        self._run(self.freeze_args, 'freeze-command', generation_dir)

    def thaw(self, generation_dir):
        unmark_frozen(generation_dir)
        self._run(self.thaw_args, 'thaw-command', generation_dir)

    def serving(self):
        return None
