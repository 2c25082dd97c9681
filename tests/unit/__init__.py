"""Unit tests, one directory per package of zraft/."""
