"""exclude-parts: installed outside the releases, read as installed,
updated only when asked, and undone with the release that asked.

A part in ``safedeploy:exclude-parts`` (the ZEO server) is installed into
the buildout's own ``bin`` and ``parts`` by a bin/buildout run of its own
(``install_parts``), recorded by buildout in the site's ``.installed.cfg``.

- A release reads it as it is installed: the part's section, for the parts
  of a release that refer to it (``${zeoserver:zeo-address}``, a recipe
  reading ``buildout['zeoserver']``), holds the options recorded in the
  site's ``.installed.cfg`` -- the real ones, with what its recipe
  computed -- and its recipe is never run inside a release.
- It is installed by a release build only the first time (nothing runs
  from it yet), or when the operator names it:
  ``bin/buildout safedeploy:update-excluded-parts=zeoserver``.  A change
  to its configuration is otherwise not applied, and said so.
- Before an update, what the part installed and its recorded options are
  kept in the release that updates it (``releases/<tag>/excluded/<part>``).
  When that release does not become current (its build fails, its health
  gate fails) or current is rolled back past it, they are put back; after
  a build killed half-way, the next build puts them back (``recover``).

The releases journal records each: ``excluded-installed``,
``excluded-updated``, ``excluded-restored`` (``name``: the release,
``parts``).
"""
import json
import logging
import os
import shutil
import sys

from ..core import commands
from ..core import fsutil
from ..core.errors import Refused

logger = logging.getLogger('collective.safedeploy')

SAVED = 'excluded'
OPTIONS_FILE = 'installed-options.json'
FILES = 'files'
# set for the buildout run that installs exclude-parts outside releases
PHASE = 'SAFEDEPLOY_PHASE'
BOOKKEEPING = ('__buildout_installed__', '__buildout_signature__')


# -- what is installed ---------------------------------------------------

def read_installed(installed_file):
    """{section: {option: value}} of buildout's installed-parts file, read
    as buildout reads it."""
    import zc.buildout.buildout
    import zc.buildout.configparser
    if not os.path.isfile(installed_file):
        return {}
    with open(installed_file) as f:
        sections = zc.buildout.configparser.parse(f, installed_file)
    result = {}
    for section, options in sections.items():
        values = {}
        for option, value in options.items():
            if '%(' in value:
                for k, v in zc.buildout.buildout._spacey_defaults:
                    value = value.replace(k, v)
            values[option] = value
        result[section] = values
    return result


def write_installed(installed_file, sections):
    """Write ``sections`` back in buildout's format (the [buildout]
    section first, then the parts in its ``parts`` order)."""
    import io
    import zc.buildout.buildout
    order = ['buildout'] + [p for p in sections.get('buildout', {}).get(
        'parts', '').split() if p in sections]
    order += [s for s in sections if s not in order]
    out = io.StringIO()
    for n, section in enumerate(order):
        if n:
            out.write('\n')
        zc.buildout.buildout._save_options(section, sections[section], out)
    fsutil.atomic_write(installed_file, out.getvalue())


def installed_options(installed_file, part):
    """The options ``part`` was installed with, without buildout's own
    bookkeeping; None when it is not installed."""
    options = read_installed(installed_file).get(part)
    if options is None or part not in read_installed(installed_file).get(
            'buildout', {}).get('parts', '').split():
        return None
    return {k: v for k, v in options.items() if k not in BOOKKEEPING}


def installed_paths(installed_file, part):
    options = read_installed(installed_file).get(part) or {}
    return [p.strip() for p in options.get('__buildout_installed__', '')
            .splitlines() if p.strip()]


def options_class(base, buildout, recorded):
    """A buildout ``Options`` class whose sections named in ``recorded``
    ({part: options or None}) are the excluded parts: their values are the
    recorded (installed) options, and their recipe is never loaded -- the
    part is not installed into the release.  ``None``: not installed yet,
    the configured values, substituted."""
    from ..recipes.excluded import Excluded

    class Options(base):

        def _initialize(self):
            if self.buildout is not buildout or self.name not in recorded:
                return base._initialize(self)
            options = recorded[self.name]
            if options is not None:
                self._raw = dict(options)
                self._cooked = {}
                self._data = dict(options)
            else:
                if '<' in self._raw:
                    self._raw = self._do_extend_raw(self.name, self._raw, [])
                for k, v in sorted(self._raw.items()):
                    if '${' in v:
                        self._dosub(k, v)
            self.recipe = Excluded(self.buildout, self.name, self)
    return Options


# -- installing -------------------------------------------------------------

def install_parts(settings, parts, argv_options, download_cache=None,
                  checkouts_frozen=False):
    """``bin/buildout install PARTS`` outside the releases, the
    extension off (the other excluded parts stay as they are)."""
    logger.info('Installing %s outside the releases.', ', '.join(parts))
    args = [sys.executable, sys.argv[0]] + list(argv_options) + [
        'buildout:parts=%s' % ' '.join(settings.exclude_parts)]
    if download_cache:      # the same one, also when we gave it
        args.append('buildout:download-cache=%s' % download_cache)
    if checkouts_frozen:
        # mr.developer: the release run already checked out and froze the
        # sources; this run must not update them behind the frozen copy
        args.append('buildout:always-checkout=false')
    args += ['install'] + list(parts)
    env = dict(os.environ, **{PHASE: 'shared-parts'})
    p = commands.run(args, cwd=settings.buildout_directory, env=env,
                     output=commands.SHOW, check=False)
    if p.returncode:
        raise Refused(
            'installing the excluded parts %s failed (see above); fix them '
            'and run bin/buildout again' % ', '.join(parts))


def configured(buildout, part):
    """The part's configuration as written (for telling a change)."""
    return {k: str(v) for k, v in sorted(buildout._raw.get(part, {})
                                         .items())}


def last_configured(gens, part):
    """What the part was configured as when a release last installed or
    updated it; None when no release did."""
    found = None
    for entry in gens.journal.entries(strict=False):
        if entry.get('event') in ('excluded-installed', 'excluded-updated') \
                and part in (entry.get('parts') or ()):
            found = (entry.get('configured') or {}).get(part)
    return found


# -- keeping and putting back -------------------------------------------

def save(release_path, buildout_directory, installed_file, parts):
    """Keep what each of ``parts`` installed, and its recorded options, in
    the release about to update it."""
    sections = read_installed(installed_file)
    for part in parts:
        where = os.path.join(release_path, SAVED, part)
        if os.path.exists(where):
            fsutil.remove_tree(where)
        os.makedirs(os.path.join(where, FILES))
        kept = []
        for path in installed_paths(installed_file, part):
            source = os.path.join(buildout_directory, path)
            rel = os.path.relpath(source, buildout_directory)
            if rel.startswith('..') or not os.path.lexists(source):
                continue        # outside the site: not ours to put back
            dest = os.path.join(where, FILES, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if os.path.isdir(source) and not os.path.islink(source):
                shutil.copytree(source, dest, symlinks=True)
            else:
                shutil.copy2(source, dest, follow_symlinks=False)
            kept.append(rel)
        fsutil.atomic_write_json(os.path.join(where, OPTIONS_FILE), {
            'part': part, 'options': sections.get(part), 'files': kept})


def restore(release_path, buildout_directory, installed_file, parts):
    """Put back what :func:`save` kept in ``release_path``: the files the
    part had installed (what the update installed besides is removed) and
    its recorded options.  Returns the parts put back."""
    done = []
    for part in parts:
        where = os.path.join(release_path, SAVED, part)
        try:
            with open(os.path.join(where, OPTIONS_FILE)) as f:
                kept = json.load(f)
        except (OSError, ValueError):
            logger.warning('cannot put back excluded part %s: nothing was '
                           'kept in %s', part, where)
            continue
        now = installed_paths(installed_file, part)
        for path in now:
            full = os.path.join(buildout_directory, path)
            rel = os.path.relpath(full, buildout_directory)
            if rel.startswith('..') or rel in kept['files']:
                continue
            if os.path.isdir(full) and not os.path.islink(full):
                fsutil.remove_tree(full)
            elif os.path.lexists(full):
                os.unlink(full)
        for rel in kept['files']:
            source = os.path.join(where, FILES, rel)
            dest = os.path.join(buildout_directory, rel)
            if os.path.isdir(source) and not os.path.islink(source):
                if os.path.isdir(dest) and not os.path.islink(dest):
                    fsutil.remove_tree(dest)
                elif os.path.lexists(dest):
                    os.unlink(dest)
                shutil.copytree(source, dest, symlinks=True)
            else:
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                tmp = dest + '.safedeploy-restore.tmp'
                shutil.copy2(source, tmp, follow_symlinks=False)
                os.replace(tmp, dest)
        sections = read_installed(installed_file)
        if kept.get('options') is not None and sections:
            sections[part] = kept['options']
            write_installed(installed_file, sections)
        done.append(part)
    return done


def updated_by(gens, tag):
    """The excluded parts release ``tag`` updated (its manifest says)."""
    try:
        manifest = gens.manifest(tag) or {}
    except Exception:
        return [], None, None
    info = manifest.get('excluded') or {}
    return (info.get('updated') or [], info.get('installed-file'),
            manifest.get('buildout-directory'))


def recover(gens, buildout_directory, installed_file):
    """A build killed after it updated excluded parts never put them
    back: do it now (under the lock, before anything is staged), from what
    it kept in its release directory.  Returns the parts put back."""
    last = {}
    for entry in gens.journal.entries(strict=False):
        if entry.get('event') in ('excluded-updated', 'excluded-restored'):
            last[entry.get('name')] = entry
    restored = []
    for tag, entry in last.items():
        if entry['event'] != 'excluded-updated' or \
                gens.entry(tag) != 'staging':
            continue
        done = restore(gens.path(tag), buildout_directory, installed_file,
                       entry.get('parts') or ())
        gens.journal.append('excluded-restored', name=tag, parts=done,
                            to=gens.current_name(), reason='killed')
        logger.info('excluded parts %s put back as they were before the '
                    'killed build of release %s', ', '.join(done), tag)
        restored.extend(done)
    return restored


def restore_leaving(gens, left, target):
    """``current`` goes from ``left`` back to the older ``target``: the
    excluded parts the releases after ``target`` up to ``left`` updated
    are put back as they were before, newest first."""
    order = gens.order()
    if left not in order:
        return []
    start = order.index(target) + 1 if target in order else 0
    end = order.index(left) + 1
    if start >= end:
        skipped = [t for t in order[end:order.index(target) + 1]
                   if updated_by(gens, t)[0]] if target in order else []
        for tag in skipped:
            logger.warning(
                'release %s updated the excluded parts %s; going forward to '
                '%s does not apply that again (bin/buildout safedeploy:tag=... '
                'safedeploy:update-excluded-parts=... does)', tag,
                ', '.join(updated_by(gens, tag)[0]), target)
        return []
    restored = []
    last = {}
    for entry in gens.journal.entries(strict=False):
        if entry.get('event') in ('excluded-updated', 'excluded-restored'):
            last[entry.get('name')] = entry['event']
    for tag in reversed(order[start:end]):
        parts, installed_file, directory = updated_by(gens, tag)
        if not parts or not installed_file or not directory or \
                last.get(tag) == 'excluded-restored':
            continue        # nothing updated, or put back already
        done = restore(gens.path(tag), directory, installed_file, parts)
        if done:
            gens.journal.append('excluded-restored', name=tag, parts=done,
                                to=target)
            logger.info('excluded parts %s put back as they were before '
                        'release %s', ', '.join(done), tag)
            restored.extend(done)
    return restored
