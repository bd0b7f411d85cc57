"""The example application: documents and files kept in ZODB (with
blobs), served over HTTP by waitress, talking to a ZEO server.

``demoapp`` prints which release is running; ``demoapp-serve`` serves.
"""
VERSION = '1.0'


def main(argv=None):
    from .evolve import VERSION as SCHEMA
    print('demoapp %s (data schema %d)' % (VERSION, SCHEMA))
    return 0
