"""``demoapp-serve``: the application, served by waitress, its database
on a ZEO server.

The buildout part generating the script passes ``port``, ``zeo``
(HOST:PORT) and ``blob_cache`` (the client's blob cache, emptied at start:
after a rollback with data it may hold another database's blobs).
"""
import logging
import os
import shutil

import waitress
import ZEO
import ZODB

from .app import Application


def make_db(zeo, blob_cache):
    host, port = zeo.rsplit(':', 1)
    shutil.rmtree(blob_cache, ignore_errors=True)
    os.makedirs(blob_cache)
    storage = ZEO.client((host, int(port)), blob_dir=blob_cache,
                         shared_blob_dir=False, read_only_fallback=True,
                         wait_timeout=60)
    return ZODB.DB(storage)


def main(port, zeo, blob_cache, host='127.0.0.1'):
    logging.basicConfig(level=logging.INFO)
    db = make_db(zeo, blob_cache)
    try:
        waitress.serve(Application(db), host=host, port=int(port),
                       threads=4, _quiet=True)
    finally:
        db.close()
