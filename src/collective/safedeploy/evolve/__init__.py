"""Running evolve (migration) steps on a database, one commit per step.

:mod:`.runners` knows the three kinds of evolve ``bin/evolve-copy`` runs:
repoze.evolution-style packages, zope.generations schema managers and a
plain ``module:function(root, commit)``; :mod:`.reindex` helps a step
re-index only what it changed.
"""
from .reindex import Reindexer
from .runners import EvolveError
from .runners import Step
from .runners import evolve
from .runners import runner_for

__all__ = ['EvolveError', 'Reindexer', 'Step', 'evolve', 'runner_for']
