"""What every command shares: argument parsing, one-line errors, output.

Conventions (pipx, repozo): a command's ``main(argv=None)`` only parses and
dispatches; errors the operator can fix are :class:`SafeDeployError` and
end here as one line on stderr with a non-zero exit code, never a
traceback.  ``--help`` prints to stdout and exits 0.  Listing commands
offer ``--json``.
"""
import argparse
import json
import logging
import os
import sys

from .errors import SafeDeployError

logger = logging.getLogger('collective.safedeploy')


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too."""

    def error(self, message):
        self.exit(2, '%s: error: %s (see %s --help)\n' % (
            self.prog, message, self.prog))


def setup_logging(verbose=0, quiet=False):
    level = logging.INFO
    if quiet:
        level = logging.WARNING
    if verbose:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter('%(message)s'))
    root = logging.getLogger('collective.safedeploy')
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def run(prog, function, *args, **kw):
    """Call ``function``; turn a SafeDeployError or OSError into one line
    on stderr and an exit code.  Returns the exit code."""
    try:
        result = function(*args, **kw)
    except SafeDeployError as e:
        sys.stderr.write('%s: error: %s\n' % (prog, e))
        return e.exit_code
    except OSError as e:
        where = ' (%s)' % e.filename if getattr(e, 'filename', None) else ''
        sys.stderr.write('%s: error: %s%s; nothing was changed past that '
                         'point\n' % (prog, e.strerror or e, where))
        return 1
    except KeyboardInterrupt:
        sys.stderr.write('%s: interrupted\n' % prog)
        return 130
    return result or 0


def print_json(obj):
    json.dump(obj, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write('\n')


def print_table(rows, columns):
    """``rows``: list of dicts; ``columns``: list of (key, heading)."""
    cells = [[h for _, h in columns]]
    for row in rows:
        cells.append(['' if row.get(k) is None else str(row.get(k))
                      for k, _ in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for r in cells:
        print('  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def isatty(stream=None):
    stream = stream or sys.stderr
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return False


class Progress:
    """Progress of a long copy on a terminal; silent when not on one."""

    def __init__(self, total, label, stream=None):
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = isatty(self.stream)
        self.done = 0
        self._shown = -1

    def update(self, n):
        self.done += n
        if not self.enabled:
            return
        percent = int(self.done * 100 / self.total)
        if percent != self._shown:
            self._shown = percent
            self.stream.write('\r%s: %3d%%' % (self.label, min(percent, 100)))
            self.stream.flush()

    def finish(self):
        if self.enabled and self._shown >= 0:
            self.stream.write('\n')
            self.stream.flush()
