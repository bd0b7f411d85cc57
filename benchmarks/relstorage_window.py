"""The read-only window of bin/evolve-copy on RelStorage/PostgreSQL at two
database sizes, against stop -> pg_dump -> pg_restore -> start of the same
database in the same run.

    .venv/bin/python benchmarks/relstorage_window.py [--size-mib 50]
        [--blobs 100]

A cluster of its own is started (initdb into a temporary directory, a
Unix socket only) and removed at the end.  A site database of about
``--size-mib`` (history-free, blobs as large objects) is adopted as
generation 1; a client stays connected (the site runs), so the copy is
made by pg_dump/pg_restore while it runs.  After the copy, a fixed delta
(50 transactions) is committed, then evolve-copy freezes, catches up,
evolves (one step), verifies and switches: its window is what it prints.
The baseline is what the window is without evolve-copy: the site stopped
while pg_dump and pg_restore copy the database (then the evolve would
run).  The same is measured on a database twice the size: the window of
evolve-copy depends on the delta, the baseline on the size.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'src'))

import transaction  # noqa: E402
from BTrees.OOBTree import OOBTree  # noqa: E402
from ZODB.blob import Blob  # noqa: E402

from collective.safedeploy.data.relstorage import RelStorageRoot  # noqa
from collective.safedeploy.evolve.relstorage import \
    RelStorageEvolveCopy  # noqa: E402
from collective.safedeploy.tests import pgsupport  # noqa: E402

MiB = 1 << 20
OBJECT = 8 * 1024


def bump(root, commit):
    root['generation'] = root.get('generation', 0) + 1
    commit('bump')


def generate(root, tmp, size_mib, blobs):
    with root.admin() as cur:
        cur.execute('CREATE DATABASE %s' % root.site)
    db = pgsupport.open_db(root.dsn, os.path.join(tmp, 'gen-blobs'),
                           create=True)
    blob_bytes = size_mib * MiB // 2
    objects = (size_mib * MiB - blob_bytes) // OBJECT
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    r = conn.root()
    r['writes'] = OOBTree()
    r['data'] = OOBTree()
    for i in range(objects):
        r['data'][i] = os.urandom(OBJECT)
        if i % 500 == 0:
            tm.commit()
    for i in range(blobs):
        b = Blob()
        with b.open('w') as f:
            f.write(os.urandom(blob_bytes // max(blobs, 1)))
        r['b%d' % i] = b
        if i % 50 == 0:
            tm.commit()
    tm.commit()
    conn.close()
    db.close()
    root.adopt()


def delta(db, n=50):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    for i in range(n):
        conn.root()['writes'][time.monotonic()] = os.urandom(OBJECT)
        tm.commit()
    conn.close()


def measure(cluster, size_mib, blobs, name):
    tmp = tempfile.mkdtemp(prefix='rsbench-')
    try:
        root = RelStorageRoot(os.path.join(tmp, 'data'), cluster.dsn(name))
        t = time.monotonic()
        generate(root, tmp, size_mib, blobs)
        print('%s: %d MiB database generated in %.1f s' % (
            name, size_mib, time.monotonic() - t))
        client = pgsupport.open_db(root.dsn, os.path.join(tmp, 'cl-blobs'))
        delta(client, 1)            # the site runs: a client is connected

        # evolve-copy, with the delta committed after prepare
        run = RelStorageEvolveCopy(root, __name__ + ':bump',
                                   say=lambda *a: None)
        prepare = run.prepare

        def prepare_then_write():
            result = prepare()
            delta(client)
            return result
        run.prepare = prepare_then_write
        run.run()
        window = run.window
        client.close()

        # baseline: the site stopped, pg_dump, pg_restore, started again
        env = root.libpq_env()
        dump = os.path.join(tmp, 'dump')
        t = time.monotonic()
        with root.admin() as cur:
            root.terminate(cur, [root.site])         # stop
            cur.execute('CREATE DATABASE %s_restored' % name)
        subprocess.run(['pg_dump', '-Fc', '-f', dump, '-d', root.site],
                       env=env, check=True)
        subprocess.run(['pg_restore', '--no-owner', '-d', name + '_restored',
                        dump], env=env, check=True)
        client = pgsupport.open_db(cluster.dsn(name + '_restored'),
                                   os.path.join(tmp, 'cl2-blobs'))
        client.close()                                # started
        baseline = time.monotonic() - t
        return window, baseline, run.times
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    import logging
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--size-mib', type=int, default=50)
    p.add_argument('--blobs', type=int, default=100)
    args = p.parse_args()
    reason = pgsupport.missing()
    if reason:
        print('cannot run: %s' % reason)
        return 1
    cluster = pgsupport.Cluster().start()
    os.environ['PATH'] = cluster.tool_env()['PATH']
    try:
        rows = []
        for size, name in ((args.size_mib, 'bench_a'),
                           (2 * args.size_mib, 'bench_b')):
            window, baseline, times = measure(cluster, size, args.blobs,
                                              name)
            rows.append((size, window, baseline))
            print('%4d MiB: evolve-copy read-only window %.3f s (catch-up '
                  '%.3f s, evolve %.3f s); stop -> pg_dump -> pg_restore -> '
                  'start %.3f s; ratio %.3f' % (
                      size, window, times['catch_up'], times['evolve'],
                      baseline, window / baseline))
        print('window at %d MiB / window at %d MiB: %.2f (1.0: independent '
              'of the size); baseline ratio %.2f' % (
                  rows[1][0], rows[0][0], rows[1][1] / rows[0][1],
                  rows[1][2] / rows[0][2]))
    finally:
        cluster.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
