"""Recipe ``demoapp:database``: the site's database, outside the releases.

Options:

``data``
    The data root (default ``${buildout:directory}/var``): the database
    lives in ``DATA/current/filestorage/Data.fs`` and
    ``DATA/current/blobstorage``, ``current`` being a data generation
    (see ``bin/snapshot``).
``zeo-address``
    HOST:PORT the ZEO server listens on.

On install it creates the first data generation (an empty database) when
there is none, and writes ``parts/<part>/zeo.conf`` and
``parts/<part>/zeo-readonly.conf`` (the same server, read-only: what
production runs while ``bin/evolve-copy`` evolves a copy) for
``runzeo -C``.  Existing data is never touched.
"""
import os

import zc.buildout

ZEO_CONF = """\
# written by bin/buildout (part %(name)s); the data is reached through
# %(data)s/current, the current data generation
<zeo>
  address %(address)s
  read-only %(read_only)s
</zeo>
<filestorage>
  path %(data)s/current/filestorage/Data.fs
  blob-dir %(data)s/current/blobstorage
  read-only %(read_only)s
</filestorage>
"""


class Database:

    def __init__(self, buildout, name, options):
        self.name, self.options = name, options
        options.setdefault('data', os.path.join(
            buildout['buildout']['directory'], 'var'))
        if not options.get('zeo-address'):
            raise zc.buildout.UserError(
                '[%s] needs zeo-address = HOST:PORT' % name)
        options['location'] = os.path.join(
            buildout['buildout']['parts-directory'], name)
        options['conf'] = os.path.join(options['location'], 'zeo.conf')
        options['read-only-conf'] = os.path.join(options['location'],
                                                 'zeo-readonly.conf')

    def install(self):
        o = self.options
        create_first_generation(o['data'])
        os.makedirs(o['location'], exist_ok=True)
        for conf, read_only in ((o['conf'], 'false'),
                                (o['read-only-conf'], 'true')):
            with open(conf, 'w') as f:
                f.write(ZEO_CONF % dict(name=self.name, data=o['data'],
                                        address=o['zeo-address'],
                                        read_only=read_only))
        return [o['location']]

    update = install


def create_first_generation(data):
    """An empty database as data generation 1, unless there is data."""
    if os.path.lexists(os.path.join(data, 'current')):
        return False
    from ZODB.FileStorage import FileStorage
    from collective.safedeploy.data import snapshot
    fs = os.path.join(data, 'filestorage', 'Data.fs')
    if not os.path.exists(fs):
        os.makedirs(os.path.dirname(fs), exist_ok=True)
        FileStorage(fs, blob_dir=os.path.join(data, 'blobstorage')).close()
    snapshot.adopt(dict(data=data, backend='copy'))
    return True
