"""bin/evolve-copy: evolve scripts run on a copy of the database, never on
live data.

- :mod:`.procedure` -- the procedure, as its steps in run order: prepare
  -> freeze -> catch up -> evolve -> verify -> switch -> thaw;
- :mod:`.state` -- the data root seen by it, a run's state, resuming;
- :mod:`.guard` -- the process that thaws production if a run dies;
- :mod:`.runners` -- the three kinds of evolve, one commit per step;
- :mod:`.reindex` -- re-index only what a step changed;
- :mod:`.rehearse` -- the evolve in a copy-on-write sandbox;
- :mod:`.switchback` -- back to an older generation (for bin/rollback);
- :mod:`.command` -- the command line.

Evolve scripts use :class:`Reindexer` (``from collective.safedeploy.evolve
import Reindexer``).
"""
from .reindex import Reindexer
from .runners import EvolveError
from .runners import Step
from .runners import evolve
from .runners import runner_for

__all__ = ['EvolveError', 'Reindexer', 'Step', 'evolve', 'runner_for']
