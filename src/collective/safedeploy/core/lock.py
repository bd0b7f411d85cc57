"""One build or rollback at a time per releases (or data) directory.

zc.lockfile takes an ``fcntl`` lock: the kernel drops it when its holder
dies, so a lock left by a killed process never blocks the next run.
"""
import contextlib
import os

import zc.lockfile

from .errors import Busy


def holder(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return 'unknown'
    if not text:
        return 'unknown'
    pid, _, host = text.partition(' ')
    return 'pid %s on %s' % (pid, host or 'this host')


def acquire(path, what='a release build or rollback'):
    try:
        return zc.lockfile.LockFile(
            path, content_template='{pid} {hostname}')
    except zc.lockfile.LockError:
        raise Busy(
            '%s is already running here (lock %s held by %s); '
            'wait for it to finish and try again' % (what, path, holder(path)))


@contextlib.contextmanager
def locked(path, what='a release build or rollback'):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lock = acquire(path, what)
    try:
        yield lock
    finally:
        lock.close()
