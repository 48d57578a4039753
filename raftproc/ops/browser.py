"""Look at a page the way a reader would: headless Chromium renders it to a PNG.

Used by the tests to check that report.html and the bench plots render, and by hand
to make the README's pictures:

    python -m raftproc.ops.browser chaos-out/report.html docs/chaos-report.png
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Without the networking flags Chromium reaches for Google's hosts at every start;
# a machine with a closed network refuses them and the run gets slow and noisy.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--allow-file-access-from-files",
)


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def screenshot(page: Path, png: Path, *, width: int = 1300, height: int = 1800, timeout: float = 60.0) -> None:
    """Render `page` (a local file) into `png`; raise with Chromium's words if it fails."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium found (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="raftproc-chromium-") as profile:
        proc = subprocess.run(
            [
                chromium,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={png.resolve()}",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if proc.returncode != 0 or not png.exists():
        raise RuntimeError(f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="render a local page to PNG with headless Chromium")
    ap.add_argument("page", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1300)
    ap.add_argument("--height", type=int, default=1800)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "shot.png"
        screenshot(args.page, shot, width=args.width, height=args.height)
        shutil.move(shot, args.png)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
