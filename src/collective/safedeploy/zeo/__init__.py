"""The ZEO server of a data root.

- :mod:`.server` -- start, stop, freeze a real runzeo process;
- :mod:`.freeze` -- what runs inside it: freezing in place on SIGUSR1;
- :mod:`.bootstrap` -- runzeo with its imports done before the go
  (``python -m collective.safedeploy.zeo.bootstrap``);
- :mod:`.control` -- how evolve-copy freezes and thaws production (this
  server, or a freeze-command / thaw-command pair);
- :mod:`.command` -- ``zeo-server start|stop|status``.
"""
