#!/usr/bin/env bash
# scripts/bench.sh: `make bench` (run after `make deps build`).
#
# Measures, side by side in one run on 127.0.0.1 high ports:
#  1. fakesource against Postfix's smtp-sink, both loaded by Postfix's smtp-source,
#     with one message per connection and with connection reuse (-d): messages/s.
#     "fakesource" is the fakesource package as the harness runs it (benchtool sink:
#     default limits, everything recorded). Shown beside it, without a goal: go-smtp with
#     a backend that keeps nothing (the ceiling of any go-smtp sink), and
#     `splitcheck fakesource` (the CLI, which also prints a JSON line per message).
#  2. `splitcheck proxy --proxy-version 2` against HAProxy with send-proxy-v2, both in
#     front of the same PROXY-aware sink (fakesource with AcceptProxy): messages/s through
#     each (smtp-source through the proxy), and connect-to-banner latency over sequential
#     connections, through each proxy and straight to the sink.
# Every run is repeated BENCH_RUNS times, interleaved so a slow spell of the machine hits
# every target alike; the report shows medians. Figures go between the bench markers of
# BENCH_DOC (default docs/benchmarks.md) with the commands that produced them.
#
# Bounded: every step has a timeout and the whole run stops after BENCH_BUDGET seconds.
# Every process it starts is stopped on every exit path.
# Exit status: 0 (goals missed are reported, and fail the run only with BENCH_STRICT=1),
# 1 on a failure (a tool missing, a run failing, a message lost), 130/143 on SIGINT/SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

RUNS=${BENCH_RUNS:-3}
MESSAGES=${BENCH_MESSAGES:-5000}
SESSIONS=${BENCH_SESSIONS:-20}
LATENCY_CONNS=${BENCH_LATENCY_CONNS:-2000}
RUN_TIMEOUT=${BENCH_RUN_TIMEOUT:-60}
BUDGET=${BENCH_BUDGET:-600}
DOC=${BENCH_DOC:-docs/benchmarks.md}
STRICT=${BENCH_STRICT:-0}
SPLITCHECK=${SPLITCHECK:-bin/splitcheck}
BENCHTOOL=bin/benchtool
GO=${GO:-go}

die() {
	echo "bench: $*" >&2
	exit 1
}

for tool in smtp-source smtp-sink haproxy timeout tail awk "$GO"; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found; run 'make deps' (Debian packages postfix, haproxy)"
done
[ -x "$SPLITCHECK" ] || die "$SPLITCHECK not found; run 'make build'"
"$GO" build -o "$BENCHTOOL" ./internal/benchtool/cmd/benchtool || die "building $BENCHTOOL failed"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/splitcheck-bench.XXXXXX")
RUNS_TSV="$WORK/runs.tsv"
COMMANDS="$WORK/commands.sh"
PIDS=()

# stop ends one process we started: SIGTERM, at most 10 s to exit, then SIGKILL; it
# reaps the process and returns its exit status.
stop() {
	local pid=$1 rc=0
	kill -TERM "$pid" 2>/dev/null || true
	timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || rc=$?
	return "$rc"
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for pid in "${PIDS[@]}"; do
		kill -0 "$pid" 2>/dev/null && { stop "$pid" || true; }
	done
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		echo "bench: kept $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: runs CMD in the background with its output in $WORK/NAME.{out,err}
# and records it so cleanup stops it; the pid is in $LAST_PID.
start() {
	local name=$1
	shift
	echo "$*" >>"$COMMANDS"
	"$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}

# left prints the seconds left in the budget, failing when it is spent.
left() {
	local l=$((BUDGET - SECONDS))
	[ "$l" -gt 2 ] || die "over the ${BUDGET}s budget (BENCH_BUDGET); stopping"
	echo "$l"
}

wait_listening() {
	local l
	l=$(left)
	"$BENCHTOOL" wait -timeout "$((l < 15 ? l : 15))s" "$@" || die "a server did not start listening; logs in $WORK (BENCH_KEEP=1 keeps them)"
}

# source PHASE MODE TARGET RUN ADDR [smtp-source flags]: one timed smtp-source run.
source_run() {
	local phase=$1 mode=$2 target=$3 n=$4 addr=$5 t0 t1 l secs
	shift 5
	l=$(left)
	local cmd=(smtp-source "$@" -s "$SESSIONS" -m "$MESSAGES" "$addr")
	[ "$n" = 1 ] && echo "${cmd[*]}    # $target, $mode" >>"$COMMANDS"
	t0=$(date +%s%N)
	if ! timeout "$((l < RUN_TIMEOUT ? l : RUN_TIMEOUT))" "${cmd[@]}" >"$WORK/source.log" 2>&1; then
		cat "$WORK/source.log" >&2
		die "smtp-source against $target ($mode, run $n) failed or timed out"
	fi
	t1=$(date +%s%N)
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", (b - a) / 1e9 }')
	printf '%s\t%s\t%s\t%d\t%d\t%s\n' "$phase" "$mode" "$target" "$n" "$MESSAGES" "$secs" >>"$RUNS_TSV"
	awk -v m="$MESSAGES" -v s="$secs" -v t="$target" -v mode="$mode" -v n="$n" \
		'BEGIN { printf "bench: %-25s %-27s run %d: %6.0f msg/s\n", t, mode, n, m / s }' >&2
}

# expect_count NAME WANT: the sink NAME (stopped) must have counted WANT messages, all
# with a PROXY header when the third argument is "proxy".
expect_count() {
	local name=$1 want=$2 kind=${3:-} got hdrs
	read -r _ got _ hdrs <"$WORK/$name.out" || die "$name printed no counts"
	[ "$got" = "$want" ] || die "$name recorded $got messages, want $want: messages were lost"
	if [ "$kind" = proxy ] && [ "$hdrs" != "$got" ]; then
		die "$name: $hdrs of $got messages came with a PROXY header, want all"
	fi
}

MODES=("one message per connection" "reuse (-d)")
mode_flags() { [ "$1" = "reuse (-d)" ] && echo "-d" || true; }

read -r P_SMTPSINK P_FAKE P_BARE P_CLI P_PLAIN P_PSINK P_HAPROXY P_PROXY <<<"$("$BENCHTOOL" ports 8)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

{
	echo "# ports are chosen afresh on every run"
} >"$COMMANDS"

# --- 1. fakesource vs smtp-sink ---------------------------------------------------------
SINK_USER=()
[ "$(id -u)" = 0 ] && SINK_USER=(-u nobody) # smtp-sink refuses to run as root without -u
start smtp-sink smtp-sink "${SINK_USER[@]}" "127.0.0.1:$P_SMTPSINK" 256
PID_SMTPSINK=$LAST_PID
start fakesource "$BENCHTOOL" sink -listen "127.0.0.1:$P_FAKE"
PID_FAKE=$LAST_PID
start bare "$BENCHTOOL" sink -bare -listen "127.0.0.1:$P_BARE"
PID_BARE=$LAST_PID
start fakesource-cli "$SPLITCHECK" fakesource --listen "127.0.0.1:$P_CLI" --log-level warn
PID_CLI=$LAST_PID
wait_listening "127.0.0.1:$P_SMTPSINK" "127.0.0.1:$P_FAKE" "127.0.0.1:$P_BARE" "127.0.0.1:$P_CLI"

echo "bench: 1. fakesource vs smtp-sink: smtp-source -s $SESSIONS -m $MESSAGES, $RUNS runs each" >&2
for n in $(seq "$RUNS"); do
	for mode in "${MODES[@]}"; do
		flags=$(mode_flags "$mode")
		source_run sink "$mode" smtp-sink "$n" "127.0.0.1:$P_SMTPSINK" $flags
		source_run sink "$mode" fakesource "$n" "127.0.0.1:$P_FAKE" $flags
		source_run sink "$mode" "go-smtp keeping nothing" "$n" "127.0.0.1:$P_BARE" $flags
		source_run sink "$mode" "splitcheck fakesource CLI" "$n" "127.0.0.1:$P_CLI" $flags
	done
done
stop "$PID_FAKE" || die "fakesource sink failed; see $WORK/fakesource.err"
stop "$PID_CLI" || die "splitcheck fakesource failed; see $WORK/fakesource-cli.err"
stop "$PID_BARE" || die "bare go-smtp sink failed; see $WORK/bare.err"
stop "$PID_SMTPSINK" || true
expect_count fakesource $((RUNS * 2 * MESSAGES))
expect_count bare $((RUNS * 2 * MESSAGES))
cli_lines=$(grep -c '"kind":"message"' "$WORK/fakesource-cli.out" || true)
[ "$cli_lines" = $((RUNS * 2 * MESSAGES)) ] || die "splitcheck fakesource printed $cli_lines messages, want $((RUNS * 2 * MESSAGES))"

# --- 2. splitcheck proxy vs HAProxy --------------------------------------------------------
cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend bench
    bind 127.0.0.1:$P_HAPROXY
    default_backend sink
backend sink
    server sink 127.0.0.1:$P_PSINK send-proxy-v2
EOF
{
	echo "# haproxy.cfg:"
	sed 's/^/#   /' "$WORK/haproxy.cfg"
} >>"$COMMANDS"
start psink "$BENCHTOOL" sink -listen "127.0.0.1:$P_PSINK" -accept-proxy
PID_PSINK=$LAST_PID
start plain "$BENCHTOOL" sink -listen "127.0.0.1:$P_PLAIN"
PID_PLAIN=$LAST_PID
start haproxy haproxy -f "$WORK/haproxy.cfg" -db
PID_HAPROXY=$LAST_PID
start proxy "$SPLITCHECK" proxy --listen "127.0.0.1:$P_PROXY" --backend "127.0.0.1:$P_PSINK" --proxy-version 2 --log-level warn
PID_PROXY=$LAST_PID
wait_listening "127.0.0.1:$P_PSINK" "127.0.0.1:$P_PLAIN" "127.0.0.1:$P_HAPROXY" "127.0.0.1:$P_PROXY"

echo "bench: 2. splitcheck proxy vs HAProxy (PROXY v2): smtp-source -s $SESSIONS -m $MESSAGES, $RUNS runs each" >&2
for n in $(seq "$RUNS"); do
	for mode in "${MODES[@]}"; do
		flags=$(mode_flags "$mode")
		source_run proxy "$mode" "no proxy" "$n" "127.0.0.1:$P_PLAIN" $flags
		source_run proxy "$mode" haproxy "$n" "127.0.0.1:$P_HAPROXY" $flags
		source_run proxy "$mode" proxy "$n" "127.0.0.1:$P_PROXY" $flags
	done
done

echo "bench: connect-to-banner latency, $LATENCY_CONNS sequential connections per path" >&2
l=$(left)
lat_cmd=("$BENCHTOOL" latency -n "$LATENCY_CONNS" -o "$WORK/latency.json"
	"direct=v2@127.0.0.1:$P_PSINK" "haproxy=127.0.0.1:$P_HAPROXY" "proxy=127.0.0.1:$P_PROXY")
echo "${lat_cmd[*]}" >>"$COMMANDS"
timeout "$l" "${lat_cmd[@]}" || die "latency measurement failed or timed out"

stop "$PID_PROXY" || die "splitcheck proxy failed; see $WORK/proxy.err"
stop "$PID_HAPROXY" || true
stop "$PID_PSINK" || die "PROXY-aware sink failed; see $WORK/psink.err"
stop "$PID_PLAIN" || die "plain sink failed; see $WORK/plain.err"
expect_count psink $((RUNS * 2 * 2 * MESSAGES)) proxy
expect_count plain $((RUNS * 2 * MESSAGES))

# --- report ---------------------------------------------------------------------------------
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
cat >"$WORK/preamble.md" <<EOF
Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) CPUs ($cpu), Linux $(uname -r); load average
$LOAD_BEFORE before the run, $(cut -d' ' -f1-3 /proc/loadavg) after it. $("$GO" version | cut -d' ' -f3),
Postfix $(postconf -h mail_version 2>/dev/null || echo '?'), $(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1-3).
smtp-source -s $SESSIONS -m $MESSAGES per run, $RUNS runs per cell, interleaved; the cell shows the
median and each run. Reproduce with \`make bench\` (BENCH_RUNS, BENCH_MESSAGES, BENCH_SESSIONS,
BENCH_LATENCY_CONNS, BENCH_DOC adjust it). Zero messages lost: every sink's count was checked.
EOF
set +e
"$BENCHTOOL" report -runs "$RUNS_TSV" -latency "$WORK/latency.json" -preamble "$WORK/preamble.md" \
	-commands "$COMMANDS" -doc "$DOC"
rc=$?
set -e
case $rc in
0) echo "bench: all goals met; figures in $DOC" >&2 ;;
3)
	echo "bench: some goals were not met (see above); figures in $DOC" >&2
	[ "$STRICT" = 1 ] && exit 1
	;;
*) die "writing the report failed" ;;
esac
exit 0
