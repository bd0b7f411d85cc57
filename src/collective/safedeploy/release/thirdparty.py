"""Settings third-party recipes need under a release.

Every part of a release is built with ``bin-directory`` and
``parts-directory`` inside ``releases/<tag>``.  A recipe that derives the
*site's* paths from those (instead of ``${buildout:directory}``) would put
data, backups or logs into the release, where pruning removes them.  For
each such recipe, one function here gives its part what it needs, before
the parts are installed, and says what it gave; another, after the build,
fixes what the recipe generated, where that is needed.

collective.recipe.backup
    It takes the site's directory to be the parent of ``bin-directory``
    (the release) and derives from it ``datafs``, ``blob_storage`` and
    every backup location.  :func:`backup_settings` gives each of those the
    operator did not set the value the recipe would have computed for a
    bin/buildout run in the site itself (the site's ``var``), and makes
    relative ones relative to the site.  Its generated scripts log a
    failed rsync or tar of the blobs and go on, exiting 0:
    :func:`strict_backup_scripts` makes them halt with exit status 1.
"""
import logging
import os

from ..core import fsutil
from .excluded import installed_paths

logger = logging.getLogger('collective.safedeploy')

BACKUP_RECIPES = ('collective.recipe.backup',)
# the recipes collective.recipe.backup reads the storage paths from
ZOPE_RECIPES = ('plone.recipe.zeoserver', 'plone.recipe.zope2instance',
                'plone.recipe.zope2zeoserver')
# location option: the name of its default directory, from the part name
BACKUP_LOCATIONS = (
    ('location', '%s', 'backup'),
    ('snapshotlocation', '%s-snapshot', 'snapshotbackup'),
    ('ziplocation', '%s-zip', 'zipbackup'),
    ('blobbackuplocation', '%s-blobstorage', 'blobstoragebackup'),
    ('blobsnapshotlocation', '%s-blobstoragesnapshot', 'blobstoragesnapshot'),
    ('blobziplocation', '%s-blobstoragezip', 'blobstoragezip'),
)


def recipe_of(buildout, part):
    """The distribution name of a part's recipe, lower case (the parts
    are read already)."""
    recipe = buildout[part].get('recipe', '')
    return recipe.split(':')[0].strip().lower()


def configure(buildout, site_directory, parts, data=None):
    """Before the parts are installed (their sections are read): give the
    parts of third-party recipes the settings they need under a release.
    ``data``: the options of the site's data part (bin/snapshot), if any."""
    for part in parts:
        if recipe_of(buildout, part) in BACKUP_RECIPES:
            backup_settings(buildout, part, site_directory, data)


def after_build(buildout, directory, parts, installed=None):
    """After the parts are installed into the release (``directory``),
    before it is complete -- or excluded parts into the site, with the
    site's ``installed`` file: fix what third-party recipes generated
    there."""
    top = directory.rstrip(os.sep) + os.sep
    installed = installed or os.path.join(directory, '.installed.cfg')
    for part in parts:
        if recipe_of(buildout, part) in BACKUP_RECIPES:
            paths = [os.path.join(directory, p)
                     for p in installed_paths(installed, part)]
            strict_backup_scripts(part, [p for p in paths
                                         if p.startswith(top)])


# -- collective.recipe.backup ---------------------------------------------

def site_path(site_directory, path):
    """A path as collective.recipe.backup resolves it (``~``, ``$VAR``,
    relative to the buildout directory), with the site as that
    directory."""
    path = os.path.expandvars(os.path.expanduser(path))
    return os.path.normpath(os.path.join(site_directory, path))


def zope_option(buildout, option):
    """What collective.recipe.backup reads from the Zope parts: the value
    of ``option`` in the first ZEO server or Zope instance part that has
    it (an excluded part: as it is installed)."""
    for part in buildout['buildout']['parts'].split():
        if recipe_of(buildout, part) in ZOPE_RECIPES:
            value = buildout[part].get(option)
            if value:
                return value
    return None


def has_zope_part(buildout):
    return any(recipe_of(buildout, p) in ZOPE_RECIPES
               for p in buildout['buildout']['parts'].split())


def data_storage(site_directory, data):
    """(Data.fs, blob directory or None) of the site's data generations:
    ``DATA/current/<files>``, as the data part (bin/snapshot) names them;
    (None, None) without one."""
    from ..data.layout import CURRENT
    from ..data.layout import parse_files
    if not data or not data.get('data') or \
            (data.get('storage') or 'filestorage') != 'filestorage':
        return None, None       # (repozo backs up FileStorages only)
    root = os.path.join(site_path(site_directory, data['data']), CURRENT)
    for storage in parse_files(data.get('files') or None):
        if storage.fs:
            return (os.path.join(root, storage.fs),
                    os.path.join(root, storage.blobs) if storage.blobs
                    else None)
    return None, None


def backup_settings(buildout, part, site_directory, data=None):
    """Give a collective.recipe.backup part, before it is installed, the
    paths it would derive for a bin/buildout run in the site itself.

    The recipe's own derivation, with the site for the parent of
    ``bin-directory``: ``var`` is the Zope parts' ``zeo-var`` or ``var``,
    else the site's ``var``; the backup locations are
    ``<locationprefix or var>/<part>s``, ``<part>-snapshots``, ...
    (``backups``, ``snapshotbackups``, ``blobstoragebackups``... for a part
    named ``backup``); ``datafs`` and ``blob_storage`` are the Zope parts',
    else -- for a site with data generations -- the current generation's
    (``var/current/filestorage/Data.fs``), else ``var/filestorage/Data.fs``
    and (with a Zope part) ``var/blobstorage``.  What the operator set is
    kept, relative paths made relative to the site.  Returns {option:
    value given}."""
    options = buildout[part]
    given = {}

    def give(option, value):
        if options.get(option) != value:
            options[option] = value
            given[option] = value

    var = zope_option(buildout, 'zeo-var') or zope_option(buildout, 'var')
    var = site_path(site_directory, var) if var else \
        os.path.join(site_directory, 'var')
    prefix = options.get('locationprefix', '').strip()
    prefix = site_path(site_directory, prefix) if prefix else var
    give('locationprefix', prefix)
    for option, pattern, for_backup in BACKUP_LOCATIONS:
        name = for_backup if part == 'backup' else pattern % part
        value = options.get(option, '').strip()
        give(option, site_path(prefix, value) if value else
             os.path.join(prefix, name + 's'))

    generation_fs, generation_blobs = data_storage(site_directory, data)
    datafs = options.get('datafs', '').strip() or \
        zope_option(buildout, 'file-storage') or generation_fs or \
        os.path.join(var, 'filestorage', 'Data.fs')
    give('datafs', site_path(site_directory, datafs))
    # the recipe keeps blob-storage as blob_storage, when it read the part
    blobs = (options.get('blob_storage', '') or
             options.get('blob-storage', '')).strip()
    if not blobs and backup_blobs(options):
        blobs = zope_option(buildout, 'blob-storage') or generation_blobs
        if not blobs and has_zope_part(buildout):
            blobs = os.path.join(var, 'blobstorage')
    if blobs:
        give('blob_storage', site_path(site_directory, blobs).rstrip(os.sep))
    if given:
        def shown(path):
            rel = os.path.relpath(path, site_directory)
            return path if rel.startswith('..') else rel
        logger.info('[%s] collective.recipe.backup: the site\'s paths, not '
                    'the release\'s (relative to %s): %s', part,
                    site_directory, ', '.join(
                        '%s = %s' % (option, shown(value))
                        for option, value in sorted(given.items())))
    return given


def backup_blobs(options):
    return options.get('backup_blobs', 'true').strip().lower() in (
        'true', 'yes', 'on', '1')


# The generated scripts (bin/backup, bin/restore, ...) run the recipe's
# commands through collective.recipe.backup.utils.system, which returns
# the exit status; the blob copy (rsync, tar) ignores it.  This goes into
# each script, after its import of the recipe's module.
BACKUP_IMPORT = 'import collective.recipe.backup.main\n'
STRICT_MARK = '# collective.safedeploy: a failed command fails this script'
STRICT = STRICT_MARK + '''
# (collective.recipe.backup prints the output of a failed rsync or tar
# of the blobs and goes on, exiting 0)
def _safedeploy_strict(system):
    import logging

    def strict(command, input=''):
        output, status = system(command, input)
        if status:
            if output:
                if isinstance(output, bytes):
                    output = output.decode('utf-8', 'replace')
                sys.stdout.write(output.rstrip('\\n') + '\\n')
                sys.stdout.flush()
            logging.getLogger('backup').error(
                'Halting execution: %s failed with exit status %s.',
                command, status)
            sys.exit(1)
        return output, status
    return strict


import collective.recipe.backup.utils
collective.recipe.backup.utils.system = _safedeploy_strict(
    collective.recipe.backup.utils.system)
'''


def strict_backup_scripts(part, paths):
    """In the scripts a collective.recipe.backup part generated, a command
    that fails (the rsync of the blobs) halts the script with exit status
    1.  Returns the scripts changed."""
    changed = []
    for path in paths:
        if not os.path.isfile(path) or os.path.islink(path):
            continue
        try:
            with open(path, encoding='utf-8') as f:
                text = f.read()
        except (UnicodeDecodeError, ValueError):
            continue
        if STRICT_MARK in text:
            continue
        if BACKUP_IMPORT not in text:
            if 'collective.recipe.backup' in text:
                logger.warning(
                    '[%s] %s does not import collective.recipe.backup.main '
                    'as expected: a failed blob copy may still exit 0',
                    part, os.path.basename(path))
            continue
        text = text.replace(BACKUP_IMPORT, BACKUP_IMPORT + STRICT, 1)
        fsutil.atomic_write(path, text, mode=os.stat(path).st_mode & 0o7777)
        changed.append(os.path.basename(path))
    if changed:
        logger.info('[%s] %s: a failed blob copy fails the script', part,
                    ', '.join(sorted(changed)))
    return changed
