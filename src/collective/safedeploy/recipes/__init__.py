"""The buildout recipes, one module each, each a thin shell over a library
function (:mod:`.base`):

- :mod:`.rollback` -- ``collective.safedeploy:rollback`` (bin/rollback);
- :mod:`.snapshot` -- ``collective.safedeploy:snapshot`` (bin/snapshot);
- :mod:`.evolve` -- ``collective.safedeploy:evolve-copy``
  (bin/evolve-copy);
- :mod:`.index` -- ``collective.safedeploy:index`` (bin/index);
- :mod:`.excluded` -- what a part in ``exclude-parts`` is inside a release;
- :mod:`.restart` -- ``collective.safedeploy:restart`` (bin/restart).
"""
