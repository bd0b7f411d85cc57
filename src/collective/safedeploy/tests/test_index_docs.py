"""docs/indexes.rst: its examples run, so they cannot drift."""
import doctest
import logging
import os

from . import support


def tearDown(test):
    # bin/index set up its logging; leave none behind for other tests
    logging.getLogger('collective.safedeploy').handlers[:] = []
    logging.getLogger('collective.safedeploy').propagate = True


def test_suite():
    return doctest.DocFileSuite(
        os.path.join(support.CHECKOUT, 'docs', 'indexes.rst'),
        module_relative=False, tearDown=tearDown,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
