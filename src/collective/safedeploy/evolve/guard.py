"""The guard: production is never left frozen by a dead evolve-copy.

Before the read-only window, evolve-copy starts a guard process
(``python -m collective.safedeploy.evolve.guard DATA PID``) that outlives
it; at the freeze it writes ``DATA/.evolve-guard.json`` saying how to thaw
production.  If evolve-copy dies with that file in place (a SIGKILL, a
crash), the guard takes the data root's lock and thaws production on
whatever ``current`` is -- the old generation, or the new one once the
switch happened.  The next run (or ``--resume``) does the same first.
"""
import json
import logging
import os
import signal
import subprocess
import sys
import time

from ..core import fsutil
from ..core import lock
from ..core.errors import Busy
from ..zeo.control import control_config
from ..zeo.control import control_from_config
from ..zeo.server import alive
from ..zeo.server import child_env
from ..zeo.freeze import unmark_frozen
from .state import DataRoot

logger = logging.getLogger('collective.safedeploy')

GUARD = '.evolve-guard.json'


def guard_path(data):
    return os.path.join(data.path, GUARD)


def thaw_on_current(data, control, log=logger, left=None):
    """Make production writable on whatever ``current`` is (after a killed
    run: its old generation, or the new one once the flip happened); the
    frozen marks of ``current`` and of ``left`` (the generation the run
    froze) go."""
    name = data.current()
    for generation in {name, left or name}:
        if os.path.isdir(data.dir(generation)):
            unmark_frozen(data.dir(generation))
    serving = control.serving()
    if serving is not None and not serving[1] and \
            os.path.realpath(serving[0]) == os.path.realpath(data.fs(name)):
        return False
    log.warning('thawing production on data generation %s', name)
    control.thaw(data.dir(name))
    return True


def recover_production(data, log=logger):
    """What a killed run left frozen: thaw it (the guard normally has)."""
    path = guard_path(data)
    try:
        with open(path) as f:
            guard = json.load(f)
    except (OSError, ValueError):
        return False
    control = control_from_config(guard['control'])
    control.settle(guard.get('prepared', ()))
    thaw_on_current(data, control, log, left=guard.get('generation'))
    os.unlink(path)
    return True


class Guard:
    """The guard process of one run."""

    def __init__(self, data):
        self.data = data
        self.process = None

    def spawn(self):
        """Started before the read-only window, before the file that tells
        it to thaw is written: there never is such a file without a
        guard."""
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'collective.safedeploy.evolve.guard',
             self.data.path, str(os.getpid())],
            stdin=subprocess.DEVNULL, start_new_session=True,
            env=child_env())

    def arm(self, source, control):
        # it describes running processes: atomic, no need to be durable
        fsutil.atomic_write_json(guard_path(self.data), dict(
            pid=os.getpid(), generation=source,
            control=control_config(control),
            prepared=control.prepared_pids()), durable=False)

    def stop(self):
        if os.path.exists(guard_path(self.data)):
            os.unlink(guard_path(self.data))
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # it has nothing left to do: the run ended well
                self.process.kill()
                self.process.wait()
            self.process = None


def main(argv=None):
    """Wait for PID to end; if it left production frozen, thaw it."""
    argv = sys.argv[1:] if argv is None else argv
    # a disposition inherited from the run (ignored while it flipped) must
    # not keep the run from stopping its guard
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    data, pid = DataRoot(argv[0]), int(argv[1])
    while alive(pid):
        time.sleep(0.02)
    if not os.path.exists(guard_path(data)):
        return 0
    # the dead run's lock is free now; a new run may hold it: wait for it
    while True:
        try:
            held = lock.acquire(data.generations.lock_path, 'evolve-copy')
            break
        except Busy:
            time.sleep(0.1)
    try:
        recover_production(data)
    except Exception as e:  # nobody to report to but the log
        sys.stderr.write('evolve-copy guard: %s\n' % e)
        return 1
    finally:
        held.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
