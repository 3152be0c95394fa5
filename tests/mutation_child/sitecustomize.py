"""Imported at start-up only by bot/CLI subprocesses of a mutation run (tests/harness.py puts this
folder on PYTHONPATH then). The mutated code imports mutmut, which reads its settings from the
working directory; a subprocess runs in a test's temporary folder, so read them from the mutated
tree first."""

import os

_tree = os.environ.get("MUTATION_TREE")
if _tree:
    _here = os.getcwd()
    os.chdir(_tree)
    try:
        from mutmut.configuration import config

        config()
    finally:
        os.chdir(_here)
