"""``recipe = collective.safedeploy:snapshot``: generates bin/snapshot.

::

    [snapshot]
    recipe = collective.safedeploy:snapshot
    backend = auto            # auto | zfs | btrfs | copy
    data = ${buildout:directory}/var
    dataset =                 # zfs: the dataset, e.g. tank/site
    keep = 10
    files = filestorage/Data.fs blobstorage

bin/snapshot is written to the root bin directory (it must outlive any one
release, like bin/rollback), atomically.  It calls
:func:`collective.safedeploy.snapshot.main` with the options as keyword
arguments.
"""
import os

import zc.buildout

from . import backends
from .datagen import DEFAULT_FILES
from .datagen import parse_files
from .errors import SafeDeployError
from .recipes import generate_root_script

OPTIONS = ('backend', 'data', 'dataset', 'keep', 'files', 'releases')


class Snapshot:

    def __init__(self, buildout, name, options):
        self.buildout, self.name, self.options = buildout, name, options
        directory = buildout['buildout']['directory']
        options.setdefault('backend', 'auto')
        options.setdefault('data', os.path.join(directory, 'var'))
        options.setdefault('dataset', '')
        options.setdefault('keep', '10')
        options.setdefault('files', DEFAULT_FILES)
        # verifying a snapshot opens it with ZODB
        options.setdefault('eggs', 'collective.safedeploy\nZODB')
        section = (buildout['safedeploy'] if 'safedeploy' in buildout._raw
                   else {})
        options.setdefault('releases', section.get(
            'releases-directory', os.path.join(directory, 'releases')))
        if options['backend'] not in backends.NAMES:
            raise zc.buildout.UserError(
                '[%s] backend = %s is unknown; use one of %s' % (
                    name, options['backend'], ', '.join(backends.NAMES)))
        if options['backend'] == 'zfs' and not options['dataset'].strip():
            raise zc.buildout.UserError(
                '[%s] backend = zfs needs dataset (e.g. dataset = tank/site)'
                % name)
        try:
            if int(options['keep']) < 0:
                raise ValueError
        except ValueError:
            raise zc.buildout.UserError(
                '[%s] keep = %s is not a number; use 0 (keep all) or more'
                % (name, options['keep']))
        try:
            parse_files(options['files'])
        except SafeDeployError as e:
            raise zc.buildout.UserError('[%s] %s' % (name, e))

    def install(self):
        arguments = ', '.join('%s=%r' % (key, self.options[key].strip())
                              for key in OPTIONS)
        return generate_root_script(
            self.buildout, self.name, self.options, 'snapshot',
            'collective.safedeploy.snapshot', 'main', arguments)

    update = install
