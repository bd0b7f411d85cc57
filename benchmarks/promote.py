"""Requests refused or failed during bin/promote, and the longest request
latency inside the switch windows against the median outside them, in the
same run.

    .venv/bin/python benchmarks/promote.py [--promotions 3] [--writers 2]

A stage (a ZEO server and two WSGI clients) and its twin (one client)
behind a real HAProxy, as in the tests; writers and a reader send
requests through HAProxy while bin/promote runs ``--promotions`` times.
A switch window is a handover's freeze .. switch (from the journal).
"""
import argparse
import datetime
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'src'))

from collective.safedeploy.core.journal import Journal  # noqa: E402
from collective.safedeploy.tests import promotesupport  # noqa: E402


class Harness:
    """What the test fixtures need from a test case."""

    def __init__(self):
        self.cleanups = []

    def addCleanup(self, function, *args):
        self.cleanups.append((function, args))

    def skipTest(self, reason):
        sys.exit('cannot run: %s' % reason)

    def cleanup(self):
        for function, args in reversed(self.cleanups):
            try:
                function(*args)
            except Exception as e:
                print('cleanup: %s' % e)


def windows(journal):
    """[(start, end)] wall-clock seconds of each handover's freeze ..
    switch."""
    found, start = [], {}
    for e in journal.entries():
        if e['event'] != 'step-done':
            continue
        t = datetime.datetime.fromisoformat(e['time']).timestamp()
        handover, _, step = e['step'].partition('.')
        if step == 'copy':
            start[handover] = t
        elif step == 'switch' and handover in start:
            found.append((start.pop(handover), t))
    return found


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--promotions', type=int, default=3)
    p.add_argument('--writers', type=int, default=2)
    args = p.parse_args()
    harness = Harness()
    try:
        stage = promotesupport.Stage(harness)
        load = promotesupport.Load(stage.proxy.url, writers=args.writers)
        harness.addCleanup(load.stop)
        time.sleep(2)
        durations = []
        for _ in range(args.promotions):
            started = time.monotonic()
            result = stage.promote()
            durations.append(time.monotonic() - started)
            if result.returncode:
                sys.exit('bin/promote failed: %s' % result.stderr)
            time.sleep(1)
        load.stop()
        final = stage.dump()
        lost = [k for k in load.acked if k not in final]
        spans = windows(Journal(os.path.join(stage.stages, stage.name,
                                             '.journal')))
        inside = [s for t, s in load.latencies
                  if any(a <= t <= b for a, b in spans)]
        outside = [s for t, s in load.latencies
                   if not any(a <= t <= b for a, b in spans)]
        median = statistics.median(outside)
        print('promotions: %d, %.1f s each (median)' % (
            args.promotions, statistics.median(durations)))
        print('requests: %d, failed or refused: %d, acknowledged writes '
              'lost: %d' % (len(load.latencies), len(load.failed),
                            len(lost)))
        print('switch windows: %d, %.2f s in all' % (
            len(spans), sum(b - a for a, b in spans)))
        print('latency: longest inside the switch windows %.3f s, median '
              'outside %.4f s (ratio %.0f)' % (
                  max(inside or [0]), median,
                  max(inside or [0]) / median if median else 0))
        for line in load.failed[:5]:
            print('  failed: %s' % line)
    finally:
        harness.cleanup()


if __name__ == '__main__':
    main()
