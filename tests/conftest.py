"""Fixtures for every test directory: ensembles of real ``zraft run`` processes on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ensemble import Ensemble


@pytest.fixture
def make_ensemble(tmp_path: Path) -> Iterator[Callable[..., Ensemble]]:
    """Build loopback ensembles with metrics endpoints, not started; stop each at teardown.

    ``make_ensemble(n=3, workdir=tmp_path, **options)`` takes ``Ensemble``'s
    options (``extra_toml``, ``timing``, ...). At teardown every node still
    running gets SIGTERM (SIGKILL after ``Ensemble.stop_timeout``).
    """
    made: list[Ensemble] = []

    def make(n: int = 3, workdir: Path | None = None, **options: Any) -> Ensemble:
        ens = Ensemble(workdir or tmp_path, n, metrics=True, **options)
        made.append(ens)
        return ens

    yield make
    for ens in made:
        ens.stop_all()
        ens.close()


@pytest.fixture
def ensemble(make_ensemble: Callable[..., Ensemble]) -> Ensemble:
    """A 3-node ensemble on loopback in ``tmp_path``, started (no leader awaited yet)."""
    ens = make_ensemble()
    ens.start()
    return ens
