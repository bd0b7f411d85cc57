#!/bin/sh
# freeze-command of bin/evolve-copy: production read-only.
#
# ZEO has no runtime read-only switch: the server is restarted read-only
# on the same address.  The application's ZEO client falls back to a
# read-only connection (read_only_fallback) and keeps answering reads;
# writes answer 503 until thaw.sh.
set -e
cd "$(dirname "$0")/.."
ctl="bin/supervisorctl -c supervisord.conf"
$ctl stop zeo
$ctl start zeo-readonly
