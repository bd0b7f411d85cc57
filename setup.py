import os

from setuptools import find_namespace_packages
from setuptools import setup


def read(*names):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, *names), encoding='utf-8') as f:
        return f.read()


version = '0.1.0.dev0'

setup(
    name='collective.safedeploy',
    version=version,
    description=('Atomic, tag-named releases of zc.buildout ZODB sites: '
                 'flip `current` only on success, roll back in one command.'),
    long_description=read('README.rst') + '\n\n' + read('CHANGES.rst'),
    long_description_content_type='text/x-rst',
    classifiers=[
        'Development Status :: 3 - Alpha',
        'Framework :: Buildout',
        'Framework :: Buildout :: Extension',
        'Framework :: Buildout :: Recipe',
        'Framework :: ZODB',
        'Framework :: Zope',
        'Framework :: Plone',
        'Framework :: Pyramid',
        'Intended Audience :: System Administrators',
        'License :: OSI Approved :: Zope Public License',
        'Operating System :: POSIX :: Linux',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3 :: Only',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Topic :: System :: Software Distribution',
        'Topic :: System :: Systems Administration',
    ],
    keywords='buildout zodb zope plone deployment release rollback',
    author='collective.safedeploy contributors',
    author_email='plone-developers@lists.sourceforge.net',
    url='https://github.com/collective/collective.safedeploy',
    project_urls={
        'Source': 'https://github.com/collective/collective.safedeploy',
        'Changelog': ('https://github.com/collective/collective.safedeploy'
                      '/blob/main/CHANGES.rst'),
    },
    license='ZPL-2.1',
    packages=find_namespace_packages('src', include=['collective.*']),
    package_dir={'': 'src'},
    include_package_data=True,
    package_data={'collective.safedeploy.ansible': [
        '*.yml', 'roles/*/*/*.yml']},
    zip_safe=False,
    python_requires='>=3.10',
    install_requires=[
        'zc.buildout>=5',
        'zc.recipe.egg>=2.0.6',
        'zc.lockfile>=2.0',
        # the package index of each release (index/)
        'compoze==1.0',
        'pkginfo>=1.10',
        'packaging',
        'pyproject_hooks>=1.0',
    ],
    extras_require={
        'zodb': [
            'ZODB>=5.8',
            'ZEO>=6',
            'zc.beforestorage',
        ],
        'relstorage': [
            'ZODB>=5.8',
            'RelStorage>=4',
            'psycopg2-binary>=2.9',
        ],
        'test': [
            'zope.testrunner',
            'ZODB>=5.8',
            'ZEO>=6',
            'zc.beforestorage',
            'manuel',
            'hypothesis',
            # the shipped playbooks are run for real (ansible/)
            'ansible-core>=2.16; python_version >= "3.11"',
            # its community.docker collection: the nsenter connection to
            # the machines (namespaces) of test_ansible_machines
            'ansible>=9; python_version >= "3.11"',
            # a real process manager reloaded during evolve-copy
            'supervisor',
            # the stack of a process a test gave up waiting for
            'py-spy',
        ],
    },
    entry_points={
        'zc.buildout.extension': [
            'default = collective.safedeploy.release.extension:load',
        ],
        'zc.buildout.unloadextension': [
            'default = collective.safedeploy.release.extension:unload',
        ],
        'zc.buildout': [
            'rollback = collective.safedeploy.recipes.rollback:Rollback',
            'excluded = collective.safedeploy.recipes.excluded:Excluded',
            'restart = collective.safedeploy.recipes.restart:Restart',
            'snapshot = collective.safedeploy.recipes.snapshot:Snapshot',
            'evolve-copy = collective.safedeploy.recipes.evolve:EvolveCopy',
            'index = collective.safedeploy.recipes.index:Recipe',
            'promote = collective.safedeploy.recipes.promote:Promote',
        ],
        'console_scripts': [
            'safedeploy-rollback = '
            'collective.safedeploy.release.rollback:main',
            'safedeploy-index = collective.safedeploy.index.command:main',
            'safedeploy-snapshot = collective.safedeploy.data.snapshot:main',
            'safedeploy-evolve-copy = '
            'collective.safedeploy.evolve.command:main',
            'safedeploy-zeo-server = collective.safedeploy.zeo.command:main',
            'safedeploy-promote = collective.safedeploy.promote.command:main',
            'safedeploy-ansible = collective.safedeploy.ansible.command:main',
            'safedeploy-balance = collective.safedeploy.ansible.balance:main',
        ],
    },
)
