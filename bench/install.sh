#!/usr/bin/env bash
# Installs what the benchmarks need and is idempotent: wrk and valgrind (Debian packages) and Node-RED (npm, under
# bench/.node/, never global). py-spy (a sampling profiler, for --profile) goes into the project venv.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Node-RED 4.x runs on Node.js 18+; Node-RED 5 needs Node.js 22. Pick the line that fits this machine.
NODE_RED_VERSION_NODE18="4.1.8"

need_apt=()
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
command -v valgrind >/dev/null 2>&1 || need_apt+=(valgrind)   # instruction counts (bench_instructions.py)
if ((${#need_apt[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install.sh: missing ${need_apt[*]}; install them (apt-get install ${need_apt[*]}) or run as root" >&2
        exit 1
    fi
    echo "install.sh: apt-get install ${need_apt[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major >= 22)); then want="5.0.7"; else want="$NODE_RED_VERSION_NODE18"; fi
have=""
if [[ -f "$here/.node/node_modules/node-red/package.json" ]]; then
    have=$(node -p "require('$here/.node/node_modules/node-red/package.json').version")
fi
if [[ "$have" != "$want" ]]; then
    echo "install.sh: npm install node-red@$want under bench/.node/" >&2
    mkdir -p "$here/.node"
    [[ -f "$here/.node/package.json" ]] || echo '{"name": "atom-bench-node", "private": true}' > "$here/.node/package.json"
    (cd "$here/.node" && npm install --no-audit --no-fund --loglevel=error "node-red@$want" >/dev/null)
fi

venv="$here/../.venv/bin"
if [[ -x "$venv/python" && ! -x "$venv/py-spy" ]]; then
    echo "install.sh: pip install py-spy into the venv (profiling only)" >&2
    "$venv/pip" install -q py-spy >/dev/null 2>&1 || echo "install.sh: py-spy could not be installed: no profiles" >&2
fi
echo "install.sh: wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), node $(node -v), node-red $want" >&2
