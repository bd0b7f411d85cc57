"""Errors a user can fix.

Every error that reaches a user is a :class:`SafeDeployError`: one sentence
saying what is wrong and what to do.  Commands turn it into one line on
stderr and a non-zero exit code (:func:`collective.safedeploy.core.cli.
main`); the buildout extension and the recipes turn it into a
``zc.buildout.UserError``.
"""


class SafeDeployError(Exception):
    """Something the operator can fix; the message says how."""

    exit_code = 1


class ConfigurationError(SafeDeployError):
    """An option or argument has a value we refuse."""


class Busy(SafeDeployError):
    """Another build, rollback or copy holds the lock."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class NotFound(SafeDeployError):
    """A release, generation, snapshot or index does not exist."""


class Refused(SafeDeployError):
    """The operation would lose, overwrite or expose something; nothing
    was done."""


class Damaged(SafeDeployError):
    """A record we wrote (journal line, manifest, index record) does not
    read back as what we write."""


class HealthCheckFailed(SafeDeployError):
    """The site did not become healthy after a flip."""


class CommandFailed(SafeDeployError):
    """An external command failed or could not run."""
