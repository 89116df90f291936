"""Zip the `analytics` package for Dataproc (`python_file_uris`): `python -m analytics.package OUT.zip`.

Only the job's modules go in (no tests, no Terraform); job.py is uploaded beside it as the main file.
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# A fixed timestamp keeps the zip byte-identical for identical sources (Terraform names it by md5).
_EPOCH = (1980, 1, 1, 0, 0, 0)


def build(destination: Path) -> list[str]:
    destination.parent.mkdir(parents=True, exist_ok=True)
    members = sorted(path for pattern in ("*.py", "*.xml") for path in PACKAGE.glob(pattern) if path.name != "bench.py")
    names = []
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in members:
            name = f"analytics/{path.name}"
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
            names.append(name)
    return names


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    destination = Path(args[0] if args else "dist/analytics.zip")
    names = build(destination)
    print(f"{destination}: {len(names)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
