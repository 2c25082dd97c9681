"""A short human summary of a configuration, for ``zraft check-config``."""

from zraft.config.model import EnsembleConfig


def describe(config: EnsembleConfig) -> str:
    """Returns a short human summary of `config` for ``zraft check-config``."""
    n, r, s, cl, p = len(config.nodes), config.raft, config.storage, config.client, config.plugins
    f = (n - 1) // 2
    width = max(len(i) for i in config.ids)
    lines = [
        f'ensemble "{config.name}" from {config.path}: {n} node{"s" * (n != 1)}, '
        f"tolerates {f} failure{'s' * (f != 1)}"
    ]
    lines += [
        f"  {node.id:<{width}}  raft {node.raft}  client {node.client}  "
        f"metrics {node.metrics or 'off'}  data {node.data_dir}"
        for node in config.nodes
    ]
    lines += [
        f"raft: tick {r.tick_ms} ms, heartbeat {r.heartbeat_interval_ms} ms "
        f"({r.heartbeat_ticks} ticks), election timeout {r.election_timeout_ms} ms "
        f"({r.election_ticks} ticks), pre-vote {'on' if r.pre_vote else 'off'}, "
        f"check-quorum {'on' if r.check_quorum else 'off'}; appends of at most "
        f"{r.max_entries_per_append} entries / {r.max_bytes_per_append} bytes, "
        f"{r.max_inflight_appends} in flight",
        f"storage: segments of {s.segment_bytes} bytes",
        f"client: timeout {cl.request_timeout_ms} ms, max request {cl.max_request_bytes} "
        f"bytes, max pending {cl.max_pending}",
        f"plugins: modules [{', '.join(p.modules)}], files [{', '.join(map(str, p.files))}], "
        f"disabled [{', '.join(p.disable)}], settings for [{', '.join(sorted(p.settings))}]",
        f"payload: leader {list(config.payload.leader) or 'none'}, follower "
        f"{list(config.payload.follower) or 'none'}; timeout {config.payload.timeout_ms} ms, "
        f"stop grace {config.payload.stop_grace_ms} ms, hysteresis "
        f"{config.payload.hysteresis_ms} ms, clock drift {config.payload.clock_drift_ppm} ppm",
    ]
    return "\n".join(lines + [f"warning: {w}" for w in config.warnings])
