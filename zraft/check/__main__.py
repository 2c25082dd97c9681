"""``python -m zraft.check FILE...``: the check-history command, standalone."""

from zraft.check.cli import main

raise SystemExit(main())
