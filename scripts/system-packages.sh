#!/usr/bin/env bash
# Debian packages the tests use: the full Fashion-MNIST files (to test the
# `fashion-mnist` dataset name offline). Skipped quietly where apt is not ours to use.
set -uo pipefail
packages=(dataset-fashion-mnist)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then sudo=""
elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"
else echo "setup: cannot install ${missing[*]} (no apt or no root); the tests that need them will skip"; exit 0
fi
echo "setup: installing Debian packages ${missing[*]}"
$sudo apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
  || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q "${missing[@]}" >/dev/null; } \
  || echo "setup: apt-get could not install ${missing[*]}; the tests that need them will skip"
