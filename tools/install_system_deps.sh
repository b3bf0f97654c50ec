#!/usr/bin/env bash
# System packages asr needs on Debian/Ubuntu: TTS engines for the synthetic
# corpora (espeak-ng, flite), libsndfile for soundfile, and the compilers and
# Boost libraries that tools/build_kenlm.sh builds KenLM's programs with.
# Idempotent: installs only what is missing.
set -euo pipefail

packages=(espeak-ng flite libsndfile1 sox cmake g++ make
          libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev
          zlib1g-dev libbz2-dev liblzma-dev libeigen3-dev)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_system_deps: all system packages present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install_system_deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
