# Sourced by scripts/compose-test (after tests/compose/lib.sh): scenario 5, loss and delay.
#
# The campaign mesh (campaign.yml: 4 active blades, 2 spares) with the workload running; then
# `tc netem` in every container's network namespace (from the host, `nsenter -t PID -n`; where the
# kernel has no netem, the same through NFQUEUE and tests/compose/netdelay.py, see impair_on): 10%
# loss and 100 ms +- 50 ms of delay on everything each container sends, for NETEM_SECONDS (300). No
# member may be declared dead and no seat may move: every container's seat table (holders and
# epochs) is the same at the end as before, no sample of any member table shows a member dead, no
# log has a system-down notice, and `dcish backup now` of every blade returns 0 during the fault.
# Afterwards the checker restores every acknowledged archive on another node.
#
# The mesh runs with NETEM_CONFIG (wan.toml): membership timings for such a link. With the LAN
# defaults (lan.toml) the same fault fails over blades within seconds; see the README.

. tests/compose/campaign.sh
netem_config=${NETEM_CONFIG:-wan.toml}
netem_seconds=${NETEM_SECONDS:-300}

netem_on() {
  local n
  for n in "${camp_names[@]}"; do impair_on "$n" 100 50 10 || return 1; done
}
netem_off() {
  local n
  for n in "${camp_names[@]}"; do impair_off "$n"; done
}

# Every container's seats as "blade holder-id epoch" lines.
seats_everywhere() {
  local c
  for c in $(camp_all); do
    docker exec "$c" dcish --json seats | python3 -c '
import json, sys
for s in json.load(sys.stdin): print(sys.argv[1], s["blade"], s["holder"], s["epoch"])' "$c"
  done
}

loss_and_delay_cause_no_failover() {
  local before after t0 dead notices failed_backups b ok_blades=0
  before=$(seats_everywhere)
  [ "$(echo "$before" | wc -l)" -eq 24 ] || { echo "$before"; return 1; }
  # Every blade's root has data before the fault, whichever blades the workload picks during it.
  for b in "${camp_blades[@]}"; do ok_blades=$((ok_blades+1)); workload_backup $((1000+ok_blades)) "$b"; done
  ok_blades=0
  camp_start_load 5
  sleep 10
  t0=$(now_ms)
  netem_on || { camp_stop_load; return 1; }
  echo "netem ($(tail -1 "$RUN/faults.jsonl" | grep -o "via.*" | tr -d "\"}")) on every container: 10% loss, 100 ms +- 50 ms, for ${netem_seconds}s (config $netem_config)"
  sleep "$netem_seconds"
  # Every blade is backed up once more while the fault is still on, whatever the workload did.
  for b in "${camp_blades[@]}"; do
    if timeout 120 docker exec "$(camp_c "$b")" dcish backup now; then ok_blades=$((ok_blades+1)); fi
  done
  netem_off
  camp_stop_load
  after=$(seats_everywhere)
  dead=$(python3 -c '
import json, sys
seen = set()
for line in open(sys.argv[1]):
    s = json.loads(line)
    for name, _id, state, _b, _e in s["nodes"]:
        if state in ("dead", "suspect") and (s["c"], name, state) not in seen:
            seen.add((s["c"], name, state)); print(s["c"], "saw", name, state)' "$RUN/samples.jsonl")
  notices=$(for c in $(camp_all); do docker logs "$c" 2>&1 | grep 'failure notice' | grep system-down; done)
  failed_backups=$(python3 -c '
import json, sys
t0 = int(sys.argv[2])
rows = [json.loads(l) for l in open(sys.argv[1])]
b = [r for r in rows if r["type"] == "backup" and r["t"] >= t0]
print(sum(1 for r in b if r["rc"] == 0), "of", len(b), "workload backups during the fault acknowledged;",
      sum(1 for r in rows if r["type"] == "send" and r["t"] >= t0 and r.get("answers")), "envelopes answered")' \
    "$RUN/acks.jsonl" "$t0")
  echo "$failed_backups; dcish backup now of $ok_blades of 4 blades returned 0 at the end of the fault"
  local ok=0
  [ "$before" = "$after" ] || { echo "seats changed:"; diff <(echo "$before") <(echo "$after"); ok=1; }
  [ -z "$(echo "$dead" | grep ' dead$')" ] || { echo "$dead"; ok=1; }
  [ -n "$dead" ] && echo "suspicions seen (none became a death):" && echo "$dead" | head -5
  [ -z "$notices" ] || { echo "$notices" | head -5; ok=1; }
  [ "$ok_blades" -eq 4 ] || ok=1
  [ $ok -eq 0 ] && echo "no failover: seats and epochs unchanged in all 6 containers, no member declared dead"
  return $ok
}

P=dcinet RUN=$(mktemp -d /tmp/dcinet.XXXXXX)
trap 'netem_off; camp_stop_load; camp_down; exit 130' INT TERM
if camp_up "$netem_config"; then
  check "loss and delay (netem 10%, 100 ms +- 50 ms): no failover, backups complete" loss_and_delay_cause_no_failover
  check "loss and delay: the checker finds every invariant kept" camp_check 2
else
  echo "compose: the netem mesh did not start"; failed=$((failed+1))
fi
netem_off
camp_stop_load
camp_down
trap - INT TERM
rm -rf "$RUN"
