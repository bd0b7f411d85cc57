"""What the site stores: documents and files (blobs), by name.

``root['site']`` is a BTree of items.  How an item is stored depends on
the data schema (see :mod:`demoapp.evolve`).  Reading understands every
schema up to this code's; writing uses the database's schema, so a
release can go live before its evolve has run on the data (and the
evolve then converts what it wrote, too).
"""
import gzip
import hashlib

from BTrees.OOBTree import OOBTree
from persistent import Persistent
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob

from .evolve import KEY
from .evolve import VERSION as SCHEMA


class Document(Persistent):
    kind = 'document'

    def __init__(self, title, text, schema=SCHEMA):
        self.title = title
        if schema >= 1:
            self.text = text
            self.words = len(text.split())
        else:
            self.body = text

    def read(self):
        return getattr(self, 'text', None) or getattr(self, 'body', '')


class File(Persistent):
    kind = 'file'
    encoding = None

    def __init__(self, data, content_type, schema=SCHEMA):
        self.content_type = content_type
        self.blob = Blob()
        with self.blob.open('w') as f:
            if schema >= 1:
                f.write(gzip.compress(data, mtime=0))
                self.encoding = 'gzip'
                self.size = len(data)
                self.sha256 = hashlib.sha256(data).hexdigest()
            else:
                f.write(data)

    def read(self):
        with self.blob.open('r') as f:
            data = f.read()
        return gzip.decompress(data) if self.encoding == 'gzip' else data


class HealthProbe(Persistent):
    """Written by every health check: proof that writes go through."""
    count = 0


def bootstrap(root):
    """A new database: an empty site at this code's schema."""
    if 'site' in root:
        return False
    root['site'] = OOBTree()
    if 'repoze.evolution' not in root:
        root['repoze.evolution'] = PersistentMapping()
    root['repoze.evolution'][KEY] = SCHEMA
    root['health'] = HealthProbe()
    return True


def database_schema(root):
    return root.get('repoze.evolution', {}).get(KEY, 0)


def describe(name, item):
    info = {'name': name, 'kind': item.kind}
    if item.kind == 'document':
        info['title'] = item.title
        info['text'] = item.read()
    else:
        info['content_type'] = item.content_type
        info['size'] = len(item.read())
    return info
