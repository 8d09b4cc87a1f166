"""``python -m mixpanel_dsr.api.generate``: write crds/ and docs/api.md from the models, or
check (``--check``) that the committed files are what the models generate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mixpanel_dsr.api import reference
from mixpanel_dsr.api.crd import all_crds, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write crds/ and docs/api.md from the models.")
    parser.add_argument("--out", type=Path, default=Path("crds"), help="folder to write into")
    parser.add_argument(
        "--docs", type=Path, default=Path("docs/api.md"), help="field reference to write"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the folder differs from the models"
    )
    args = parser.parse_args(argv)
    outputs = {args.out / name: render(crd) for name, crd in all_crds().items()}
    outputs[args.docs] = reference.render()
    stale = []
    for path, text in outputs.items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date, run `make crds`: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
