"""zraft's tests, laid out like the package they test.

- ``unit/``: one directory per package of ``zraft/`` (``unit/core/`` for
  ``zraft/core/`` and so on); no real ensembles, no sleeping.
- ``integration/``: real ``zraft`` processes, systemd and Prometheus.
- ``sim/``: the deterministic simulation harness and its tests.
- ``faults/``: the real-process fault harness (network namespaces) and its tests.
- ``support/``: what more than one of those directories uses (the ``Ensemble``
  of node processes; ``conftest.py`` makes fixtures of it).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository's root directory."""
