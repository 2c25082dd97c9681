"""Tests that start real zraft processes, systemd or Prometheus (``-m integration``)."""
