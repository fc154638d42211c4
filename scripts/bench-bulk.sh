#!/usr/bin/env bash
# bench-bulk.sh: bulk verification against the reference target (Postfix + Dovecot),
# in one run, compared with Postfix's smtp-source and with a swaks loop.
#
#   sudo scripts/bench-bulk.sh            # needs root and the packages (make deps)
#   N=10000 SAMPLE=200 scripts/bench-bulk.sh
#
# It starts one reference target (internal/reftarget, fixed loopback ports: run it
# alone) and, inside it, ROUNDS times, interleaved:
#   1. smtp-source pushing N recipients to the plain listener (127.0.0.2:25; it cannot
#      send PROXY headers), no verification: the baseline of what the target takes
#   2. splitcheck bulk, N recipients verified, through the PROXY listener (127.0.0.1:25)
#   3. the same through the plain listener (--plain), like smtp-source
#   4. 2 and 3 again with a shorter quiet window (timeouts.absence = FAST_ABSENCE)
# and then once a shell loop of swaks, one message per recipient, on SAMPLE recipients.
# Wall time and peak memory come from /usr/bin/time -v. The medians are printed at
# the end and kept in $OUT (default: a temporary folder).
set -euo pipefail

N=${N:-10000}
SAMPLE=${SAMPLE:-200}
LOCAL=${LOCAL:-20}      # local accounts in the list (each verified over IMAP)
EXTERNAL=${EXTERNAL:-40} # external recipients by authenticated submission (mx)
REJECT=${REJECT:-40}    # unauthenticated external recipients (reject)
SESSIONS=${SESSIONS:-4} # connections for splitcheck and smtp-source alike
BATCH=${BATCH:-100}     # recipients per transaction for both
ROUNDS=${ROUNDS:-3}     # interleaved rounds of every run (medians reported)
FAST_ABSENCE=${FAST_ABSENCE:-250ms} # the quiet window of the -fast runs
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d /tmp/bench-bulk.XXXXXX)}
GO=${GO:-go}

for tool in /usr/bin/time smtp-source smtp-sink swaks; do
	command -v "$tool" >/dev/null || { echo "bench-bulk: $tool is missing (make deps)" >&2; exit 3; }
done
if [ "$(id -u)" != 0 ]; then
	echo "bench-bulk: the reference target needs root" >&2
	exit 3
fi
if pgrep -f 'master -c|dovecot -c' >/dev/null; then
	echo "bench-bulk: a Postfix or Dovecot instance is already running; the target uses fixed ports" >&2
	exit 3
fi

cd "$ROOT"
echo "bench-bulk: building into $OUT"
$GO build ${GOBUILDFLAGS:-} -o "$OUT/splitcheck" ./cmd/splitcheck
$GO build ${GOBUILDFLAGS:-} -o "$OUT/reftarget" ./internal/reftarget/cmd/reftarget
if ! "$OUT/splitcheck" bulk --help >/dev/null 2>&1; then
	echo "bench-bulk: this splitcheck has no bulk command" >&2
	exit 3
fi

# The list: N rows, of which LOCAL local accounts, EXTERNAL mx, REJECT reject, the
# rest unmigrated (source). Local accounts are spread through the list.
accounts=()
for i in $(seq 1 "$LOCAL"); do accounts+=("mig$(printf %03d "$i")@example.org"); done
SOURCE=$((N - LOCAL - EXTERNAL - REJECT))
{
	echo "address,route"
	step=$((SOURCE / (LOCAL + 1)))
	j=0
	for i in $(seq 0 $((SOURCE - 1))); do
		printf 'user%06d@example.org,source\n' "$i"
		if [ "$step" -gt 0 ] && [ $(((i + 1) % step)) = 0 ] && [ "$j" -lt "$LOCAL" ]; then
			echo "${accounts[$j]},local"
			j=$((j + 1))
		fi
	done
	for ((; j < LOCAL; j++)); do echo "${accounts[$j]},local"; done
	for i in $(seq 1 "$EXTERNAL"); do
		if [ $((i % 2)) = 0 ]; then echo "erin$i@external.test,mx"; else echo "frank$i@other.test,mx"; fi
	done
	for i in $(seq 1 "$REJECT"); do echo "relay$i@external.test,reject"; done
} >"$OUT/list.csv"
rows=$(($(wc -l <"$OUT/list.csv") - 1))
echo "bench-bulk: $rows recipients in $OUT/list.csv"

# The config: examples/reftarget.yaml with every local account and the bench's tuning.
{
	cat <<EOF
target:
  smtp: 127.0.0.1:25
  plain_smtp: 127.0.0.2:25
  submission: 127.0.0.1:587
  submission_tls: starttls
  insecure_skip_verify: true
plan:
  domains: [example.org]
  local:
EOF
	for a in "${accounts[@]}"; do
		lp=${a%@*}
		cat <<EOF
    - address: $a
      mailbox: {address: 127.0.0.1:143, tls: none, password: {env: REFTARGET_PASSWORD_${lp^^}}}
EOF
	done
	cat <<EOF
  external: [erin@external.test, frank@other.test]
submitter:
  username: ${accounts[0]}
  password: {env: REFTARGET_PASSWORD_$(echo "${accounts[0]%@*}" | tr a-z A-Z)}
fakes:
  source: 127.0.0.4:2525
  mx: 127.0.0.5:25
  dns: 127.0.0.53:53
proxy:
  version: 2
  announce: 198.51.100.7
  source_address: 127.0.0.9
probe:
  helo: probe.splitcheck.test
  sender: probe@splitcheck.test
  plain_source: 127.0.0.10
timeouts:
  connect: 5s
  delivery: 30s
  absence: 1s
  run: 10m
bulk:
  concurrency: $SESSIONS
  batch_size: $BATCH
EOF
} >"$OUT/bulk.yaml"

# The same config with a shorter quiet window (timeouts.absence), for the second set
# of figures: the window is a fixed cost at the end of every run.
sed "s/^  absence: .*/  absence: ${FAST_ABSENCE}/" "$OUT/bulk.yaml" >"$OUT/bulk-fast.yaml"

# Everything below runs inside one reference target. The runs are interleaved,
# ROUNDS times, because the machine is shared: the summary takes medians.
cat >"$OUT/inside.sh" <<'INSIDE'
#!/usr/bin/env bash
set -euo pipefail
cd "$OUT"
timed() { # timed NAME CMD...: run CMD under /usr/bin/time -v, keep its report
	local name=$1; shift
	local start end
	start=$(date +%s.%N)
	set +e
	/usr/bin/time -v -o "$OUT/$name.time" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"
	local rc=$?
	set -e
	end=$(date +%s.%N)
	echo "$name exit=$rc wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }') rss_kib=$(awk -F': ' '/Maximum resident/ {print $2}' "$OUT/$name.time")" | tee -a "$OUT/figures.txt"
}
sink=
sink_up() { # smtp-sink takes the relayed copies at the source address
	smtp-sink -u nobody -c 127.0.0.4:2525 1000 >>"$OUT/sink.out" 2>&1 &
	sink=$!
	sleep 0.3
}
sink_down() {
	if [ -n "$sink" ]; then
		kill "$sink" 2>/dev/null || true
		wait "$sink" 2>/dev/null || true
		sink=
	fi
}
trap sink_down EXIT
msgs=$(( (ROWS + BATCH - 1) / BATCH ))

for round in $(seq 1 "$ROUNDS"); do
	echo "round $round of $ROUNDS" >&2
	# smtp-source: the same number of recipients, BATCH per message, SESSIONS
	# connections kept open (-d), to the plain listener; no verification.
	sink_up
	timed smtp-source smtp-source -d -N -s "$SESSIONS" -m "$msgs" -r "$BATCH" -f probe@splitcheck.test \
		-t user@example.org -M probe.splitcheck.test 127.0.0.2:25
	sleep 3 # let Postfix relay its queue to the sink before the port is handed back
	sink_down
	# splitcheck bulk: through the PROXY listener and through the plain one, with
	# the config's quiet window and with the short one.
	timed bulk-proxy "$OUT/splitcheck" bulk --config "$OUT/bulk.yaml" --list "$OUT/list.csv" --progress-every 2s
	timed bulk-plain "$OUT/splitcheck" bulk --config "$OUT/bulk.yaml" --list "$OUT/list.csv" --plain --progress-every 2s
	timed bulk-proxy-fast "$OUT/splitcheck" bulk --config "$OUT/bulk-fast.yaml" --list "$OUT/list.csv" --progress-every 2s
	timed bulk-plain-fast "$OUT/splitcheck" bulk --config "$OUT/bulk-fast.yaml" --list "$OUT/list.csv" --plain --progress-every 2s
done

# The way people do it today, one swaks per recipient, on a sample.
sink_up
head -n $((SAMPLE + 1)) "$OUT/list.csv" | tail -n "$SAMPLE" | cut -d, -f1 >"$OUT/sample.txt"
printf '%s\n' '#!/usr/bin/env bash' \
	'while read -r rcpt; do' \
	'	swaks --silent 2 --server 127.0.0.2 --port 25 --helo probe.splitcheck.test \' \
	'		--from probe@splitcheck.test --to "$rcpt" >/dev/null || echo "swaks failed for $rcpt" >&2' \
	'done <"$1"' >"$OUT/swaks-loop.sh"
chmod +x "$OUT/swaks-loop.sh"
timed swaks-loop "$OUT/swaks-loop.sh" "$OUT/sample.txt"
INSIDE
chmod +x "$OUT/inside.sh"

accts=$(IFS=,; echo "${accounts[*]}")
: >"$OUT/figures.txt"
OUT=$OUT ROWS=$rows SAMPLE=$SAMPLE SESSIONS=$SESSIONS BATCH=$BATCH ROUNDS=$ROUNDS \
	"$OUT/reftarget" exec --accounts "$accts" -- "$OUT/inside.sh"

echo
echo "== runs ($(nproc) cores, $(uname -r)) =="
cat "$OUT/figures.txt"
if grep -v ' exit=0 ' "$OUT/figures.txt"; then
	echo "bench-bulk: a run failed (see $OUT/*.err)" >&2
	exit 1
fi
echo "--- bulk-proxy: the last report"
sed -n '1,12p' "$OUT/bulk-proxy.out"
values() { # values NAME KEY: KEY of every run called NAME, sorted
	awk -v n="$1" -v k="$2" '$1 == n { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$OUT/figures.txt" | sort -g
}
median() { values "$1" "$2" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
{
	echo "== medians of $ROUNDS rounds: $rows recipients ($LOCAL local, $((rows - LOCAL - EXTERNAL - REJECT)) source, $EXTERNAL mx, $REJECT reject), $SESSIONS connections, $BATCH per transaction =="
	ss=$(median smtp-source wall)
	sw=$(median swaks-loop wall)
	for run in bulk-proxy bulk-plain bulk-proxy-fast bulk-plain-fast; do
		awk -v name="$run" -v n="$rows" -v w="$(median "$run" wall)" -v r="$(values "$run" rss_kib | tail -1)" -v ss="$ss" -v s="$SAMPLE" -v sw="$sw" \
			'BEGIN { printf "%-16s %d verified in %.2f s = %4.0f/s, peak RSS %.1f MiB, %.2fx smtp-source, %.0fx the swaks loop\n", name, n, w, n/w, r/1024, ss/w, (n/w)/(s/sw) }'
	done
	awk -v n="$rows" -v ss="$ss" 'BEGIN { printf "%-16s %d pushed in %.2f s = %4.0f/s (no verification)\n", "smtp-source", n, ss, n/ss }'
	awk -v s="$SAMPLE" -v sw="$sw" 'BEGIN { printf "%-16s %d sent in %.2f s = %.1f/s (no verification)\n", "swaks loop", s, sw, s/sw }'
	echo "(peak RSS: the largest of the rounds; -fast: timeouts.absence $FAST_ABSENCE instead of $(awk '/absence:/ {print $2}' "$OUT/bulk.yaml"))"
} | tee "$OUT/summary.txt"
