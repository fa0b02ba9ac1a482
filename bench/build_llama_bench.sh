#!/usr/bin/env bash
# Build llama.cpp's own `llama-bench` from the llama-cpp-python sdist on PyPI (the same
# llama.cpp version our backend runs), with the same CPU flags as our wheel (Makefile:
# LLAMA_FLAGS). The binary is cached outside the repository, like the llama-cpp-python wheel
# (LLAMA_BENCH_CACHE, default ~/.cache/llm-ladder/llama-bench-<version>), so a fresh clone
# reuses it; the build is paid once per machine (see docs/benchmarks.md for how long it took).
# Prints the binary's path on its last line.
set -euo pipefail
ver="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
out="${LLAMA_BENCH_CACHE:-$HOME/.cache/llm-ladder/llama-bench-$ver}"
[ -x "$out/llama-bench" ] && { echo "$out/llama-bench"; exit 0; }
mkdir -p "$out/src"
ls "$out/src/llama_cpp_python-$ver.tar.gz" >/dev/null 2>&1 || \
  python3 -m pip download -q --no-deps --no-binary :all: -d "$out/src" "llama-cpp-python==$ver"
tar -xzf "$out/src/llama_cpp_python-$ver.tar.gz" -C "$out/src"
src="$out/src/llama_cpp_python-$ver/vendor/llama.cpp"
cmake -S "$src" -B "$out/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
  -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_LLAMAFILE=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF > "$out/cmake.log"
cmake --build "$out/cmake" --target llama-bench -j "$(nproc)" >> "$out/cmake.log"
cp "$(find "$out/cmake" -name llama-bench -type f -perm -u+x | head -1)" "$out/llama-bench.tmp"
mv "$out/llama-bench.tmp" "$out/llama-bench"
rm -rf "$out/cmake" "$out/src/llama_cpp_python-$ver"
echo "$out/llama-bench"
