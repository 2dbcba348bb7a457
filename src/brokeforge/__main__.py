from __future__ import annotations

from brokeforge.cli import main

raise SystemExit(main())
