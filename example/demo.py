"""The release story, played on the example site.

    bash dev.sh demo          (sets everything up, then runs this)

Builds the example site in var/demo/site from this directory, and walks
through: release 1.0; a release 1.1 whose build fails halfway (the site
keeps running 1.0); 1.1 fixed and released; a rollback to 1.0.  Every
claim it prints is checked; any failed check ends it with exit code 1.
The site directory is left for inspection.
"""
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
VENV_SITE = os.environ.get('SAFEDEPLOY_SITE_VENV',
                           os.path.join(CHECKOUT, '.venv-site'))
BUILDOUT = os.path.join(VENV_SITE, 'bin', 'buildout')


class CheckFailed(Exception):
    pass


class Story:

    def __init__(self, site, out=sys.stdout):
        self.site = site
        self.out = out
        self.number = 0
        self.checks = 0

    def say(self, text=''):
        print(text, file=self.out, flush=True)

    def step(self, title):
        self.number += 1
        self.say()
        self.say('%d. %s' % (self.number, title))
        self._started = time.monotonic()

    def done(self):
        self.say('   (%.2f s)' % (time.monotonic() - self._started))

    def check(self, claim, ok):
        self.checks += 1
        if not ok:
            self.say('   FAILED: %s' % claim)
            raise CheckFailed(claim)
        self.say('   ok: %s' % claim)

    def run(self, *args, check=True):
        env = dict(os.environ, PIP_NO_BUILD_ISOLATION='0')
        env.pop('PYTHONPATH', None)
        p = subprocess.run(args, cwd=self.site, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in p.stdout.splitlines():
            self.say('   | ' + line)
        if check and p.returncode:
            raise CheckFailed('%s exited with %d' % (' '.join(args),
                                                     p.returncode))
        return p

    def git(self, *args):
        return self.run('git', '-c', 'user.name=demo',
                        '-c', 'user.email=demo@example.invalid', *args)

    def buildout(self, *args, check=True):
        return self.run(BUILDOUT, *args, check=check)

    def current(self):
        link = os.path.join(self.site, 'current')
        return os.path.basename(os.readlink(link)) if os.path.lexists(
            link) else None

    def app(self):
        p = subprocess.run([os.path.join(self.site, 'current', 'bin',
                                         'demoapp')],
                           stdout=subprocess.PIPE, text=True)
        return p.stdout.strip()

    def edit(self, relpath, old, new):
        path = os.path.join(self.site, relpath)
        with open(path) as f:
            text = f.read()
        if old not in text:
            raise CheckFailed('%s does not contain %r' % (relpath, old))
        with open(path, 'w') as f:
            f.write(text.replace(old, new))


def offline_options(site):
    """Settings that keep the demo off the network: distributions come
    from the wheelhouse made at set-up."""
    wheelhouse = os.path.join(CHECKOUT, 'var', 'wheelhouse')
    empty = os.path.join(site, '.empty-index')
    os.makedirs(empty, exist_ok=True)
    return ['buildout:find-links=%s' % wheelhouse,
            'buildout:index=%s' % empty,
            'buildout:allow-hosts=*.example.invalid']


def play(site):
    if os.path.exists(site):
        shutil.rmtree(site)
    shutil.copytree(HERE, site, ignore=shutil.ignore_patterns(
        'demo.py', '__pycache__', '*.egg-info'))
    s = Story(site)
    offline = offline_options(site)
    s.say('The example site: %s' % site)

    s.step('Release 1.0: tag the checkout, run bin/buildout')
    s.git('init', '-q')
    s.git('add', '-A')
    s.git('commit', '-qm', 'The example site')
    s.git('tag', '1.0')
    s.buildout(*offline)
    s.check('current points to releases/1.0',
            os.readlink(os.path.join(site, 'current')) == 'releases/1.0')
    s.check('the site runs 1.0 ("%s")' % s.app(), s.app() == 'demoapp 1.0')
    s.done()

    s.step('Release 1.1 whose build fails halfway (a dependency that does '
           'not exist)')
    s.edit('src/demoapp/src/demoapp/__init__.py', "VERSION = '1.0'",
           "VERSION = '1.1'")
    s.edit('buildout.cfg', 'eggs = demoapp\n',
           'eggs = demoapp\n    demoapp-plugin-that-does-not-exist\n')
    s.git('commit', '-qam', '1.1')
    s.git('tag', '1.1')
    p = s.buildout(*offline, check=False)
    last = p.stdout.strip().splitlines()[-1]
    s.check('bin/buildout exits non-zero', p.returncode != 0)
    s.check('its last line says "current still points to 1.0"',
            last == 'current still points to 1.0')
    s.check('the site still runs 1.0', s.app() == 'demoapp 1.0')
    s.check('the failed release is marked failed with the reason',
            'demoapp-plugin-that-does-not-exist' in open(os.path.join(
                site, 'releases', '1.1', 'safedeploy-failed.txt')).read())
    s.done()

    s.step('Release 1.1, fixed: the same tag builds again')
    s.edit('buildout.cfg', '    demoapp-plugin-that-does-not-exist\n', '')
    s.git('commit', '-qam', '1.1, fixed')
    s.git('tag', '-f', '1.1')
    s.buildout(*offline)
    s.check('current points to releases/1.1', s.current() == '1.1')
    s.check('the site runs 1.1 ("%s")' % s.app(), s.app() == 'demoapp 1.1')
    s.check('release 1.0 still runs its own code',
            subprocess.run([os.path.join(site, 'releases', '1.0', 'bin',
                                         'demoapp')], stdout=subprocess.PIPE,
                           text=True).stdout.strip() == 'demoapp 1.0')
    s.done()

    s.step('Something is wrong with 1.1: bin/rollback')
    s.run(os.path.join(site, 'bin', 'rollback'))
    s.check('current points to releases/1.0', s.current() == '1.0')
    s.check('the site runs 1.0 again', s.app() == 'demoapp 1.0')
    s.done()

    s.step('bin/rollback --list')
    p = s.run(os.path.join(site, 'bin', 'rollback'), '--list')
    s.check('1.0 is current, 1.1 rolled back',
            re.search(r'^\*\s+1\.0\s', p.stdout, re.M) is not None and
            re.search(r'^\s+1\.1\s.*rolled back', p.stdout, re.M)
            is not None)
    s.done()
    s.say()
    s.say('All %d checks passed. The site is left in %s.' % (s.checks, site))
    return s


def main():
    site = os.path.join(CHECKOUT, 'var', 'demo', 'site')
    if len(sys.argv) > 1:
        site = os.path.abspath(sys.argv[1])
    try:
        play(site)
    except CheckFailed as e:
        print('demo failed: %s' % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('demo interrupted; the site is left in %s' % site,
              file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
