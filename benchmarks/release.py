"""Benchmarks of the release core, ratios against baselines measured in
the same run (absolute times on shared machines mean little).

    .venv/bin/python benchmarks/release.py [--rounds 5]

1. bin/rollback with a 1 MB and with a 2 GB shared data directory:
   rollback must not touch data, so the ratio should be about 1.0.
2. A new release build with warm caches (the extension) against a plain
   bin/buildout of the same configuration into an empty directory: the
   target ratio is at most 1.15.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'src'))

from collective.safedeploy.tests import support  # noqa: E402

CONFIG = '''\
parts = app rollback
find-links += {wheels}
{extension}

[safedeploy]
index = off
shared = var

[app]
recipe = zc.recipe.egg
eggs =
    hello
    ZODB
    zc.lockfile

[rollback]
recipe = collective.safedeploy:rollback
'''


def timed(args, cwd):
    started = time.perf_counter()
    r = support.run(args, cwd=cwd)
    elapsed = time.perf_counter() - started
    if r.returncode:
        raise SystemExit('failed: %s\n%s' % (' '.join(args), r.output))
    return elapsed


def site(extension=True):
    sample = support.SampleBuildout()
    sample.write_config(CONFIG.format(
        wheels=support.built_wheels(),
        extension='extensions = collective.safedeploy' if extension else ''))
    return sample


def fill(directory, size):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, 'Data.fs')
    with open(path, 'wb') as f:
        os.posix_fallocate(f.fileno(), 0, size)
        f.write(os.urandom(min(size, 1 << 20)))


def bench_rollback(rounds):
    results = {}
    sites = {}
    for label, size in (('1 MB', 1 << 20), ('2 GB', 2 << 30)):
        s = site()
        fill(s.path('var'), size)
        for tag in ('1.0', '1.1'):
            s.buildout('safedeploy:tag=%s' % tag)
        sites[label] = s
        results[label] = []
    rollback = lambda s, tag: timed([s.path('bin', 'rollback'), tag],
                                    s.directory)
    for i in range(rounds):
        for label, s in sites.items():   # interleaved: same conditions
            results[label].append(rollback(s, '1.0' if i % 2 == 0
                                           else '1.1'))
    for s in sites.values():
        s.cleanup()
    small = statistics.median(results['1 MB'])
    large = statistics.median(results['2 GB'])
    print('rollback, 1 MB shared data:  median %.3f s' % small)
    print('rollback, 2 GB shared data:  median %.3f s' % large)
    print('ratio 2 GB / 1 MB: %.2f   (target: about 1.0)' % (large / small))


def bench_build(rounds):
    s = site()
    s.buildout('safedeploy:tag=warm')           # warm the shared caches
    plain_times, release_times = [], []
    for i in range(rounds):
        plain = site(extension=False)           # an empty directory
        plain_times.append(timed([support.BUILDOUT], plain.directory))
        plain.cleanup()
        release_times.append(timed(
            [support.BUILDOUT, 'safedeploy:tag=r%d' % i], s.directory))
    s.cleanup()
    p = statistics.median(plain_times)
    r = statistics.median(release_times)
    print('plain bin/buildout into an empty directory: median %.3f s' % p)
    print('new release with warm caches:               median %.3f s' % r)
    print('ratio release / plain: %.2f   (target: <= 1.15)' % (r / p))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=5)
    args = parser.parse_args()
    support.require_site_venv()
    bench_rollback(args.rounds)
    bench_build(args.rounds)


if __name__ == '__main__':
    main()
