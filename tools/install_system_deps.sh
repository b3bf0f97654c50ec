#!/usr/bin/env bash
# System packages asr needs on Debian/Ubuntu: TTS engines for the synthetic
# corpora (espeak-ng, flite), libsndfile for soundfile, and the compilers and
# Boost libraries that tools/build_kenlm.sh builds KenLM's programs with.
# Idempotent: installs only what is missing.
#
# --non-free also installs RHVoice and its six English voices (rhvoice, rhvoice-english),
# a third TTS engine that the synthetic corpora can use (`[synth] engines`). Debian ships
# them in its non-free component, because the voices are trained models without their
# training scripts; on Debian this adds that component in
# /etc/apt/sources.list.d/asr-non-free.sources when apt cannot find the packages otherwise.
set -euo pipefail

non_free=0
for arg in "$@"; do
  case "$arg" in
    --non-free) non_free=1 ;;
    *) echo "install_system_deps: unknown option $arg (known: --non-free)" >&2; exit 2 ;;
  esac
done

packages=(espeak-ng flite libsndfile1 sox cmake g++ make
          libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev
          zlib1g-dev libbz2-dev liblzma-dev libeigen3-dev)
if [ "$non_free" -eq 1 ]; then packages+=(rhvoice rhvoice-english); fi

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
if [ "$non_free" -eq 1 ] && [ -z "$(apt-cache madison rhvoice-english 2>/dev/null)" ]; then
  . /etc/os-release
  if [ "${ID:-}" != debian ] || [ -z "${VERSION_CODENAME:-}" ]; then
    echo "install_system_deps: rhvoice-english is not in this machine's package sources" >&2
    exit 1
  fi
  echo "install_system_deps: adding Debian's non-free component for RHVoice"
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: non-free\nSigned-By: %s\n' \
    "$VERSION_CODENAME" /usr/share/keyrings/debian-archive-keyring.gpg |
    $SUDO tee /etc/apt/sources.list.d/asr-non-free.sources > /dev/null
  $SUDO apt-get update -qq
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
