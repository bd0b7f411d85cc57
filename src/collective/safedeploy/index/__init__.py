"""Versioned package indexes: one per release, built with compoze from a
shared pool, so that any release can be rebuilt exactly, offline.

- :mod:`.publish` -- what a release's publish step runs: record, pin,
  release develop packages, pool, index;
- :mod:`.records` -- the indexes (a store) and what each records;
- :mod:`.pool` -- every archive once, read-only; gc;
- :mod:`.sdist` -- develop packages as sdists with a version per tag;
- :mod:`.rebuild` -- a release built again from its index, offline;
- :mod:`.compoze` -- the one module that knows compoze;
- :mod:`.command` -- ``bin/index``.
"""
