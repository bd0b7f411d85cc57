"""The example application: prints which release is running."""
import sys

VERSION = '1.0'
HEALTHY = True


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if '--check' in argv:
        return 0 if HEALTHY else 1
    print('demoapp %s' % VERSION)
    return 0
