"""The ensemble configuration: one TOML file parsed into frozen, checked dataclasses.

* ``model``: the dataclasses; every setting declared once, with its default,
  range and meaning, and durations converted once (``RaftConfig.tick_s`` ...).
* ``parse``: TOML to ``EnsembleConfig``; every problem reported at once.
* ``checks``: value checkers and the ``[[node]]`` checks used by ``parse``.
* ``summary``: ``describe``, the summary ``zraft check-config`` prints.

Import the public names from here.
"""

from zraft.config.model import (
    ClientConfig,
    ConfigError,
    EnsembleConfig,
    NodeConfig,
    PayloadConfig,
    PluginsConfig,
    RaftConfig,
    StorageConfig,
)
from zraft.config.parse import DEFAULT_PATH, load_config, load_default, parse_config
from zraft.config.summary import describe

__all__ = [
    "DEFAULT_PATH",
    "ClientConfig",
    "ConfigError",
    "EnsembleConfig",
    "NodeConfig",
    "PayloadConfig",
    "PluginsConfig",
    "RaftConfig",
    "StorageConfig",
    "describe",
    "load_config",
    "load_default",
    "parse_config",
]
