project = 'collective.safedeploy'
author = 'collective.safedeploy contributors'
copyright = '2026, collective.safedeploy contributors'
extensions = []
master_doc = 'index'
exclude_patterns = ['_build']
html_theme = 'alabaster'
