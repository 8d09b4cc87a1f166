"""``python -m mixpanel_dsr.plugin``, the same as ``kubectl dsr``."""

from __future__ import annotations

import sys

from mixpanel_dsr.plugin.commands import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
