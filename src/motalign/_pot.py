"""How motalign imports POT (Python Optimal Transport), whose network simplex
(``ot.emd`` and the sparse ``ot.lp.emd_wrap.emd_c_sparse``) the exact solvers use.

POT's package imports every array backend it finds when it is first imported (torch
alone takes seconds and gigabytes); :func:`import_pot` turns them off unless POT was
imported before motalign, in which case it is left as it is.  The solvers use only POT's
NumPy path.

POT also imports two optional libraries that these solvers never use: scikit-learn (for
the k-means initialisation of ``ot.lowrank``) and networkx (for graph partitions in
``ot.gromov``), about a second of start-up together, mostly scikit-learn's.  The
workflow's MOT jobs, short processes that only solve OT, import POT with ``lean=True``:
both are then hidden from POT while it is imported, so that POT takes the code paths it
has for installs without them (its own ``try``/``except ImportError``).  A library user's
``import motalign`` never does this, so POT keeps every feature in their process.
"""

from __future__ import annotations

import importlib
import os
import sys

#: array backends of POT that motalign's solvers never use
_BACKENDS = ("PYTORCH", "JAX", "CUPY", "TENSORFLOW")
#: optional imports of POT that the exact solvers never use (see the module docstring)
LEAN_HIDDEN = ("sklearn", "networkx")


class _Hidden:
    """A meta-path finder that makes the named top-level packages unimportable."""

    def __init__(self, names):
        self.names = tuple(names)

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{name} is hidden while POT is imported", name=name)
        return None


def import_pot(lean: bool = False):
    """Import and return POT (``ot``) with its array backends off, unless it is imported
    already.  ``lean``: also hide scikit-learn and networkx from it while it is imported
    (for processes that only solve OT; see the module docstring)."""
    if "ot" in sys.modules:
        return sys.modules["ot"]
    for backend in _BACKENDS:
        os.environ.setdefault(f"POT_BACKEND_DISABLE_{backend}", "1")
    hidden = [name for name in LEAN_HIDDEN if name not in sys.modules] if lean else []
    finder = _Hidden(hidden)
    if hidden:
        sys.meta_path.insert(0, finder)
    try:
        return importlib.import_module("ot")
    finally:
        if hidden:
            sys.meta_path.remove(finder)
