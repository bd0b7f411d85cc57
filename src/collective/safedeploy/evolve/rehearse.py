"""``bin/evolve-copy --rehearse``: the evolve in a copy-on-write sandbox.

A DemoStorage over production opened read-only, pinned with
zc.beforestorage just after production's last transaction: the evolve
runs on it, its writes land in the sandbox, nothing is copied and
production is not touched.  With ``--keep-sandbox`` the sandbox stays,
with a ``zodb.conf`` to serve it from.
"""
import os
import sys
import tempfile
import time

from ..core import fsutil
from ..core.errors import Refused
from ..data import filestorage
from . import runners
from .state import DataRoot

SANDBOX_CONF = '''\
%import zc.beforestorage
# collective.safedeploy rehearsal sandbox: production read-only (pinned
# before {before}), changes in this directory.
<zodb main>
  <demostorage>
    <before>
      before {before}
      <filestorage>
        path {fs}
        blob-dir {blobs}
        read-only true
      </filestorage>
    </before>
    <filestorage changes>
      path {changes}
      blob-dir {changes_blobs}
    </filestorage>
  </demostorage>
</zodb>
'''


def before_string(tid):
    """A zc.beforestorage ``before`` time just after transaction ``tid``."""
    import datetime
    import math
    from persistent.TimeStamp import TimeStamp
    t = TimeStamp(tid)
    micro = math.floor(t.second() * 1e6) + 1
    base = datetime.datetime(t.year(), t.month(), t.day(), t.hour(),
                             t.minute()) + datetime.timedelta(
                                 microseconds=micro)
    return base.strftime('%Y-%m-%dT%H:%M:') + '%09.6f' % (
        base.second + base.microsecond / 1e6)


def rehearse(data, evolve, sandbox=None, keep_sandbox=False,
             evolve_context=None, evolve_key=None, out=None):
    """Run the evolve in a copy-on-write sandbox over production."""
    import ZODB.config
    out = out or sys.stdout
    data = DataRoot(data)
    name = data.current()
    runner = runners.runner_for(evolve, evolve_context, evolve_key)
    fs, blobs = data.fs(name), data.blobs(name)
    last = filestorage.committed_end(fs).last_tid
    if sandbox is None:
        sandbox = tempfile.mkdtemp(prefix='evolve-rehearsal-',
                                   dir=data.path)
    else:
        if os.path.exists(sandbox) and os.listdir(sandbox):
            raise Refused('%s exists and is not empty; give a new sandbox '
                          'directory' % sandbox)
        os.makedirs(sandbox, exist_ok=True)
    sandbox = os.path.abspath(sandbox)
    conf = SANDBOX_CONF.format(
        before=before_string(last) if last else 'now', fs=fs, blobs=blobs,
        changes=os.path.join(sandbox, 'changes.fs'),
        changes_blobs=os.path.join(sandbox, 'blobs'))
    fsutil.atomic_write(os.path.join(sandbox, 'zodb.conf'), conf)
    out.write('rehearsing %s on data generation %s (sandbox %s)\n' % (
        runner.describe(), name, sandbox))
    errors = []
    started = time.monotonic()
    db = ZODB.config.databaseFromString(conf)
    try:
        try:
            _, steps = runners.evolve(db, runner)
        except runners.EvolveError as e:
            steps = e.done
            errors.append(str(e))
        status = runners.status(db, runner)
    finally:
        db.close()
    for s in steps:
        out.write('  %s: %.3f s, %d objects\n' % (s.name, s.seconds,
                                                  s.objects))
    for e in errors:
        out.write('  error: %s\n' % e)
    out.write('rehearsal: %.3f s, %d steps, %d objects changed, %d errors, '
              'version %s of %s\n' % (
                  time.monotonic() - started, len(steps),
                  sum(s.objects for s in steps), len(errors),
                  status['version'], status['target']))
    if keep_sandbox:
        out.write('sandbox kept in %s; serve it with the ZODB configuration '
                  '%s\n' % (sandbox, os.path.join(sandbox, 'zodb.conf')))
    else:
        fsutil.remove_tree(sandbox)
    return dict(steps=[s.as_dict() for s in steps], errors=errors,
                sandbox=sandbox if keep_sandbox else None, status=status)
