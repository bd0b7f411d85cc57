"""The read-only window of bin/evolve-copy against the backup/restore
procedures people use today, on the same data in the same run.

    .venv/bin/python benchmarks/evolve_window.py [--size-mib 400]
        [--blobs 3000] [--keep DIR]

A data root with a Data.fs of ``--size-mib`` and ``--blobs`` blobs is
served by a real ZEO server.  After the copy is prepared, 1 % of the
database size is written through a ZEO client (with 1 % of the blobs);
then production is frozen, caught up, evolved (a no-op evolve), verified,
switched and thawed.  The same delta is then put through:

- repozo: incremental backup (after a full one, outside the window) and
  a restore -- what the read-only window is with the "backup, read-only,
  incremental backup, restore, evolve" procedure;
- collective.recipe.backup: bin/backup (incremental, with blobs) and
  bin/restore (its library functions, as its scripts call them).

Finally the evolve-copy window is measured again on a database twice the
size with the same delta: the window depends on the delta, not the size.

During the first evolve-copy a writer (``tests/writersupport.py``)
commits through ZEO every 10 ms: its longest refused interval (first
refused attempt to the next acknowledged commit) is printed against the
window evolve-copy prints, in the same run, with whether they agree
within the writer's retry interval: what is left over is the writer's
reconnect to the new server and its first commit there (a few
hundredths of a second on a busy machine).  The thaw restarts the ZEO server onto the new
generation, and the listening socket is handed from the old server
process to the new one (``collective.safedeploy.zeo.listener``): the
writer's connection drops, it reconnects at once into the socket's
backlog and is served as soon as the new server accepts.  Were the port
closed in between, its connect would be refused and it would wait 1 s
plus up to 1 s at random before trying again (ZEO.asyncio.client; ZEO 6's
ClientStorage ignores ``min-disconnect-poll``): a second longer than the
window.  The writer's timeline shows it: when it was first refused after
the freeze, and how long after the thaw returned (the new server
serving) its first commit came.
"""
import argparse
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

import transaction

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'src'))

from collective.safedeploy.evolve import procedure
from collective.safedeploy.evolve import state

from collective.safedeploy.core import fsutil  # noqa: E402
from collective.safedeploy.zeo import server as zeoserver
from collective.safedeploy.zeo import control as zeocontrol

MiB = 1 << 20
NOOP = 'collective.safedeploy.tests.evolve_example.function:noop'
OBJECT = 8 * 1024
RETRY = 0.010   # the writer's interval between two attempts


def generate(root, size_mib, blobs):
    """DATA/generations/1 with ~size_mib of Data.fs and ``blobs`` blobs."""
    import ZODB
    from BTrees.OOBTree import OOBTree
    from ZODB.blob import Blob
    from ZODB.FileStorage import FileStorage
    data = state.DataRoot(root)
    data.generations.stage('1')
    fs, blob_dir = data.fs('1'), data.blobs('1')
    os.makedirs(os.path.dirname(fs))
    db = ZODB.DB(FileStorage(fs, blob_dir=blob_dir))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    r = conn.root()
    r['items'], r['blobs'] = OOBTree(), OOBTree()
    tm.commit()
    per_txn = 256
    n = 0
    while os.path.getsize(fs) < size_mib * MiB:
        for _ in range(per_txn):
            n += 1
            r['items'][n] = os.urandom(OBJECT)
        tm.commit()
    for i in range(blobs):
        b = Blob()
        with b.open('w') as f:
            f.write(os.urandom(4096))
        r['blobs'][i] = b
        if i % 100 == 99:
            tm.commit()
    tm.commit()
    conn.close()
    db.close()
    data.generations.complete('1', dict(source='benchmark'))
    data.generations.flip('1')
    return data


def write_delta(address, nbytes, blobs):
    """Commit ``nbytes`` of new objects and ``blobs`` blobs through ZEO."""
    import ZODB
    from ZEO.ClientStorage import ClientStorage
    from ZODB.blob import Blob
    host, port = address
    blob_cache = tempfile.mkdtemp(prefix='bench-zeo-blobs-')
    db = ZODB.DB(ClientStorage((host, port), blob_dir=blob_cache,
                               wait_timeout=60))
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        r = conn.root()
        written, i = 0, 0
        while written < nbytes:
            for _ in range(12):
                i += 1
                r['items'][time.time_ns() * 1000 + i] = os.urandom(OBJECT)
                written += OBJECT
            tm.commit()
        for j in range(blobs):
            b = Blob()
            with b.open('w') as f:
                f.write(os.urandom(4096))
            r['blobs'][time.time_ns() * 1000 + j] = b
            tm.commit()
        conn.close()
    finally:
        db.close()
        shutil.rmtree(blob_cache, ignore_errors=True)


class DeltaEvolveCopy(procedure.EvolveCopy):
    """The writes of the site between prepare and freeze."""

    delta = (0, 0)

    def prepare(self):
        result = procedure.EvolveCopy.prepare(self)
        write_delta(self.control.server.address, *self.delta)
        self.before_freeze = time.monotonic()
        return result

    # wall-clock stamps, to set against the writer's log
    def freeze(self):
        self.frozen_wall = time.time()
        return procedure.EvolveCopy.freeze(self)

    def thaw(self):
        result = procedure.EvolveCopy.thaw(self)
        self.thawed_wall = time.time()
        return result


def writer_timeline(path, frozen, thawed):
    """What the writer's log says around the window: when it was first
    refused (after the freeze), when it committed again (after the thaw),
    the refusals by error, and the longest pause between two attempts."""
    attempts = []
    with open(path) as f:
        for line in f:
            words = line.split()
            if len(words) >= 3 and words[0] in ('ok', 'refused', 'error'):
                attempts.append((float(words[-1]), words[0],
                                 words[2] if words[0] != 'ok' else ''))
    refused = [a for a in attempts if a[1] != 'ok' and a[0] >= frozen]
    first_refused = refused[0][0] if refused else None
    again = [a[0] for a in attempts if a[1] == 'ok' and a[0] > thawed]
    first_ok = again[0] if again else None
    during = [a for a in attempts if first_refused is not None and
              first_ok is not None and first_refused <= a[0] <= first_ok]
    pauses = [(b[0] - a[0], a[2], b[2] or b[1]) for a, b in zip(
        during, during[1:])]
    kinds = {}
    for a in during:
        if a[1] != 'ok':
            kinds[a[2]] = kinds.get(a[2], 0) + 1
    return dict(first_refused=first_refused, first_ok=first_ok,
                refusals=kinds, pause=max(pauses) if pauses else None)


def evolve_copy_window(root, size_mib, blobs, delta_bytes, delta_blobs,
                       writer=False):
    data = generate(root, size_mib, blobs)
    size = os.path.getsize(data.fs('1'))
    server = zeoserver.ZEOServer('127.0.0.1:%d' % zeoserver.free_port(),
                              os.path.join(root, 'zeo'))
    control = zeocontrol.DataServer(server, state.FS, state.BLOBS)
    control.thaw(data.dir('1'))
    log = None
    try:
        if writer:
            from collective.safedeploy.tests import writersupport
            writer = writersupport.Writer(
                zeoserver.format_address(server.address),
                os.path.join(root, 'writer'), interval=RETRY)
        out = io.StringIO()
        run = DeltaEvolveCopy(root, NOOP, control, out=out, progress=False)
        run.delta = (delta_bytes, delta_blobs)
        run.run()
        if writer:
            writer.wait_acknowledged(3)
            log = writer.stop()
    finally:
        if writer and log is None:
            writer.stop()
        server.stop()
    lines = out.getvalue().strip().splitlines()
    return dict(size=size, window=run.window, times=run.times,
                output=lines, data=data,
                refused=log.longest_refusal() if log else None,
                timeline=writer_timeline(
                    log.path, run.frozen_wall, run.thawed_wall) if log
                else None, frozen_wall=run.frozen_wall,
                thawed_wall=run.thawed_wall)


def timed(args, **kw):
    started = time.monotonic()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.monotonic() - started


def repozo_window(data, work, delta_bytes, delta_blobs):
    """Full backup (before the window), delta, then incremental backup +
    restore (the window)."""
    repozo = os.path.join(os.path.dirname(sys.executable), 'repozo')
    fs = data.fs('1')
    backups = os.path.join(work, 'repozo')
    os.makedirs(backups)
    timed([repozo, '-B', '-F', '-r', backups, '-f', fs])
    time.sleep(1.1)   # repozo names backups by the second
    append_delta(data, delta_bytes, delta_blobs)
    backup = timed([repozo, '-B', '-r', backups, '-f', fs])
    restore = timed([repozo, '-R', '-r', backups, '-o',
                     os.path.join(work, 'restored.fs')])
    return backup + restore, backup, restore


def crb_window(data, work, delta_bytes, delta_blobs):
    """collective.recipe.backup's bin/backup + bin/restore."""
    from collective.recipe.backup import main as crb
    logging.getLogger('collective.recipe.backup').setLevel(logging.WARNING)
    bin_dir = os.path.dirname(sys.executable)
    target = os.path.join(work, 'crb-restored')
    os.makedirs(os.path.join(target, 'filestorage'))
    storage = dict(
        storage='1', datafs=data.fs('1'), blobdir=data.blobs('1'),
        backup_location=os.path.join(work, 'crb', 'backups'),
        blob_backup_location=os.path.join(work, 'crb', 'blobstoragebackups'))
    for p in (storage['backup_location'], storage['blob_backup_location']):
        os.makedirs(p)
    options = dict(keep=0, verbose=False, backup_blobs=True,
                   only_blobs=False, use_rsync=bool(shutil.which('rsync')))
    crb.backup_main(bin_dir, storage, full=True, **options)
    time.sleep(1.1)
    append_delta(data, delta_bytes, delta_blobs)
    started = time.monotonic()
    crb.backup_main(bin_dir, storage, full=False, **options)
    backup = time.monotonic() - started
    restore_storage = dict(storage, datafs=os.path.join(
        target, 'filestorage', 'Data.fs'), blobdir=os.path.join(
            target, 'blobstorage'))
    argv, sys.argv = sys.argv, ['restore']   # it reads a date from argv
    try:
        started = time.monotonic()
        crb.restore_main(bin_dir, restore_storage, no_prompt=True, **dict(
            (k, v) for k, v in options.items() if k != 'keep'))
        restore = time.monotonic() - started
    finally:
        sys.argv = argv
    return backup + restore, backup, restore


def append_delta(data, delta_bytes, delta_blobs):
    """The same delta, written directly (no server runs for the
    baselines)."""
    server = zeoserver.ZEOServer('127.0.0.1:%d' % zeoserver.free_port(),
                              os.path.join(data.path, 'zeo-baseline'))
    server.start(data.fs('1'), data.blobs('1'))
    try:
        write_delta(server.address, delta_bytes, delta_blobs)
    finally:
        server.stop()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size-mib', type=int, default=400)
    p.add_argument('--blobs', type=int, default=3000)
    p.add_argument('--keep', help='work in DIR and keep it')
    p.add_argument('-v', '--verbose', action='store_true')
    args = p.parse_args(argv)
    if args.verbose:
        from collective.safedeploy.core import cli
        cli.setup_logging(verbose=1)
    work = args.keep or tempfile.mkdtemp(prefix='evolve-window-')
    os.makedirs(work, exist_ok=True)
    delta_bytes = args.size_mib * MiB // 100
    delta_blobs = max(args.blobs // 100, 1)
    try:
        print('generating %d MiB Data.fs + %d blobs; delta %d MiB + %d blobs'
              % (args.size_mib, args.blobs, delta_bytes // MiB, delta_blobs))
        one = evolve_copy_window(os.path.join(work, 'data1'), args.size_mib,
                                 args.blobs, delta_bytes, delta_blobs,
                                 writer=True)
        for line in one['output']:
            print('  ' + line)
        data = one['data']
        # the baselines start from production's (untouched) generation 1
        rz, rz_b, rz_r = repozo_window(data, work, delta_bytes, delta_blobs)
        crb, crb_b, crb_r = crb_window(data, work, delta_bytes, delta_blobs)
        two = evolve_copy_window(os.path.join(work, 'data2'),
                                 2 * args.size_mib, args.blobs, delta_bytes,
                                 delta_blobs)
        for line in two['output']:
            print('  ' + line)
        w1, w2 = one['window'], two['window']
        print()
        print('Data.fs %.0f MiB, %d blobs, delta %.0f MiB + %d blobs' % (
            one['size'] / MiB, args.blobs, delta_bytes / MiB, delta_blobs))
        print('evolve-copy read-only window:       %7.3f s (catch-up %.3f s,'
              ' evolve %.3f s)' % (w1, one['times']['catch_up'],
                                   one['times']['evolve']))
        difference = one['refused'] - w1
        print('writer\'s longest refused interval: %7.3f s (window %.3f s, '
              'difference %+.3f s; retry interval %.3f s: %s)' % (
                  one['refused'], w1, difference, RETRY,
                  'within it' if abs(difference) <= RETRY else
                  'outside it'))
        t = one['timeline']
        if t['first_refused'] and t['first_ok']:
            print('  writer: first refused %.3f s after the freeze began, '
                  'first commit %.3f s after the thaw returned' % (
                      t['first_refused'] - one['frozen_wall'],
                      t['first_ok'] - one['thawed_wall']))
            print('  writer: refusals %s; longest pause between two '
                  'attempts %.3f s (%s, then %s)' % (
                      ', '.join('%s x%d' % kv for kv in sorted(
                          t['refusals'].items())), *t['pause']))
        print('repozo incremental backup+restore:  %7.3f s (%.3f + %.3f)  '
              'ratio %.1fx' % (rz, rz_b, rz_r, rz / w1))
        print('collective.recipe.backup backup+restore: %7.3f s (%.3f + '
              '%.3f)  ratio %.1fx' % (crb, crb_b, crb_r, crb / w1))
        print('evolve-copy window at %.0f MiB:      %7.3f s  ratio to %.0f '
              'MiB: %.2f' % (two['size'] / MiB, w2, one['size'] / MiB,
                             w2 / w1))
    finally:
        if not args.keep:
            fsutil.remove_tree(work)


if __name__ == '__main__':
    main()
