from zraft.cli import main

raise SystemExit(main())
