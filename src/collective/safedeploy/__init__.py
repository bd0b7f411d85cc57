"""collective.safedeploy: atomic releases and data generations for ZODB sites.

The package, by concern:

- :mod:`.core` -- what both lifecycles stand on: the one store
  (immutable generations, an append-only journal, a lock, a ``current``
  link flipped atomically), crash-safe file operations, the one command
  runner, option checking and what every command shares;
- :mod:`.release` -- the code release lifecycle: settings, the steps
  (stage, build, verify, publish, flip, finish, roll back), the buildout
  extension, hooks, the pairing of releases with data, bin/rollback;
- :mod:`.data` -- the data lifecycle: the data root and its generations,
  FileStorage reading, consistent copies, verification, bin/snapshot and
  its backends (copy, btrfs, zfs);
- :mod:`.evolve` -- bin/evolve-copy: the procedure, its guard, evolve
  runners, rehearsal, switching back;
- :mod:`.zeo` -- the ZEO server of a data root: control, freezing in
  place, bootstrap;
- :mod:`.index` -- versioned package indexes: publish, pool, sdists,
  rebuild, the compoze shim, bin/index;
- :mod:`.recipes` -- the buildout recipes, one module each, thin shells
  over the library.
"""
