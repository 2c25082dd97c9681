"""The configuration layer: examples load, and every mistake is reported at once."""

import dataclasses
from pathlib import Path

import pytest

from tests import ROOT
from zraft.config import (
    ClientConfig,
    ConfigError,
    EnsembleConfig,
    NodeConfig,
    PayloadConfig,
    PluginsConfig,
    RaftConfig,
    StorageConfig,
    describe,
    load_config,
    load_default,
    parse_config,
)
from zraft.payload.fencing import fencing_problem, lease_problem

EXAMPLES = sorted((ROOT / "configs").glob("*.toml"))
F = "configs/x.toml"


def node_toml(i: int, **override: str) -> str:
    """Returns a valid [[node]] table for loopback node i, with keys replaced or dropped."""
    keys = {
        "id": f'"n{i}"',
        "raft": f'"tcp://127.0.0.1:{7100 + i}"',
        "client": f'"tcp://127.0.0.1:{7000 + i}"',
        "data_dir": f'"data/n{i}"',
        "metrics": f'"127.0.0.1:{9100 + i}"',
    }
    keys.update(override)
    body = "".join(f"{k} = {v}\n" for k, v in keys.items() if v is not None)
    return f"[[node]]\n{body}\n"


def ensemble(*nodes: str, raft: str = "", extra: str = "") -> str:
    """Returns a config text with the given node tables (three good ones by default)."""
    nodes = nodes or tuple(node_toml(i) for i in (1, 2, 3))
    return f'[ensemble]\nname = "t"\n\n[raft]\n{raft}\n{extra}\n' + "".join(nodes)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, F)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


# --- the shipped files -------------------------------------------------------


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"local.toml", "five-nodes.toml", "production-example.toml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_loads(path: Path):
    config = load_config(path)
    assert config.path == str(path)
    assert config.warnings == ()
    assert len(config.nodes) % 2 == 1


def test_embedded_default_is_configs_local_byte_for_byte():
    embedded = (ROOT / "zraft" / "default.toml").read_bytes()
    assert embedded == (ROOT / "configs" / "local.toml").read_bytes()


def test_embedded_default_is_a_local_three_node_ensemble():
    config = load_default()
    assert config.path == "<embedded default>"
    assert config.name == "local"
    assert config.ids == ("n1", "n2", "n3")
    assert config.node("n2") == NodeConfig(
        id="n2",
        raft="tcp://127.0.0.1:7102",
        client="tcp://127.0.0.1:7002",
        data_dir=Path("data/n2"),
        metrics="127.0.0.1:9102",
    )
    # The default ensemble uses the declared defaults: they live in one place.
    assert (config.raft, config.storage, config.client, config.plugins) == (
        RaftConfig(),
        StorageConfig(),
        ClientConfig(),
        PluginsConfig(),
    )


def test_production_example_uses_absolute_data_dirs_and_documents_every_key():
    path = ROOT / "configs" / "production-example.toml"
    config = load_config(path)
    assert all(n.data_dir.is_absolute() for n in config.nodes)
    assert all(str(n.data_dir).startswith("/var/lib/zraft") for n in config.nodes)
    text = path.read_text()
    declared = [
        f.name
        for cls in (
            NodeConfig,
            RaftConfig,
            StorageConfig,
            ClientConfig,
            PluginsConfig,
            PayloadConfig,
        )
        for f in dataclasses.fields(cls)
        if f.name != "settings"  # a table of tables, shown as [plugins.settings.<name>]
    ]
    for key in declared:
        assert f"\n{key} = " in text, f"{key} is not shown in the production example"
    assert "[plugins.settings." in text


# --- all errors at once ----------------------------------------------------------


def test_several_mistakes_are_reported_together_each_with_file_and_key_path():
    text = ensemble(
        node_toml(1),
        node_toml(2, raft='"tcp://127.0.0.1"', data_dir=None),
        node_toml(3, id='"n1"', client='"tcp://127.0.0.1:7002"'),
        raft="heartbeat_interval_ms = 100\nelection_timeout_ms = 200\npre_vote = 1\n",
        extra="[storage]\nsegment_byte = 4096\n",
    )
    assert errors_of(text) == [
        f"{F}: raft.pre_vote: must be true or false (got integer 1)",
        f"{F}: raft.election_timeout_ms: must be at least 3 × heartbeat_interval_ms "
        "(got 200 < 300)",
        f'{F}: storage.segment_byte: unknown key; did you mean "segment_bytes"?',
        f'{F}: node[1].raft: "tcp://127.0.0.1" has no port',
        f"{F}: node[1].data_dir: missing required key",
        f'{F}: node[2].id: "n1" is already the id of node[0]',
        f'{F}: node[2].client: "tcp://127.0.0.1:7002" is already used by node[1].client',
    ]


def test_syntax_error_carries_line_and_column():
    assert errors_of('[ensemble]\nname = "t"\n[raft]\ntick_ms = = 1\n') == [
        f"{F}:4:11: Invalid value"
    ]


def test_unreadable_file_names_the_path(tmp_path: Path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=f"^{missing}: cannot read: "):
        load_config(missing)


# --- keys and types ------------------------------------------------------------


def test_unknown_key_suggests_the_close_match():
    errors = errors_of(ensemble(raft="heartbeat_interval = 100", extra="[clinet]\n"))
    assert errors == [
        f'{F}: clinet: unknown key; did you mean "client"?',
        f'{F}: raft.heartbeat_interval: unknown key; did you mean "heartbeat_interval_ms"?',
    ]


def test_unknown_key_without_a_close_match_lists_the_known_keys():
    [error] = errors_of(ensemble(node_toml(1, colour='"red"')))
    assert error == (
        f"{F}: node[0].colour: unknown key; known: id, raft, client, data_dir, metrics"
    )


@pytest.mark.parametrize(
    "value, got",
    [
        ("true", "boolean true"),
        ("10.0", "float 10.0"),
        ('"10"', 'string "10"'),
        ("[10]", "an array"),
    ],
)
def test_an_integer_setting_rejects_other_types_including_bool(value: str, got: str):
    assert errors_of(ensemble(raft=f"tick_ms = {value}")) == [
        f"{F}: raft.tick_ms: must be an integer (got {got})"
    ]


@pytest.mark.parametrize(
    "line, problem",
    [
        ("tick_ms = 0", "raft.tick_ms: must be at least 1 (got 0)"),
        ("tick_ms = 1001", "raft.tick_ms: must be at most 1000 (got 1001)"),
        ("max_inflight_appends = 0", "raft.max_inflight_appends: must be at least 1 (got 0)"),
        (
            "heartbeat_interval_ms = 105",
            "raft.heartbeat_interval_ms: must be a multiple of tick_ms (got 105, tick_ms = 10)",
        ),
        (
            "tick_ms = 50\nheartbeat_interval_ms = 20\nelection_timeout_ms = 1000",
            "raft.heartbeat_interval_ms: must be at least tick_ms (got 20 < 50)",
        ),
    ],
)
def test_raft_ranges(line: str, problem: str):
    assert errors_of(ensemble(raft=line)) == [f"{F}: {problem}"]


def test_a_bad_field_does_not_cause_follow_on_errors():
    # heartbeat is wrong; the 3 x heartbeat rule cannot be judged and is not reported.
    assert errors_of(ensemble(raft='heartbeat_interval_ms = "x"\nelection_timeout_ms = 20')) == [
        f'{F}: raft.heartbeat_interval_ms: must be an integer (got string "x")'
    ]


def test_other_sections_are_typed_and_ranged():
    extra = (
        "[storage]\nsegment_bytes = 0\n[client]\nmax_pending = 0\n"
        '[plugins]\nmodules = ["ok.mod", "not a module"]\nfiles = ["p.txt"]\n'
        'disable = "kv"\n'
    )
    assert errors_of(ensemble(extra=extra)) == [
        f"{F}: storage.segment_bytes: must be at least 1 (got 0)",
        f"{F}: client.max_pending: must be at least 1 (got 0)",
        f'{F}: plugins.disable: must be an array of strings (got string "kv")',
        f'{F}: plugins.modules[1]: "not a module" is not a dotted module name',
        f'{F}: plugins.files[0]: "p.txt" is not a .py file',
    ]


def test_settings_override_the_defaults_and_paths_expand_home():
    text = ensemble(
        node_toml(1, data_dir='"~/zr/n1"'),
        node_toml(2),
        node_toml(3, metrics=None),
        raft="pre_vote = false\nmax_inflight_appends = 8",
        extra='[storage]\nsegment_bytes = 4096\n[plugins]\nfiles = ["~/p.py"]\ndisable = ["kv"]\n',
    )
    config = parse_config(text, F)
    assert config.raft == RaftConfig(pre_vote=False, max_inflight_appends=8)
    assert config.storage.segment_bytes == 4096
    assert config.plugins == PluginsConfig(files=(Path.home() / "p.py",), disable=("kv",))
    assert config.nodes[0].data_dir == Path.home() / "zr" / "n1"
    assert config.nodes[2].metrics is None


@pytest.mark.parametrize("bad_id", ['""', '"n 1"', '"n1\\n"', '"' + "n" * 65 + '"'])
def test_node_ids_are_short_plain_names(bad_id: str):
    [error] = errors_of(ensemble(node_toml(1, id=bad_id)))
    assert error.startswith(f"{F}: node[0].id: ")
    assert error.endswith(" must be 1-64 characters from A-Z a-z 0-9 _ . -")


def test_ensemble_name_is_required():
    text = ensemble().replace('[ensemble]\nname = "t"\n', "")
    assert errors_of(text) == [f'{F}: ensemble: missing table; add [ensemble] with name = "..."']


# --- nodes and endpoints -------------------------------------------------------


def test_duplicate_ids_and_endpoints_are_errors():
    text = ensemble(
        node_toml(1),
        node_toml(2, raft='"tcp://127.0.0.1:7101"', client='"tcp://127.0.0.1:7102"'),
        node_toml(3, id='"n2"', metrics='"127.0.0.1:7001"'),
    )
    assert errors_of(text) == [
        f'{F}: node[1].raft: "tcp://127.0.0.1:7101" is already used by node[0].raft',
        f'{F}: node[2].id: "n2" is already the id of node[1]',
        f'{F}: node[2].metrics: "127.0.0.1:7001" is already used by node[0].client',
    ]


def test_raft_and_client_of_one_node_must_differ():
    [error] = errors_of(ensemble(node_toml(1, client='"tcp://127.0.0.1:7101"')))
    assert error == f'{F}: node[0].client: "tcp://127.0.0.1:7101" is already used by node[0].raft'


def test_wildcard_metrics_clash_only_on_the_same_host():
    hosts = [
        node_toml(
            i,
            raft=f'"tcp://192.0.2.1{i}:7100"',
            client=f'"tcp://192.0.2.1{i}:7000"',
            metrics='"0.0.0.0:9100"',
            data_dir='"/var/lib/zraft"',
        )
        for i in (1, 2, 3)
    ]
    assert parse_config(ensemble(*hosts), F).nodes[2].metrics == "0.0.0.0:9100"
    clash = node_toml(1, metrics='"0.0.0.0:7001"')
    assert errors_of(ensemble(clash)) == [
        f'{F}: node[0].metrics: "0.0.0.0:7001" is already used by node[0].client'
    ]


def test_nodes_on_one_host_must_not_share_a_data_dir():
    text = ensemble(node_toml(1), node_toml(2, data_dir='"data/./n1"'))
    assert errors_of(text) == [
        f'{F}: node[1].data_dir: "data/n1" on the same host is already used by node[0].data_dir'
    ]


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://127.0.0.1:1",
        "tcp://db-1.example.com:65535",
        "tcp://[::1]:7100",
        "ipc:///run/zraft/n1",
        "ipc://@zraft-n1",
    ],
)
def test_good_endpoints(endpoint: str):
    config = parse_config(ensemble(node_toml(1, raft=f'"{endpoint}"')), F)
    assert config.nodes[0].raft == endpoint


@pytest.mark.parametrize(
    "endpoint, problem",
    [
        ("tcp://127.0.0.1", '"tcp://127.0.0.1" has no port'),
        ("tcp://127.0.0.1:", '"tcp://127.0.0.1:" has no port'),
        ("tcp://:7100", '"tcp://:7100" has no host'),
        ("tcp://127.0.0.1:0", '"tcp://127.0.0.1:0": port 0 is out of range 1..65535'),
        ("tcp://127.0.0.1:65536", '"tcp://127.0.0.1:65536": port 65536 is out of range 1..65535'),
        ("tcp://127.0.0.1:http", '"tcp://127.0.0.1:http": port "http" is not a number'),
        ("tcp://::1:7100", '"tcp://::1:7100": write an IPv6 address in brackets, as in [::1]:7000'),
        ("tcp://[::g]:7100", '"tcp://[::g]:7100": "::g" is not an IPv6 address'),
        ("tcp://bad_host:7100", '"tcp://bad_host:7100": "bad_host" is not a host name or address'),
        (
            "tcp://0.0.0.0:7100",
            '"tcp://0.0.0.0:7100": other nodes cannot connect to 0.0.0.0; name the host',
        ),
        (
            "udp://127.0.0.1:7100",
            'must be "tcp://host:port" or "ipc://path" (got "udp://127.0.0.1:7100")',
        ),
        ("ipc://", '"ipc://" has no path'),
    ],
)
def test_malformed_endpoints(endpoint: str, problem: str):
    assert errors_of(ensemble(node_toml(1, raft=f'"{endpoint}"'))) == [
        f"{F}: node[0].raft: {problem}"
    ]


def test_metrics_is_host_and_port():
    assert errors_of(ensemble(node_toml(1, metrics='"9101"'))) == [
        f'{F}: node[0].metrics: "9101" has no port'
    ]


def test_node_count_limits():
    assert errors_of(ensemble().split("[[node]]")[0]) == [
        f"{F}: node: at least one [[node]] is required"
    ]
    many = [node_toml(i) for i in range(1, 17)]
    assert errors_of(ensemble(*many)) == [f"{F}: node: at most 15 nodes are supported (got 16)"]
    single = ensemble().replace("[[node]]", "[node]", 1).split("[[node]]")[0]
    assert errors_of(single) == [
        f"{F}: node: must be an array of tables: write [[node]], not [node]"
    ]


def test_an_even_number_of_nodes_loads_with_a_warning():
    config = parse_config(ensemble(*(node_toml(i) for i in (1, 2, 3, 4))), F)
    assert config.warnings == (
        f"{F}: node: 4 nodes tolerate no more failures than 3 (1 each); prefer an odd number",
    )
    assert "warning: " + config.warnings[0] in describe(config)


# --- the API the driver uses -----------------------------------------------------


def test_ticks_are_milliseconds_divided_by_tick_ms():
    raft = RaftConfig(tick_ms=20, heartbeat_interval_ms=100, election_timeout_ms=1000)
    assert (raft.heartbeat_ticks, raft.election_ticks) == (5, 50)
    assert (RaftConfig().heartbeat_ticks, RaftConfig().election_ticks) == (10, 100)
    config = parse_config(
        ensemble(raft="tick_ms = 25\nheartbeat_interval_ms = 50\nelection_timeout_ms = 150"), F
    )
    assert (config.raft.heartbeat_ticks, config.raft.election_ticks) == (2, 6)


def test_election_timeout_must_be_a_multiple_of_tick():
    assert errors_of(ensemble(raft="election_timeout_ms = 1005")) == [
        f"{F}: raft.election_timeout_ms: must be a multiple of tick_ms (got 1005, tick_ms = 10)"
    ]


def test_node_lookup_names_the_known_ids():
    config = load_default()
    assert config.node("n3").client == "tcp://127.0.0.1:7003"
    with pytest.raises(KeyError) as info:
        config.node("n9")
    assert "no node 'n9' in <embedded default>; known ids: n1, n2, n3" in str(info.value)


def test_peers_of_maps_every_other_id_to_its_raft_endpoint():
    config = load_default()
    assert config.peers_of("n2") == {"n1": "tcp://127.0.0.1:7101", "n3": "tcp://127.0.0.1:7103"}
    with pytest.raises(KeyError):
        config.peers_of("n9")


def test_configs_are_frozen():
    config = load_default()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.raft.tick_ms = 1  # type: ignore[misc]
    assert isinstance(config, EnsembleConfig) and isinstance(config.nodes, tuple)


def test_describe_summarises_nodes_and_timings():
    text = describe(load_default())
    assert text.splitlines()[0] == (
        'ensemble "local" from <embedded default>: 3 nodes, tolerates 1 failure'
    )
    assert "n1  raft tcp://127.0.0.1:7101  client tcp://127.0.0.1:7001" in text
    assert "heartbeat 100 ms (10 ticks), election timeout 1000 ms (100 ticks)" in text


def test_durations_are_converted_once_into_seconds():
    text = ensemble(
        raft="tick_ms = 20\nheartbeat_interval_ms = 60\nelection_timeout_ms = 400",
        extra="[client]\nrequest_timeout_ms = 2500\n"
        "[payload]\ntimeout_ms = 750\nstop_grace_ms = 50\nhysteresis_ms = 0\n",
    )
    config = parse_config(text, F)
    r, c, p = config.raft, config.client, config.payload
    assert (r.tick_s, r.heartbeat_interval_s, r.election_timeout_s) == (0.02, 0.06, 0.4)
    assert c.request_timeout_s == 2.5
    assert (p.timeout_s, p.stop_grace_s, p.hysteresis_s) == (0.75, 0.05, 0.0)
    assert RaftConfig().tick_s == 0.01 and PayloadConfig().stop_grace_s == 0.2


def test_a_leader_payload_needs_room_in_the_lease_and_check_quorum():
    # The rule lives with the lease (zraft.payload.fencing); the file and the
    # node's plugins are checked against the same words.
    tight = RaftConfig(heartbeat_interval_ms=100, election_timeout_ms=300)
    grace = PayloadConfig(stop_grace_ms=200)
    why = lease_problem(tight, grace)
    assert why is not None and why.startswith("200 ms leaves no room to renew the leader lease")
    assert lease_problem(RaftConfig(), grace) is None
    assert fencing_problem(tight, grace, has_leader_payload=False) is None
    assert fencing_problem(tight, grace, has_leader_payload=True) == why
    no_quorum = RaftConfig(check_quorum=False)
    assert "check_quorum is false" in fencing_problem(no_quorum, grace, True)
    [error] = errors_of(
        ensemble(
            raft="heartbeat_interval_ms = 100\nelection_timeout_ms = 300",
            extra='[payload]\nleader = ["true"]\n',
        )
    )
    assert error == f"{F}: payload.stop_grace_ms: {why}"
