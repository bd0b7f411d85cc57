#!/bin/sh
# after-flip: (re)start the application on the release current points to.
#
# The first release starts supervisord (the ZEO server and the
# application); later ones make sure the ZEO server runs (it is stopped
# while data is restored) and restart the application only.
set -e
cd "$(dirname "$0")/.."
mkdir -p var/log
ctl="bin/supervisorctl -c supervisord.conf"
if ! $ctl pid >/dev/null 2>&1; then
    exec bin/supervisord -c supervisord.conf
fi
if ! $ctl status zeo | grep -q RUNNING; then
    $ctl start zeo
fi
exec $ctl restart app
