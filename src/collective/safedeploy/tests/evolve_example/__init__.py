"""An example evolve package, repoze.evolution style (KARL's layout).

``evolve1`` .. ``evolve3`` transform documents and their blobs; the
database's version is ``root['repoze.evolution']['collective.safedeploy.
tests.evolve_example']``.  :mod:`.model` makes the example site,
:mod:`.generations` is the same evolve as a zope.generations schema
manager and :mod:`.function` as a ``module:function(root, commit)``.

For crash tests, two environment variables act on every step:
``SAFEDEPLOY_EXAMPLE_FAIL=<n>`` makes step n raise, and
``SAFEDEPLOY_EXAMPLE_SLEEP=<seconds>`` makes every step take that long;
``SAFEDEPLOY_EXAMPLE_WAIT=<path>``: step 1 waits until the file exists
(at most 120 s).
"""
VERSION = 3
