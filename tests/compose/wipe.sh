# Sourced by scripts/compose-test (after tests/compose/lib.sh): scenario 7, a holder's data volume
# wiped while it is down.
#
# The campaign mesh (campaign.yml, lan.toml: repair grace 15 s) backs every blade up twice. The
# first holder of blade-1's archives is then stopped, its container and data volume removed, and
# started again on an empty volume: it has a new identity (a new key, so a new node id) under its
# old name, and everything it held is gone. It rejoins under that name; the node ids the others
# list for the name change, and the old id stays listed as left. If it was an active blade its
# blade was failed over to a spare meanwhile (stopping is leaving), and it comes back as a spare.
# Every blade whose archives it held has them complete again on replication_factor live holders
# (the new node among them where placement picks its new id, filled by peersync), and the checker
# restores every acknowledged archive on another node, byte for byte.

. tests/compose/campaign.sh

# Blades whose latest archive lists node name $1 among its holders, as seen from container $2.
blades_held_by() {
  local b
  for b in "${camp_blades[@]}"; do
    docker exec "$2" dcish --json archives "$b" | python3 -c '
import json, sys
a = json.load(sys.stdin)
sys.exit(0 if a and sys.argv[1] in a[-1]["holders"] else 1)' "$1" && echo "$b"
  done
}

# Whether every archive of blade $1 is complete on 2 holders, as container $2 lists them.
factor_restored() {
  docker exec "$2" dcish --json archives "$1" 2>/dev/null | python3 -c '
import json, sys
a = json.load(sys.stdin)
sys.exit(0 if a and all(x["complete"] and len(x["holders"]) >= 2 and not x["lacking"] for x in a) else 1)'
}

id_of() { # the id container $1 lists for the live member named $2
  docker exec "$1" dcish --json nodes | python3 -c '
import json, sys
print(next((m["id"] for m in json.load(sys.stdin) if m["name"] == sys.argv[1] and m["state"] == "alive"), ""))' "$2"
}

wiped=""
a_wiped_holder_rejoins_and_the_factor_is_restored() {
  local b round held old new start deadline ok c step=0
  rm -f "$RUN/stop"; sample_loop & load_pids=($!)
  for round in 1 2; do
    for b in "${camp_blades[@]}"; do
      step=$((step+1))
      workload_backup $step "$b"
      tail -1 "$RUN/acks.jsonl" | grep -q '"rc": 0' || { tail -1 "$RUN/acks.jsonl"; return 1; }
    done
  done
  wiped=$(docker exec "$(camp_c blade-2)" dcish --json archives blade-1 | python3 -c '
import json, sys; print(json.load(sys.stdin)[-1]["holders"][0])')
  held=$(blades_held_by "$wiped" "$(camp_c spare-2)")
  [ "$wiped" = spare-2 ] && held=$(blades_held_by "$wiped" "$(camp_c spare-1)")
  old=$(id_of "$(camp_c blade-1)" "$wiped")
  [ "$wiped" = blade-1 ] && old=$(id_of "$(camp_c blade-2)" "$wiped")
  echo "wiping $wiped ($old), a holder of: $(echo $held)"
  camp_wipe "$wiped" || return 1
  start=$SECONDS
  camp_wait_whole 180 || return 1
  new=$(id_of "$(camp_c "$wiped")" "$wiped")
  echo "$wiped is back after $((SECONDS-start))s as $new ($(role_of "$(camp_c spare-1)" "$wiped") in spare-1's table)"
  [ -n "$new" ] && [ "$new" != "$old" ] || { echo "expected a new identity"; return 1; }
  deadline=$((SECONDS+120))
  while [ $SECONDS -lt $deadline ]; do
    ok=1
    for b in $held; do
      for c in "$(camp_c spare-1)" "$(camp_c blade-3)"; do factor_restored "$b" "$c" || { ok=0; break; }; done
      [ $ok -eq 1 ] || break
    done
    [ $ok -eq 1 ] && break
    sleep 2
  done
  for b in $held; do echo "$b:"; docker exec "$(camp_c spare-1)" dcish archives "$b"; done
  [ $ok -eq 1 ] || return 1
  echo "every archive of $(echo $held) is complete on 2 live holders again $((SECONDS-start))s after the wipe"
  # One round more: the wiped node (if it holds a blade again, or as a holder) takes part.
  for b in "${camp_blades[@]}"; do
    step=$((step+1))
    [ "$(seat_of "$(camp_c spare-1)" "$b")" = "$b held" ] && workload_backup $step "$b"
  done
  # The rejoined node holds blocks again when placement picks its new id.
  docker exec "$(camp_c "$wiped")" dcish status | grep -o 'backup-received-blocks [0-9]*'
  camp_stop_load
}

P=dciwipe RUN=$(mktemp -d /tmp/dciwipe.XXXXXX)
trap 'camp_stop_load; camp_down; exit 130' INT TERM
if camp_up lan.toml; then
  check "wipe: a holder's data volume wiped while down; it rejoins and the factor is restored" a_wiped_holder_rejoins_and_the_factor_is_restored
  camp_stop_load
  check "wipe: the checker restores every acknowledged archive byte for byte" camp_check 2
else
  echo "compose: the wipe mesh did not start"; failed=$((failed+1))
fi
camp_down
trap - INT TERM
rm -rf "$RUN"
