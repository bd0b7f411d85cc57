"""Stands in, inside a release, for a part listed in
``safedeploy:exclude-parts``: the real part is installed outside the
releases (:mod:`collective.safedeploy.release.excluded`), its section
holds the options it is installed with, and a release installs nothing
for it."""


class Excluded:

    def __init__(self, buildout, name, options):
        pass

    def install(self):
        return ()

    update = install
