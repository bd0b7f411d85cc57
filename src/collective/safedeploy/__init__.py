"""collective.safedeploy: atomic releases and data generations for ZODB sites.

The release lifecycle, one module per concern:

- :mod:`.generations` -- the one mechanism under both code releases and data
  generations: a directory of immutable generations, an append-only journal
  and a ``current`` link flipped atomically;
- :mod:`.release` -- the release lifecycle as named steps: stage, build,
  verify, publish, flip, roll back;
- :mod:`.extension` -- the zc.buildout extension that runs those steps around
  ``bin/buildout``;
- :mod:`.rollback` -- ``bin/rollback``;
- :mod:`.hooks` -- ``after-flip`` and the health gate;
- :mod:`.recipes` -- thin buildout recipes over the library functions.
"""
