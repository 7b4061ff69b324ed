# Sourced by scripts/compose-test (after tests/compose/lib.sh): the partition scenario.
#
# Four active blades and two spares (tests/compose/partition.yml) are cut 4 | 2 with iptables in
# each container's network namespace: blade-1..3 and spare-1 on the majority side, blade-4 and
# spare-2 on the minority side. Each side sees blades held on the other side go dead; only the
# majority may elect, so spare-1 takes blade-4 and spare-2 takes nothing, and blade-4's node, cut
# off from a majority, stops holding its seat once its lease runs out. After healing there is one
# holder per blade everywhere, and blade-4's old node has become a spare.

part=(dcipart_blade-1_1 dcipart_blade-2_1 dcipart_blade-3_1 dcipart_spare-1_1)
minority=(dcipart_blade-4_1 dcipart_spare-2_1)
everyone=("${part[@]}" "${minority[@]}")
names=(blade-1 blade-2 blade-3 blade-4 spare-1 spare-2)

partition_compose() {
  docker-compose -p dcipart -f tests/compose/partition.yml "$@"
}

# Drops all traffic between the two sides, in each container's own network namespace.
cut_sides() {
  local a b ip
  for a in "${part[@]}"; do
    for b in "${minority[@]}"; do
      for pair in "$a $b" "$b $a"; do
        set -- $pair
        ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$2")
        nsenter -t "$(docker inspect -f '{{.State.Pid}}' "$1")" -n iptables -I INPUT -s "$ip" -j DROP || return 1
        nsenter -t "$(docker inspect -f '{{.State.Pid}}' "$1")" -n iptables -I OUTPUT -d "$ip" -j DROP || return 1
      done
    done
  done
}

heal_sides() {
  local c
  for c in "${everyone[@]}"; do
    nsenter -t "$(docker inspect -f '{{.State.Pid}}' "$c")" -n iptables -F INPUT
    nsenter -t "$(docker inspect -f '{{.State.Pid}}' "$c")" -n iptables -F OUTPUT
  done
}

# Every container seats blade-N on blade-N's node.
partition_mesh_seated() {
  all_alive 60 "${everyone[@]}" -- "${names[@]}" || return 1
  local deadline=$((SECONDS+30)) c b ok
  while [ $SECONDS -lt $deadline ]; do
    ok=1
    for c in "${everyone[@]}"; do
      for b in blade-1 blade-2 blade-3 blade-4; do
        [ "$(seat_of "$c" $b)" = "$b held" ] || { ok=0; break; }
      done
      [ $ok -eq 1 ] || break
    done
    [ $ok -eq 1 ] && return 0
    sleep 0.5
  done
  for c in "${everyone[@]}"; do echo "--- $c"; docker exec "$c" dcish seats; done
  return 1
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
one_holder_per_blade_after_healing() {
  heal_sides
  local start=$SECONDS deadline=$((SECONDS+60)) c b ok
  while [ $SECONDS -lt $deadline ]; do
    ok=1
    for c in "${everyone[@]}"; do
      for b in blade-1 blade-2 blade-3; do
        [ "$(seat_of "$c" $b)" = "$b held" ] || { ok=0; break; }
      done
      [ $ok -eq 1 ] && [ "$(seat_of "$c" blade-4)" = "spare-1 held" ] || { ok=0; break; }
      [ "$(role_of "$c" blade-4)" = "alive spare" ] || { ok=0; break; }
    done
    if [ $ok -eq 1 ]; then
      echo "healed: every container agrees within $((SECONDS-start))s; blade-4's old node is a spare"
      return 0
    fi
    sleep 0.5
  done
  for c in "${everyone[@]}"; do echo "--- $c"; docker exec "$c" dcish nodes; docker exec "$c" dcish seats; done
  return 1
}

if partition_compose up -d --force-recreate >/dev/null 2>&1; then
  check "partition mesh: six members alive and four blades seated everywhere" partition_mesh_seated
  check "partition 4 | 2: only the majority elects; the cut-off holder lets its seat go" only_the_majority_elects
  check "partition healed: one holder per blade, the old holder is a spare" one_holder_per_blade_after_healing
else
  echo "compose: the partition mesh did not start"; failed=$((failed+1))
fi
partition_compose down --timeout 5 --remove-orphans >/dev/null 2>&1
