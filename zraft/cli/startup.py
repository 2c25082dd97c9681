"""``zraft check-config`` and ``zraft plugins``: what a node would load at start, checked early.

Both load plugins exactly as ``zraft run`` does (``zraft.plugins.load_plugins``)
and refuse what it would refuse, so that systemd's ``ExecStartPre`` (which
passes ``--node %i``) catches a bad file before the node is started.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from zraft.cli.common import load, problem
from zraft.config import ConfigError, describe
from zraft.daemon import EX_CONFIG
from zraft.payload.fencing import fencing_problem
from zraft.plugins import PluginError, load_plugins, plugin_hooks, plugin_list


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate and summarize an ensemble file; with ``--node``, load that node's plugins."""
    try:
        config = load(args.file)
    except ConfigError as exc:
        problem(str(exc))
        return EX_CONFIG
    print(describe(config))
    for w in config.warnings:
        problem(f"warning: {w}", 4)
    if args.node:
        # What `zraft run --node` would refuse too: an unknown id, a plugin that
        # does not load or rejects its settings, a leader payload that cannot be fenced.
        try:
            config.node(args.node)
            pm, _ = load_plugins(config, args.node)
        except KeyError as exc:
            problem(exc.args[0])
            return EX_CONFIG
        except PluginError as exc:
            problem(f"plugin error: {exc}")
            return EX_CONFIG
        has_leader_payload = bool(pm.hook.zraft_became_leader.get_hookimpls())
        why = fencing_problem(config.raft, config.payload, has_leader_payload)
        if why:
            problem(f"plugin error: a plugin has a leader payload, but {why}")
            return EX_CONFIG
        print(f"node {args.node}: plugins load and accept their settings")
    print("configuration OK")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    """List the plugins a node would load: name, version, source, hooks, commands."""
    try:
        config = load(args.config)
        node_id = args.node or config.ids[0]
        config.node(node_id)
        pm, table = load_plugins(config, node_id)
    except (ConfigError, PluginError, KeyError) as exc:
        print(exc.args[0] if isinstance(exc, KeyError) else exc, file=sys.stderr)
        return EX_CONFIG
    commands = table.describe()
    rows = [
        {
            "name": name,
            "version": version,
            "source": source,
            "hooks": plugin_hooks(pm, name),
            "commands": [c["name"] for c in commands if c["plugin"] == name],
        }
        for name, version, source in plugin_list(pm)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    widths = [
        max(len(r[k]) for r in rows + [{"name": "PLUGIN", "version": "VERSION"}])
        for k in ("name", "version")
    ]
    print(f"{'PLUGIN':<{widths[0]}}  {'VERSION':<{widths[1]}}  SOURCE")
    for r in rows:
        print(f"{r['name']:<{widths[0]}}  {r['version']:<{widths[1]}}  {r['source']}")
        print(f"{'':<{widths[0]}}    hooks: {', '.join(r['hooks'])}")
        if r["commands"]:
            print(f"{'':<{widths[0]}}    commands: {', '.join(r['commands'])}")
    return 0


def add_parsers(sub: Any) -> None:
    """Add ``check-config`` and ``plugins`` to the ``zraft`` subparsers."""
    p = sub.add_parser("check-config", help="validate an ensemble file and summarize it")
    p.add_argument("file", nargs="?", help="ensemble TOML file (default: the embedded one)")
    p.add_argument("-n", "--node", help="also check this node id and load its plugins")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("plugins", help="list the plugins a node would load, with versions")
    p.add_argument("-c", "--config", help="ensemble TOML file (default: the embedded one)")
    p.add_argument("-n", "--node", help="node id to configure them for (default: the first)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)
