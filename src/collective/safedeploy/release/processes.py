"""bin/restart: the site's processes onto the release that is current.

usage: restart [--dry-run]

Run as ``after-flip`` (``after-flip = ${buildout:directory}/bin/restart``),
after every flip -- a release, a flip back, bin/rollback, bin/flip -- or
by hand.  What it restarts comes from the ``restart`` part's options:

zdaemon
    control scripts in the current release's ``bin`` (plone.recipe.
    zope2instance's ``instance``, plone.recipe.zeoserver's ``zeoserver``,
    any zdaemon ``zdctl`` script).  zdaemon's own ``restart`` restarts the
    program the daemon manager was started with -- the old release's
    ("zdrun is managing a different program") --, so each is *stopped*,
    the daemon manager waited for until it is gone, and *started* again
    through ``current/bin``: the new manager runs the current release's
    program.
supervisorctl, programs, supervisord
    supervisord started when none is running (with ``supervisord``
    given), ``supervisorctl reread`` and ``update`` (a release that adds or changes
    programs), then ``supervisorctl restart PROGRAMS``.  The programs must
    run through ``current`` (the extension writes collective.recipe.
    supervisor's configuration that way: safedeploy:through-current).

A process that does not come back fails the command (exit 1, one line):
as ``after-flip``, that fails the flip's health gate, and ``current`` goes
back to the previous release -- whose own ``after-flip`` restarts the
processes onto it.
"""
import logging
import os
import time

from ..core import cli
from ..core import commands
from ..core.errors import CommandFailed
from ..core.errors import Refused

logger = logging.getLogger('collective.safedeploy')

POLL_INTERVAL = 0.5
# zdctl status exits 3 and says so when no daemon manager runs
# (plone.recipe.zope2instance's bin/instance only says so: it exits 0)
ZDAEMON_NOT_RUNNING = 3
NOT_RUNNING = 'daemon manager not running'


def parser(prog='restart'):
    p = cli.parser(prog, 'Restart the processes onto the release current '
                   'now (zdaemon scripts: stop, then start through current; '
                   'supervisor programs: restart).')
    p.add_argument('--dry-run', '-n', action='store_true',
                   help='say what would be done, change nothing')
    return p


def _status(ctl, timeout):
    """(whether a daemon manager runs, what status said)."""
    p = commands.run([ctl, 'status'], output=commands.CAPTURE, check=False,
                     timeout=timeout)
    said = (p.stdout or '').strip()
    gone = p.returncode == ZDAEMON_NOT_RUNNING or NOT_RUNNING in said
    return not gone, said


def restart_zdaemon(ctl, timeout):
    """Stop the program ``ctl`` controls (whichever release's program the
    daemon manager runs), wait until the manager has exited, start it with
    ``ctl`` (the current release's)."""
    name = os.path.basename(ctl)
    if not os.path.exists(ctl):
        raise Refused('%s does not exist: the current release has no %s '
                      'script; fix the zdaemon option of the restart part'
                      % (ctl, name))
    up, said = _status(ctl, timeout)
    if up:
        logger.info('restart: %s stop', name)
        commands.run([ctl, 'stop'], what='%s stop' % name, timeout=timeout,
                     output=commands.CAPTURE)
        deadline = time.monotonic() + timeout
        while True:
            up, said = _status(ctl, timeout)
            if not up:
                break
            if time.monotonic() > deadline:
                raise CommandFailed(
                    '%s: the daemon manager did not exit within %s s after '
                    'stop (%s); stop it by hand, then run bin/restart again'
                    % (name, timeout, said.splitlines()[-1] if said else
                       'no answer'))
            time.sleep(POLL_INTERVAL)
    logger.info('restart: %s start', name)
    commands.run([ctl, 'start'], what='%s start' % name, timeout=timeout + 5,
                 output=commands.CAPTURE)
    up, said = _status(ctl, timeout)
    if not up or 'program running' not in said:
        raise CommandFailed('%s start: the program is not running (%s)' % (
            name, said.splitlines()[-1] if said else 'no answer'))
    logger.info('restart: %s: %s', name, said.splitlines()[-1])


def start_supervisord(supervisorctl, supervisord, timeout):
    """Start ``supervisord`` when ``supervisorctl`` reaches none."""
    p = commands.run([supervisorctl, 'pid'], output=commands.CAPTURE,
                     check=False, timeout=timeout)
    if p.returncode == 0 and (p.stdout or '').strip().isdigit():
        return False
    if not supervisord:
        raise CommandFailed(
            'supervisorctl reaches no supervisord (%s); start it, or give '
            'the restart part a supervisord to start' % (
                ((p.stdout or '') + (p.stderr or '')).strip().splitlines()
                or ['exit code %s' % p.returncode])[-1])
    logger.info('restart: starting %s', supervisord)
    commands.run([supervisord], what='supervisord', timeout=timeout,
                 output=commands.QUIET)
    deadline = time.monotonic() + timeout
    while True:
        p = commands.run([supervisorctl, 'pid'], output=commands.CAPTURE,
                         check=False, timeout=timeout)
        if p.returncode == 0 and (p.stdout or '').strip().isdigit():
            return True
        if time.monotonic() > deadline:
            raise CommandFailed('supervisord did not answer within %s s '
                                'after it was started' % timeout)
        time.sleep(POLL_INTERVAL)


def restart_supervisor(supervisorctl, programs, timeout, supervisord=None):
    """reread, update, restart ``programs`` (``all`` for every one)."""
    start_supervisord(supervisorctl, supervisord, timeout)
    for action in (['reread'], ['update'], ['restart'] + list(programs)):
        logger.info('restart: supervisorctl %s', ' '.join(action))
        p = commands.run([supervisorctl] + action, output=commands.CAPTURE,
                         check=False, timeout=timeout)
        said = ((p.stdout or '') + (p.stderr or '')).strip()
        for line in said.splitlines():
            logger.info('  %s', line)
        if p.returncode or 'ERROR' in said:
            raise CommandFailed('supervisorctl %s failed: %s' % (
                ' '.join(action), said.splitlines()[-1] if said else
                'exit code %s' % p.returncode))


def restart(current, zdaemon=(), supervisorctl=None, programs=('all',),
            timeout=60, dry_run=False, supervisord=None):
    if not os.path.isdir(current):
        raise Refused('%s does not point to a release; nothing to restart '
                      'onto' % current)
    tag = os.path.basename(os.path.realpath(current))
    ctls = [name if os.path.isabs(name) else
            os.path.join(current, 'bin', name) for name in zdaemon]
    if dry_run:
        for ctl in ctls:
            print('would restart %s: stop, then start (release %s)' % (
                ctl, tag))
        if supervisorctl:
            print('would run %s reread, update, restart %s' % (
                supervisorctl, ' '.join(programs)))
        return 0
    for ctl in ctls:
        restart_zdaemon(ctl, timeout)
    if supervisorctl:
        restart_supervisor(supervisorctl, programs, timeout, supervisord)
    print('restarted onto release %s: %s' % (tag, ', '.join(
        [os.path.basename(c) for c in ctls] +
        (['supervisor: %s' % ' '.join(programs)] if supervisorctl else []))
        or 'nothing configured'))
    return 0


def main(argv=None, current=None, zdaemon=(), supervisorctl=None,
         programs=('all',), timeout=60, supervisord=None):
    args = parser().parse_args(argv)
    cli.setup_logging(args.verbose, args.quiet)
    current = current or os.path.join(os.getcwd(), 'current')
    return cli.run('restart', restart, current, list(zdaemon),
                   supervisorctl or None, list(programs), float(timeout),
                   args.dry_run, supervisord or None)
