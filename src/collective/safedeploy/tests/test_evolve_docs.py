"""docs/evolve.rst: its examples run."""
import doctest
import os
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.abspath(os.path.join(HERE, '..', '..', '..', '..', 'docs',
                                   'evolve.rst'))


def test_suite():
    if not os.path.exists(DOC):   # an installed package without the docs
        return unittest.TestSuite()
    return doctest.DocFileSuite(
        DOC, module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
