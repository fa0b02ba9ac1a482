"""The lock is a pip constraints file that excludes the known-malicious releases named in
it: installing one through it is refused. Offline: the "release" is a wheel built here and
offered with --no-index --find-links; the same install without the lock succeeds, so the
refusal is the lock's doing."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def fake_wheel(folder: Path, name: str, version: str) -> Path:
    dist = f"{name}-{version}.dist-info"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"{name}/__init__.py", "")
        z.writestr(f"{dist}/METADATA",
                   f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: "
                                    "true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")
    return wheel


def pip_dry_run(folder: Path, spec: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps",
                           "--ignore-installed", "--no-index", "--find-links", str(folder),
                           "--disable-pip-version-check", *extra, spec],
                          capture_output=True, text=True, timeout=120)


def test_the_known_bad_releases_cannot_be_installed_through_the_lock(tmp_path: Path) -> None:
    comment = LOCK.read_text().split("\n", 3)[:3]
    named = re.findall(r"(\w+) (\d+\.\d+\.\d+)/(\d+\.\d+\.\d+)", " ".join(comment))
    assert named == [("litellm", "1.82.7", "1.82.8")]
    package, *versions = named[0]
    for version in versions:
        fake_wheel(tmp_path, package, version)
        spec = f"{package}=={version}"
        assert pip_dry_run(tmp_path, spec).returncode == 0  # installable without the lock
        refused = pip_dry_run(tmp_path, spec, "-c", str(LOCK))
        assert refused.returncode != 0, refused.stdout
        assert "conflict" in (refused.stdout + refused.stderr).lower()
