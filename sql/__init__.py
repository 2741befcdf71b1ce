"""The SQL of the pair-mining stage, as package data.

``jobs.sql_template`` reads these files with :mod:`importlib.resources`, so
the job runs from a built wheel or the ``py_files`` zip of
``python -m jobs.package`` (on a cluster's driver, without the repository).
"""
