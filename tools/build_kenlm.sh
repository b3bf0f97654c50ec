#!/usr/bin/env bash
# Build KenLM's `lmplz` (ARPA estimation) and `build_binary` (ARPA -> binary),
# once per machine, into ${ASR_KENLM_DIR:-$HOME/.cache/asr/kenlm}/bin/.
#
#   bash tools/build_kenlm.sh
#
# The KenLM Python module that pip installs can only *query* a language model;
# the programs that *build* one are C++ and are not shipped in any wheel. The
# PyPI source package of kenlm carries the full KenLM tree (lm/builder
# included), so we fetch it with pip and build the two programs with cmake
# against the system Boost (tools/install_system_deps.sh installs the packages).
#
# Settings (environment):
#   ASR_KENLM_DIR        install prefix; programs go to $ASR_KENLM_DIR/bin
#   ASR_KENLM_VERSION    kenlm source package version on PyPI (default 0.3.0)
#   ASR_KENLM_SRC        use this KenLM source tree or .tar.gz instead of pip
#                        (for machines without access to PyPI)
#   ASR_KENLM_MAX_ORDER  highest n-gram order the programs support (default 6)
#   ASR_BUILD_JOBS       parallel compile jobs (default 2)
#   PYTHON               interpreter whose pip fetches the source (default python3)
#
# Running it again is a no-op once both programs are installed. Remove
# $ASR_KENLM_DIR/bin to force a rebuild.
set -euo pipefail

KENLM_VERSION="${ASR_KENLM_VERSION:-0.3.0}"
PREFIX="${ASR_KENLM_DIR:-$HOME/.cache/asr/kenlm}"
BIN="$PREFIX/bin"
JOBS="${ASR_BUILD_JOBS:-2}"
MAX_ORDER="${ASR_KENLM_MAX_ORDER:-6}"
PYTHON="${PYTHON:-python3}"
PROGRAMS=(lmplz build_binary)

say() { echo "build_kenlm: $*"; }
die() {
    echo "build_kenlm: ERROR: $*" >&2
    exit 1
}

if [[ -x "$BIN/lmplz" && -x "$BIN/build_binary" ]]; then
    say "already built: $BIN/lmplz $BIN/build_binary"
    exit 0
fi

# --- tools -----------------------------------------------------------------
for tool in cmake make c++ tar; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "'$tool' not found; install the build tools first: bash tools/install_system_deps.sh (or: apt-get install -y cmake g++ make)"
done
[[ -f /usr/include/boost/version.hpp ]] || [[ -n "${BOOST_ROOT:-}" ]] ||
    die "Boost headers not found; install them: bash tools/install_system_deps.sh (libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/asr-kenlm-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS

# --- source ----------------------------------------------------------------
if [[ -n "${ASR_KENLM_SRC:-}" ]]; then
    if [[ -d "$ASR_KENLM_SRC" ]]; then
        SRC="$(cd "$ASR_KENLM_SRC" && pwd)"
    elif [[ -f "$ASR_KENLM_SRC" ]]; then
        tar -xzf "$ASR_KENLM_SRC" -C "$WORK" || die "cannot unpack $ASR_KENLM_SRC"
        SRC="$(find "$WORK" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
    else
        die "ASR_KENLM_SRC=$ASR_KENLM_SRC is neither a directory nor a file"
    fi
    say "source: $SRC"
else
    say "fetching the kenlm $KENLM_VERSION source package from PyPI"
    # `--no-binary kenlm`, not `--no-binary :all:`: the latter would also build
    # the packaging helpers (cmake itself!) from source just to read metadata.
    "$PYTHON" -m pip download --quiet --no-deps --no-binary kenlm \
        "kenlm==$KENLM_VERSION" -d "$WORK/dist" ||
        die "pip could not fetch kenlm==$KENLM_VERSION (no network? set ASR_KENLM_SRC to a KenLM source tree or tarball)"
    tarball="$WORK/dist/kenlm-$KENLM_VERSION.tar.gz"
    [[ -f "$tarball" ]] || die "pip did not leave $tarball (got: $(ls "$WORK/dist"))"
    tar -xzf "$tarball" -C "$WORK" || die "cannot unpack $tarball"
    SRC="$WORK/kenlm-$KENLM_VERSION"
fi

for f in CMakeLists.txt lm/builder/lmplz_main.cc lm/build_binary_main.cc; do
    [[ -f "$SRC/$f" ]] || die "$SRC has no $f: this is not a full KenLM source tree"
done

# --- build -----------------------------------------------------------------
# Only the two targets we need: the full tree (filter, interpolate, tests)
# takes about twice as long.
say "configuring (cmake, Release, max order $MAX_ORDER)"
cmake -S "$SRC" -B "$WORK/build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DKENLM_MAX_ORDER="$MAX_ORDER" \
    -DCOMPILE_TESTS=OFF \
    -DENABLE_PYTHON=OFF \
    >"$WORK/cmake.log" 2>&1 || {
    tail -n 30 "$WORK/cmake.log" >&2
    die "cmake configure failed (see above); are the Boost, zlib, bzip2 and lzma dev packages installed? bash tools/install_system_deps.sh"
}

say "compiling lmplz and build_binary with $JOBS jobs"
cmake --build "$WORK/build" --target "${PROGRAMS[@]}" -j "$JOBS" >"$WORK/make.log" 2>&1 || {
    tail -n 40 "$WORK/make.log" >&2
    die "compiling KenLM failed (see above)"
}

# --- check, then install ---------------------------------------------------
say "checking the programs on a tiny corpus"
printf 'the cat sat\nthe dog sat\n' >"$WORK/tiny.txt"
"$WORK/build/bin/lmplz" -o 2 --discount_fallback -S 100M -T "$WORK" \
    <"$WORK/tiny.txt" >"$WORK/tiny.arpa" 2>"$WORK/check.log" &&
    "$WORK/build/bin/build_binary" "$WORK/tiny.arpa" "$WORK/tiny.bin" >>"$WORK/check.log" 2>&1 || {
    cat "$WORK/check.log" >&2
    die "the freshly built programs do not work (see above)"
}

mkdir -p "$BIN" || die "cannot create $BIN"
# Copy then rename, lmplz last: a half-finished install never looks complete.
for prog in build_binary lmplz; do
    install -m 755 "$WORK/build/bin/$prog" "$BIN/.$prog.tmp" &&
        mv -f "$BIN/.$prog.tmp" "$BIN/$prog" ||
        die "cannot install $prog into $BIN"
done

say "built in $((SECONDS - START)) s: $BIN/lmplz $BIN/build_binary"
