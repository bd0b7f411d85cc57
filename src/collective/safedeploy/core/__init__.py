"""What both lifecycles stand on.

- :mod:`.store` -- the one store: immutable generations in a directory,
  an append-only journal, a lock and (optionally) a ``current`` link
  flipped atomically; it acts only on what it created;
- :mod:`.journal` -- the append-only journal of JSON lines;
- :mod:`.lock` -- one writer at a time (zc.lockfile);
- :mod:`.fsutil` -- crash-safe writes, links, removals;
- :mod:`.commands` -- the one way to run an external command;
- :mod:`.options` -- option values checked once, with one-line errors;
- :mod:`.cli` -- what every command shares: the parent parser, one-line
  errors, interrupts, output;
- :mod:`.errors` -- the errors a user can fix.
"""
