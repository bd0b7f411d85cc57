"""The examples in docs/ run as tests, so the docs cannot drift."""
import doctest
import os
import textwrap

from . import support

DOCS = os.path.join(support.CHECKOUT, 'docs')


def setUp(test):
    sample = support.SampleBuildout()
    sample.add_package('hello', '1.0')
    g = test.globs
    g['sample'] = sample

    def config(safedeploy, parts='hello', extra=''):
        sample.write_config(textwrap.dedent('''\
            extensions = collective.safedeploy
            find-links += %s
            parts = %s rollback

            [safedeploy]
            index = off
            %s

            [hello]
            recipe = zc.recipe.egg
            eggs = hello

            [rollback]
            recipe = collective.safedeploy:rollback
            ''') % (support.built_wheels(), parts, safedeploy) + extra)

    def release(*args):
        r = sample.buildout(*args)
        for line in r.lines[:-1]:
            if line.startswith('Error:'):
                print(line)
        print('exit %d: %s' % (r.returncode, r.last_line))

    def ls(path):
        print(' '.join(sorted(os.listdir(sample.path(path)))))

    def readlink(path):
        return os.readlink(sample.path(path))

    def hello():
        print(support.run([sample.path('current', 'bin', 'hello')]
                          ).output.strip())

    def git(*args):
        r = sample.git(*args)
        if r.returncode:
            print(r.output)

    def rollback(*args):
        print(support.run([sample.path('bin', 'rollback')] + list(args),
                          cwd=sample.directory).output.rstrip())

    def flip(*args):
        print(support.run([sample.path('bin', 'flip')] + list(args),
                          cwd=sample.directory).output.rstrip())

    g.update(config=config, release=release, ls=ls, readlink=readlink,
             hello=hello, git=git, rollback=rollback, flip=flip)


def tearDown(test):
    test.globs['sample'].cleanup()


def test_suite():
    return doctest.DocFileSuite(
        os.path.join(DOCS, 'options.rst'), module_relative=False,
        setUp=setUp, tearDown=tearDown,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
