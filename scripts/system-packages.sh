#!/usr/bin/env bash
# Debian packages rsbkit uses, installed when missing:
#   figures  chromium               kaleido needs a Chromium to write figures as PNG
#   tests    chromium, dataset-fashion-mnist (the full Fashion-MNIST files, to test the
#            `fashion-mnist` dataset name offline), and what scripts/slurm-local.sh starts for the
#            cluster tests: slurmctld slurmd slurm-client slurmdbd munge mariadb-server
#   slurm    slurmctld slurmd slurm-client slurmdbd munge mariadb-server (scripts/slurm-local.sh up)
# Usage: bash scripts/system-packages.sh [figures|tests|slurm]   (default: tests)
# Without apt or root it says what is missing and goes on: figures then fall back to
# HTML (the notebooks say so) and the tests that need the files skip.
set -uo pipefail
slurm=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)  # Debian 12: Slurm 22.05
case "${1:-tests}" in
  figures) packages=(chromium) ;;
  tests) packages=(chromium dataset-fashion-mnist "${slurm[@]}") ;;
  slurm) packages=("${slurm[@]}") ;;
  *) echo "usage: $0 [figures|tests|slurm]" >&2; exit 2 ;;
esac
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then sudo=""
elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"
else echo "setup: cannot install ${missing[*]} (no apt or no root); install them yourself for PNG figures and the full tests"; exit 0
fi
echo "setup: installing Debian packages ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# the daemons of these packages must not start system-wide (scripts/slurm-local.sh runs its own):
# policy-rc.d answers 101 (action forbidden) to the packages' start requests while apt runs
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null && $sudo chmod +x /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; } \
  || echo "setup: apt-get could not install ${missing[*]}; PNG figures and some tests will not work"
