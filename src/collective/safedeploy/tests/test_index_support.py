"""What the package index tests share: real wheels and manifests.

A manifest here is what the release extension records: one dict per
distribution buildout used (name, version, location, archive, sha256,
develop, source).  :func:`manifest_from_scripts` derives it from a real
buildout's generated scripts and download cache, for tests that build a
site without the extension.
"""
import base64
import email.parser
import glob
import hashlib
import os
import re
import shutil
import subprocess
import zipfile

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from collective.safedeploy.release import distributions

from . import support


def make_wheel(directory, name, version, payload='', requires=()):
    """Write a real, installable pure-Python wheel and return its path."""
    module = canonicalize_name(name).replace('-', '_')
    dist_info = '%s-%s.dist-info' % (module, version)
    files = {
        '%s.py' % module: 'VERSION = %r\nPAYLOAD = %r\n' % (version, payload),
        dist_info + '/METADATA': ''.join(
            ['Metadata-Version: 2.1\nName: %s\nVersion: %s\n' % (
                name, version)] +
            ['Requires-Dist: %s\n' % r for r in requires]),
        dist_info + '/WHEEL': ('Wheel-Version: 1.0\nGenerator: safedeploy-'
                               'tests\nRoot-Is-Purelib: true\n'
                               'Tag: py3-none-any\n'),
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(
            text.encode()).digest()).rstrip(b'=').decode()
        record.append('%s,sha256=%s,%d' % (path, digest, len(text.encode())))
    record.append(dist_info + '/RECORD,,')
    files[dist_info + '/RECORD'] = '\n'.join(record) + '\n'
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, '%s-%s-py3-none-any.whl' % (module,
                                                                version))
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:
        for name_, text in files.items():
            info = zipfile.ZipInfo(name_, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, text)
    return path


def wheelhouse_distributions(names=None):
    """Manifest entries for the wheels in the test wheelhouse, the newest
    version of each (the Zope site's pins add older ones)."""
    newest = {}
    for path in sorted(glob.glob(os.path.join(support.WHEELHOUSE, '*.whl'))):
        name, version = distributions.archive_key(os.path.basename(path))
        with zipfile.ZipFile(path) as z:
            meta = [n for n in z.namelist()
                    if n.endswith('.dist-info/METADATA')][0]
            headers = email.parser.Parser().parsestr(
                z.read(meta).decode('utf-8'), headersonly=True)
        if names is not None and canonicalize_name(headers['Name']) not in {
                canonicalize_name(n) for n in names}:
            continue
        key = canonicalize_name(headers['Name'])
        found = entry(headers['Name'], headers['Version'], path)
        if key not in newest or Version(found['version']) > Version(
                newest[key]['version']):
            newest[key] = found
    return [newest[k] for k in sorted(newest)]


def entry(name, version, archive=None, develop=False, source=None,
          location=None):
    return dict(name=name, version=version, archive=archive, sha256=None,
                develop=develop, source=source,
                location=location or '/eggs/%s-%s.egg' % (name, version))


def manifest_from_scripts(site_directory, script, download_cache,
                          develop=()):
    """What a build used, read from the sys.path of a generated script.

    Eggs give name and version; their archives are matched in the
    download cache; requirements that no egg satisfies came from the
    environment buildout ran in (its site-packages).  ``develop`` lists
    (name, version, source directory) of the develop packages.
    """
    with open(os.path.join(site_directory, 'bin', script)) as f:
        paths = re.findall(r"^  '([^']+)',$", f.read(), re.M)
    cache = os.path.join(download_cache, 'dist')
    archives = {distributions.archive_key(n): os.path.join(cache, n)
                for n in os.listdir(cache) if distributions.archive_key(n)}
    dists, requires, site_packages = [], set(), None
    for path in paths:
        if path.endswith('site-packages'):
            site_packages = path
        if not path.endswith('.egg'):
            continue
        meta = (glob.glob(os.path.join(path, '*.dist-info', 'METADATA')) +
                glob.glob(os.path.join(path, 'EGG-INFO', 'PKG-INFO')))[0]
        with open(meta) as f:
            headers = email.parser.Parser().parse(f, headersonly=True)
        key = (canonicalize_name(headers['Name']), headers['Version'])
        dists.append(entry(headers['Name'], headers['Version'],
                           archives.get(key), location=path))
        for requirement in headers.get_all('Requires-Dist') or ():
            r = Requirement(requirement)
            if r.marker is None or r.marker.evaluate(
                    dict(default_environment(), extra='')):
                requires.add(canonicalize_name(r.name))
    for name, version, source in develop:
        dists.append(entry(name, version, develop=True, source=source,
                           location=os.path.join(site_directory,
                                                 'develop-eggs')))
    have = {canonicalize_name(d['name']) for d in dists}
    if site_packages:
        from importlib import metadata
        environment = {canonicalize_name(d.metadata['Name']): d
                       for d in metadata.distributions(path=[site_packages])}
        wanted = requires - have
        while wanted:
            key = wanted.pop()
            dist = environment.get(key)
            if dist is None or key in have:
                continue
            have.add(key)
            dists.append(entry(dist.metadata['Name'], dist.version,
                               location=site_packages))
            for requirement in dist.requires or ():
                r = Requirement(requirement)
                if r.marker is None or r.marker.evaluate(
                        dict(default_environment(), extra='')):
                    wanted.add(canonicalize_name(r.name))
    return dict(distributions=dists)


def unshare_network():
    """The command prefix that runs a command with no network at all (a
    new network namespace with only a loopback that is down), or None."""
    unshare = shutil.which('unshare')
    if not unshare:
        return None
    for prefix in ([unshare, '-n'], [unshare, '-rn']):
        try:
            p = subprocess.run(prefix + ['true'], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        except OSError:
            continue
        if p.returncode == 0:
            return prefix
    return None


OFFLINE_PIP = {
    # pip (pip download of the environment's distributions, pip install
    # from an index) never looks further than the test wheelhouse
    'PIP_NO_INDEX': '1',
    'PIP_FIND_LINKS': support.WHEELHOUSE,
    'PIP_CONFIG_FILE': os.devnull,
    'PIP_DISABLE_PIP_VERSION_CHECK': '1',
}


def test_suite():
    """Helpers only: no tests here."""
    import unittest
    return unittest.TestSuite()
