"""What every command shares: the parent parser, one-line errors,
interrupts and output.

Conventions (pipx, repozo): a command's ``main(argv=None)`` only parses
and dispatches through :func:`main` here; errors the operator can fix are
:class:`SafeDeployError` and end here as one line on stderr with a
non-zero exit code, never a traceback.  ``-h``/``--help`` anywhere on the
command line prints to stdout and exits 0; a long option is never
abbreviated (an unknown one is a usage error).  Ctrl-C, SIGTERM and
SIGHUP end a command with one line saying so (exit 130, 143, 129); a
command that changes something says where it left things through
``on_interrupt``.  A closed stdout (``| head``) ends it quietly (exit
141).  Listings offer ``--json``; a listing flag never acts.

A command prints its result on stdout, once; the library logs the steps
along the way (and what it did on its own, such as pruning) through
``logging`` to stderr -- ``-q`` keeps only what went wrong -- and logs at
debug level what it returns for the command to print.
"""
import argparse
import json
import logging
import os
import signal
import sys

from .errors import SafeDeployError

logger = logging.getLogger('collective.safedeploy')

SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


class Interrupted(BaseException):
    """A signal asked us to stop (raised where the process was)."""

    def __init__(self, signum):
        BaseException.__init__(self, signum)
        self.signum = signum
        self.exit_code = SIGNAL_EXIT.get(signum, 128 + signum)

    def __str__(self):
        return 'interrupted by %s' % signal.Signals(self.signum).name


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def handle_signals():
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`Interrupted` (the
    cleanup code of the step that was running then runs)."""
    for signum in SIGNAL_EXIT:
        signal.signal(signum, _raise_interrupted)


def ignore_signals():
    """Within a step that must not be cut in two (a flip back), signals
    wait; returns what to call to restore and deliver them."""
    pending = []

    def remember(signum, frame):
        pending.append(signum)
    previous = {s: signal.signal(s, remember) for s in SIGNAL_EXIT}

    def restore(deliver=True):
        for s, handler in previous.items():
            signal.signal(s, handler)
        if pending and deliver:
            raise Interrupted(pending[0])
    return restore


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too, an option can name the
    options it goes with (:meth:`add_companion`), an abbreviated long
    option is refused (``--dest`` is not ``--destroy``: a destructive
    command never runs on a guess) and ``-h``/``--help`` anywhere asks for
    the help (``--restore --help`` too)."""

    def __init__(self, *args, **kw):
        # set here, for every command: passing allow_abbrev is an error
        super().__init__(*args, allow_abbrev=False, **kw)
        self.companions = []

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        if self.add_help and asks_for_help(args):
            self.print_help()
            self.exit(0)
        return super().parse_known_args(args, namespace)

    def print_help(self, file=None):
        super().print_help(file)   # argparse ignores a failed write
        if file is not None and file is not sys.stdout:
            return
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            pass
        if reader_gone():
            # ``bin/snapshot --help | head -1``: as for any output
            self.exit(stdout_closed())

    def error(self, message):
        self.exit(2, '%s: error: %s (see %s --help)\n' % (
            self.prog, message, self.prog))

    def add_companion(self, modes, *names, **kw):
        """An option that only means something with one of ``modes``
        (``'--list'``, ...): given without any of them it is a usage
        error, "--json goes with --list", and nothing is done."""
        action = self.add_argument(*names, **kw)
        self.companions.append((action, modes))
        return action

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        for action, modes in self.companions:
            if getattr(parsed, action.dest) in (None, False) or any(
                    getattr(parsed, mode.lstrip('-').replace('-', '_'))
                    for mode in modes):
                continue
            self.error('%s goes with %s' % (action.option_strings[0],
                                            _either(modes)))
        return parsed


HELP = ('-h', '--help')


def asks_for_help(args):
    """Whether ``-h`` or ``--help`` is one of ``args`` (before a ``--``,
    after which nothing is an option).  An argument that is exactly
    ``--help`` is never an option's value: argparse does not take it as
    one (it fails "expected one argument" instead); a value that is
    ``--help`` is given as ``--option=--help``, one argument, not this."""
    if '--' in args:
        args = args[:args.index('--')]
    return any(a in HELP for a in args)


def _either(names):
    if len(names) == 1:
        return names[0]
    return '%s or %s' % (', '.join(names[:-1]), names[-1])


def add_json(p, *modes):
    """``--json``: the listing of ``modes`` (default ``--list``) printed
    as JSON for scripts."""
    modes = modes or ('--list',)
    p.add_companion(modes, '--json', action='store_true',
                    help='with %s: print JSON' % _either(modes))


def add_storage(p):
    """``--storage`` and ``--dsn``: which kind of storage the data is
    (the part's ``storage`` and ``dsn`` options)."""
    p.add_argument('--storage', type=value,
                   help='filestorage (default) or relstorage')
    p.add_argument('--dsn', type=value,
                   help='with --storage relstorage: the clients\' libpq DSN')


def with_command_line(options, args, names):
    """The recipe's ``options`` with the values given on the command line
    (``args``) in their place: the command line wins."""
    merged = dict(options)
    for name in names:
        given = getattr(args, name, None)
        if given is not None:
            merged[name] = given
    return merged


def common():
    """The parent parser of every command: -v, -q."""
    p = ArgumentParser(add_help=False)
    p.add_argument('-v', '--verbose', action='count', default=0,
                   help='say more (twice: debug output)')
    p.add_argument('-q', '--quiet', action='store_true',
                   help='say only what went wrong')
    return p


def parser(prog, description, **kw):
    return ArgumentParser(prog=prog, description=description,
                          parents=[common()], **kw)


def value(text):
    """An argparse type for an argument that must not be empty: an empty
    string is an invalid value, never "absent"."""
    if not text.strip():
        raise argparse.ArgumentTypeError('an empty value is not allowed')
    return text


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


def main(prog, parser, dispatch, argv=None, on_interrupt=None):
    """Parse ``argv`` with ``parser``, call ``dispatch(args)`` and turn
    what it raises into one line on stderr and an exit code.
    ``on_interrupt()`` returns the words saying where an interrupt left
    things (e.g. "current still points to 1.0")."""
    args = parser.parse_args(argv)
    setup_logging(getattr(args, 'verbose', 0), getattr(args, 'quiet', False))
    return run(prog, dispatch, args, on_interrupt=on_interrupt)


def finished():
    """The work is done (or refused): a signal now changes nothing, so it
    is ignored rather than turning a finished command into a killed one
    (SIG_IGN: it holds through the interpreter's shutdown too).  In a
    long-lived process that calls commands in-process and starts others
    (:data:`EMBEDDED`), a handler that does nothing is used instead: an
    ignored signal would stay ignored in every process started later."""
    for signum in SIGNAL_EXIT:
        signal.signal(signum, _ignore if EMBEDDED else signal.SIG_IGN)


#: set by a process that calls the commands in-process (a test runner)
EMBEDDED = False


def _ignore(signum, frame):
    pass


def run(prog, function, *args, on_interrupt=None, **kw):
    """Call ``function``; turn a SafeDeployError, OSError or interrupt into
    one line on stderr and an exit code.  Returns the exit code."""
    try:
        try:
            return _run(prog, function, *args, on_interrupt=on_interrupt,
                        **kw)
        finally:
            finished()
    except (KeyboardInterrupt, Interrupted) as e:
        # the interrupt came while the error itself was being reported
        return getattr(e, 'exit_code', 130)


def _run(prog, function, *args, on_interrupt=None, **kw):
    try:
        handle_signals()
        result = function(*args, **kw)
        # what is still buffered, while a closed pipe can be told apart
        sys.stdout.flush()
    except SafeDeployError as e:
        _say(prog, 'error: %s' % e)
        return e.exit_code
    except ImportError as e:
        if not database_missing(e):
            raise
        _say(prog, 'error: this command needs ZODB, which this Python cannot '
                   'import (%s); install collective.safedeploy[zodb], or run '
                   'the command the recipe generated in the site\'s bin '
                   'directory' % e)
        return 1
    except BrokenPipeError as e:
        if not reader_gone():
            return _os_error(prog, e)
        return stdout_closed()
    except OSError as e:
        return _os_error(prog, e)
    except (KeyboardInterrupt, Interrupted) as e:
        code = getattr(e, 'exit_code', 130)
        where = getattr(e, 'safedeploy_where', '')
        if not where and on_interrupt is not None:
            try:
                where = on_interrupt() or ''
            except Exception:
                where = ''
        _say(prog, '%s%s' % (str(e) if isinstance(e, Interrupted)
                              else 'interrupted', '; ' + where if where
                              else ''))
        return code
    return result or 0


#: the database: the site's dependencies (collective.safedeploy[zodb]),
#: imported by the commands that open it when they do, so that the others
#: and every ``--help`` run without them
DATABASE_PACKAGES = ('ZODB', 'ZEO', 'transaction', 'persistent', 'BTrees',
                     'zc.beforestorage', 'ZConfig', 'zodbpickle')


def database_missing(error):
    """Whether the ImportError ``error`` is a database package that is not
    installed (not a site's evolve package, nor a broken install)."""
    name = getattr(error, 'name', None) or ''
    return any(name == p or name.startswith(p + '.')
               for p in DATABASE_PACKAGES)


def _os_error(prog, e):
    where = ' (%s)' % e.filename if getattr(e, 'filename', None) else ''
    _say(prog, 'error: %s%s; nothing was changed past that point' % (
        e.strerror or e, where))
    return 1


#: the exit code of a command whose output nobody reads any more
#: (``bin/snapshot --list | head -3``): 128 + SIGPIPE, what the shell
#: reports for a Unix tool the signal ended there (``ls | head`` under
#: ``set -o pipefail``), in line with 130, 143 and 129 above -- rather
#: than Python's 1, which a script cannot tell from a failure
PIPE_CLOSED = 128 + signal.SIGPIPE


def reader_gone():
    """Whether stdout is a pipe (or socket) whose reading end was closed:
    a broken pipe of our own output, not of a process we write to."""
    import select
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP)
                   for _, events in poll.poll(0))
    except (AttributeError, ValueError, OSError):
        return False


def stdout_closed():
    """The reader of stdout went away: end quietly, as Unix tools do.
    Python's recipe (the signal module's "Note on SIGPIPE"): stdout is
    pointed at devnull, so that what is still buffered, flushed when the
    interpreter exits, does not fail again with a second message.
    Returns :data:`PIPE_CLOSED`."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, ValueError, OSError):
        pass      # not a file (a test's StringIO): nothing is flushed later
    return PIPE_CLOSED


def _say(prog, text):
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_closed()     # the line below still says what went wrong
    sys.stderr.write('%s: %s\n' % (prog, text))
    sys.stderr.flush()


def prog_name(default):
    """The name the command was run as (bin/snapshot -> snapshot)."""
    name = os.path.basename(sys.argv[0] if sys.argv else '')
    if name in ('', '-c', '__main__.py') or name.endswith('.py'):
        return default
    return name


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


def count(n, thing):
    """``n`` things: 1 snapshot, 3 snapshots."""
    return '%d %s%s' % (n, thing, '' if n == 1 else 's')


def human(n):
    """A size in bytes for people."""
    if n is None:
        return '?'
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if abs(n) < 1024 or unit == 'TiB':
            return ('%d %s' if unit == 'B' else '%.1f %s') % (n, unit)
        n /= 1024.0


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
