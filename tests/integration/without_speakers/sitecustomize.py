"""Loaded by a test server (PYTHONPATH) to run it as if the `speakers` extra were not installed:
importing torch or resemblyzer fails exactly as it does where they are absent."""

import sys
from importlib.abc import MetaPathFinder

HIDDEN = {"torch", "resemblyzer"}


class _Hide(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Hide())
