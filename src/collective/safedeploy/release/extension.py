"""The zc.buildout extension: ``extensions = collective.safedeploy``.

``load`` runs before buildout sets up its directories and installs
anything; ``unload`` runs only at the end of a wholly successful
``install``.  So:

- ``load`` *stages* the release: takes the lock, creates releases/<tag>,
  redirects bin, parts, develop-eggs and the installed-parts record into
  it and starts recording every distribution used.  The eggs directory
  and download cache stay shared.  The develop sources are frozen into
  it later, when buildout builds the develop eggs: only then have all
  extensions' load hooks run (mr.developer's adds its checkouts), in
  whatever order buildout called them.
- buildout *builds* the parts into the release;
- ``unload`` *verifies* the release is complete, *publishes* it (manifest),
  *flips* ``current`` with the health gate and *finishes* (prunes).

When the run fails, is interrupted or killed, ``unload`` never runs:
``current`` is untouched, an exit handler marks the release failed with
the reason (a killed run's is marked by the next run) and the last line
says where ``current`` still points.

(One module on purpose: it is the only place that touches zc.buildout's
run -- its options, its hooks, its exit -- so that the lifecycle in
:mod:`.lifecycle` never sees buildout's internals.  :class:`Run` is the
state of one run; the functions after it are the load/unload wiring in
the order buildout calls them.)
"""
import atexit
import errno
import json
import logging
import os
import shutil
import sys

import zc.buildout
import zc.buildout.easy_install

from . import distributions
from . import excluded as excluded_parts
from . import lifecycle
from . import pairing
from . import settings as configuration
from . import thirdparty
from . import through_current
from ..core import cli
from ..core import commands
from ..core import lock as locking
from ..core.errors import ConfigurationError
from ..core.errors import Refused
from ..core.errors import SafeDeployError

logger = logging.getLogger('collective.safedeploy')

NAME = 'collective.safedeploy'
# set for the buildout run that installs exclude-parts outside releases
PHASE = excluded_parts.PHASE
# the part mr.developer adds for its bin/develop
MR_DEVELOPER_PART = '_mr.developer'


class SafeDeployUserError(zc.buildout.UserError):
    """A SafeDeployError reported by bin/buildout: one line, no context."""


def enabled(buildout):
    """Buildout calls every installed extension's hooks as soon as any
    extension is listed: act only when we are."""
    if os.environ.get(PHASE) == 'shared-parts':
        return False
    specs = buildout['buildout'].get('extensions', '').split()
    return NAME in specs


class Run:
    """One release build: what load set up and unload completes."""

    def __init__(self, buildout, settings):
        self.buildout = buildout
        self.settings = settings
        self.lock = None
        self.locked = False     # this run holds the releases' lock
        self.path = None
        self.done = False
        self.failure = None
        self.recorder = None
        self.configured_parts = []
        self.original = {}
        self.reported = False
        self.read_early = []
        self.recorded = {}      # excluded part: its installed options
        self.updated = []       # excluded parts this build updated
        self.frozen = []        # the develop sources copied into it

    # -- load: check everything, then stage ------------------------------

    def check(self):
        """Everything that can be refused is refused here, before anything
        is written: the command, the configuration, the directories, the
        tag, the state of the releases."""
        s = self.settings
        _, command, args = buildout_command()
        if command == 'install' and args:
            raise ConfigurationError(
                'bin/buildout install %s would build a release of only some '
                'parts; run bin/buildout without part names' % ' '.join(args))
        unknown = [p for p in s.exclude_parts
                   if not configuration.has_section(self.buildout, p)]
        if unknown:
            raise ConfigurationError(
                'safedeploy:exclude-parts names %s, which is not a section; '
                'fix the part name' % ', '.join(unknown))
        unknown = [p for p in s.through_current
                   if not configuration.has_section(self.buildout, p)
                   or p in s.exclude_parts]
        if unknown:
            raise ConfigurationError(
                'safedeploy:through-current names %s, which is not a part '
                'built into the releases; fix the part name' %
                ', '.join(unknown))
        if s.snapshot_before_flip:
            part = s.snapshot_before_flip
            if not configuration.has_section(self.buildout, part):
                raise ConfigurationError(
                    'safedeploy:snapshot-before-flip names %s, which is not '
                    'a section; give the name of your snapshot part' % part)
            recipe = self.buildout._raw[part].get('recipe')
            if recipe != NAME + ':snapshot':
                raise ConfigurationError(
                    'safedeploy:snapshot-before-flip names %s, whose recipe '
                    'is %s, not %s:snapshot; give the name of your snapshot '
                    'part' % (part, recipe, NAME))
            if part not in self.buildout['buildout']['parts'].split():
                raise ConfigurationError(
                    'safedeploy:snapshot-before-flip names %s, which is not '
                    'in parts; add it to [buildout] parts' % part)
        lifecycle.check_writable(s)
        s.check_apart(data_roots(self.buildout))
        s.resolve_tag()
        gens = s.releases()
        gens.owned()         # refuses a directory that is not ours
        gens.current_name()  # refuses a hostile current
        lifecycle.check_stage(s)
        if s.index != 'off':
            check_free(os.path.join(s.indexes_directory, '.lock'),
                       'a package index build or gc')

    def redirect(self):
        """Point bin, parts, develop-eggs and the installed-parts record
        into the release (buildout options only: nothing is written)."""
        b = self.buildout['buildout']
        self.path = path = self.settings.releases().path(self.settings.tag)
        for key in ('bin-directory', 'parts-directory',
                    'develop-eggs-directory', 'installed', 'develop', 'parts'):
            self.original[key] = b.get(key, '')
        b['safedeploy-root-bin-directory'] = self.original['bin-directory']
        b['safedeploy-release'] = path
        b['safedeploy-tag'] = self.settings.tag
        b['bin-directory'] = os.path.join(path, 'bin')
        b['parts-directory'] = os.path.join(path, 'parts')
        b['develop-eggs-directory'] = os.path.join(path, 'develop-eggs')
        b['installed'] = os.path.join(path, '.installed.cfg')
        parts = self.original['parts'].split()
        excluded = self.settings.exclude_parts
        # an excluded part is read as it is installed (the site's
        # installed-parts file) and never installed into the release;
        # [buildout] parts still names it, for recipes that look for it
        self.root_installed = os.path.join(
            b['directory'], self.original['installed'] or '.installed.cfg')
        for part in excluded:
            self.recorded[part] = excluded_parts.installed_options(
                self.root_installed, part)
        self.buildout.Options = excluded_parts.options_class(
            type(self.buildout).Options, self.buildout, self.recorded)
        self.forget_excluded()
        self.configured_parts = [p for p in parts if p not in excluded]

    def forget_excluded(self):
        """Sections of excluded parts read so far are read again (as
        installed) when next asked for."""
        for part in self.settings.exclude_parts:
            self.buildout._data.pop(part, None)
            while part in self.buildout._parts:
                self.buildout._parts.remove(part)

    def check_recipes(self):
        """Our recipes check their options when their part is read: read
        them now, before the release is staged.  (buildout installs parts
        in the order it read them: :func:`in_configured_order` puts these
        back in their place.)"""
        for part in self.configured_parts:
            raw = self.buildout._raw.get(part, {})
            if raw.get('recipe', '').startswith(NAME + ':'):
                self.buildout[part]
        self.read_early = list(self.buildout._parts)
        s = self.settings
        if s.snapshot_before_flip and s.flip and \
                s.releases().current_name() is None:
            check_first_data(self.buildout[s.snapshot_before_flip])

    def stage(self):
        """The first writes: take the lock, create releases/<tag>."""
        s = self.settings
        gens = s.releases()
        gens.claim()
        if _restarted_by_parent(gens.lock_path):
            self.lock = None  # our parent holds it and waits for us
        else:
            self.lock = locking.acquire(gens.lock_path)
        self.locked = True
        if s.exclude_parts:
            # before the directory of a killed build is staged anew
            if excluded_parts.recover(gens, s.buildout_directory,
                                      self.root_installed):
                for part in s.exclude_parts:
                    self.recorded[part] = excluded_parts.installed_options(
                        self.root_installed, part)
                self.forget_excluded()
        lifecycle.stage(s)
        ensure_download_cache(self.buildout)
        if s.exclude_parts:
            self.install_excluded()

    def install_excluded(self):
        """Install the excluded parts never installed, and update those
        the operator named in update-excluded-parts (what they had
        installed is kept in the release first); say which configured
        changes are not applied."""
        s = self.settings
        gens = s.releases()
        first = [p for p in s.exclude_parts if self.recorded[p] is None]
        update = [p for p in s.update_excluded_parts if p not in first]
        for part in s.exclude_parts:
            if part in first or part in update:
                continue
            last = excluded_parts.last_configured(gens, part)
            if last is not None and last != excluded_parts.configured(
                    self.buildout, part):
                logger.warning(
                    'the configuration of the excluded part %s changed; '
                    'release %s uses it as installed (bin/buildout '
                    'safedeploy:update-excluded-parts=%s updates it)',
                    part, s.tag, part)
        if not first and not update:
            return
        configured = {p: excluded_parts.configured(self.buildout, p)
                      for p in first + update}
        if update:
            excluded_parts.save(self.path, s.buildout_directory,
                                self.root_installed, update)
            self.updated = update
            gens.journal.append('excluded-updated', name=s.tag,
                                parts=update, configured={
                                    p: configured[p] for p in update})
        excluded_parts.install_parts(
            s, first + update, buildout_command()[0],
            self.buildout['buildout'].get('download-cache'),
            checkouts_frozen='mr.developer' in self.buildout['buildout']
            .get('extensions', '').split())
        if first:
            gens.journal.append('excluded-installed', name=s.tag,
                                parts=first, configured={
                                    p: configured[p] for p in first})
        for part in first + update:
            self.recorded[part] = excluded_parts.installed_options(
                self.root_installed, part)
        thirdparty.after_build(self.buildout, s.buildout_directory,
                               first + update, self.root_installed)
        self.forget_excluded()

    def before_install(self):
        """Just before buildout builds the develop eggs, after every
        extension's load ran -- buildout calls them in working-set order,
        not in the order of ``extensions =``, so mr.developer's may have
        run before or after ours: by now it has made or updated its
        checkouts (auto-checkout, always-checkout, ``bin/develop``), put
        them in ``develop`` and added its ``_mr.developer`` part.  Copy
        each develop source into the release as it is now (what is built
        is the copy), and take the parts as they are now."""
        b = self.buildout['buildout']
        self.configured_parts = [p for p in b['parts'].split()
                                 if p not in self.settings.exclude_parts]
        develop = b.get('develop', '').split()
        if develop:
            self.frozen = lifecycle.freeze_sources(
                develop, self.path, self.settings.buildout_directory)
            b['develop'] = '\n'.join(f['frozen'] for f in self.frozen)
        for entry in self.frozen:
            at = ''
            if entry.get('revision'):
                at = ' at %s%s' % (entry['revision'][:12], ' (modified)'
                                   if entry['modified'] else '')
            logger.info('stage: froze %s%s into release %s', entry['source'],
                        at, self.settings.tag)

    # -- unload ----------------------------------------------------------

    def complete(self):
        s = self.settings
        gens = s.releases()
        parts = lifecycle.verify(s, self.path, self.configured_parts)
        thirdparty.after_build(self.buildout, self.path,
                               self.configured_parts)
        through_current.rewrite(s, self.buildout, self.path,
                                self.configured_parts)
        dists = self.recorder.distributions() if self.recorder else []
        raw = {k: dict(v) for k, v in self.buildout._raw.items()}
        manifest = lifecycle.describe(s, self.path, raw, dists, parts, extra={
            'root-bin-directory': self.original['bin-directory'],
            'root-scripts': sorted(self.root_scripts(parts)),
            'develop-sources': self.frozen,
            'excluded': {'parts': list(s.exclude_parts),
                         'updated': list(self.updated),
                         'installed-file': getattr(self, 'root_installed',
                                                   None)},
        })
        lifecycle.write_annotated(self.path, self.buildout, s.tag)
        if s.index != 'off':
            # before the release is complete: a required index that cannot
            # be built leaves it unpublished, and the tag can be rebuilt
            publish_index(s, manifest, self.buildout)
        if not s.flip:
            lifecycle.publish(s, manifest)
            self.done = True
            lifecycle.finish(s)
            logger.info('release %s is built and complete; current still '
                        'points to %s (bin/flip %s makes it current)', s.tag,
                        gens.current_name() or 'nothing', s.tag)
            return
        taken = None
        if s.snapshot_before_flip:
            taken = take_snapshot(s, self.buildout)
        lifecycle.publish(s, manifest)
        previous = gens.current_name()
        if taken is not None:
            pairing.record(s.releases_directory, previous,
                           'snapshot-before-flip', **taken)
        lifecycle.flip(gens, s.tag, s.hooks(), s.buildout_directory)
        pairing.record(s.releases_directory, s.tag, 'publish',
                       generation=data_generation(self.buildout))
        self.done = True
        lifecycle.finish(s)
        logger.info('current -> %s', s.tag)

    def root_scripts(self, parts):
        """The scripts installed into the buildout's own bin directory
        when the release becomes current: our recipes' (bin/rollback,
        ...) and mr.developer's bin/develop, which works on the site's
        checkouts (its documented place; it needs nothing from a
        release)."""
        names = set(getattr(self.buildout, '_safedeploy_root_scripts', ()))
        if MR_DEVELOPER_PART in parts and os.path.isfile(
                os.path.join(self.path, 'bin', 'develop')):
            names.add('develop')
        return names

    def abandon(self, what=None, where=None):
        """At exit, if the release was not published: mark it failed and
        say, in one line, where ``current`` points (after an interrupt:
        what interrupted it, too)."""
        if self.path is None or self.reported or (self.done and not what):
            return
        self.reported = True
        s = self.settings
        gens = s.releases()
        if self.done:       # published and flipped; cut short in finish
            sys.stdout.flush()
            sys.stderr.write(
                'bin/buildout: %s after release %s was published; current '
                'points to %s (the next run finishes the pruning)\n' % (
                    what, s.tag, gens.current_name()))
            sys.stderr.flush()
            return
        unpublished = False
        try:
            # (interrupted before it took the lock, this run staged nothing:
            # a release being staged then is another run's)
            if self.locked and gens.entry(s.tag) == 'staging':
                unpublished = True
                gens.mark_failed(s.tag, self.failure or 'the run failed')
        except Exception as e:  # e.g. the disk is full: the next run will
            logger.error('could not mark release %s failed: %s', s.tag, e)
        if self.updated and unpublished:
            # the update belonged to this release, which will not be
            # current: the excluded parts go back as they were
            try:
                done = excluded_parts.restore(
                    self.path, s.buildout_directory, self.root_installed,
                    self.updated)
                gens.journal.append('excluded-restored', name=s.tag,
                                    parts=done, to=gens.current_name())
                logger.info('excluded parts %s put back as they were',
                            ', '.join(done))
            except Exception as e:
                logger.error('could not put back the excluded parts %s: %s '
                             '(they were kept in %s)', ', '.join(
                                 self.updated), e, os.path.join(
                                     self.path, excluded_parts.SAVED))
        if where is None:
            try:
                current = gens.current_name()
            except Exception:
                current = None
            where = 'current still points to %s' % (
                current or 'nothing (no release was published yet)')
        sys.stdout.flush()
        sys.stderr.write('%s%s\n' % ('bin/buildout: %s; ' % what if what
                                     else '', where))
        sys.stderr.flush()


def describe(error):
    """One line for an OSError (or shutil.Error holding some)."""
    if isinstance(error, shutil.Error) and error.args and isinstance(
            error.args[0], list) and error.args[0]:
        source, dest, why = error.args[0][0]
        if 'No space left' in str(why):
            return 'no space left on the device holding %s; free some ' \
                'space and run bin/buildout again' % os.path.dirname(dest)
        return '%s (copying %s)' % (why, source)
    if getattr(error, 'errno', None) == errno.ENOSPC:
        return 'no space left on the device holding %s; free some space ' \
            'and run bin/buildout again' % (error.filename or 'the release')
    where = ' (%s)' % error.filename if getattr(error, 'filename', None) \
        else ''
    return '%s%s' % (getattr(error, 'strerror', None) or error, where)


def _restarted_by_parent(lock_path):
    """buildout re-executes itself after upgrading; the parent still holds
    the lock and waits for us."""
    if os.environ.get('BUILDOUT_RESTART_AFTER_UPGRADE') != '1':
        return False
    holder = locking.holder(lock_path)
    return holder.startswith('pid %d ' % os.getppid())


# -- capturing why a run failed ------------------------------------------

def _wrap_doing(run=None):
    """buildout's ``main`` reports a failure through ``_doing`` (the
    "While:" lines), then prints the error.  Our own errors are one line
    that says it all, so they get no "While:"; for others, what buildout
    was doing is kept as the release's failure reason."""
    import zc.buildout.buildout as bo
    original = getattr(bo._doing, 'safedeploy_original', bo._doing)

    def _doing():
        kind, value, tb = sys.exc_info()
        doing = []
        while tb is not None:
            d = tb.tb_frame.f_locals.get('__doing__')
            if isinstance(d, tuple):
                d = d[0] % d[1:]
            if d:
                doing.append(str(d).strip().rstrip('.'))
            tb = tb.tb_next
        if isinstance(value, SafeDeployUserError):
            if run is not None and run.failure is None:
                run.failure = str(value)
            return
        if value is not None and run is not None and run.failure is None:
            what = doing[-1] + ': ' if doing else ''
            text = str(value).strip()
            run.failure = '%s%s' % (what, text.splitlines()[-1] if text
                                    else kind.__name__)
        return original()
    _doing.safedeploy_original = original
    bo._doing = _doing


def _capture_failures(run):
    """Record why the run failed, for the release's failure marker, and
    end an interrupted run with one line.

    buildout's ``main`` reports a failure through ``_doing`` (what it was
    doing) and then exits; an uncaught exception (Ctrl-C, SIGTERM, SIGHUP)
    goes through ``sys.excepthook``: there we say what happened and where
    ``current`` points, and exit with 130 / 143 / 129 -- no traceback.
    """
    _wrap_doing(run)

    def excepthook(kind, value, tb):
        if issubclass(kind, (KeyboardInterrupt, cli.Interrupted)):
            what = str(value) if isinstance(value, cli.Interrupted) \
                else 'interrupted'
            if run.failure is None:
                run.failure = what
            where = getattr(value, 'safedeploy_where', None)
            run.abandon(what=what, where=where)
            os._exit(getattr(value, 'exit_code', 130))
        if run.failure is None:
            run.failure = '%s: %s' % (kind.__name__, value)
        sys.__excepthook__(kind, value, tb)
    sys.excepthook = excepthook


def in_configured_order(parts, early, configured):
    """``parts`` (buildout's install order: the order parts were read) with
    the ``early`` ones -- read by :meth:`Run.check_recipes` -- back where
    reading them in the configured order would have put them.  Each list
    keeps its own order (a part's dependencies come before it)."""
    early = [p for p in early if p in parts]
    late = [p for p in parts if p not in early]
    result = []
    for part in configured:
        for group in (early, late):
            if part in group and part not in result:
                result.extend(p for p in group[:group.index(part) + 1]
                              if p not in result)
    result.extend(p for p in parts if p not in result)
    return result


def buildout_command(argv=None):
    """(options, command, command arguments) of this bin/buildout run."""
    args = list(sys.argv[1:] if argv is None else argv)
    options = []
    while args:
        a = args.pop(0)
        if a.startswith('-'):
            options.append(a)
            if a in ('-c', '-t') and args:
                options.append(args.pop(0))
        elif '=' in a:
            options.append(a)
        else:
            return options, a, args
    return options, 'install', []


DEFAULT_DOWNLOAD_CACHE = 'downloads'


def ensure_download_cache(buildout):
    """A buildout without ``download-cache`` gets the shared
    ``${buildout:directory}/downloads`` before anything is downloaded:
    a release's package index is built from the archives buildout keeps
    there (without it, every egg would have no archive).  buildout set up
    its cache before the extension ran, so it is switched here too."""
    b = buildout['buildout']
    if b.get('download-cache', '').strip():
        return b['download-cache']
    cache = os.path.join(b['directory'], DEFAULT_DOWNLOAD_CACHE)
    os.makedirs(os.path.join(cache, 'dist'), exist_ok=True)
    b['download-cache'] = cache
    zc.buildout.easy_install.download_cache(os.path.join(cache, 'dist'))
    logger.info('download-cache: %s (buildout has none configured)', cache)
    return cache


def check_free(lock_path, what):
    """Refuse now when another process holds ``lock_path``."""
    if os.path.exists(lock_path):
        locking.acquire(lock_path, what).close()


def data_roots(buildout):
    """{'[part] data': path} of the data roots our data parts name (read
    from the raw configuration: nothing is substituted early)."""
    found = {}
    directory = buildout['buildout']['directory']
    for part in buildout['buildout'].get('parts', '').split():
        raw = buildout._raw.get(part, {})
        data = raw.get('data', '').replace('${buildout:directory}',
                                           directory).strip()
        if raw.get('recipe') in DATA_RECIPES and data and '${' not in data:
            found['[%s] data' % part] = os.path.join(directory, data)
    return found


# -- the extension entry points ------------------------------------------

def load(buildout):
    if not enabled(buildout):
        return
    if getattr(buildout, '_safedeploy_run', None) is not None:
        return  # idempotent
    _wrap_doing()
    route_logging()
    try:
        settings = configuration.from_buildout(buildout)
        run = Run(buildout, settings)
        run.check()
        if settings.flip and \
                lifecycle.unchecked(settings.releases()) == settings.tag:
            check_current_again(settings, buildout)
            sys.exit(0)
        if lifecycle.nothing_to_do(settings):
            logger.info('release %s is %s and complete; nothing to do',
                        settings.tag, 'current' if settings.releases()
                        .current_name() == settings.tag else 'built')
            sys.exit(0)
        run.redirect()
        run.check_recipes()
        buildout._safedeploy_run = run
        # from the first write on, an interrupt ends the run in one line
        _capture_failures(run)
        cli.handle_signals()
        run.stage()
    except SafeDeployError as e:
        raise SafeDeployUserError(str(e))
    except OSError as e:
        raise SafeDeployUserError('staging release failed: %s' % describe(e))
    atexit.register(run.abandon)
    develop = buildout._develop

    def _develop():
        try:
            run.before_install()
        except (OSError, shutil.Error) as e:
            raise SafeDeployUserError('staging release %s failed: %s' % (
                settings.tag, describe(e)))
        return develop()
    buildout._develop = _develop
    signatures = buildout._compute_part_signatures

    def _compute_part_signatures(install_parts):
        # every part is read now, none installed yet; install_parts is
        # buildout's own list: reordered in place
        install_parts[:] = in_configured_order(
            install_parts, run.read_early, run.configured_parts)
        thirdparty.configure(buildout, settings.buildout_directory,
                             run.configured_parts, data_part(buildout))
        return signatures(install_parts)
    buildout._compute_part_signatures = _compute_part_signatures
    run.recorder = distributions.Recorder(buildout)
    run.recorder.start()


def unload(buildout):
    run = getattr(buildout, '_safedeploy_run', None)
    if run is None or run.done or run.path is None:
        return
    try:
        run.recorder.stop()
        run.complete()
        cli.finished()
    except SafeDeployError as e:
        run.failure = str(e)
        raise SafeDeployUserError(str(e))
    except OSError as e:
        run.failure = describe(e)
        raise SafeDeployUserError('publishing release %s failed: %s' % (
            run.settings.tag, run.failure))
    finally:
        if run.lock is not None:
            run.lock.close()
            run.lock = None


# -- hooks into the other features ----------------------------------------

def check_first_data(part):
    """The first release, with a snapshot before its flip: data where the
    snapshot part says, not adopted into generations, is refused now --
    the snapshot would refuse it, but only after the whole build."""
    if part.get('storage') == 'relstorage':
        return
    from ..data.layout import DEFAULT_FILES
    from ..data.layout import DataRoot
    root = DataRoot(part['data'], part.get('files') or DEFAULT_FILES)
    if root.current_name() is None:
        root.refuse_data_to_adopt()


def check_current_again(settings, buildout):
    """bin/buildout of the current release, whose health gate a killed
    run did not finish: nothing is built; after-flip and the health check
    run again (failing, ``current`` goes back to the release before it)."""
    gens = settings.releases()
    cli.handle_signals()
    try:
        with gens.lock('a release build or rollback'):
            if lifecycle.unchecked(gens) != settings.tag:
                return      # another run checked it while we waited
            lifecycle.check_again(gens, settings.tag, settings.hooks(),
                                  settings.buildout_directory)
            pairing.record(settings.releases_directory, settings.tag,
                           'publish', generation=data_generation(buildout))
    except cli.Interrupted as e:
        sys.stdout.flush()
        sys.stderr.write('bin/buildout: %s; %s\n' % (
            e, getattr(e, 'safedeploy_where', None) or
            'current still points to %s' % gens.current_name()))
        sys.stderr.flush()
        sys.exit(e.exit_code)
    finally:
        cli.finished()
    logger.info('current -> %s', settings.tag)


def publish_index(settings, manifest, buildout):
    from ..index.publish import publish_release
    publish_release(settings, manifest, buildout)


def take_snapshot(settings, buildout):
    """Snapshot the data just before the flip, named after the tag.

    The snapshot part's own script does it (bin/buildout's environment is
    kept minimal and has no ZODB to verify the snapshot with).  Returns
    the fields of the pairing entry that says the snapshot holds the data
    of the release being left."""
    part = settings.snapshot_before_flip
    buildout[part]['recipe']  # installed already: its script exists
    script = os.path.join(buildout['buildout']['bin-directory'], 'snapshot')
    if not os.path.exists(script):
        raise ConfigurationError(
            'safedeploy:snapshot-before-flip names %s, but the release has '
            'no bin/snapshot; list the part in parts' % part)
    first = settings.releases().current_name() is None
    p = commands.run([script, '--for-release', settings.tag] + (
        ['--new-site'] if first else []),
        what='the snapshot before flipping to %s' % settings.tag,
        output=commands.STDOUT, check=False)
    if p.returncode:
        raise Refused(
            'the snapshot before flipping to %s failed (see above); current '
            'was not changed' % settings.tag)
    taken = json.loads(p.stdout)
    if taken['name'] is None:
        if taken.get('made'):
            logger.info('no data yet: data generation %s made, empty, for '
                        'the site to start in; nothing to snapshot before '
                        'the first release', taken['generation'])
        else:
            logger.info('no data yet in data generation %s (the site has '
                        'not written any): nothing to snapshot before the '
                        'flip', taken['generation'])
        return None
    logger.info('snapshot %s of the data taken before the flip',
                taken['name'])
    return {'snapshot': taken['name'], 'backend': taken.get('backend'),
            'last_tid': taken.get('last_tid'),
            'generation': taken.get('generation'),
            'script': os.path.join(
                buildout['buildout']['safedeploy-root-bin-directory'],
                'snapshot')}


DATA_RECIPES = ('collective.safedeploy:snapshot',
                'collective.safedeploy:evolve-copy')


def data_part(buildout):
    """The options of this buildout's safedeploy data part, or None."""
    for part in buildout['buildout']['parts'].split():
        if configuration.has_section(buildout, part) and \
                buildout[part].get('recipe') in DATA_RECIPES:
            return buildout[part]
    return None


def data_root(buildout):
    """The data root a safedeploy data part of this buildout names."""
    part = data_part(buildout)
    return (part.get('data') or None) if part is not None else None


def data_generation(buildout):
    """The data generation current now, when the buildout has a data root
    with generations; else None."""
    root = data_root(buildout)
    link = os.path.join(root, 'current') if root else None
    if link and os.path.islink(link):
        return os.path.basename(os.readlink(link))
    return None


def route_logging():
    """Our messages look like buildout's own: our logger speaks through
    zc.buildout's handlers while buildout runs."""
    ours = logging.getLogger('collective.safedeploy')
    theirs = logging.getLogger('zc.buildout')
    if theirs.handlers:
        ours.handlers[:] = list(theirs.handlers)
        ours.propagate = False
