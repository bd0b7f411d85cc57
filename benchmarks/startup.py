"""Benchmark the start-up of the listing commands against ``python -c
pass`` on the same interpreter, measured in the same run.

    .venv/bin/python benchmarks/startup.py [--repeat 20]

Runs ``bin/snapshot --list``, ``bin/rollback --list`` and ``bin/index
--list`` as their generated scripts do (the interpreter, then the
command's ``main``) on a small data root, releases and indexes directory;
target: at most 2x ``python -c pass``.  Also shows which third-party
packages each command imports (ZODB and friends only when a command needs
them).
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
SRC = os.path.join(HERE, '..', 'src')
sys.path.insert(0, SRC)

COMMANDS = {
    'snapshot': 'from collective.safedeploy.data.snapshot import main; '
                'sys.exit(main(["--list"], data=sys.argv[1]))',
    'rollback': 'from collective.safedeploy.release.rollback import main; '
                'sys.exit(main(["--list"], releases_directory=sys.argv[2], '
                'current=sys.argv[3]))',
    'index': 'from collective.safedeploy.index.command import main; '
             'sys.exit(main(["--list"], indexes=sys.argv[4]))',
}


def run(code, args, env):
    t = time.perf_counter()
    subprocess.run([sys.executable, '-c', 'import sys; ' + code] + args,
                   env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--repeat', type=int, default=20)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix='safedeploy-startup-')
    try:
        from collective.safedeploy.data import snapshot
        from collective.safedeploy.tests import zodbsupport as zs
        data = os.path.join(work, 'var')
        os.makedirs(data)
        zs.make_site_data(data, transactions=5, blobs=2)
        snapshot.adopt(dict(data=data))
        snapshot.create(dict(data=data, backend='copy'), 's1')
        releases = os.path.join(work, 'releases')
        indexes = os.path.join(work, 'indexes')
        os.makedirs(releases)
        os.makedirs(indexes)
        argv = [data, releases, os.path.join(work, 'current'), indexes]
        env = dict(os.environ, PYTHONPATH=os.path.abspath(SRC))
        base = statistics.median(run('pass', argv, env)
                                 for _ in range(args.repeat))
        print('python -c pass            %.1f ms' % (base * 1000))
        for name, code in COMMANDS.items():
            t = statistics.median(run(code, argv, env)
                                  for _ in range(args.repeat))
            imported = subprocess.run(
                [sys.executable, '-c', 'import sys; ' + code.replace(
                    'sys.exit(', 'print(sorted({m.split(".")[0] for m in '
                    'sys.modules if m.split(".")[0] in ("ZODB", "ZEO", '
                    '"BTrees", "persistent", "transaction", "zc", '
                    '"pkginfo", "packaging", "setuptools")}))#')] + argv,
                env=env, stdout=subprocess.PIPE, text=True).stdout.strip()
            print('bin/%-8s --list       %.1f ms   %.2fx (target <= 2x)   '
                  'imports %s' % (name, t * 1000, t / base,
                                  imported.splitlines()[-1]
                                  if imported else '?'))
    finally:
        shutil.rmtree(work, True)


if __name__ == '__main__':
    main()
