"""After a flip: the ``after-flip`` command, then the health gate.

``after-flip`` is a command line from the configuration (e.g.
``bin/supervisorctl restart all``), split with :func:`shlex.split` and run
without a shell.  ``health-check`` is an ``http(s)://`` URL that must
answer 2xx or 3xx, or a command that must exit 0; it is retried until
``health-timeout`` seconds have passed.
"""
import logging
import os
import shlex
import subprocess
import time
import urllib.error
import urllib.request

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
    if not command:
        return None
    args = shlex.split(command)
    logger.info('after-flip: %s', command)
    try:
        p = subprocess.run(args, cwd=cwd, env=_env(tag, release, previous))
    except OSError as e:
        return 'after-flip command %r could not run: %s' % (command, e.strerror)
    if p.returncode:
        return 'after-flip command %r exited with %d' % (command, p.returncode)
    return None


def _check_url(url, remaining):
    try:
        with urllib.request.urlopen(url, timeout=max(min(remaining, 10), 0.5)
                                    ) as response:
            return None if response.status < 400 else 'HTTP %d' % (
                response.status)
    except urllib.error.HTTPError as e:
        return 'HTTP %d' % e.code
    except (urllib.error.URLError, OSError, ValueError) as e:
        return str(getattr(e, 'reason', e))


def _check_command(command, cwd, env, remaining):
    try:
        p = subprocess.run(shlex.split(command), cwd=cwd, env=env,
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL,
                           timeout=max(remaining, 0.5))
    except subprocess.TimeoutExpired:
        return 'timed out'
    except OSError as e:
        return e.strerror
    return None if p.returncode == 0 else 'exit code %d' % p.returncode


def health_check(check, timeout, cwd, tag=None, release=None, previous=None):
    """Poll until healthy; return None or the last reason it was not."""
    if not check:
        return None
    is_url = check.startswith(('http://', 'https://'))
    env = _env(tag, release, previous)
    deadline = time.monotonic() + float(timeout)
    logger.info('health check: %s (up to %ss)', check, timeout)
    while True:
        remaining = deadline - time.monotonic()
        if is_url:
            reason = _check_url(check, remaining)
        else:
            reason = _check_command(check, cwd, env, remaining)
        if reason is None:
            return None
        if time.monotonic() + POLL_INTERVAL > deadline:
            return 'health check %s failed within %ss: %s' % (
                check, timeout, reason)
        time.sleep(POLL_INTERVAL)
