"""The code release lifecycle.

- :mod:`.settings` -- the ``[safedeploy]`` options, checked once;
- :mod:`.lifecycle` -- the steps: stage, build, verify, publish, flip,
  finish, roll back;
- :mod:`.extension` -- the zc.buildout extension that runs them around
  ``bin/buildout``;
- :mod:`.hooks` -- after-flip and the health gate;
- :mod:`.distributions` -- which distributions a release used;
- :mod:`.pairing` -- which release ran on which data;
- :mod:`.rollback` -- ``bin/rollback``.
"""
