"""Benchmark the start-up of the listing commands against ``python -c
pass`` on the same interpreter, measured in the same run.

    .venv/bin/python benchmarks/startup.py [--repeat 20]

Runs ``bin/snapshot --list``, ``bin/rollback --list`` and ``bin/index
--list`` as a site's bin directory holds them: scripts generated with
zc.buildout's script machinery and the recipes' first lines and default
arguments, over a small data root, releases and indexes directory
(``collective.safedeploy.tests.startupsupport``).  Target: at most 2x
``python -c pass``.

Two interpreters run the same scripts:

- ``site``: a fresh virtual environment of this Python with nothing
  installed.  The scripts' ``sys.path`` lists ``src`` and the
  dependencies' site-packages, as a site's scripts list the environment
  collective.safedeploy is installed in (or the eggs bin/buildout
  installed).  This is what an operator's scripts cost; the verdict is
  given on it.
- ``dev``: this checkout's ``.venv``.  Its editable install of
  collective.safedeploy adds an import finder through a ``.pth`` file that
  every start of that Python loads, ``python -c pass`` included.  A site's
  scripts do not pay it; here it makes the baseline slower and so the
  ratios look better than a site's: shown for comparison, not hidden.

Byte code is cached in a private directory and every command runs once
before it is timed (a site's eggs are byte-compiled when installed;
``PYTHONDONTWRITEBYTECODE`` in the environment would otherwise time the
compiler).  Each figure is the median of ``--repeat`` runs, the commands
and the baseline taking turns so that other work on the machine weighs on
all of them alike; ``cpu`` is the user + system time of the process,
which waiting for a busy processor does not inflate.  The ``import
argparse, json, logging`` line is the floor: the standard library every
command needs to parse its arguments and log; its parts are shown too
(``import json`` alone is what reading a journal needs).  ``stdlib
listing of nothing`` puts them to work: a parser with ``--list`` and
``--json``, a log handler, ``[]`` printed (building a parser imports
more of the standard library than importing argparse does); ``the same
without logging`` leaves the logging module out.  The last
column names what each command imports that ``python -c pass`` does
not, among the database, network, packaging and process modules no
listing needs (``startupsupport.HEAVY_PACKAGES``).

Last, ``bin/snapshot NAME`` of the same tiny database, with nothing
written since the previous snapshot and after one transaction, against
``cp Data.fs`` + ``cp -al blobstorage`` of it.
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, '..', 'src')
sys.path.insert(0, SRC)

from collective.safedeploy.tests import startupsupport  # noqa: E402


# what every command's argument parsing and logging needs (core/cli.py):
# no command can start faster than this
FLOOR = 'import argparse, json, logging'
# the parts of it: json alone is what reading a journal needs
PARTS = ('import json', 'import logging', 'import argparse')
# the same put to work, as a listing of nothing: a parser with --list and
# --json (building it imports shutil and gettext's locale too), a log
# handler, an empty JSON list printed
EMPTY_LISTING = (
    'import argparse, json, logging, sys; '
    'p = argparse.ArgumentParser(); '
    'p.add_argument("--list", action="store_true"); '
    'p.add_argument("--json", action="store_true"); '
    'a = p.parse_args(["--list", "--json"]); '
    'logging.getLogger("x").addHandler(logging.StreamHandler()); '
    'print(json.dumps([]))')
# the same without logging: a parser and JSON are all a listing could not
# do without (the --help and one-line usage errors every command has)
EMPTY_LISTING_UNLOGGED = (
    'import argparse, json, sys; '
    'p = argparse.ArgumentParser(); '
    'p.add_argument("--list", action="store_true"); '
    'p.add_argument("--json", action="store_true"); '
    'a = p.parse_args(["--list", "--json"]); '
    'print(json.dumps([]))')


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(args, env):
    """(wall, cpu) seconds of one run of ``args`` (its output discarded:
    a terminal's drawing is not the command's time)."""
    wall, cpu = time.perf_counter(), children_cpu()
    subprocess.run(args, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - wall, children_cpu() - cpu


def measure(commands, env, repeat):
    """{name: (median wall, median cpu)}; the commands take turns."""
    for args in commands.values():     # warm-up: byte code written
        run(args, env)
    times = {name: [] for name in commands}
    for _ in range(repeat):
        for name, args in commands.items():
            times[name].append(run(args, env))
    return {name: tuple(statistics.median(t[i] for t in runs)
                        for i in (0, 1))
            for name, runs in times.items()}


def write_one_transaction(data):
    """What a site writes between two snapshots, at its smallest."""
    import transaction
    import ZODB
    from ZODB.FileStorage import FileStorage
    current = os.path.join(data, 'current')
    db = ZODB.DB(FileStorage(
        os.path.join(current, 'filestorage', 'Data.fs'),
        blob_dir=os.path.join(current, 'blobstorage')))
    try:
        conn = db.open()
        conn.root()['written-%d' % time.time_ns()] = 1
        transaction.commit()
    finally:
        db.close()


def tiny_snapshots(python, script, work, env, repeat):
    """``bin/snapshot NAME`` of the listing site's tiny database (with no
    write since the previous snapshot, and after one transaction) against
    ``cp Data.fs`` + ``cp -al blobstorage`` of it, taking turns."""
    data = os.path.join(work, 'var')
    current = os.path.join(data, 'current')
    copies = os.path.join(work, 'copies')
    times = {'cp + cp -al': [], 'no write since the last': [],
             'after one transaction': []}
    for i in range(repeat + 1):
        target = os.path.join(copies, str(i))
        os.makedirs(target)
        cp = run(['sh', '-c', 'cp "$1" "$2" && cp -al "$3" "$4"', 'cp',
                  os.path.join(current, 'filestorage', 'Data.fs'),
                  os.path.join(target, 'Data.fs'),
                  os.path.join(current, 'blobstorage'),
                  os.path.join(target, 'blobstorage')], env)
        still = run([python, script, 'still-%d' % i], env)
        write_one_transaction(data)
        written = run([python, script, 'written-%d' % i], env)
        if i:                 # the first round writes the byte code
            for name, t in zip(times, (cp, still, written)):
                times[name].append(t)
    base_wall, base_cpu = (statistics.median(t[k] for t in times[
        'cp + cp -al']) for k in (0, 1))
    print('bin/snapshot NAME of a tiny database (site python), against '
          'cp Data.fs + cp -al blobstorage:')
    for name, runs in times.items():
        wall, cpu = (statistics.median(t[k] for t in runs) for k in (0, 1))
        print('  %-24s %6.1f ms %5.2fx   cpu %5.1f ms %5.2fx' % (
            name, wall * 1000, wall / base_wall, cpu * 1000,
            cpu / base_cpu))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--repeat', type=int, default=20)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix='safedeploy-startup-')
    try:
        scripts = startupsupport.listing_site(work)
        clean = os.path.join(work, 'site-python')
        venv.EnvBuilder(with_pip=False, symlinks=True).create(clean)
        pythons = {'site': os.path.join(clean, 'bin', 'python'),
                   'dev': sys.executable}
        env = dict(os.environ, PYTHONPYCACHEPREFIX=os.path.join(
            work, 'pycache'))
        env.pop('PYTHONDONTWRITEBYTECODE', None)
        env.pop('PYTHONPATH', None)
        print('byte code cached in a private directory; median of %d runs'
              % args.repeat)
        missed = {'wall': [], 'cpu': []}
        for label, python in pythons.items():
            commands = {'python -c pass': [python, '-c', 'pass']}
            for code in (FLOOR,) + PARTS:
                commands[code] = [python, '-c', code]
            commands['stdlib listing of nothing'] = [
                python, '-c', EMPTY_LISTING]
            commands['  the same without logging'] = [
                python, '-c', EMPTY_LISTING_UNLOGGED]
            for name, _, listing in startupsupport.LISTINGS:
                commands['bin/%s %s' % (name, ' '.join(listing))] = [
                    python, scripts[name]] + listing
            times = measure(commands, env, args.repeat)
            base_wall, base_cpu = times['python -c pass']
            _, baseline = startupsupport.imported_modules(
                [python, '-c', 'pass'], env)
            for name, command in commands.items():
                wall, cpu = times[name]
                ratios = dict(wall=wall / base_wall, cpu=cpu / base_cpu)
                _, modules = startupsupport.imported_modules(command, env)
                extra = sorted({m.split('.')[0] for m in
                                startupsupport.heavy(modules - baseline)})
                for kind, ratio in ratios.items():
                    if label == 'site' and ratio > 2 and \
                            name.startswith('bin/'):
                        missed[kind].append(name)
                print('%-4s %-24s %6.1f ms %5.2fx   cpu %5.1f ms %5.2fx   '
                      'heavy imports: %s' % (
                          label, name, wall * 1000, ratios['wall'],
                          cpu * 1000, ratios['cpu'],
                          ', '.join(extra) or 'none'))
        for kind, names in missed.items():
            print('target, site, %s time: at most 2x python -c pass: %s' % (
                kind, 'missed by ' + ', '.join(names) if names else 'met'))
        tiny_snapshots(pythons['site'], scripts['snapshot'], work, env,
                       args.repeat)
    finally:
        shutil.rmtree(work, True)


if __name__ == '__main__':
    main()
