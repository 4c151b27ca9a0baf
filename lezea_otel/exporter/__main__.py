"""``python -m lezea_otel.exporter RUN_DIR --pid PID``: the exporter process beside a trainer."""

from lezea_otel.exporter.process import main

raise SystemExit(main())
