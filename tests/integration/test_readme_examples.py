"""The README's plugin examples, run as written: a payload and a state machine."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import ROOT
from tests.support.ensemble import Ensemble
from zraft.api.client import ZraftError


def readme_block(heading: str) -> str:
    """Return the first ```python block after ``heading`` in README.md."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading}"
    return match.group(1)


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_readme_payload_and_state_machine_examples_work_as_written(
    tmp_path: Path, make_ensemble: Callable[..., Ensemble]
) -> None:
    marker = tmp_path / "leader_marker.py"
    marker.write_text(readme_block("## Writing a payload plugin"))
    counter = tmp_path / "counter.py"
    counter.write_text(readme_block("## Writing a state machine"))
    cluster = make_ensemble(extra_toml=f'[plugins]\nfiles = ["{marker}", "{counter}"]\n')
    cluster.start()
    lead = cluster.wait_leader()
    term = cluster.statuses()[lead]["term"]
    with cluster.client_for() as c:
        end = time.monotonic() + 20
        while (owner := c.get("leader/owner")) is None:
            assert time.monotonic() < end, "the leader payload never wrote its key"
            time.sleep(0.05)
        assert owner == {"node": lead, "term": term}
        assert c.call("add", name="visits", by=2) == 2
        assert c.call("add", name="visits", by=3) == 5
        assert c.call("total", name="visits") == 5
        with pytest.raises(ZraftError) as err:
            c.call("add", name="visits", by=0)
        assert err.value.code == "BAD_REQUEST"
        with pytest.raises(ZraftError) as err:
            c.call("add", name="visits")
        assert err.value.code == "BAD_REQUEST" and "by" in str(err.value)
    st = cluster.statuses()
    followers = [n for n in cluster.ids if n != lead]
    assert st[lead]["payloads"]["leader"] == ["leader_marker"]
    assert all(st[n]["payloads"]["follower"] == ["leader_marker"] for n in followers)
    assert "following " + lead in cluster.log_text(followers[0])
