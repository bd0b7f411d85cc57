#!/bin/sh
# thaw-command of bin/evolve-copy: production writable again, on the data
# generation var/current points to now (the evolved copy after a switch,
# the old data after a failure).
#
# restart, not start: after a "supervisorctl reload" during the evolve,
# supervisord has started zeo again already (on the old data) -- it must
# be restarted to serve the generation current now.
set -e
cd "$(dirname "$0")/.."
ctl="bin/supervisorctl -c supervisord.conf"
if $ctl status zeo-readonly | grep -q RUNNING; then
    $ctl stop zeo-readonly
fi
$ctl restart zeo
