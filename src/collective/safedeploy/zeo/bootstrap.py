"""``python -m collective.safedeploy.zeo.bootstrap CONF PIDFILE``: runzeo,
with its imports done before the go.

:meth:`~collective.safedeploy.zeo.server.ZEOServer.prepare` starts this
while the copy is made; it imports ZEO and ZODB, says ``ready`` and waits
for one line on stdin: ``go [POSITION]`` (end of file: it exits).  Then it
writes its pid file, sets the server up (:func:`~collective.safedeploy.
zeo.freeze.server_setup`) and runs runzeo with the configuration written
meanwhile.  A restart inside the read-only window then costs the stop and
the storage open only.
"""
import os
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    conf, pidfile = argv[0], argv[1]
    import ZEO.runzeo
    import ZEO.StorageServer  # noqa: F401 (imported before the go)
    import ZODB.blob  # noqa: F401
    import ZODB.FileStorage  # noqa: F401
    from .freeze import server_setup
    options = ZEO.runzeo.ZEOOptions()
    options.load_schema()
    print('ready', flush=True)
    go = sys.stdin.readline().split()
    if go[:1] != ['go']:
        return 0
    sys.stdin.close()
    tmp = pidfile + '.%d.tmp' % os.getpid()
    with open(tmp, 'w') as f:
        f.write('%d freezable\n' % os.getpid())
    os.replace(tmp, pidfile)
    server_setup(os.path.dirname(pidfile),
                 int(go[1]) if len(go) > 1 else None)
    os.dup2(2, 1)
    options.realize(['-C', conf])
    ZEO.runzeo.ZEOServer(options).main()
    return 0


if __name__ == '__main__':
    sys.exit(main())
