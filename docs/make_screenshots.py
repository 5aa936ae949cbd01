"""Refresh the dashboard screenshots in docs/img (``python docs/make_screenshots.py``).

The browser tests (tests/test_dashboard.py) walk every page of a real stack; with
``SCALEJOB_SCREENSHOT_DIR`` set they save their screenshots there. The test suite itself writes
them to a temp dir, so running the tests never rewrites tracked files. Needs the machine's Redis
(or the embedded one), Chromium at /usr/bin/chromium and the ``playwright`` package.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    env = {**os.environ, "SCALEJOB_SCREENSHOT_DIR": str(ROOT / "docs" / "img")}
    argv = [sys.executable, "-m", "pytest", "-q", "tests/test_dashboard.py", *sys.argv[1:]]
    sys.exit(subprocess.call(argv, cwd=ROOT, env=env))
