# Sourced by scripts/compose-test (after tests/compose/lib.sh): the partition scenario.
#
# Four active blades and two spares (tests/compose/partition.yml) are cut 4 | 2 with iptables in
# each container's network namespace: blade-1..3 and spare-1 on the majority side, blade-4 and
# spare-2 on the minority side. Each side sees blades held on the other side go dead; only the
# majority may elect, so spare-1 takes blade-4 and spare-2 takes nothing, and blade-4's node, cut
# off from a majority, stops holding its seat once its lease runs out. After healing there is one
# holder per blade everywhere, blade-4's old node has become a spare, and spare-1 holds blade-4's
# files as they were backed up before the cut. Then every container is restarted in turn, keeping
# its data: identities, seats and archives are all still there.

part=(dcipart_blade-1_1 dcipart_blade-2_1 dcipart_blade-3_1 dcipart_spare-1_1)
minority=(dcipart_blade-4_1 dcipart_spare-2_1)
everyone=("${part[@]}" "${minority[@]}")
names=(blade-1 blade-2 blade-3 blade-4 spare-1 spare-2)

partition_compose() {
  docker-compose -p dcipart -f tests/compose/partition.yml "$@"
}

cut_sides() { cut_apart "${part[*]}" "${minority[*]}"; }
heal_sides() { heal_nets "${everyone[@]}"; }

# Every container seats blade-N on blade-N's node.
partition_mesh_seated() {
  all_alive 60 "${everyone[@]}" -- "${names[@]}" && own_blades_seated "${everyone[@]}"
}

# Files copied into blade-1's and blade-4's backup roots, then backed up onto their holders.
data=$(mktemp -d)
backed_up_before_the_cut() {
  mkdir -p "$data/root/etc" && head -c 300000 /dev/urandom > "$data/root/big.bin" &&
    echo "blade data $(date +%s%N)" > "$data/root/etc/app.conf" || return 1
  local b
  for b in blade-1 blade-4; do
    docker cp "$data/root" "dcipart_${b}_1:/var/lib/dci/" || return 1
    docker exec "dcipart_${b}_1" dcish backup now || return 1
  done
  docker exec dcipart_blade-1_1 dcish --json archives blade-1 > "$data/archives-before.json" || return 1
  docker exec dcipart_blade-1_1 dcish archives blade-4
}

# During the cut: the majority side seats blade-4 on spare-1; the minority side never seats
# anything on spare-2, and blade-4's node stops holding its seat (no lease without a majority).
only_the_majority_elects() {
  cut_sides || return 1
  local start=$SECONDS deadline=$((SECONDS+40)) c ok took="" fenced="" b
  while [ $SECONDS -lt $deadline ]; do
    for c in "${minority[@]}"; do
      if holders_in "$c" | grep -qx spare-2; then
        echo "the minority side seated a blade on spare-2:"; docker exec "$c" dcish seats; return 1
      fi
    done
    if [ -z "$took" ]; then
      ok=1
      for c in "${part[@]}"; do [ "$(seat_of "$c" blade-4)" = "spare-1 held" ] || ok=0; done
      [ $ok -eq 1 ] && took=$((SECONDS-start))
    fi
    if [ -z "$fenced" ] && [ "$(seat_of dcipart_blade-4_1 blade-4)" = "blade-4 down" ]; then
      fenced=$((SECONDS-start))
    fi
    # Watch the minority a while longer after both happened: it must stay quiet.
    [ -n "$took" ] && [ -n "$fenced" ] && [ $((SECONDS-start)) -ge $((took + 10)) ] && break
    sleep 0.5
  done
  [ "$(role_of dcipart_spare-2_1 spare-2)" = "alive spare" ] || { echo "spare-2 is no longer a spare"; return 1; }
  if [ -z "$took" ] || [ -z "$fenced" ]; then
    echo "spare-1 took blade-4: ${took:-no}; blade-4's node let its seat go: ${fenced:-no}"
    for c in "${everyone[@]}"; do echo "--- $c"; docker exec "$c" dcish seats; done
    return 1
  fi
  echo "majority: spare-1 holds blade-4 within ${took}s of the cut; minority: blade-4's node let its seat go within ${fenced}s, spare-2 took nothing"
  docker exec dcipart_blade-4_1 dcish seats
}

# After healing: every container seats blade-1..3 on their nodes and blade-4 on spare-1, and
# blade-4's old node is a spare.
agrees_after_healing() {
  seats_own_blades "$1" blade-1 blade-2 blade-3 && [ "$(seat_of "$1" blade-4)" = "spare-1 held" ] &&
    [ "$(role_of "$1" blade-4)" = "alive spare" ]
}
one_holder_per_blade_after_healing() {
  heal_sides
  local start=$SECONDS c
  if until_every 60 0.5 agrees_after_healing -- "${everyone[@]}"; then
    echo "healed: every container agrees within $((SECONDS-start))s; blade-4's old node is a spare"
    return 0
  fi
  for c in "${everyone[@]}"; do echo "--- $c"; docker exec "$c" dcish nodes; docker exec "$c" dcish seats; done
  return 1
}

# spare-1 restored blade-4's latest archive when it took it over (into its data dir, having no
# backup root of its own): the files are those backed up before the cut.
the_new_holder_has_the_files() {
  rm -rf "$data/restored" && docker cp dcipart_spare-1_1:/var/lib/dci/blades/blade-4 "$data/restored" &&
    diff -r "$data/root" "$data/restored" && echo "spare-1 holds blade-4's files, byte for byte"
}

# Member ids as container $1 lists them, sorted "name id" lines.
ids_in() {
  docker exec "$1" dcish --json nodes 2>/dev/null | python3 -c '
import json, sys
for m in sorted(json.load(sys.stdin), key=lambda m: m["name"]): print(m["name"], m["id"])'
}

# Every container restarted in turn (docker restart keeps its data): the mesh is whole again after
# each; afterwards every node has its old id, every blade is held by exactly one live node (a
# restart is a graceful leave, so a spare may have taken a blade over meanwhile), and blade-1's
# archives are all listed and complete.
rolling_restart_keeps_identities_seats_and_archives() {
  local before c after b
  before=$(ids_in dcipart_blade-2_1)
  [ "$(echo "$before" | wc -l)" -eq 6 ] || { echo "$before"; return 1; }
  for c in "${everyone[@]}"; do
    docker restart -t 5 "$c" >/dev/null || return 1
    all_alive 60 "${everyone[@]}" -- "${names[@]}" || { echo "the mesh did not heal after restarting $c"; return 1; }
  done
  for c in "${everyone[@]}"; do
    after=$(ids_in "$c")
    [ "$after" = "$before" ] || { echo "ids in $c changed:"; diff <(echo "$before") <(echo "$after"); return 1; }
  done
  local deadline=$((SECONDS+30)) ok
  while [ $SECONDS -lt $deadline ]; do
    ok=1
    for c in "${everyone[@]}"; do
      for b in blade-1 blade-2 blade-3 blade-4; do
        [[ "$(seat_of "$c" $b)" = *" held" ]] || { ok=0; break; }
      done
      [ "$(holders_in "$c" | sort | uniq -d)" = "" ] || ok=0
      [ $ok -eq 1 ] || break
    done
    [ $ok -eq 1 ] && break
    sleep 0.5
  done
  [ $ok -eq 1 ] || { for c in "${everyone[@]}"; do echo "--- $c"; docker exec "$c" dcish seats; done; return 1; }
  docker exec dcipart_blade-2_1 dcish seats
  docker exec dcipart_blade-3_1 dcish --json archives blade-1 | python3 -c '
import json, sys
before = {a["id"] for a in json.load(open(sys.argv[1]))}
after = {a["id"]: a for a in json.load(sys.stdin)}
missing = before - after.keys()
incomplete = [i for i in before & after.keys() if not after[i]["complete"]]
print(f"{len(before)} archive(s) of blade-1 before, all listed after: {not missing}; incomplete: {incomplete}")
sys.exit(1 if missing or incomplete else 0)' "$data/archives-before.json"
}

if partition_compose up -d --force-recreate >/dev/null 2>&1; then
  check "partition mesh: six members alive and four blades seated everywhere" partition_mesh_seated
  check "partition mesh: blade-1 and blade-4 backed up" backed_up_before_the_cut
  check "partition 4 | 2: only the majority elects; the cut-off holder lets its seat go" only_the_majority_elects
  check "partition healed: one holder per blade, the old holder is a spare" one_holder_per_blade_after_healing
  check "the blade taken over across the cut has its files on its new holder" the_new_holder_has_the_files
  check "rolling restart: identities, seats and archives kept" rolling_restart_keeps_identities_seats_and_archives
else
  echo "compose: the partition mesh did not start"; failed=$((failed+1))
fi
partition_compose down --timeout 5 --remove-orphans >/dev/null 2>&1
rm -rf "$data"
