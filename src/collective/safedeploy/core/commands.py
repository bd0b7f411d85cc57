"""The one way to run an external command.

Hooks (``after-flip``, a command ``health-check``, ``freeze-command`` /
``thaw-command``, the client commands of a data switch), the filesystem
tools (``zfs``, ``btrfs``), buildout and pip sub-commands: every one is an
argument list (never a shell string built from configuration), with an
optional timeout, and a failure is one line naming the command and the
last thing it said.

Command lines that come from the configuration are split with
:func:`split` when the configuration is read, so a bad quote is refused
before anything changes -- and so is shell syntax (``>> log``, ``|``,
``&&``, ``$VARIABLE``, a backtick), which without a shell would be
passed on as arguments and do nothing of what it says
(:func:`shell_syntax`).  What a hook needs a shell for goes into a script
the hook names; the environment variables it is given
(``SAFEDEPLOY_DATA``, ``SAFEDEPLOY_TAG``, ...) are the script's to read.

Processes that outlive the command that starts them (the ZEO server,
evolve-copy's guard) and the one pipe between two commands (``zfs send |
zfs receive``) are started where they are managed
(:mod:`collective.safedeploy.zeo.server`, :mod:`collective.safedeploy.
evolve.guard`, :mod:`collective.safedeploy.data.backends.zfs`).
"""
import logging
import re
import shlex
import shutil

from .errors import CommandFailed
from .errors import ConfigurationError

logger = logging.getLogger('collective.safedeploy')

# what to do with a command's output
SHOW = 'show'          # let it through to our stdout/stderr (after-flip)
CAPTURE = 'capture'    # keep stdout and stderr; the last line said goes
                       # into the error
QUIET = 'quiet'        # throw it away (a health check polled many times)
STDOUT = 'stdout'      # keep stdout (the command's answer), show stderr


def split(command, where, protect=()):
    """A configured command line as an argument list; ``where`` names the
    option for the error (``safedeploy:after-flip``).

    ``protect``: paths that stay one word wherever they appear, spaces and
    all -- the buildout directory, so that the documented
    ``${buildout:directory}/bin/supervisorctl restart app`` works in a
    directory whose name has a space."""
    if isinstance(command, (list, tuple)):
        return list(command)
    command = (command or '').strip()
    if not command:
        return []
    holders = {}
    for n, path in enumerate(p for p in protect if p and ' ' in p):
        holder = '\0%d\0' % n
        holders[holder] = path
        command = command.replace(path, holder)
    try:
        args = shlex.split(command)
    except ValueError as e:
        for holder, path in holders.items():
            command = command.replace(holder, path)
        raise ConfigurationError(
            'invalid command in %s: %s (%s); balance the quotes' % (
                where, command, e))
    syntax = shell_syntax(command)
    if syntax:
        for holder, path in holders.items():
            command = command.replace(holder, path)
        raise ConfigurationError(
            '%s: %r uses shell syntax (%s); commands run without a shell: '
            'put it in a script and name the script (quote an argument '
            'that holds such characters)' % (where, command, syntax))
    for holder, path in holders.items():
        args = [a.replace(holder, path) for a in args]
    return args


#: a shell's operators: |, ||, &, &&, ;, >, >>, <, <<, 2>, 2>&1, >& ...
OPERATOR = re.compile(r'\d*[|&;<>]+(?:(?<=&)[\d-]+)?')
#: what a shell expands, but not within single quotes: $NAME, ${NAME},
#: $(command); a backtick is read by itself
EXPANSION = re.compile(r'\$(\{[^}]*\}?|\(|[A-Za-z_][A-Za-z0-9_]*)')


def shell_syntax(command):
    """The first piece of shell syntax in ``command``, or None: an operator
    or a word-leading ``~`` outside quotes, an expansion or a backtick
    outside single quotes.
    Quotes and backslashes are read as a shell (and shlex) reads them:
    ``'a > b'`` and ``\\>`` are arguments."""
    quote = None
    i = 0
    while i < len(command):
        c = command[i]
        if quote == "'":
            if c == "'":
                quote = None
        elif c == '\\':
            i += 1                  # the next character is an argument's
        elif c == quote:
            quote = None
        elif quote is None and c in '\'"':
            quote = c
        elif quote is None and (c in '|&;<>' or c.isdigit() and (
                i == 0 or command[i - 1].isspace())):
            operator = OPERATOR.match(command, i)   # 2> if a word's start
            if operator:
                return operator.group()
        elif c == '`':
            return c
        elif c == '~' and quote is None and (
                i == 0 or command[i - 1].isspace()):
            return c                # ~ or ~user: a shell's home directory
        elif c == '$':
            expansion = EXPANSION.match(command, i)
            if expansion:
                return expansion.group()
        i += 1
    return None


def describe(args):
    return ' '.join(shlex.quote(a) for a in args)


def run(args, what=None, timeout=None, output=CAPTURE, cwd=None, env=None,
        check=True, input=None):
    """Run ``args``; return the CompletedProcess (``stdout`` and
    ``stderr`` hold the output when captured).  With ``check``, a
    non-zero exit, a timeout or
    a command that cannot start raises :class:`CommandFailed`: "``what``
    failed: <last line>".  ``what`` defaults to the command line."""
    # imported here: reading the configuration (split) and the listings
    # run no command, and start faster without it
    import subprocess
    args = [str(a) for a in args]
    what = what or describe(args[:3])
    logger.debug('running %s', describe(args))
    if output == SHOW:
        streams = dict(stdout=None, stderr=None)
    elif output == STDOUT:
        streams = dict(stdout=subprocess.PIPE, stderr=None)
    elif output == QUIET:
        streams = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        streams = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p = subprocess.run(args, cwd=cwd, env=env, timeout=timeout,
                           input=input, text=True,
                           stdin=None if input is not None else (
                               subprocess.DEVNULL if output not in (
                                   SHOW, STDOUT) else None),
                           **streams)
    except subprocess.TimeoutExpired:
        if not check:
            return subprocess.CompletedProcess(args, None, '')
        raise CommandFailed('%s did not finish within %s s' % (
            what, _seconds(timeout)))
    except OSError as e:
        if not check:
            return subprocess.CompletedProcess(args, 127, str(e.strerror))
        if shutil.which(args[0]) is None and '/' not in args[0]:
            raise CommandFailed('%s could not run: the %s command is not '
                                'installed' % (what, args[0]))
        raise CommandFailed('%s could not run: %s' % (what, e.strerror))
    if check and p.returncode:
        raise CommandFailed('%s failed (exit code %d)%s' % (
            what, p.returncode, _last_line(p.stderr) or _last_line(p.stdout)))
    return p


def _last_line(text):
    lines = [line.strip() for line in (text or '').splitlines()
             if line.strip()]
    return ': %s' % lines[-1][-300:] if lines else ''


def _seconds(timeout):
    return ('%g' % timeout) if timeout is not None else '?'
