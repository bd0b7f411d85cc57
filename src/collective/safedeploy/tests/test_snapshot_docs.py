"""docs/snapshots.rst: its examples run, so they cannot drift."""
import doctest
import os

from . import support


def test_suite():
    return doctest.DocFileSuite(
        os.path.join(support.CHECKOUT, 'docs', 'snapshots.rst'),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
