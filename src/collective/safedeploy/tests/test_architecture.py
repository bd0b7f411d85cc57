"""docs/architecture.rst's module map is the package's tree."""
import os
import re
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.dirname(HERE)
DOC = os.path.join(PACKAGE, '..', '..', '..', 'docs', 'architecture.rst')


def modules_in_tree():
    found = set()
    for directory, dirs, files in os.walk(PACKAGE):
        rel = os.path.relpath(directory, PACKAGE)
        if rel.split(os.sep)[0] in ('tests', '__pycache__'):
            dirs[:] = []
            continue
        for name in files:
            if name.endswith('.py') and name != '__init__.py':
                found.add(os.path.normpath(os.path.join(rel, name)))
    return found


def modules_in_map():
    """``dir/  name.py  what`` lines; ``sub/name.py other.py`` names
    modules of a sub-package."""
    with open(DOC) as f:
        text = f.read()
    block = text.split('Module map', 1)[1].split('collective/safedeploy/',
                                                    1)[1]
    found = set()
    package = None
    for line in block.splitlines():
        if line.strip() and not line.startswith(' '):
            break                     # the end of the literal block
        head = re.match(r'\s{6}([a-z]+)/\s', line)
        if head:
            package = head.group(1)
            line = line[head.end():]
        prefix = package
        for sub, name in re.findall(r'\b(?:([a-z]+)/)?([a-z_]+\.py)\b',
                                    line):
            if sub:
                prefix = os.path.join(package, sub)
            found.add(os.path.join(prefix, name))
    return found


class ModuleMapTests(unittest.TestCase):

    def test_the_map_lists_every_module_and_no_other(self):
        tree, documented = modules_in_tree(), modules_in_map()
        self.assertEqual(sorted(tree - documented), [],
                         'modules missing from docs/architecture.rst')
        self.assertEqual(sorted(documented - tree), [],
                         'modules in docs/architecture.rst that do not exist')
