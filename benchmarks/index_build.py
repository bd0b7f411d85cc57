"""How long publishing a release's package index takes, warm and cold,
and its share of a warm release build.

    .venv/bin/python benchmarks/index_build.py [--releases N] [--quick]

A site of at least 50 distributions: the wheelhouse's ZODB/ZEO/waitress
closure plus small generated wheels, and one develop package (released
as an sdist into each index).

1. In process: ``index.publish.publish`` for a first tag (cold pool), then for
   further tags with the same distributions (warm pool), and compoze's
   index step alone.
2. Real releases with the release extension (``bin/buildout
   safedeploy:tag=...``), warm eggs: ``index = off`` (the baseline) and
   ``index = required``; the difference is what the index costs a release.

Targets: warm index build <= 2 s; its share of a warm release build.
"""
import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'src'))

from collective.safedeploy.index import compoze as compozeshim  # noqa: E402
from collective.safedeploy.index import pool as index_pool
from collective.safedeploy.index import publish as index_publish
from collective.safedeploy.index import records
from collective.safedeploy.tests import support  # noqa: E402
from collective.safedeploy.tests.test_index_support import (  # noqa: E402
    entry, make_wheel, wheelhouse_distributions, OFFLINE_PIP)

GENERATED = 40


def build_inputs(root):
    wheels = os.path.join(root, 'wheels')
    generated = [make_wheel(wheels, 'bench.dist%02d' % i, '1.%d' % i,
                            payload='x' * (2000 * i))
                 for i in range(GENERATED)]
    dists = wheelhouse_distributions() + [
        entry(os.path.basename(w).split('-')[0].replace('_', '.'),
              os.path.basename(w).split('-')[1], w) for w in generated]
    source = os.path.join(root, 'src', 'app')
    os.makedirs(os.path.join(source, 'src', 'app'))
    with open(os.path.join(source, 'pyproject.toml'), 'w') as f:
        f.write('[build-system]\nrequires = ["setuptools"]\n'
                'build-backend = "setuptools.build_meta"\n'
                '[project]\nname = "app"\nversion = "1.0"\n'
                '[tool.setuptools.packages.find]\nwhere = ["src"]\n')
    with open(os.path.join(source, 'src', 'app', '__init__.py'), 'w') as f:
        f.write('VERSION = "1.0"\n')
    develop = entry('app', '1.0', develop=True, source=source)
    return wheels, dists, develop


def timed(function, *args, **kw):
    start = time.perf_counter()
    result = function(*args, **kw)
    return time.perf_counter() - start, result


def in_process(root, dists, develop, releases):
    os.makedirs(root)
    pool, indexes = os.path.join(root, 'pool'), os.path.join(root, 'indexes')
    with open(os.path.join(root, 'buildout.cfg'), 'w') as f:
        f.write('[buildout]\nparts =\n')

    def publish(tag, distributions):
        release = os.path.join(root, 'releases', tag)
        os.makedirs(release)
        return index_publish.publish(tag, dict(distributions=distributions),
                             release, pool, indexes)

    compozeshim.install()        # imports (zc.buildout, compoze) once
    cold, record = timed(publish, 'cold', dists + [develop])
    n = len(record['distributions'])
    warm = [timed(publish, 'warm%d' % i, dists + [develop])[0]
            for i in range(releases)]
    no_develop = [timed(publish, 'plain%d' % i, dists)[0]
                  for i in range(releases)]
    # compoze's index step alone, on the links of one index
    only = os.path.join(root, 'compoze-only')
    os.makedirs(only)
    for name in os.listdir(os.path.join(indexes, 'warm0')):
        if index_pool.ARCHIVE.match(name):
            os.symlink(os.path.realpath(os.path.join(indexes, 'warm0', name)),
                       os.path.join(only, name))
    compoze_time, _ = timed(compozeshim.build_index, only)
    return dict(n=n, cold=cold, warm=statistics.median(warm),
                warm_all=warm, no_develop=statistics.median(no_develop),
                compoze=compoze_time)


CONFIG = '''\
[buildout]
eggs-directory = {eggs}
download-cache = {cache}
find-links =
    {wheelhouse}
    {wheels}
index = {empty}
allow-hosts = *.example.invalid
newest = false
show-picked-versions = false
extensions = collective.safedeploy
develop = src/app
parts = app

[safedeploy]
index = {mode}
keep = 100

[app]
recipe = zc.recipe.egg
eggs =
    app
    ZODB
    ZEO
    waitress
{generated}
interpreter = py
'''


def with_extension(root, wheels, develop, releases):
    support.require_site_venv()
    site = os.path.join(root, 'site')
    shutil.copytree(os.path.dirname(develop['source']),
                    os.path.join(site, 'src'))
    empty = os.path.join(site, '.empty-index')
    os.makedirs(empty)
    eggs, cache = os.path.join(root, 'eggs'), os.path.join(root, 'cache')
    generated = '\n'.join('    bench.dist%02d' % i for i in range(GENERATED))

    def build(tag, mode):
        with open(os.path.join(site, 'buildout.cfg'), 'w') as f:
            f.write(CONFIG.format(eggs=eggs, cache=cache, wheels=wheels,
                                  wheelhouse=support.WHEELHOUSE, empty=empty,
                                  mode=mode, generated=generated))
        start = time.perf_counter()
        result = support.run([support.BUILDOUT, '-N',
                              'safedeploy:tag=%s' % tag], cwd=site,
                             env=OFFLINE_PIP)
        elapsed = time.perf_counter() - start
        if result.returncode:
            raise SystemExit('release %s failed:\n%s' % (tag, result.output))
        found = re.search(r'package index .* in ([0-9.]+) s', result.output)
        return elapsed, float(found.group(1)) if found else 0.0

    build('cold', 'off')                      # eggs and cache warm up
    off = [build('off%d' % i, 'off')[0] for i in range(releases)]
    build('first-index', 'required')          # the pool warms up
    required = [build('req%d' % i, 'required') for i in range(releases)]
    tags = records.tags(os.path.join(site, 'indexes'))
    record = records.read_record(os.path.join(site, 'indexes', tags[-1]))
    # the index's share, measured inside each build: load on the machine
    # slows both parts alike
    shares = [inside / total for total, inside in required]
    return dict(off=statistics.median(off),
                required=statistics.median(t for t, _ in required),
                inside=statistics.median(i for _, i in required),
                share=statistics.median(shares),
                n=len(record['distributions']))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--releases', type=int, default=5,
                   help='warm releases per measurement (median)')
    p.add_argument('--quick', action='store_true',
                   help='only the in-process measurement')
    p.add_argument('--keep', action='store_true',
                   help='keep the temporary site (its path is printed)')
    args = p.parse_args()
    os.environ.update(OFFLINE_PIP)
    root = tempfile.mkdtemp(prefix='safedeploy-bench-index-')
    try:
        wheels, dists, develop = build_inputs(root)
        r = in_process(os.path.join(root, 'inproc'), dists, develop,
                       args.releases)
        print('index.publish.publish, %d distributions (1 develop package):'
              % r['n'])
        print('  cold pool                 %6.3f s' % r['cold'])
        print('  warm pool (median of %d)   %6.3f s   target <= 2 s: %s' % (
            args.releases, r['warm'], 'met' if r['warm'] <= 2 else 'MISSED'))
        print('  warm, no develop package  %6.3f s' % r['no_develop'])
        print('  compoze index step alone  %6.3f s' % r['compoze'])
        print('  warm / cold               %6.2f' % (r['warm'] / r['cold']))
        if args.quick:
            return
        e = with_extension(root, wheels, develop, args.releases)
        print('warm release builds with the extension, %d distributions '
              '(median of %d):' % (e['n'], args.releases))
        print('  index = off (baseline)    %6.3f s' % e['off'])
        print('  index = required          %6.3f s   ratio required/off '
              '%.2f' % (e['required'], e['required'] / e['off']))
        print('  index build inside it     %6.3f s   = %.0f%% of the warm '
              'release build' % (e['inside'], 100 * e['share']))
    finally:
        if args.keep:
            print('kept %s' % root)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    main()
