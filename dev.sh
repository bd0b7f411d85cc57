#!/usr/bin/env bash
# Set up a development environment and run the demo or the test suite.
#
#   bash dev.sh demo     set everything up, then play the release story
#   bash dev.sh test     set everything up, then run the whole test suite
#   bash dev.sh setup    only set up
#
# Everything lands inside this checkout:
#   .venv/          Python environment for the tests, docs and benchmarks
#   .venv-site/     a minimal environment that runs the sites' bin/buildout
#                   (zc.buildout, zc.recipe.egg, collective.safedeploy)
#   var/wheelhouse/ every distribution the tests and demo build from, so
#                   that once set up nothing needs the network
set -euo pipefail
cd "$(dirname "$0")"
HERE="$(pwd)"
PYTHON="${PYTHON:-python3}"

setup() {
    if [ ! -x .venv/bin/python ]; then
        "$PYTHON" -m venv .venv
    fi
    .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
    .venv/bin/python -m pip install -q -e '.[test]' -r requirements-dev.txt
    if [ ! -x .venv-site/bin/python ]; then
        "$PYTHON" -m venv .venv-site
    fi
    .venv-site/bin/python -m pip install -q --upgrade pip setuptools
    .venv-site/bin/python -m pip install -q -e .
    mkdir -p var/wheelhouse
    # what the sample buildouts, the example site and the index tests
    # install from, offline
    .venv/bin/python -m pip download -q -d var/wheelhouse \
        -r requirements-site.txt
    # the project's own buildout: bin/test (zc.recipe.testrunner)
    .venv/bin/buildout -q -c buildout.cfg
}

case "${1:-test}" in
    setup)
        setup
        ;;
    test)
        setup
        shift || true
        exec bin/test "$@"
        ;;
    demo)
        setup
        shift || true
        exec .venv/bin/python example/demo.py "$@"
        ;;
    *)
        echo "usage: bash dev.sh [setup|test|demo]" >&2
        exit 2
        ;;
esac
