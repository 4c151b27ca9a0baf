"""``python -m lezea_otel.exporter RUN_DIR --pid PID``: the exporter process beside a trainer."""

from .process import main

raise SystemExit(main())
