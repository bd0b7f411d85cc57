"""The data lifecycle: a site's data in generations, copied, verified and
snapshotted while the site runs.

- :mod:`.layout` -- the data root: generations behind a ``current`` link,
  and what a generation holds;
- :mod:`.filestorage` -- reading a Data.fs's transaction headers;
- :mod:`.copy` -- consistent copies: Data.fs up to its committed end,
  blobs hard-linked, catch-up of the tail;
- :mod:`.verify` -- a copy opens, ends where it should, has its blobs;
- :mod:`.mounts` -- which filesystem holds a path; zfs and btrfs tools;
- :mod:`.snapshot` -- ``bin/snapshot`` and its operations;
- :mod:`.backends` -- the copy, btrfs and zfs snapshot backends.
"""
