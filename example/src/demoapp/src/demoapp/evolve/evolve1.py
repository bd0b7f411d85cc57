"""Schema 1: documents keep their words counted; files are stored
gzip-compressed, with their size and SHA-256.

Documents: ``body`` becomes ``text``, ``words`` is added.
Files: each blob is rewritten compressed (a new blob revision), and
``encoding``, ``size`` and ``sha256`` are set.
"""
import gzip
import hashlib


def evolve(root):
    site = root['site']
    for name in list(site.keys()):
        item = site[name]
        if item.kind == 'document' and hasattr(item, 'body'):
            item.text = item.body
            del item.body
            item.words = len(item.text.split())
        elif item.kind == 'file' and getattr(item, 'encoding', None) is None:
            with item.blob.open('r') as f:
                data = f.read()
            with item.blob.open('w') as f:
                f.write(gzip.compress(data, mtime=0))
            item.encoding = 'gzip'
            item.size = len(data)
            item.sha256 = hashlib.sha256(data).hexdigest()
