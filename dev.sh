#!/usr/bin/env bash
# Set up a development environment and run the demo or the test suite.
#
#   bash dev.sh demo     set everything up, then play the release story
#   bash dev.sh test     set everything up, then run the whole test suite
#   bash dev.sh setup    only set up
#   bash dev.sh plone-wheelhouse
#                        also download Plone (recipes/plone-site.cfg, the
#                        opt-in SAFEDEPLOY_PLONE_SITE=1 test) into
#                        var/wheelhouse-plone; not part of the set-up
#
# Everything lands inside this checkout:
#   .venv/          Python environment for the tests, docs and benchmarks
#   .venv-site/     a minimal environment that runs the sites' bin/buildout
#                   (zc.buildout, zc.recipe.egg, collective.safedeploy)
#   var/wheelhouse/ every distribution the tests and demo build from, so
#                   that once set up nothing needs the network; with
#                   Zope 5 and the recipes of recipes/zope-site.cfg
set -euo pipefail
cd "$(dirname "$0")"
HERE="$(pwd)"
PYTHON="${PYTHON:-python3}"

say() { echo "dev.sh: $*" >&2; }

# what the set-up is made from: when none of it changed since the last
# set-up, a second run reaches no network at all
inputs_hash() {
    cat setup.py requirements-dev.txt requirements-site.txt \
        requirements-zope-site.txt buildout.cfg dev.sh | "$PYTHON" -c \
        'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
}

setup() {
    local stamp=var/setup.stamp want
    want="$(inputs_hash)"
    if [ -x .venv/bin/python ] && [ -x .venv-site/bin/buildout ] && \
            [ -x bin/test ] && [ -f "$stamp" ] && \
            [ "$(cat "$stamp")" = "$want" ]; then
        say "set-up is up to date (nothing fetched; remove $stamp to redo it)"
        return
    fi
    started=$SECONDS
    if [ ! -x .venv/bin/python ]; then
        say "creating .venv (tests, docs, benchmarks)"
        "$PYTHON" -m venv .venv
    fi
    say "installing the project and its test and development tools into .venv"
    .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
    .venv/bin/python -m pip install -q -e '.[test]' -r requirements-dev.txt
    if [ ! -x .venv-site/bin/python ]; then
        say "creating .venv-site (what runs the sites' bin/buildout)"
        "$PYTHON" -m venv .venv-site
    fi
    say "installing zc.buildout and the project into .venv-site"
    .venv-site/bin/python -m pip install -q --upgrade pip setuptools
    .venv-site/bin/python -m pip install -q -e .
    mkdir -p var/wheelhouse
    # what the sample buildouts, the example site and the index tests
    # install from, offline
    say "downloading the sites' distributions into var/wheelhouse"
    .venv/bin/python -m pip download -q -d var/wheelhouse \
        -r requirements-site.txt
    # a pip download of its own: Zope's pins (ZODB 6.2, ...) are not the
    # newest versions requirements-site.txt takes
    say "downloading Zope 5.14.2 and the recipes of recipes/zope-site.cfg into var/wheelhouse (requirements-zope-site.txt)"
    .venv/bin/python -m pip download -q -d var/wheelhouse \
        -r requirements-zope-site.txt
    # the project's own buildout: bin/test (zc.recipe.testrunner)
    say "running the project's buildout (bin/test)"
    .venv/bin/buildout -q -c buildout.cfg
    echo "$want" > "$stamp"
    say "set up in $((SECONDS - started)) s; $(du -sh .venv .venv-site var/wheelhouse 2>/dev/null | awk '{printf "%s %s  ", $2, $1}')"
}

# Plone and everything it needs, for recipes/plone-site.cfg: a wheelhouse
# of its own (var/wheelhouse-plone), downloaded only when asked for.
plone_wheelhouse() {
    local stamp=var/wheelhouse-plone.stamp want
    want="$(cat requirements-plone-site.txt requirements-zope-site.txt | \
        "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        say "var/wheelhouse-plone is up to date (nothing fetched; remove $stamp to redo it)"
        return
    fi
    started=$SECONDS
    mkdir -p var/wheelhouse-plone
    say "downloading Plone 6.2.2, Zope 5.14.2 and the recipes into var/wheelhouse-plone (requirements-plone-site.txt)"
    .venv/bin/python -m pip download -q -d var/wheelhouse-plone \
        -r requirements-plone-site.txt -r requirements-zope-site.txt
    echo "$want" > "$stamp"
    say "downloaded in $((SECONDS - started)) s; var/wheelhouse-plone $(du -sh var/wheelhouse-plone | cut -f1); run the Plone site test: SAFEDEPLOY_PLONE_SITE=1 bin/test -m test_zope_site"
}

# The whole suite, as five test runner processes side by side (most
# tests wait on subprocesses: bin/buildout, ZEO, PostgreSQL, HAProxy,
# Ansible, filesystems), then one summary line over all of them.  The
# last group is every test module the others do not name.
SUITE_GROUPS=('test_(interrupts|crash|snapshot|promote)'
        'test_(evolve|data_prune|site_zeo|zope_site)'
        'test_(ansible|mistakes)'
        'test_(mrdeveloper|excluded|example|backup_recipe)')
run_suite() {
    mkdir -p var
    local n=$((${#SUITE_GROUPS[@]} + 1)) pids=() rest=() logs=() i
    echo "running the test suite in $n processes (logs: var/test-[1-$n].log)"
    # each in a session of its own: a signal a test sends to its process
    # group never reaches the others, or this script
    for i in "${!SUITE_GROUPS[@]}"; do
        setsid -w bin/test -m "${SUITE_GROUPS[$i]}" \
            >"var/test-$((i + 1)).log" 2>&1 &
        pids+=($!)
        rest+=(-m "!${SUITE_GROUPS[$i]}")
        logs+=("var/test-$((i + 1)).log")
    done
    logs+=("var/test-$n.log")
    rc=0
    setsid -w bin/test "${rest[@]}" >"var/test-$n.log" 2>&1 || rc=$?
    for i in "${pids[@]}"; do
        wait "$i" || rc=$?
    done
    cat "${logs[@]}"
    .venv/bin/python - "${logs[@]}" <<'PY'
import re, sys
totals = [0, 0, 0, 0]
for log in sys.argv[1:]:
    found = [m for m in re.finditer(
        r'(?:Total:|Ran) (\d+) tests, (\d+) failures, (\d+) errors'
        r'(?: and (\d+) skipped)?|Ran (\d+) tests with (\d+) failures, '
        r'(\d+) errors(?: and (\d+) skipped)?', open(log).read())]
    if not found:
        print('%s: the test runner printed no summary' % log)
        totals[2] += 1
        continue
    g = [int(x or 0) for x in found[-1].groups()]
    for i in range(4):
        totals[i] += g[i] + g[i + 4]
print('Total: %d tests, %d failures, %d errors and %d skipped' % tuple(totals))
PY
    return "$rc"
}

case "${1:-test}" in
    setup)
        setup
        ;;
    test)
        setup
        shift || true
        # the byte code of every Python the tests start (bin/buildout, the
        # generated scripts, this package, the sample eggs) is cached in
        # one directory of the checkout's own, outside the trees the tests
        # compare; with PYTHONDONTWRITEBYTECODE each would compile it again
        export PYTHONPYCACHEPREFIX="$HERE/var/pycache"
        unset PYTHONDONTWRITEBYTECODE
        if [ $# -gt 0 ]; then
            exec bin/test "$@"
        fi
        run_suite
        ;;
    plone-wheelhouse)
        setup
        plone_wheelhouse
        ;;
    demo)
        setup
        shift || true
        exec .venv/bin/python example/demo.py "$@"
        ;;
    *)
        echo "usage: bash dev.sh [setup|test|demo|plone-wheelhouse]" >&2
        exit 2
        ;;
esac
