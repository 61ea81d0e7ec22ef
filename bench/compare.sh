#!/usr/bin/env bash
# Compare wsgate with nginx, HAProxy and Caddy (and the echo backend itself, "direct") as
# WebSocket proxies on loopback. See bench/README.md.
#
#   bench/compare.sh                 # 10 s per row
#   QUICK=1 bench/compare.sh         # 3 s per row
#   DUR=5s TARGETS="direct nginx" ROWS="tp64 rate" bench/compare.sh
#
# Environment:
#   DUR       duration of each timed row (default 10s; QUICK=1 makes it 3s)
#   WARMUP    traffic before each load row's measured DUR, kept out of its figures (default
#             2s; QUICK=1 makes it 1s): new connections' first messages, and the first touch
#             of fresh memory in every process; the rate rows report its p99 apart
#   TARGETS   columns, in order (default: direct direct-gen wsgate nginx haproxy caddy);
#             "direct" is the echo server alone on the proxy's core, "direct-gen" the echo
#             server on the generator's core, where every proxy's backend runs; "wsgate-base" is
#             wsgate built from BASE_REV, to measure a change against its baseline in one run
#   BASE_REV  the git revision wsgate-base is built from (default HEAD: the last commit, so
#             uncommitted work in "wsgate" is compared with what it changes)
#   ROWS      rows to run (default: tp64 tp64k rate ratemany idle idlewss hswss tpwss; also
#             ratewss and tpwssrec)
#   IDLE_N    idle connections (default 10000, lowered to fit the open-file limit)
#   MANY_N    connections of the ratemany row, each sending 1 msg/s (default 8000, lowered
#             like IDLE_N)
#   REF       reference target for ratios (default nginx)
#   ROUNDS    run every row this many times (default 1), the targets interleaved, their
#             order rotated each round and reversed every other round; the table shows each figure's median over the rounds,
#             and the range of the row's first figure (the machine's noise, measured)
#   PROXY_QUOTA  cap each target at this fraction of its core (e.g. 0.5; a cgroup CPU quota,
#             10 ms period; needs root). The generator then has twice the proxy's CPU, so the
#             throughput rows measure each proxy's capacity per core instead of the generator's
#   RESULTS   also copy the raw JSON lines to this file
#   NO_APT=1  do not apt-get install missing proxies
#   KEEP=1    keep the temporary directory (configs, logs)
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DUR=${DUR:-10s}
[[ "${QUICK:-}" == 1 ]] && DUR=${QUICK_DUR:-3s}
WARMUP=${WARMUP:-2s}
[[ "${QUICK:-}" == 1 ]] && WARMUP=${QUICK_WARMUP:-1s}
TARGETS=${TARGETS:-"direct direct-gen wsgate nginx haproxy caddy"}
ROWS=${ROWS:-"tp64 tp64k rate ratemany idle idlewss hswss tpwss"}
IDLE_N=${IDLE_N:-10000}
MANY_N=${MANY_N:-8000}
REF=${REF:-nginx}
ROUNDS=${ROUNDS:-1}
PROXY_CPU=${PROXY_CPU:-0}
GEN_CPU=${GEN_CPU:-1}

W=$(mktemp -d /tmp/wsbench.XXXXXX)
BIN=$W/bin
mkdir -p "$BIN"
PIDS_ALL=()

log() { echo "[compare] $*" >&2; }

cleanup() {
	local p
	for p in "${PIDS_ALL[@]}"; do
		kill "$p" 2>/dev/null
	done
	for p in "${PIDS_ALL[@]}"; do
		wait "$p" 2>/dev/null
	done
	[[ -n "${CG:-}" ]] && rmdir "$CG" 2>/dev/null
	if [[ "${KEEP:-}" == 1 ]]; then
		log "kept $W"
	else
		rm -rf "$W"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Open files: every proxied idle connection costs the proxy two descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
max_idle=$(((NOFILE - 200) / 2))
if ((IDLE_N > max_idle)); then
	log "open-file limit is $NOFILE (hard limit; raising it needs CAP_SYS_RESOURCE): idle rows use $max_idle connections instead of $IDLE_N"
	IDLE_N=$max_idle
fi
if ((MANY_N > max_idle)); then
	MANY_N=$max_idle
fi

# Ports below the ephemeral range, at a random base so parallel runs rarely collide.
BASE=$((21000 + (RANDOM % 100) * 100))
B_PLAIN=$BASE
B_TLS=$((BASE + 1))
declare -A PORT_PLAIN=([direct]=$((BASE + 10)) [direct-gen]=$((BASE + 70)) [wsgate]=$((BASE + 20)) [nginx]=$((BASE + 30)) [haproxy]=$((BASE + 40)) [caddy]=$((BASE + 50)) [wsgate-base]=$((BASE + 60)))
declare -A PORT_TLS=([direct]=$((BASE + 11)) [direct-gen]=$((BASE + 71)) [wsgate]=$((BASE + 21)) [nginx]=$((BASE + 31)) [haproxy]=$((BASE + 41)) [caddy]=$((BASE + 51)) [wsgate-base]=$((BASE + 61)))
declare -A UNAVAILABLE=()

# ---- CPU quota for the targets (PROXY_QUOTA) --------------------------------------------------
CG=""
if [[ -n "${PROXY_QUOTA:-}" ]]; then
	quota_us=$(awk -v q="$PROXY_QUOTA" 'BEGIN { printf "%d", q * 10000 }')
	if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then # cgroup v2
		CG=/sys/fs/cgroup/wsbench-$$
		{ echo +cpu >/sys/fs/cgroup/cgroup.subtree_control && mkdir "$CG" &&
			echo "$quota_us 10000" >"$CG/cpu.max"; } 2>/dev/null || CG=""
	elif [[ -d /sys/fs/cgroup/cpu ]]; then # cgroup v1
		CG=/sys/fs/cgroup/cpu/wsbench-$$
		{ mkdir "$CG" && echo 10000 >"$CG/cpu.cfs_period_us" &&
			echo "$quota_us" >"$CG/cpu.cfs_quota_us"; } 2>/dev/null || CG=""
	fi
	if [[ -z "$CG" ]]; then
		log "PROXY_QUOTA: cannot create a CPU cgroup (needs root and the cpu controller)"
		exit 1
	fi
	log "targets capped at $PROXY_QUOTA of a core ($CG)"
fi

# ---- build ---------------------------------------------------------------------------------
log "building tools in $W"
(cd "$ROOT" && go build -o "$BIN/wsload" ./bench/wsload && go build -o "$BIN/echo" ./bench/echo &&
	go build -o "$BIN/report" ./bench/report) || {
	log "building the bench tools failed"
	exit 1
}
if [[ " $TARGETS " == *" wsgate "* ]]; then
	if (cd "$ROOT" && go build -o /tmp/wsgate . >"$W/wsgate-build.log" 2>&1); then
		log "built /tmp/wsgate"
	else
		UNAVAILABLE[wsgate]="go build failed: $(head -c 200 "$W/wsgate-build.log" | tr '\n|' '  ')"
		log "wsgate: ${UNAVAILABLE[wsgate]}"
	fi
fi
if [[ " $TARGETS " == *" wsgate-base "* ]]; then
	rev=${BASE_REV:-HEAD}
	mkdir -p "$W/base-src"
	if git -C "$ROOT" archive "$rev" | tar -x -C "$W/base-src" &&
		(cd "$W/base-src" && go build -o "$BIN/wsgate-base" . >"$W/wsgate-base-build.log" 2>&1); then
		log "built wsgate-base from $rev ($(git -C "$ROOT" rev-parse --short "$rev"))"
	else
		UNAVAILABLE[wsgate-base]="could not build $rev"
		log "wsgate-base: ${UNAVAILABLE[wsgate-base]}"
	fi
fi

# ---- install missing proxies -----------------------------------------------------------------
need_pkgs=()
for t in nginx haproxy caddy; do
	if [[ " $TARGETS " == *" $t "* ]] && ! command -v "$t" >/dev/null; then
		need_pkgs+=("$t")
	fi
done
if ((${#need_pkgs[@]})) && [[ "${NO_APT:-}" != 1 ]]; then
	log "installing ${need_pkgs[*]} with apt-get"
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"; } >"$W/apt.log" 2>&1 ||
		log "apt-get failed (see $W/apt.log with KEEP=1)"
fi
for t in nginx haproxy caddy; do
	if [[ " $TARGETS " == *" $t "* ]] && ! command -v "$t" >/dev/null; then
		UNAVAILABLE[$t]="not installed"
	fi
done

# ---- certificate (ECDSA P-256, self-signed, for localhost and 127.0.0.1) ----------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-keyout "$W/key.pem" -out "$W/cert.pem" -subj /CN=localhost \
	-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1 || {
	log "openssl failed"
	exit 1
}
cat "$W/cert.pem" "$W/key.pem" >"$W/haproxy.pem"

# ---- helpers ---------------------------------------------------------------------------------
wait_port() { # port [seconds]
	local i
	for ((i = 0; i < ${2:-10} * 20; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	return 1
}

# The shared echo backend, on the generator's core.
taskset -c "$GEN_CPU" "$BIN/echo" -addr "127.0.0.1:$B_PLAIN" >"$W/backend.log" 2>&1 &
PIDS_ALL+=($!)
wait_port "$B_PLAIN" || {
	log "echo backend did not start"
	exit 1
}
log "echo backend on 127.0.0.1:$B_PLAIN"

write_configs() {
	local p t
	mkdir -p "$W/nginx-tmp" "$W/caddy-home"
	cat >"$W/wsgate.hcl" <<EOF
listen "plain" {
  address = "127.0.0.1:${PORT_PLAIN[wsgate]}"
}
listen "tls" {
  address = "127.0.0.1:${PORT_TLS[wsgate]}"
  tls {
    cert_file = "$W/cert.pem"
    key_file  = "$W/key.pem"
    # The same key exchange as the peers (Debian's OpenSSL 3.0 and Caddy 2.6 have no
    # X25519MLKEM768, which wsgate would otherwise pick with wsload): equal work per handshake.
    curves    = ["x25519", "secp256r1"]
  }
}
limits {
  messages_per_second          = 0
  bytes_per_second             = 0
  max_connections_per_ip       = 0
  handshakes_per_ip_per_second = 0
  idle_timeout                 = "1h"
  # nginx, HAProxy and Caddy send no keepalive pings of their own, so wsgate sends none
  # either (wsload answers pings, also in idle mode; bench/README.md measures idle memory with
  # them on).
  ping_interval                = "0"
}
route "/" {
  backend = "ws://127.0.0.1:$B_PLAIN/"
}
log {
  level = "warn"
}
EOF
	sed -e "s/:${PORT_PLAIN[wsgate]}\"/:${PORT_PLAIN[wsgate-base]}\"/" -e "s/:${PORT_TLS[wsgate]}\"/:${PORT_TLS[wsgate-base]}\"/" \
		"$W/wsgate.hcl" >"$W/wsgate-base.hcl"
	cat >"$W/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $W/nginx.pid;
error_log $W/nginx-error.log warn;
worker_rlimit_nofile $NOFILE;
events {
  # nginx starts dropping not-yet-upgraded connections once fewer than 1/16 of
  # worker_connections are free, so leave headroom even past the descriptor limit.
  worker_connections $((NOFILE * 2));
}
http {
  access_log off;
  client_body_temp_path $W/nginx-tmp/body;
  proxy_temp_path $W/nginx-tmp/proxy;
  fastcgi_temp_path $W/nginx-tmp/fastcgi;
  uwsgi_temp_path $W/nginx-tmp/uwsgi;
  scgi_temp_path $W/nginx-tmp/scgi;
  map \$http_upgrade \$connection_upgrade {
    default upgrade;
    ''      close;
  }
  upstream backend {
    server 127.0.0.1:$B_PLAIN;
  }
  server {
    listen 127.0.0.1:${PORT_PLAIN[nginx]} backlog=4096;
    listen 127.0.0.1:${PORT_TLS[nginx]} ssl backlog=4096;
    ssl_certificate $W/cert.pem;
    ssl_certificate_key $W/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header Host \$host;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }
  }
}
EOF
	local hmax=$(((NOFILE - 100) / 2))
	cat >"$W/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn $hmax
  log stderr format short local0 err
defaults
  mode http
  maxconn $hmax
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
  timeout client-fin 5s
  timeout http-request 10s
frontend fe
  bind 127.0.0.1:${PORT_PLAIN[haproxy]}
  bind 127.0.0.1:${PORT_TLS[haproxy]} ssl crt $W/haproxy.pem alpn http/1.1
  default_backend be
backend be
  server s1 127.0.0.1:$B_PLAIN maxconn $hmax
EOF
	cat >"$W/Caddyfile" <<EOF
{
  admin off
  auto_https disable_redirects
  storage file_system $W/caddy-home/data
  log {
    level ERROR
  }
}
http://:${PORT_PLAIN[caddy]} {
  bind 127.0.0.1
  reverse_proxy 127.0.0.1:$B_PLAIN
}
https://:${PORT_TLS[caddy]} {
  bind 127.0.0.1
  tls $W/cert.pem $W/key.pem
  reverse_proxy 127.0.0.1:$B_PLAIN
}
EOF
}
write_configs

TARGET_PID=""
TARGET_PIDS=""

# start_target NAME: start it fresh on the proxy core; set TARGET_PID and TARGET_PIDS.
start_target() {
	local t=$1 logf="$W/$1.log"
	case $t in
	direct)
		taskset -c "$PROXY_CPU" "$BIN/echo" -addr "127.0.0.1:${PORT_PLAIN[direct]}" \
			-tls-addr "127.0.0.1:${PORT_TLS[direct]}" -cert "$W/cert.pem" -key "$W/key.pem" >>"$logf" 2>&1 &
		;;
	direct-gen)
		# The echo server where every proxy's backend runs: on the generator's core.
		taskset -c "$GEN_CPU" "$BIN/echo" -addr "127.0.0.1:${PORT_PLAIN[direct-gen]}" \
			-tls-addr "127.0.0.1:${PORT_TLS[direct-gen]}" -cert "$W/cert.pem" -key "$W/key.pem" >>"$logf" 2>&1 &
		;;
	wsgate)
		taskset -c "$PROXY_CPU" /tmp/wsgate run -config "$W/wsgate.hcl" >>"$logf" 2>&1 &
		;;
	wsgate-base)
		taskset -c "$PROXY_CPU" "$BIN/wsgate-base" run -config "$W/wsgate-base.hcl" >>"$logf" 2>&1 &
		;;
	nginx)
		taskset -c "$PROXY_CPU" nginx -c "$W/nginx.conf" -p "$W" -e "$W/nginx-error.log" >>"$logf" 2>&1 &
		;;
	haproxy)
		taskset -c "$PROXY_CPU" haproxy -db -f "$W/haproxy.cfg" >>"$logf" 2>&1 &
		;;
	caddy)
		HOME=$W/caddy-home XDG_DATA_HOME=$W/caddy-home XDG_CONFIG_HOME=$W/caddy-home \
			taskset -c "$PROXY_CPU" caddy run --config "$W/Caddyfile" --adapter caddyfile >>"$logf" 2>&1 &
		;;
	esac
	TARGET_PID=$!
	PIDS_ALL+=("$TARGET_PID")
	if ! wait_port "${PORT_PLAIN[$t]}" 15 || ! wait_port "${PORT_TLS[$t]}" 5; then
		log "$t did not start listening; last log lines:"
		tail -5 "$logf" >&2
		stop_target
		return 1
	fi
	sleep 0.3
	TARGET_PIDS=$TARGET_PID
	local c
	for c in $(pgrep -P "$TARGET_PID"); do # nginx's worker
		TARGET_PIDS+=",$c"
	done
	if [[ -n "$CG" ]]; then
		local pid
		for pid in ${TARGET_PIDS//,/ }; do
			echo "$pid" >"$CG/cgroup.procs"
		done
	fi
	return 0
}

stop_target() {
	[[ -z "$TARGET_PID" ]] && return
	kill "$TARGET_PID" 2>/dev/null
	local i
	for ((i = 0; i < 100; i++)); do
		kill -0 "$TARGET_PID" 2>/dev/null || break
		sleep 0.05
	done
	kill -9 "$TARGET_PID" 2>/dev/null
	wait "$TARGET_PID" 2>/dev/null
	TARGET_PID=""
	TARGET_PIDS=""
}

# run_row ROW TARGET: run wsload for one cell, appending one JSON line to results.
run_row() {
	local row=$1 t=$2 plain="ws://127.0.0.1:${PORT_PLAIN[$2]}/bench" tls="wss://127.0.0.1:${PORT_TLS[$2]}/bench"
	local args=()
	case $row in
	tp64) args=(-mode throughput -url "$plain" -c 100 -window 8 -size 64 -d "$DUR" -warmup "$WARMUP") ;;
	tp64k) args=(-mode throughput -url "$plain" -c 10 -window 4 -size 65536 -d "$DUR" -warmup "$WARMUP") ;;
	rate) args=(-mode rate -url "$plain" -c 1000 -rate 20000 -size 128 -d "$DUR" -warmup "$WARMUP") ;;
	ratemany) args=(-mode rate -url "$plain" -c "$MANY_N" -rate "$MANY_N" -size 128 -d "$DUR" -warmup "$WARMUP") ;;
	idle) args=(-mode idle -url "$plain" -n "$IDLE_N" -settle 2s) ;;
	idlewss) args=(-mode idle -url "$tls" -insecure -n "$IDLE_N" -settle 2s) ;;
	hswss) args=(-mode handshake -url "$tls" -insecure -c 32 -d "$DUR") ;;
	tpwss) args=(-mode throughput -url "$tls" -insecure -c 100 -window 8 -size 64 -d "$DUR" -warmup "$WARMUP") ;;
	tpwssrec) args=(-mode throughput -url "$tls" -insecure -split -c 100 -window 8 -size 64 -d "$DUR" -warmup "$WARMUP") ;;
	ratewss) args=(-mode rate -url "$tls" -insecure -c 1000 -rate 20000 -size 128 -d "$DUR" -warmup "$WARMUP") ;;
	*)
		log "unknown row $row"
		return
		;;
	esac
	local out
	out=$(timeout 300 taskset -c "$GEN_CPU" "$BIN/wsload" "${args[@]}" -pid "$TARGET_PIDS" -json -label "$row $t" 2>"$W/wsload-err.txt")
	if [[ "$out" == "{"* ]]; then
		echo "$out" >>"$W/results.jsonl"
		log "$row $t: $(echo "$out" | cut -c1-400)"
	else
		local e
		e=$(tr '\n"|' '  ' <"$W/wsload-err.txt" | head -c 200)
		echo "{\"label\":\"$row $t\",\"skipped\":\"wsload failed: $e\"}" >>"$W/results.jsonl"
		log "$row $t: wsload failed: $e"
	fi
}

# ---- matrix: rows outside, targets interleaved inside, each target started fresh per row -----
: >"$W/results.jsonl"
log "rows: $ROWS; targets: $TARGETS; duration $DUR after a warm-up of $WARMUP; idle $IDLE_N; rounds $ROUNDS"
read -r -a TLIST <<<"$TARGETS"
RLIST=()
for ((i = ${#TLIST[@]} - 1; i >= 0; i--)); do RLIST+=("${TLIST[i]}"); done
for row in $ROWS; do
	for ((round = 0; round < ROUNDS; round++)); do
		# Rotate the order each round, so that no target always runs first after a row change,
		# and reverse it every other round, so that no target always runs right after the same
		# neighbour (a run can leave the machine faster or slower for the next one).
		base=("${TLIST[@]}")
		if ((round % 2 == 1)); then
			base=("${RLIST[@]}")
		fi
		order=("${base[@]:round % ${#base[@]}}" "${base[@]:0:round % ${#base[@]}}")
		for t in "${order[@]}"; do
			if [[ -n "${UNAVAILABLE[$t]:-}" ]]; then
				echo "{\"label\":\"$row $t\",\"skipped\":\"${UNAVAILABLE[$t]}\"}" >>"$W/results.jsonl"
				continue
			fi
			if ! start_target "$t"; then
				echo "{\"label\":\"$row $t\",\"skipped\":\"did not start\"}" >>"$W/results.jsonl"
				continue
			fi
			run_row "$row" "$t"
			stop_target
			sleep 1
		done
	done
done

[[ -n "${RESULTS:-}" ]] && cp "$W/results.jsonl" "$RESULTS"
echo
rounds_note=""
((ROUNDS > 1)) && rounds_note=", median of $ROUNDS rounds"
echo "## wsgate benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $DUR per row after a $WARMUP warm-up$rounds_note, proxy on CPU $PROXY_CPU${PROXY_QUOTA:+ capped at $PROXY_QUOTA of it}, generator and backend on CPU $GEN_CPU)"
echo
"$BIN/report" -ref "$REF" -targets "$TARGETS" -proxy-cpu "$PROXY_CPU" <"$W/results.jsonl"
