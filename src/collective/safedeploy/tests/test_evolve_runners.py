"""The three evolve runner kinds on a real FileStorage with blobs."""
import os
import unittest

import transaction

from collective.safedeploy.core.errors import ConfigurationError
from collective.safedeploy.evolve import reindex
from collective.safedeploy.evolve import runners
from collective.safedeploy.tests import zeosupport
from collective.safedeploy.tests import zodbsupport
from collective.safedeploy.tests.evolve_example import model

PACKAGE = zeosupport.EXAMPLE


class RunnerTests(unittest.TestCase):

    def setUp(self):
        self.dir = zeosupport.temporary_directory(self)
        self.fs = os.path.join(self.dir, 'Data.fs')
        self.blobs = os.path.join(self.dir, 'blobs')
        db = self.open()
        with db.transaction() as conn:
            model.make_site(conn.root(), 4)
        db.close()
        self.addCleanup(os.environ.pop, 'SAFEDEPLOY_EXAMPLE_FAIL', None)

    def open(self):
        return zodbsupport.open_db(self.fs, self.blobs)

    def evolve(self, spec, **kw):
        db = self.open()
        try:
            return runners.evolve(db, spec, **kw)
        finally:
            db.close()

    def site(self):
        db = self.open()
        try:
            conn = db.open()
            root = conn.root()
            docs = {}
            for docid, doc in root['site'].documents.items():
                with doc.body.open('r') as f:
                    docs[docid] = (doc.title, f.read())
            catalog = root['site'].catalog
            result = dict(
                docs=docs, titles=dict(catalog['title'].values.items()),
                title_reindexed=catalog['title'].reindexed,
                size_reindexed=catalog['size'].reindexed,
                repoze=dict(root.get(runners.REPOZE_KEY, {})),
                generations=dict(root.get(runners.GENERATIONS_KEY, {})),
                transactions=len(zodbsupport.transaction_ids(self.fs)))
            conn.close()
            return result
        finally:
            db.close()

    def assertEvolved(self, site):
        self.assertEqual(site['docs'][2], ('title 2', b'BODY OF 2'))
        self.assertEqual(site['titles'][2], 'title 2')
        # step 3 re-indexed the title index only
        self.assertEqual(site['title_reindexed'], 8)
        self.assertEqual(site['size_reindexed'], 4)

    def test_repoze_evolution_package(self):
        before = self.site()['transactions']
        runner, steps = self.evolve(PACKAGE, context_key='site')
        self.assertEqual([s.name for s in steps], [
            PACKAGE + '.evolve1', PACKAGE + '.evolve2',
            PACKAGE + '.evolve3'])
        site = self.site()
        self.assertEvolved(site)
        self.assertEqual(site['repoze'], {PACKAGE: 3})
        # one transaction per step
        self.assertEqual(site['transactions'], before + 3)
        self.assertTrue(all(s.seconds >= 0 and s.objects > 0 for s in steps))
        # at its target: nothing to do
        runner, steps = self.evolve(PACKAGE, context_key='site')
        self.assertEqual(steps, [])

    def test_zope_generations_schema_manager(self):
        db = self.open()
        with db.transaction() as conn:
            conn.root()[runners.GENERATIONS_KEY] = {PACKAGE: 0}
        db.close()
        runner, steps = self.evolve(zeosupport.GENERATIONS)
        self.assertEqual(len(steps), 3)
        site = self.site()
        self.assertEvolved(site)
        self.assertEqual(site['generations'], {PACKAGE: 3})

    def test_zope_generations_install_on_a_new_database(self):
        runner, steps = self.evolve(zeosupport.GENERATIONS)
        self.assertEqual([s.name for s in steps], [PACKAGE + ' install'])
        self.assertEqual(self.site()['generations'], {PACKAGE: 3})

    def test_function(self):
        runner, steps = self.evolve(zeosupport.FUNCTION)
        self.assertEqual([s.name for s in steps], [
            zeosupport.FUNCTION + ': step %d' % n for n in (1, 2, 3)])
        self.assertEvolved(self.site())

    def test_a_failing_step_keeps_the_steps_before_it_and_resumes(self):
        for spec, kw in ((PACKAGE, dict(context_key='site')),
                         (zeosupport.FUNCTION, {})):
            self.setUp()
            os.environ['SAFEDEPLOY_EXAMPLE_FAIL'] = '2'
            with self.assertRaises(runners.EvolveError) as e:
                self.evolve(spec, **kw)
            self.assertIn('example step 2 fails on purpose', str(e.exception))
            self.assertEqual(len(e.exception.done), 1)
            site = self.site()
            # step 1 committed, step 2 rolled back entirely (blobs too)
            self.assertEqual(site['docs'][2], ('title 2', b'body of 2'))
            del os.environ['SAFEDEPLOY_EXAMPLE_FAIL']
            runner, steps = self.evolve(spec, **kw)
            self.assertEqual(len(steps), 2)   # steps 2 and 3 only
            self.assertEvolved(self.site())

    def test_stop_after_and_resume(self):
        runner, steps = self.evolve(PACKAGE, context_key='site',
                                    stop_after=1)
        self.assertEqual(self.site()['repoze'], {PACKAGE: 1})
        db = self.open()
        try:
            status = runners.status(db, runner)
        finally:
            db.close()
        self.assertEqual(status['pending'], [PACKAGE + '.evolve2',
                                             PACKAGE + '.evolve3'])
        self.assertFalse(status['reached'])
        runner, steps = self.evolve(PACKAGE, context_key='site')
        self.assertEqual(len(steps), 2)
        self.assertEvolved(self.site())

    def test_bad_specs_are_one_line_errors(self):
        for spec, message in (
                ('', 'no evolve given'),
                ('no.such.package', 'cannot import no.such.package'),
                (PACKAGE + '.model', 'is a module, not a package'),
                (PACKAGE + '.model:nothing', 'has no nothing'),
                (PACKAGE + ':VERSION', 'neither a schema manager')):
            with self.assertRaises(ConfigurationError) as e:
                runners.runner_for(spec)
            self.assertIn(message, str(e.exception))
            self.assertNotIn('\n', str(e.exception))

    def test_missing_context(self):
        with self.assertRaises(ConfigurationError) as e:
            self.evolve(PACKAGE, context_key='nosite')
        self.assertIn('evolve-context', str(e.exception))


class ReindexTests(unittest.TestCase):

    def test_cmf_style_objects_reindex_themselves(self):
        calls = []

        class Content:
            def reindexObject(self, idxs=()):
                calls.append(idxs)
        r = reindex.Reindexer()
        doc = Content()
        r.changed(doc, 'Title')
        r.changed(doc, 'SearchableText', 'Title')
        self.assertEqual(r.flush(), 2)
        self.assertEqual(calls, [['SearchableText', 'Title']])

    def test_repoze_catalog_style(self):
        site = model.Site()
        doc = site.add(1, ' x ', b'data')
        doc.title = 'x'
        r = reindex.Reindexer(site.catalog, docid_for=site.docid_for)
        r.changed(doc, 'title')
        r.flush()
        self.assertEqual(site.catalog['title'].values[1], 'x')
        self.assertEqual(site.catalog['title'].reindexed, 2)
        self.assertEqual(site.catalog['size'].reindexed, 1)
        transaction.abort()

    def test_without_catalog(self):
        with self.assertRaises(ConfigurationError):
            reindex.reindex(object(), ['title'])
