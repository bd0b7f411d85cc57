"""After a flip: the ``after-flip`` command, then the health gate.

``after-flip`` is a command line from the configuration (e.g.
``bin/supervisorctl restart all``), run without a shell
(:mod:`~collective.safedeploy.core.commands`).  ``health-check`` is an
``http(s)://`` URL that must answer 2xx or 3xx, or a command that must
exit 0; it is retried until ``health-timeout`` seconds have passed.
Both get the release in their environment: ``SAFEDEPLOY_TAG``,
``SAFEDEPLOY_RELEASE`` (its directory), ``SAFEDEPLOY_PREVIOUS_TAG``.
"""
import logging
import os
import time

from ..core import commands
from ..core.errors import CommandFailed

logger = logging.getLogger('collective.safedeploy')

POLL_INTERVAL = 0.5


def _env(tag, release, previous):
    env = dict(os.environ)
    env['SAFEDEPLOY_TAG'] = tag or ''
    env['SAFEDEPLOY_RELEASE'] = release or ''
    env['SAFEDEPLOY_PREVIOUS_TAG'] = previous or ''
    return env


def after_flip(command, cwd, tag=None, release=None, previous=None):
    """Run the after-flip command; return None or the reason it failed."""
    args = commands.split(command, 'safedeploy:after-flip')
    if not args:
        return None
    logger.info('after-flip: %s', commands.describe(args))
    try:
        commands.run(args, what='after-flip command %r' %
                     commands.describe(args), cwd=cwd,
                     env=_env(tag, release, previous),
                     output=commands.SHOW)
    except CommandFailed as e:
        return str(e)
    return None


def _check_url(url, remaining):
    # imported here: urllib.request (http.client, ssl, email) is the
    # heaviest import of all, and only a URL health check needs it
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=max(min(remaining, 10), 0.5)
                                    ) as response:
            return None if response.status < 400 else 'HTTP %d' % (
                response.status)
    except urllib.error.HTTPError as e:
        return 'HTTP %d' % e.code
    except (urllib.error.URLError, OSError, ValueError) as e:
        return str(getattr(e, 'reason', e))


def _check_command(args, cwd, env, remaining):
    p = commands.run(args, cwd=cwd, env=env, output=commands.QUIET,
                     timeout=max(remaining, 0.5), check=False)
    if p.returncode is None:
        return 'timed out'
    if p.returncode == 127 and p.stdout:
        return p.stdout          # it could not run: why
    return None if p.returncode == 0 else 'exit code %d' % p.returncode


def health_check(check, timeout, cwd, tag=None, release=None, previous=None):
    """Poll until healthy; return None or the last reason it was not."""
    if not check:
        return None
    is_url = isinstance(check, str) and check.startswith(
        ('http://', 'https://'))
    args = None if is_url else commands.split(check,
                                              'safedeploy:health-check')
    env = _env(tag, release, previous)
    deadline = time.monotonic() + float(timeout)
    shown = check if is_url else commands.describe(args)
    logger.info('health check: %s (up to %ss)', shown, timeout)
    while True:
        remaining = deadline - time.monotonic()
        if is_url:
            reason = _check_url(check, remaining)
        else:
            reason = _check_command(args, cwd, env, remaining)
        if reason is None:
            return None
        if time.monotonic() + POLL_INTERVAL > deadline:
            return 'health check %s failed within %ss: %s' % (
                shown, timeout, reason)
        time.sleep(POLL_INTERVAL)
