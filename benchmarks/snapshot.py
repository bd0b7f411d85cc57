"""Benchmark bin/snapshot against its baselines, measured in the same run.

    .venv/bin/python benchmarks/snapshot.py [--size-mib 400] [--blobs 3000]

On generated data (a Data.fs of --size-mib with history, --blobs blobs of
~100 KiB):

1. copy backend create of a first snapshot (one that starts a pool file:
   the first of a data root, or the first after a pack)  vs  ``cp
   Data.fs`` + ``cp -al blobstorage`` (target: at most 1.15x); and a
   create made durable (as before a release flip) vs the same cp
   followed by an fsync;
2. copy backend create  vs  collective.recipe.backup's snapshotbackup
   (target: at least 20x faster);
3. restore (copy, btrfs)  vs  collective.recipe.backup's snapshotrestore
   (target: at least 20x faster); for copy, the first restore of the
   newest snapshot (its Data.fs and blob tree handed over) and a second
   one of the same snapshot (its recorded part of Data.fs copied, its
   blob tree rebuilt from its links: what restoring an older snapshot
   costs) are both shown;
4. zfs and btrfs create at 1x and 2x the data (target: under 1 s);
5. the copy backend in O(delta): a second snapshot after +1 % writes
   (transactions and blobs: 1 % of the 1x data, the same writes at both
   sizes) vs snapshotbackup (target: at least 100x faster) and vs ``cp``
   + ``cp -al`` (at least 10x), at 1x and 2x the data (ratio 2x / 1x at
   most 1.1: the database's size alone costs nothing); the space 10
   snapshots taken 1 % apart hold (at most 1.2x one Data.fs + the
   blobs); the restore of the newest vs snapshotrestore (at least 20x).
   The second snapshot's figure is the median of 9, the two sizes taking
   turns.

Every measurement starts after a sync, with nothing left to write back.
collective.recipe.backup (and rsync) must be installed for 2 and 3;
btrfs needs root, btrfs-progs and loop devices; zfs needs zfs-fuse.
Parts that cannot run are reported as skipped.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'src'))

from collective.safedeploy.data import snapshot  # noqa: E402


def generate(root, size_mib, blobs, blob_kib=100):
    """Data.fs of ``size_mib`` (objects rewritten: history) and ``blobs``
    blobs in ``root/filestorage``, ``root/blobstorage``."""
    import transaction
    import ZODB
    from BTrees.OOBTree import OOBTree
    from ZODB.blob import Blob
    from ZODB.FileStorage import FileStorage
    os.makedirs(os.path.join(root, 'filestorage'))
    db = ZODB.DB(FileStorage(os.path.join(root, 'filestorage', 'Data.fs'),
                             blob_dir=os.path.join(root, 'blobstorage')))
    conn = db.open()
    r = conn.root()
    r['items'], r['blobs'] = OOBTree(), OOBTree()
    transaction.commit()
    chunk = 128 << 10
    text = os.urandom(chunk // 2).hex().encode()   # compresses like text
    fs = os.path.join(root, 'filestorage', 'Data.fs')
    i = 0
    while os.path.getsize(fs) < size_mib << 20:
        for j in range(8):
            i += 1
            r['items']['k%d' % (i % 400)] = text[j:] + b'%d' % i
        transaction.commit()
        db.cacheMinimize()
    for i in range(blobs):
        b = Blob()
        with b.open('w') as f:
            f.write(os.urandom(blob_kib << 10))
        r['blobs']['b%d' % i] = b
        if i % 100 == 99:
            transaction.commit()
    transaction.commit()
    conn.close()
    db.close()


def settle():
    """Start every measurement with nothing left to write back: the
    previous one's dirty pages would otherwise slow the next one down."""
    os.sync()
    time.sleep(1)


def timed(function, *args, **kw):
    settle()
    t = time.perf_counter()
    function(*args, **kw)
    return time.perf_counter() - t


def median(function, repeat):
    return statistics.median(function(i) for i in range(repeat))


def cp_baseline(data, work, i, sync=False):
    """``cp Data.fs`` + ``cp -al blobstorage`` (with ``sync``: then an
    fsync of the copy).  The copies stay until the whole series is done,
    like the snapshots do: on a virtual machine, writing into memory just
    freed by a removed copy is several times faster than into fresh
    memory, which would flatter the baseline."""
    gen = os.path.join(data, 'current')
    target = os.path.join(work, 'cp-%s-%d' % ('sync' if sync else 'plain',
                                              i))
    os.makedirs(target)
    settle()
    t = time.perf_counter()
    subprocess.run(['cp', os.path.join(gen, 'filestorage', 'Data.fs'),
                    os.path.join(target, 'Data.fs')], check=True)
    subprocess.run(['cp', '-al', os.path.join(gen, 'blobstorage'),
                    os.path.join(target, 'blobstorage')], check=True)
    if sync:
        fd = os.open(os.path.join(target, 'Data.fs'), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return time.perf_counter() - t


def remove_copies(work):
    for name in os.listdir(work):
        if name.startswith('cp-'):
            subprocess.run(['rm', '-rf', os.path.join(work, name)])


def crb_storage(data, backups):
    gen = os.path.realpath(os.path.join(data, 'current'))
    return dict(
        storage='1', datafs=os.path.join(gen, 'filestorage', 'Data.fs'),
        blobdir=os.path.join(gen, 'blobstorage'),
        backup_location=os.path.join(backups, 'backups'),
        snapshot_location=os.path.join(backups, 'snapshotbackups'),
        zip_location=os.path.join(backups, 'zipbackups'),
        blob_backup_location=os.path.join(backups, 'blobstoragebackups'),
        blob_snapshot_location=os.path.join(backups, 'blobstoragesnapshots'),
        blob_zip_location=os.path.join(backups, 'blobstoragezips'))


def crb(data, work):
    """(snapshotbackup seconds, snapshotrestore seconds) of
    collective.recipe.backup with its defaults, or None."""
    try:
        from collective.recipe.backup import main as crbmain
    except ImportError:
        return None
    bin_dir = os.path.dirname(sys.executable)
    if not os.path.exists(os.path.join(bin_dir, 'repozo')) or \
            shutil.which('rsync') is None:
        return None
    backups = os.path.join(work, 'crb')
    storage = crb_storage(data, backups)
    for key in ('snapshot_location', 'blob_snapshot_location'):
        os.makedirs(storage[key], exist_ok=True)
    kw = dict(verbose=False, backup_blobs=True, only_blobs=False,
              use_rsync=True, no_prompt=True, blob_timestamps=True)
    backup = timed(crbmain.snapshot_main, bin_dir, storage, keep=2,
                   full=True, keep_blob_days=14, **kw)
    argv, sys.argv = sys.argv, ['snapshotrestore']   # it reads a date here
    try:
        restore = timed(crbmain.snapshot_restore_main, bin_dir, storage,
                        **kw)
    finally:
        sys.argv = argv
    return backup, restore


def first_snapshot(options, name, durable=False):
    """Seconds of a snapshot that starts a new pool file (the first one of
    a data root, or the first after a pack): the snapshots before it are
    destroyed first, so it copies all of Data.fs and links every blob."""
    backend = snapshot.backend_for(options)
    for row in backend.snapshots():
        snapshot.destroy(options, row['name'])
    return timed(backend.create, name, durable=durable)


def copy_backend(data, work, repeat):
    # every restore keeps the generation it replaces: none is pruned
    # while a restore is timed (a pruned one adds its rm -rf)
    options = dict(data=data, backend='copy', keep='0',
                   keep_generations=str(2 * repeat + 2))
    create = median(lambda i: first_snapshot(options, 'c%d' % i), repeat)
    baseline = median(lambda i: cp_baseline(data, work, i), repeat)
    # before a release flip the snapshot is made durable before the flip
    durable = median(lambda i: first_snapshot(options, 'd%d' % i, True),
                     repeat)
    durable_baseline = median(lambda i: cp_baseline(data, work, i, True),
                              repeat)
    remove_copies(work)
    # the first restore of the newest snapshot hands its files over ...
    restores, agains = [], []
    for i in range(repeat):
        snapshot.create(options, 'r%d' % i)
        restores.append(timed(snapshot.restore, options, 'r%d' % i,
                              discard_writes=True))
        # ... restoring it again copies its part of Data.fs and links its
        # blob tree (what restoring an older snapshot costs)
        agains.append(timed(snapshot.restore, options, 'r%d' % i,
                            discard_writes=True))
    restore, again = statistics.median(restores), statistics.median(agains)
    return create, baseline, durable, durable_baseline, restore, again


def btrfs(data_src, work, repeat, image_gib=8):
    if os.geteuid() != 0 or shutil.which('mkfs.btrfs') is None:
        return None
    image = os.path.join(work, 'btrfs.img')
    mnt = os.path.join(work, 'btrfs')
    os.makedirs(mnt)
    subprocess.run(['truncate', '-s', '%dG' % image_gib, image], check=True)
    subprocess.run(['mkfs.btrfs', '-q', image], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(['mount', '-o', 'loop', image, mnt], check=True)
    try:
        results = []
        for n, src in enumerate(data_src):
            data = os.path.join(mnt, 'data%d' % n)
            subprocess.run(['btrfs', 'subvolume', 'create', data],
                           check=True, stdout=subprocess.DEVNULL)
            for part in ('filestorage', 'blobstorage'):
                subprocess.run(['cp', '-a', os.path.join(src, part), data],
                               check=True)
            snapshot.adopt(dict(data=data))
            options = dict(data=data, backend='btrfs', keep='0')
            create = median(lambda i: timed(
                snapshot.create, options, 'b%d' % i), repeat)
            restore = median(lambda i: timed(
                snapshot.restore, options, 'b0', discard_writes=True),
                repeat) if n == 0 else None
            results.append((create, restore))
        return results
    finally:
        subprocess.run(['umount', mnt])


def zfs(data_src, work, repeat, image_gib=6):
    if os.geteuid() != 0 or shutil.which('zpool') is None:
        return None
    if subprocess.run(['zpool', 'list'], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode:
        return None   # zfs-fuse not running
    pool = 'sdbench%d' % os.getpid()
    image = os.path.join(work, 'zfs.img')
    subprocess.run(['truncate', '-s', '%dG' % image_gib, image], check=True)
    subprocess.run(['zpool', 'create', '-o', 'cachefile=none', '-m', 'none',
                    pool, image], check=True)
    try:
        results = []
        for n, src in enumerate(data_src):
            data = os.path.join(work, 'zfs%d' % n)
            os.makedirs(data)
            subprocess.run(['zfs', 'create', '-o', 'mountpoint=%s' % data,
                            '%s/d%d' % (pool, n)], check=True)
            for part in ('filestorage', 'blobstorage'):
                subprocess.run(['cp', '-a', os.path.join(src, part), data],
                               check=True)
            snapshot.adopt(dict(data=data))
            options = dict(data=data, backend='zfs', keep='0',
                           dataset='%s/d%d' % (pool, n))
            create = median(lambda i: timed(
                snapshot.create, options, 'z%d' % i), repeat)
            results.append(create)
            subprocess.run(['zfs', 'unmount', '%s/d%d' % (pool, n)])
        return results
    finally:
        for _ in range(50):
            if subprocess.run(['zpool', 'destroy', '-f', pool]).returncode \
                    == 0:
                break
            time.sleep(0.2)


def grow(data, size, blobs, blob_kib=100):
    """Commit writes of about ``size`` bytes to Data.fs and ``blobs`` new
    blobs to the current data (what a site writes between snapshots)."""
    import transaction
    import ZODB
    from ZODB.blob import Blob
    from ZODB.FileStorage import FileStorage
    gen = os.path.join(data, 'current')
    fs = os.path.join(gen, 'filestorage', 'Data.fs')
    target = os.path.getsize(fs) + size
    db = ZODB.DB(FileStorage(fs, blob_dir=os.path.join(gen, 'blobstorage')))
    try:
        conn = db.open()
        r = conn.root()
        text = os.urandom(32 << 10).hex().encode()
        i = 0
        for n in range(blobs):
            b = Blob()
            with b.open('w') as f:
                f.write(os.urandom(blob_kib << 10))
            r['blobs']['g%d-%d' % (time.time_ns(), n)] = b
        transaction.commit()
        while os.path.getsize(fs) < target:
            for j in range(8):
                i += 1
                r['items']['k%d' % (i % 400)] = text[j:] + b'%d' % i
            transaction.commit()
        conn.close()
    finally:
        db.close()


def tree_bytes(root):
    """Apparent bytes of a tree, each file counted once."""
    from collective.safedeploy.data.backends.base import disk_usage
    return disk_usage(root)[0]


def delta_root(src, work, n):
    """A data root with the data of ``src`` and its first snapshot:
    (options, seconds of that first snapshot)."""
    data = os.path.join(work, 'delta%d' % n)
    os.makedirs(data)
    for part in ('filestorage', 'blobstorage'):
        subprocess.run(['cp', '-a', os.path.join(src, part), data],
                       check=True)
    snapshot.adopt(dict(data=data))
    options = dict(data=data, backend='copy', keep='0')
    return options, timed(snapshot.create, options, 's0')


def second_snapshots(roots, writes, rounds=9):
    """Section 5's measurement: in each round, at each data size in turn
    (so that what else the machine does weighs on both alike), the same
    writes (``writes``: bytes, blobs) then a snapshot.  The seconds of
    each size's snapshots."""
    times = [[] for _ in roots]
    for i in range(rounds):
        for options, runs in zip(roots, times):
            grow(options['data'], *writes)
            runs.append(timed(snapshot.create, options, 's%d' % (i + 1)))
    return times


def delta_report(options, work, n, first, times, repeat, crb_times):
    """Section 5's lines for one data size; its second snapshot's median
    seconds."""
    data = options['data']
    second = statistics.median(times)
    baseline = median(lambda i: cp_baseline(data, work, 100 * n + i), repeat)
    remove_copies(work)
    gen = os.path.join(data, 'current')
    one = os.path.getsize(os.path.join(gen, 'filestorage', 'Data.fs')) + \
        tree_bytes(os.path.join(gen, 'blobstorage'))
    space = tree_bytes(os.path.join(data, 'snapshots'))
    restore = timed(snapshot.restore, options, 's%d' % len(times),
                    discard_writes=True)
    print('%dx data: first snapshot %.3f s, second after +1 %% writes '
          '%.3f s (median of %d)' % (n, first, second, len(times)))
    print('  cp + cp -al %.3f s: %.1fx faster (target >= 10x)' % (
        baseline, baseline / second))
    if crb_times:
        print('  c.r.backup snapshotbackup %.3f s: %.1fx faster (target '
              '>= 100x)' % (crb_times[0], crb_times[0] / second))
        print('  c.r.backup snapshotrestore %.3f s, restore of the newest '
              '%.3f s: %.1fx faster (target >= 20x)' % (
                  crb_times[1], restore, crb_times[1] / restore))
    print('  space of %d snapshots 1 %% apart: %.0f MiB = %.2fx one Data.fs '
          '+ the blobs (%.0f MiB; target <= 1.2x)' % (
              len(times) + 1, space / 2 ** 20, space / one, one / 2 ** 20))
    return second


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size-mib', type=int, default=400)
    p.add_argument('--blobs', type=int, default=3000)
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--work', default=None,
                   help='a directory with room for ~4x the data')
    p.add_argument('--no-double', action='store_true',
                   help='skip the 2x data size runs')
    p.add_argument('--delta-only', action='store_true',
                   help='only section 5 (snapshots in O(delta))')
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix='safedeploy-bench-', dir=args.work)
    try:
        src = os.path.join(work, 'src1')
        t = timed(generate, src, args.size_mib, args.blobs)
        size = os.path.getsize(os.path.join(src, 'filestorage', 'Data.fs'))
        print('generated Data.fs %.0f MiB + %d blobs of 100 KiB in %.1f s'
              % (size / 2 ** 20, args.blobs, t))
        sources = [src]
        if not args.no_double:
            src2 = os.path.join(work, 'src2')
            generate(src2, args.size_mib * 2, args.blobs * 2)
            sources.append(src2)

        if args.delta_only:
            seconds, crbs = [], []
            # 1 % of the 1x data, written before each snapshot at both sizes
            writes = (size // 100, max(1, args.blobs // 100))
            for n, source in enumerate(sources):
                data = os.path.join(work, 'crb%d' % n)
                os.makedirs(data)
                for part in ('filestorage', 'blobstorage'):
                    subprocess.run(['cp', '-a', os.path.join(source, part),
                                    data], check=True)
                snapshot.adopt(dict(data=data))
                crb_times = crb(data, work + '/crb-%d' % n)
                if crb_times is None:
                    print('collective.recipe.backup: skipped (not '
                          'installed, or no repozo/rsync)')
                subprocess.run(['rm', '-rf', data, work + '/crb-%d' % n])
                crbs.append(crb_times)
            roots = [delta_root(source, work, n + 1)
                     for n, source in enumerate(sources)]
            times = second_snapshots([options for options, _ in roots],
                                     writes)
            for n, ((options, first), runs, crb_times) in enumerate(
                    zip(roots, times, crbs)):
                seconds.append(delta_report(options, work, n + 1, first,
                                            runs, args.repeat, crb_times))
            if len(seconds) == 2:
                print('second snapshot at 2x / at 1x: %.2f (target <= 1.1)'
                      % (seconds[1] / seconds[0]))
            return
        data = os.path.join(work, 'copy')
        os.makedirs(data)
        for part in ('filestorage', 'blobstorage'):
            subprocess.run(['cp', '-a', os.path.join(src, part), data],
                           check=True)
        snapshot.adopt(dict(data=data))
        create, baseline, durable, durable_baseline, restore, again = \
            copy_backend(data, work, args.repeat)
        print('copy backend first snapshot %6.3f s   cp + cp -al %7.3f s   '
              'ratio %.2fx (target <= 1.15x)' % (
                  create, baseline, create / baseline))
        print('  made durable (before a release flip) %.3f s   cp + cp -al '
              '+ fsync %.3f s   ratio %.2fx' % (
                  durable, durable_baseline, durable / durable_baseline))
        crb_times = crb(data, work)
        if crb_times is None:
            print('collective.recipe.backup: skipped (not installed, or no '
                  'repozo/rsync)')
        else:
            print('c.r.backup snapshotbackup %6.3f s   copy backend %.3f s  '
                  ' %.1fx faster (target >= 20x)' % (
                      crb_times[0], create, crb_times[0] / create))
            print('c.r.backup snapshotrestore %5.3f s   copy restore %.3f s  '
                  ' %.1fx faster (target >= 20x)' % (
                      crb_times[1], restore, crb_times[1] / restore))
            print('c.r.backup snapshotrestore %5.3f s   copy restore of the '
                  'same snapshot again %.3f s   %.1fx faster' % (
                      crb_times[1], again, crb_times[1] / again))
        bt = btrfs(sources, work, args.repeat)
        if bt is None:
            print('btrfs: skipped (needs root and btrfs-progs)')
        else:
            for n, (c, r) in enumerate(bt):
                print('btrfs create (%dx data)  %7.3f s (target < 1 s)'
                      % (n + 1, c))
            if crb_times:
                print('c.r.backup snapshotrestore %5.3f s   btrfs restore '
                      '%.3f s   %.1fx faster (target >= 20x)' % (
                          crb_times[1], bt[0][1], crb_times[1] / bt[0][1]))
        z = zfs(sources, work, args.repeat)
        if z is None:
            print('zfs: skipped (needs root and a running zfs-fuse)')
        else:
            for n, c in enumerate(z):
                print('zfs create (%dx data)    %7.3f s (target < 1 s)'
                      % (n + 1, c))
    finally:
        subprocess.run(['rm', '-rf', work])


if __name__ == '__main__':
    main()
