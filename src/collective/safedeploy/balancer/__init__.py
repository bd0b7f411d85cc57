"""Load balancers in front of a stage: a small interface (``base``) and
its backends (``haproxy``, ``nginx``).  ``balancer.open(spec)`` turns a stage's
``balancer =`` line into a :class:`base.Balancer`."""
from .base import (  # noqa: F401
    DRAIN, MAINT, READY, STATES, Balancer, BalancerError, ServerState,
    open, parse_spec, register)
from . import haproxy  # noqa: F401  (registers the ``haproxy`` backend)
from . import nginx  # noqa: F401  (registers the ``nginx`` backend)
