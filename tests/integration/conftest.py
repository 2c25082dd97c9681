"""Fixtures shared by the integration tests (``tests/conftest.py`` has the ensembles)."""

from __future__ import annotations

import time

import pytest

from tests.integration.promql import PAYLOAD_TOML, scrape
from tests.support.ensemble import Ensemble


@pytest.fixture(scope="package")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """/metrics of each node of a 3-node ensemble that elected a leader and served writes."""
    with Ensemble(tmp_path_factory.mktemp("metrics"), extra_toml=PAYLOAD_TOML, metrics=True) as ens:
        ens.start()
        lead = ens.wait_leader()
        with ens.client_for(timeout=2.0, retry_for=10) as c:
            for i in range(20):
                c.set(f"k{i}", i)
            c.get("k0")
        deadline = time.monotonic() + 10
        while 'zraft_payload_running{plugin="script-leader",role="leader"} 1.0' not in scrape(
            ens, lead
        ):
            assert time.monotonic() < deadline, "the leader payload never started"
            time.sleep(0.1)
        return {nid: scrape(ens, nid) for nid in ens.ids}
