"""``recipe = collective.safedeploy:snapshot``: generates bin/snapshot.

::

    [snapshot]
    recipe = collective.safedeploy:snapshot
    backend = auto            # auto | zfs | btrfs | copy
    data = ${buildout:directory}/var
    dataset =                 # zfs: the dataset, e.g. tank/site
    keep = 10                 # snapshots
    keep-generations = 3      # data generations (after a restore)
    files = filestorage/Data.fs blobstorage
    storage = filestorage     # or relstorage, with dsn = (docs/relstorage)

bin/snapshot calls :func:`collective.safedeploy.data.snapshot.main` with
the options as keyword arguments; the options are checked here with the
same schema the command uses (:data:`collective.safedeploy.data.
snapshot.SCHEMA`).
"""

from ..data import snapshot
from .base import EGG_OPTIONS
from .base import RootScript

OPTIONS = ('backend', 'data', 'dataset', 'keep', 'files', 'releases',
           'keep-generations', 'storage', 'dsn', 'keep-history',
           'blob-cache', 'client-cache', 'shared-blob-dir')


class Snapshot(RootScript):

    script = 'snapshot'
    module = 'collective.safedeploy.data.snapshot'
    schema = type(snapshot.SCHEMA)(snapshot.SCHEMA.options.values(),
                                   allowed=EGG_OPTIONS)

    def configure(self):
        o = self.options
        for key, default in snapshot.SCHEMA.defaults().items():
            o.setdefault(key, default)
        self.path_option('data', 'var')
        if not o['releases'].strip():
            o['releases'] = self.settings().releases_directory
        # verifying a snapshot opens it with ZODB
        o.setdefault('eggs', 'collective.safedeploy\nZODB')
        snapshot.Config(where=self.where, **self.arguments())

    def eggs(self):
        if self.options.get('storage') == 'relstorage':
            return ['collective.safedeploy', 'ZODB', 'RelStorage',
                    'psycopg2-binary']
        return ['collective.safedeploy', 'ZODB']

    def arguments(self):
        return {key.replace('-', '_'): self.options[key].strip()
                for key in OPTIONS}
