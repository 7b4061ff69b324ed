# Sourced (after tests/compose/lib.sh) by the campaign scenarios (netem.sh, wipe.sh) and by
# scripts/chaos: the campaign mesh of campaign.yml under a compose project $P, a workload that
# writes into the blades' data sets (on whichever node holds each blade), backs them up and sends
# envelopes, and a sampler of every container's seat and member tables. Everything they record goes under the run directory $RUN, for
# tests/compose/checker.py:
#   acks.jsonl     one line per backup and per envelope, with what the agent answered
#   acked/ID/      the data set the node acting as a blade had when its archive was acknowledged
#                  (ID = blade-archive-step)
#   samples.jsonl  one line per container and sample: its seats and members
#   faults.jsonl   what was done to which container, when (written by the scenario or scripts/chaos)
#   faulted        the containers that are paused or down now (the workload and sampler skip them)
#   logs/          every container's log, saved before it is removed and at the end

camp_names=(blade-1 blade-2 blade-3 blade-4 spare-1 spare-2)
camp_blades=(blade-1 blade-2 blade-3 blade-4)
load_pids=()

camp_compose() { docker-compose -p "$P" -f tests/compose/campaign.yml "$@"; }
camp_c() { echo "${P}_$1_1"; }
camp_all() { local n; for n in "${camp_names[@]}"; do camp_c "$n"; done; }
now_ms() { date +%s%3N; }

# Records a fault (or its end) in faults.jsonl: kind, node name, and anything else as key=value.
fault_log() {
  local kind=$1 node=$2; shift 2
  python3 -c 'import json, sys
kv = dict(a.split("=", 1) for a in sys.argv[4:])
print(json.dumps({"t": int(sys.argv[1]), "kind": sys.argv[2], "node": sys.argv[3], **kv}))' \
    "$(now_ms)" "$kind" "$node" "$@" >> "$RUN/faults.jsonl"
}
faulted_add() { echo "$1" >> "$RUN/faulted"; }
faulted_del() { grep -vx "$1" "$RUN/faulted" > "$RUN/faulted.new"; mv "$RUN/faulted.new" "$RUN/faulted"; }
is_faulted() { grep -qx "$1" "$RUN/faulted" 2>/dev/null; }

# Loss and delay on everything node $1 sends: $2 ms +- $3 ms, $4 percent lost. With `tc netem`
# in its namespace when the kernel has sch_netem; otherwise (this project's build machine: no
# netem, no modules) every packet leaving eth0 goes through NFQUEUE to tests/compose/netdelay.py,
# run in the namespace, which drops and delays it the same way.
impair_on() {
  local pid; pid=$(docker inspect -f '{{.State.Pid}}' "$(camp_c "$1")") || return 1
  if nsenter -t "$pid" -n tc qdisc add dev eth0 root netem delay "$2ms" "$3ms" loss "$4%" 2>/dev/null; then
    fault_log netem "$1" delay_ms="$2" jitter_ms="$3" loss_pct="$4" via=tc-netem
    return 0
  fi
  nsenter -t "$pid" -n iptables -I OUTPUT -o eth0 -j NFQUEUE --queue-num 0 --queue-bypass || return 1
  nsenter -t "$pid" -n python3 tests/compose/netdelay.py --delay-ms "$2" --jitter-ms "$3" \
    --loss "$(python3 -c "print($4 / 100)")" 2>>"$RUN/netdelay.log" &
  echo $! > "$RUN/netdelay.$1.pid"
  fault_log netem "$1" delay_ms="$2" jitter_ms="$3" loss_pct="$4" via=nfqueue
}
impair_off() {
  local pid; pid=$(docker inspect -f '{{.State.Pid}}' "$(camp_c "$1")" 2>/dev/null)
  if [ -s "$RUN/netdelay.$1.pid" ]; then
    kill "$(cat "$RUN/netdelay.$1.pid")" 2>/dev/null
    wait "$(cat "$RUN/netdelay.$1.pid")" 2>/dev/null
    rm -f "$RUN/netdelay.$1.pid"
    [ -n "$pid" ] && [ "$pid" != 0 ] && nsenter -t "$pid" -n iptables -D OUTPUT -o eth0 -j NFQUEUE --queue-num 0 --queue-bypass 2>/dev/null
    fault_log netem-off "$1"
  elif [ -n "$pid" ] && [ "$pid" != 0 ] && nsenter -t "$pid" -n tc qdisc del dev eth0 root 2>/dev/null; then
    fault_log netem-off "$1"
  fi
  true
}

# Whether container $1 lists every member alive and, with $2 = seated, seats each blade on its own
# node (one docker exec: under load, one per member is too slow).
camp_whole() {
  printf 'nodes\nseats\n' | timeout 20 docker exec -i "$1" dcish --json 2>/dev/null | python3 -c '
import json, sys
text, dec, docs, i = sys.stdin.read(), json.JSONDecoder(), [], 0
while i < len(text):
    if text[i].isspace(): i += 1; continue
    d, i = dec.raw_decode(text, i); docs.append(d)
nodes, seats = docs
alive = {m["name"] for m in nodes if m["state"] == "alive"}
ok = alive >= set(sys.argv[2].split())
if sys.argv[1] == "seated":
    ok = ok and all(any(s["blade"] == b and s["holder_name"] == b and s["state"] == "held" for s in seats)
                    for b in sys.argv[3].split())
sys.exit(0 if ok else 1)' "${2:-}" "${camp_names[*]}" "${camp_blades[*]}"
}

# Waits up to $1 seconds until every container that is up passes camp_whole $2.
camp_wait_whole() {
  local deadline=$((SECONDS+$1)) c ok
  while [ $SECONDS -lt $deadline ]; do
    ok=1
    for c in $(camp_all); do camp_whole "$c" "${2:-}" || { ok=0; break; }; done
    [ $ok -eq 1 ] && return 0
    sleep 1
  done
  for c in $(camp_all); do echo "--- $c"; docker exec "$c" dcish nodes; docker exec "$c" dcish seats; done
  return 1
}

# Starts the mesh with config $1 (a file beside campaign.yml) and waits until every container lists
# every member alive and seats each blade on its own node.
camp_up() {
  mkdir -p "$RUN/logs" "$RUN/acked" && : > "$RUN/faulted" && touch "$RUN/faults.jsonl" "$RUN/acks.jsonl" "$RUN/samples.jsonl"
  [ -s scripts/compose/cluster.key ] ||
    docker run --rm -v "$PWD/scripts/compose:/out" "${DCI_IMAGE:-dci:latest}" keygen /out/cluster.key >/dev/null || return 1
  DCI_CAMPAIGN_CONFIG=$1 camp_compose up -d --force-recreate >/dev/null 2>&1 || { echo "the campaign mesh did not start"; return 1; }
  camp_wait_whole 240 seated
}

# Saves every container's log (a container removed later keeps its log here) and removes the
# mesh with its volumes.
camp_down() {
  local c
  [ -n "${RUN:-}" ] && [ -d "$RUN/logs" ] && for c in $(camp_all); do camp_save_log "$c"; done
  DCI_CAMPAIGN_CONFIG=lan.toml camp_compose down -v --timeout 5 --remove-orphans >/dev/null 2>&1
}
camp_save_log() {
  local f; f=$RUN/logs/$1.$(now_ms).log
  docker logs "$1" > "$f" 2>&1 || rm -f "$f"
}

# Stops node $1, removes its container and its data volume (identity, archives, seats, backup
# root), and starts it again: a blade whose disk was replaced.
camp_wipe() {
  local c; c=$(camp_c "$1")
  camp_compose stop -t 5 "$1" >/dev/null 2>&1
  camp_save_log "$c"
  camp_compose rm -f "$1" >/dev/null 2>&1 && docker volume rm "${P}_$1" >/dev/null || return 1
  fault_log wipe "$1"
  DCI_CAMPAIGN_CONFIG=${CAMP_CONFIG:-lan.toml} camp_compose up -d --no-deps "$1" >/dev/null 2>&1
}

# The node acting as blade $1 now, by name, from the seat table of the first container that is up
# (nothing when none answers or the blade is down).
acting_node() {
  local c
  for c in $(camp_all); do
    is_faulted "$c" && continue
    timeout 10 docker exec "$c" dcish --json seats 2>/dev/null | python3 -c '
import json, sys
for s in json.load(sys.stdin):
    if s["blade"] == sys.argv[1] and s["state"] == "held":
        print(s["holder_name"])' "$1" && return
  done
}

# One backup of a blade, by the workload: a new random file and a changed config written into the
# blade's data set on the node acting as the blade (its backup root on the blade's own node,
# /var/lib/dci/blades/BLADE on a node that took it over), then `dcish backup now BLADE` there.
# When the agent acknowledges it (exit 0: every holder has every block), the data set as that node
# has it is kept under acked/, unless the blade changed hands meanwhile (then what the archive holds
# is not known here, and the record says so).
workload_backup() {
  local step=$1 b=$2 node c dir stage out rc copied=0 err=$RUN/err.backup.$1
  node=$(acting_node "$b"); [ -n "$node" ] || return
  c=$(camp_c "$node"); is_faulted "$c" && return
  if [ "$node" = "$b" ]; then dir=/var/lib/dci/root; else dir=/var/lib/dci/blades/$b; fi
  stage=$RUN/stage.$step; mkdir -p "$stage/etc" || return
  head -c $(( (RANDOM * 7) % 200000 + 1 )) /dev/urandom > "$stage/f$step.bin"
  echo "$b step $step $(now_ms)" > "$stage/etc/app.conf"
  docker cp "$stage/." "$c:$dir" 2>/dev/null; rc=$?
  rm -rf "$stage"
  [ $rc -eq 0 ] || return
  out=$(timeout 120 docker exec "$c" dcish --json backup now "$b" 2>"$err"); rc=$?
  if [ $rc -eq 0 ] && [ "$(acting_node "$b")" = "$node" ]; then
    mkdir -p "$RUN/pending.$step" && docker cp "$c:$dir" "$RUN/pending.$step/tree" 2>/dev/null && copied=1
  fi
  python3 - "$RUN" "$b" "$step" "$rc" "$(now_ms)" "$out" "$(head -c 300 "$err")" "$node" "$copied" <<'PY'
import json, os, sys
run, blade, step, rc, t, out, err, node, copied = sys.argv[1:]
rec = {"type": "backup", "t": int(t), "blade": blade, "step": int(step), "rc": int(rc), "error": err.strip(),
       "node": node}
if rc == "0":
    a = json.loads(out)[0]
    rec.update(archive=a["id"], holders=a["holders"], complete=a["complete"])
    if copied == "1":
        rec["copy"] = f"{blade}-{a['id']}-{step}"
        os.rename(f"{run}/pending.{step}/tree", f"{run}/acked/{rec['copy']}")
    else:
        rec["copy"] = None  # the blade changed hands: the tree it archived is not known here
print(json.dumps(rec), file=open(f"{run}/acks.jsonl", "a"))
PY
  rm -rf "$err" "$RUN/pending.$step"
}

# One envelope, by the workload: an echo request from container $2 to blade $3, and every answer.
workload_send() {
  local step=$1 from=$2 b=$3 out rc err=$RUN/err.send.$1
  out=$(timeout 30 docker exec "$(camp_c "$from")" dcish --json send "blade:$b" "<ping xmlns=\"urn:test\" step=\"$step\"/>" 2>"$err"); rc=$?
  python3 - "$RUN" "$from" "$b" "$step" "$rc" "$(now_ms)" "$out" "$(head -c 300 "$err")" <<'PY'
import json, sys
run, frm, blade, step, rc, t, out, err = sys.argv[1:]
rec = {"type": "send", "t": int(t), "from": frm, "to": blade, "step": int(step), "rc": int(rc), "error": err.strip()}
try:
    doc = json.loads(out)
    rec.update(id=doc["id"], answers=[[a["kind"], a["blade"], a["code"]] for a in doc["answers"]])
except ValueError:
    rec["id"] = None  # dcish never got to send it (its agent was down or restarting)
print(json.dumps(rec), file=open(f"{run}/acks.jsonl", "a"))
PY
  rm -f "$err"
}

# The workload: backups and envelopes in turn, from and to nodes that are not paused or down,
# until $RUN/stop exists. $1 seeds its choices.
workload_loop() {
  RANDOM=$1
  local step=0 b from
  local up=()
  while [ ! -e "$RUN/stop" ]; do
    step=$((step+1))
    b=${camp_blades[RANDOM % 4]}
    if [ $((step % 3)) -eq 1 ]; then
      is_faulted "$(camp_c "$b")" || workload_backup $step "$b"
    else
      up=(); for from in "${camp_names[@]}"; do is_faulted "$(camp_c "$from")" || up+=("$from"); done
      [ ${#up[@]} -gt 0 ] && workload_send $step "${up[RANDOM % ${#up[@]}]}" "$b"
    fi
    sleep 0.3
  done
}

# The sampler: every 2 s, each container that is up gives its seat and member tables.
sample_loop() {
  local c t out
  while [ ! -e "$RUN/stop" ]; do
    for c in $(camp_all); do
      is_faulted "$c" && continue
      t=$(now_ms)
      out=$(printf 'seats\nnodes\n' | timeout 10 docker exec -i "$c" dcish --json 2>/dev/null) || continue
      python3 -c '
import json, sys
t, c, out = sys.argv[1:]
dec = json.JSONDecoder(); docs = []; i = 0
while i < len(out):
    while i < len(out) and out[i].isspace(): i += 1
    if i == len(out): break
    d, i = dec.raw_decode(out, i); docs.append(d)
if len(docs) == 2:
    seats = [[s["blade"], s["holder"], s["holder_name"], s["epoch"], s["state"]] for s in docs[0]]
    nodes = [[m["name"], m["id"], m["state"], m["blade"], m["epoch"]] for m in docs[1]]
    print(json.dumps({"t": int(t), "c": c, "seats": seats, "nodes": nodes}))' "$t" "$c" "$out" >> "$RUN/samples.jsonl" 2>/dev/null
    done
    sleep 2
  done
}

# Starts the workload and the sampler in the background; camp_stop_load stops them (each finishes
# what it is doing) and waits for them.
camp_start_load() {
  rm -f "$RUN/stop"
  workload_loop "${1:-1}" & load_pids=($!)
  sample_loop & load_pids+=($!)
}
camp_stop_load() {
  touch "$RUN/stop"
  [ ${#load_pids[@]} -gt 0 ] && wait "${load_pids[@]}" 2>/dev/null
  load_pids=()
}

# Runs the checker over $RUN; $1 is the replication factor.
camp_check() {
  local c
  for c in $(camp_all); do camp_save_log "$c"; done
  python3 tests/compose/checker.py --run "$RUN" --project "$P" --factor "${1:-2}"
}
