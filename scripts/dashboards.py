"""Write the Grafana dashboards to grafana/dashboards/ from their code (lezea_otel.mixin.dashboards).

    python scripts/dashboards.py            # write every dashboard
    python scripts/dashboards.py --check    # exit 1 when a committed file differs from its code

The files are committed (Grafana provisions them); a test fails when one differs from what this writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lezea_otel.mixin.dashboards import DASHBOARDS
from lezea_otel.mixin.dashboards.common import render

OUT = Path(__file__).resolve().parent.parent / "grafana" / "dashboards"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=OUT,
                        help="the folder (default: grafana/dashboards)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a file differs from its code")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path, text = args.output / name, render(build())
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
            continue
        args.output.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path)
    if stale:
        print(f"differ from their code: {', '.join(stale)}: run python scripts/dashboards.py")
        return 1
    if args.check:
        print(f"{len(DASHBOARDS)} dashboards up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
