"""Errors a user can fix.

Every error that reaches a user is a :class:`SafeDeployError`: one sentence
saying what is wrong and what to do.  Commands turn it into one line on
stderr and exit code 1 (see :func:`collective.safedeploy.cli.run`); the
buildout extension turns it into a ``zc.buildout.UserError``.
"""


class SafeDeployError(Exception):
    """Something the operator can fix; the message says how."""

    exit_code = 1


class ConfigurationError(SafeDeployError):
    """An option or argument has a value we refuse."""


class Busy(SafeDeployError):
    """Another build or rollback holds the lock."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class NotFound(SafeDeployError):
    """A release, generation or snapshot does not exist."""


class Refused(SafeDeployError):
    """The operation would lose or overwrite something; nothing was done."""


class HealthCheckFailed(SafeDeployError):
    """The site did not become healthy after a flip."""
