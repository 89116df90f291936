"""A container's entrypoint, run with only what its image ships:
`python -I -u container_entry.py --root DIR -- uvicorn eks_services.order.app:app --port ...`.

`--root` holds the project paths the Dockerfile copies into the image; the editable install's import
hook is removed (as in `lambda_host.py`), so a module the image does not ship fails to import here as
it would in the pod. The command's first word is a console script of the virtualenv (the image's
`/opt/venv/bin`), run in this process.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    sys.path.insert(0, str(Path(__file__).parent))
    from lambda_host import isolate_imports

    sys.path.pop(0)
    isolate_imports(args.root, [])
    scripts = list(entry_points(group="console_scripts", name=command[0]))
    if not scripts:
        raise SystemExit(f"{command[0]}: no such console script in the virtualenv")
    sys.argv = command
    raise SystemExit(scripts[0].load()())


if __name__ == "__main__":
    main()
