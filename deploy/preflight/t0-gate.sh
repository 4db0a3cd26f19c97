#!/usr/bin/env bash
# T0 gate (seed §7.14) for a running AOS system: every SPINE component
# healthy, the boot guard validated, fail-closed by default, governance
# state readable, conflict resolution present. Prints one PASS/FAIL line per
# check and exits non-zero naming the failed checks.
#
#   deploy/preflight/t0-gate.sh [--control-plane URL] [--agent URL] [--key-file FILE]
#
# Defaults are the dev-mode system (`cargo run -p aos-control-plane -- dev`).
# Needs bash, curl and python3.
set -uo pipefail

CP="http://127.0.0.1:7070"
AGENT="http://127.0.0.1:8000"
KEY_FILE=".aos-dev/control-plane/demo-admin.key"
while [ $# -gt 0 ]; do
    case "$1" in
        --control-plane) CP="$2"; shift 2 ;;
        --agent) AGENT="$2"; shift 2 ;;
        --key-file) KEY_FILE="$2"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

failed=()
check() { # name, then a command that succeeds when the check passes
    local name="$1"; shift
    local detail
    if detail=$("$@" 2>&1); then
        printf 'PASS  %-34s %s\n' "$name" "$detail"
    else
        printf 'FAIL  %-34s %s\n' "$name" "$detail"
        failed+=("$name")
    fi
}

# GET url [key] → body on stdout; fails on transport errors and non-2xx.
get() {
    local auth=()
    [ $# -gt 1 ] && auth=(-H "Authorization: Bearer $2")
    curl -sS --max-time 5 -f "${auth[@]}" "$1"
}

# Reads JSON on stdin and evaluates a Python expression over it as `j`;
# prints the result and fails when it is falsy.
json_check() {
    python3 -c '
import json, sys
j = json.load(sys.stdin)
ok, shown = eval(sys.argv[1])
print(shown)
sys.exit(0 if ok else 1)
' "$1"
}

cp_health() { get "$CP/health" >/dev/null && echo "$CP answers"; }
# /health answers 503 with the reasons when a spine check failed: read the
# body whatever the status.
cp_spine() {
    curl -sS --max-time 5 "$CP/health" |
        json_check '(j["spine"]["validated"] is True, "; ".join("%s %s" % (c["name"], c["status"] if c["status"] == "ok" else "FAILED: " + c["detail"]) for c in j["spine"]["checks"]))'
}
agent_component() { # component expression
    get "$AGENT/health" | json_check "$1"
}
governance() {
    local key
    key=$(cat "$KEY_FILE" 2>/dev/null) || { echo "cannot read the key file $KEY_FILE"; return 1; }
    get "$CP/api/v1/ops/governance/state" "$key" |
        json_check '(j["global"]["mode"] in ("ENFORCING","DEGRADED","DISABLED","HALTED"), "version %s, global %s, tenant %s" % (j["version"], j["global"]["mode"], (j.get("tenant") or {}).get("effective")))'
}
capabilities() { get "$AGENT/api/v1/capabilities" | json_check "$1"; }

check "control plane health" cp_health
check "control plane spine checks" cp_spine
check "edge agent health" agent_component '(j["status"] in ("ok", "degraded"), "status " + j["status"])'
check "boot guard validated" agent_component '(j["components"]["boot_guard"]["validated"] is True, "reason: %s" % j["components"]["boot_guard"]["reason"])'
check "policy snapshot fresh" agent_component '(j["components"]["snapshot"]["status"] == "ok", "snapshot %s" % j["components"]["snapshot"])'
check "outbox within budget" agent_component '(j["components"]["outbox"]["status"] == "ok", "%s records pending" % j["components"]["outbox"]["pending_records"])'
check "event reactor running" agent_component '(j["components"]["event_reactor"]["status"] == "ok", "%s published" % j["components"]["event_reactor"]["published"])'
check "scheduled jobs registered" agent_component '(len(j["components"]["scheduler"]["jobs"]) > 0, "%d jobs" % len(j["components"]["scheduler"]["jobs"]))'
check "fail-closed by default" capabilities '(j.get("default_failure_mode") == "fail_closed", "default %s" % j.get("default_failure_mode"))'
check "conflict resolution present" capabilities '(bool(j.get("conflict_resolution")), j.get("conflict_resolution"))'
check "governance state readable" governance

if [ ${#failed[@]} -gt 0 ]; then
    printf '\nT0 gate FAILED: %s\n' "$(IFS=,; echo "${failed[*]}" | sed 's/,/, /g')"
    exit 1
fi
printf '\nT0 gate passed\n'
