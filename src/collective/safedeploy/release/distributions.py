"""Which distributions a release was built from.

zc.buildout's own record (``get_picked_versions``) leaves out pinned and
develop distributions, so we watch every working set buildout resolves
(``Installer.install``) and match each distribution to its original
archive in the shared download cache (``<download-cache>/dist``).
"""
import os

import zc.buildout.easy_install
from packaging.utils import canonicalize_name
from packaging.utils import parse_sdist_filename
from packaging.utils import parse_wheel_filename

from ..core.fsutil import sha256


def archive_key(filename):
    """(normalised name, version) of a wheel or sdist file name, or None."""
    try:
        if filename.endswith('.whl'):
            name, version = parse_wheel_filename(filename)[:2]
        elif filename.endswith(('.tar.gz', '.zip')):
            name, version = parse_sdist_filename(filename)
        else:
            return None
    except Exception:
        return None
    return canonicalize_name(name), str(version)


def archives(directory):
    """{(canonical name, version): path} of wheels and sdists."""
    found = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return found
    for filename in sorted(names):
        key = archive_key(filename)
        if key is not None:
            found.setdefault(key, os.path.join(directory, filename))
    return found


class Recorder:

    def __init__(self, buildout):
        self.buildout = buildout
        self.used = {}
        self.original = None

    def start(self):
        original = self.original = zc.buildout.easy_install.Installer.install
        used = self.used

        def install(installer, specs, working_set=None):
            ws = original(installer, specs, working_set)
            for dist in ws:
                used[canonicalize_name(dist.project_name)] = dist
            return ws
        zc.buildout.easy_install.Installer.install = install

    def stop(self):
        if self.original is not None:
            zc.buildout.easy_install.Installer.install = self.original
            self.original = None

    def distributions(self):
        b = self.buildout['buildout']
        develop_eggs = os.path.realpath(b['develop-eggs-directory'])
        release = os.path.realpath(b.get('safedeploy-release', '') or '/-')
        cache = b.get('download-cache')
        found = archives(os.path.join(cache, 'dist')) if cache else {}
        result = []
        for key in sorted(self.used):
            dist = self.used[key]
            location = os.path.realpath(dist.location)
            develop = (location == develop_eggs or
                       location.startswith(develop_eggs + os.sep) or
                       location.startswith(release + os.sep))
            archive = None if develop else found.get((key, str(dist.version)))
            source = None
            if develop:
                source = _develop_source(dist, develop_eggs)
            result.append({
                'name': dist.project_name,
                'version': str(dist.version),
                'location': dist.location,
                'archive': archive,
                'sha256': sha256(archive) if archive else None,
                'develop': bool(develop),
                'source': source,
            })
        return result


def _develop_source(dist, develop_eggs):
    """The source directory of a develop distribution (from its egg-link)."""
    link = os.path.join(develop_eggs, dist.project_name + '.egg-link')
    for candidate in (link, os.path.join(
            develop_eggs, dist.key + '.egg-link')):
        try:
            with open(candidate) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        # "<the directory on sys.path>\n<the project, relative to it>"
        if len(lines) > 1 and lines[1].strip():
            return os.path.normpath(os.path.join(lines[0].strip(),
                                                 lines[1].strip()))
        return lines[0].strip() if lines else None
    return None
