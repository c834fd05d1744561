#!/usr/bin/env bash
# Builds every policy and test fixture for wasm32-wasip2 (release) and copies the components to
# policies/dist/<name>.wasm. Idempotent: unchanged components are not rewritten (file watchers
# see no change), changed ones are replaced atomically (write to a temporary file, then rename).
#
# Then builds the Python (python/, componentize-py) and JavaScript (js/, componentize-js) ports
# of guard and tenant-router to dist/<name>-py.wasm and dist/<name>-js.wasm, installing their
# toolchains into policies/target/ (see python/README.md and js/README.md).
#
# Usage: policies/build.sh [extra cargo build arguments, e.g. --locked or --offline]
# POLICY_LANGS="rust python js" (the default) picks the languages to build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target=wasm32-wasip2
langs=" ${POLICY_LANGS:-rust python js} "
names=(rw-split guard tenant-router cache-rules runaway memory-hog bad-init blocker trap escape mirror-reads retarget echo)

die() {
    echo "policies/build.sh: error: $*" >&2
    exit 1
}

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust 1.95 or newer (https://rustup.rs)"
command -v rustc >/dev/null 2>&1 || die "rustc not found: install Rust 1.95 or newer (https://rustup.rs)"

# The wasm32-wasip2 standard library must be installed.
if [ ! -d "$(rustc --print sysroot)/lib/rustlib/$target" ]; then
    if command -v rustup >/dev/null 2>&1; then
        echo "policies/build.sh: adding the $target target with rustup" >&2
        rustup target add "$target" || die "could not add the $target target (rustup target add $target)"
    else
        die "the $target target is not installed and rustup is not available to add it"
    fi
fi

if [[ $langs == *" rust "* ]]; then
export CARGO_TARGET_DIR="$here/target"
start=$(date +%s)
cargo build --manifest-path "$here/Cargo.toml" --workspace --release --target "$target" "$@" \
    || die "cargo build failed (see the errors above)"
elapsed=$(( $(date +%s) - start ))

mkdir -p "$here/dist"
have_wasm_tools=false
command -v wasm-tools >/dev/null 2>&1 && have_wasm_tools=true

for name in "${names[@]}"; do
    built="$CARGO_TARGET_DIR/$target/release/${name//-/_}.wasm"
    [ -f "$built" ] || die "$built was not produced by the build"
    # A component starts with the Wasm magic and the component-model version/layer:
    # 00 61 73 6d 0d 00 01 00 (a core module would have 01 00 00 00).
    magic="$(od -An -tx1 -N8 "$built" | tr -d ' \n')"
    [ "$magic" = "0061736d0d000100" ] \
        || die "$built is not a WebAssembly component (header $magic, expected 0061736d0d000100)"
    if $have_wasm_tools; then
        wasm-tools validate "$built" || die "$built does not validate (wasm-tools validate)"
    fi
    out="$here/dist/$name.wasm"
    if cmp -s "$built" "$out"; then
        state=unchanged
    else
        cp "$built" "$out.tmp.$$"
        mv -f "$out.tmp.$$" "$out"
        state=updated
    fi
    printf '  %-28s %8d bytes  %s\n' "dist/$name.wasm" "$(wc -c <"$out")" "$state"
done
echo "policies/build.sh: ${#names[@]} components in $here/dist (cargo build: ${elapsed}s)"
fi

source "$here/lang-build.sh"
