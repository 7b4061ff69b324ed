#!/usr/bin/env bash
# Sourced by scripts/compose-test (after tests/compose/lib.sh), or run alone: the 3 | 2 split.
#
# Four active blades and one spare (tests/compose/split.yml) are cut 3 | 2 with iptables in each
# container's network namespace: blade-1, blade-2 and spare-1 on one side, blade-3 and blade-4 on
# the other. Every blade's holders are on the other side (blade-1 and blade-2 back up onto
# blade-3 and blade-4, and the other way round), so each side holds blades whose data is across
# the cut. Only the 3-node side may elect: spare-1 takes one of blade-3 and blade-4 (X) and
# restores it from blade-1 and blade-2; the other (Y) has no spare left and stays down, with an
# alert; the 2-node side elects nothing, and its nodes let their seats go once their leases run
# out. Meanwhile blade-1 writes and backs up (incomplete: its holders are across the cut), and
# spare-1 writes into X and backs it up under X's name (complete on the live side). After
# healing: one holder per blade (X on spare-1, X's old node a spare, Y back on its node), and the
# data reconciled: blade-1's archive complete on blade-3 and blade-4, X's chain continued and
# complete, and a restore of X elsewhere holds what spare-1 wrote.

split_alone=""
if [ "$(type -t check)" != function ]; then
  # Run alone (DCI_IMAGE=... tests/compose/split.sh): the image must exist.
  set -uo pipefail
  cd "$(dirname "$0")/../.."
  . tests/compose/lib.sh
  key=scripts/compose/cluster.key
  [ -s "$key" ] || docker run --rm -v "$PWD/scripts/compose:/out" "${DCI_IMAGE:-dci:latest}" keygen /out/cluster.key >/dev/null
  split_alone=1
  trap split_cleanup EXIT
fi

split_side=(dcisplit_blade-1_1 dcisplit_blade-2_1 dcisplit_spare-1_1)
split_other=(dcisplit_blade-3_1 dcisplit_blade-4_1)
split_everyone=("${split_side[@]}" "${split_other[@]}")
split_names=(blade-1 blade-2 blade-3 blade-4 spare-1)
split_data=$(mktemp -d)
split_x="" split_y=""

split_compose() {
  docker-compose -p dcisplit -f tests/compose/split.yml "$@"
}

split_cleanup() {
  split_compose down --timeout 5 --remove-orphans -v >/dev/null 2>&1
  rm -rf "$split_data"
}

split_seats() {
  local c
  for c in "${split_everyone[@]}"; do echo "--- $c"; docker exec "$c" dcish seats; done
}

# Every container lists five members alive and seats blade-N on blade-N's node.
split_mesh_seated() {
  all_alive 60 "${split_everyone[@]}" -- "${split_names[@]}" && own_blades_seated "${split_everyone[@]}"
}

# Each blade's own files (a 300 KB random file and a config file), backed up across the cut-to-be.
split_backed_up() {
  local b
  for b in blade-1 blade-2 blade-3 blade-4; do
    mkdir -p "$split_data/$b/root/etc" && head -c 300000 /dev/urandom > "$split_data/$b/root/big.bin" &&
      echo "$b data $(date +%s%N)" > "$split_data/$b/root/etc/app.conf" || return 1
    docker cp "$split_data/$b/root" "dcisplit_${b}_1:/var/lib/dci/" || return 1
    docker exec "dcisplit_${b}_1" dcish backup now >/dev/null || { echo "$b: backup failed"; return 1; }
  done
  docker exec dcisplit_blade-1_1 dcish archives blade-3
  docker exec dcisplit_blade-3_1 dcish archives blade-1
}

# During the cut: the 3-node side seats X on spare-1 (in every one of its containers) and shows
# Y down, with a no-spare alert naming it; the 2-node side never seats a blade anywhere new, and
# both its nodes let their own seats go.
split_only_the_three_elect() {
  cut_apart "${split_side[*]}" "${split_other[*]}" || return 1
  local start=$SECONDS deadline=$((SECONDS+40)) c b took="" fenced="" h
  while [ $SECONDS -lt $deadline ]; do
    for c in "${split_other[@]}"; do
      for b in blade-1 blade-2; do
        h=$(seat_of "$c" $b)
        # Empty when dcish did not answer in time.
        case "$h" in "$b "* | "") ;; *) echo "$c seats $b on ${h}"; split_seats; return 1;; esac
      done
    done
    if [ -z "$took" ]; then
      for b in blade-3 blade-4; do
        local all=1
        for c in "${split_side[@]}"; do [ "$(seat_of "$c" $b)" = "spare-1 held" ] || all=0; done
        [ $all -eq 1 ] && { took=$((SECONDS-start)); split_x=$b; }
      done
    fi
    if [ -z "$fenced" ] && [ "$(seat_of dcisplit_blade-3_1 blade-3)" = "blade-3 down" ] &&
      [ "$(seat_of dcisplit_blade-4_1 blade-4)" = "blade-4 down" ]; then
      fenced=$((SECONDS-start))
    fi
    [ -n "$took" ] && [ -n "$fenced" ] && [ $((SECONDS-start)) -ge $((took + 8)) ] && break
    sleep 0.5
  done
  if [ -z "$took" ] || [ -z "$fenced" ]; then
    echo "spare-1 took a blade: ${took:-no}; the 2-node side let its seats go: ${fenced:-no}"
    split_seats
    return 1
  fi
  split_y=$([ "$split_x" = blade-3 ] && echo blade-4 || echo blade-3)
  for c in "${split_side[@]}"; do
    [ "$(seat_of "$c" "$split_y")" = "$split_y down" ] || { echo "$c: $split_y is $(seat_of "$c" "$split_y")"; return 1; }
  done
  local alerted=0
  for c in "${split_side[@]}"; do
    docker logs "$c" 2>&1 | grep -q "blade $split_y is down" && alerted=1
  done
  [ $alerted -eq 1 ] || { echo "no alert names $split_y"; return 1; }
  echo "3-node side: spare-1 holds $split_x within ${took}s of the cut, $split_y down with an alert; 2-node side: both seats let go within ${fenced}s, nothing elected"
  docker exec dcisplit_blade-1_1 dcish seats
}

# spare-1 restored X from the holders on its side: the files backed up before the cut.
split_x_restored() {
  local deadline=$((SECONDS+60))
  while [ $SECONDS -lt $deadline ]; do
    rm -rf "$split_data/x" &&
      docker cp "dcisplit_spare-1_1:/var/lib/dci/blades/$split_x" "$split_data/x" >/dev/null 2>&1 &&
      diff -r "$split_data/$split_x/root" "$split_data/x" >/dev/null && {
        echo "spare-1 holds $split_x's files, byte for byte"; return 0; }
    sleep 1
  done
  diff -r "$split_data/$split_x/root" "$split_data/x"
  return 1
}

# Writes during the cut: blade-1's backup cannot reach its holders (incomplete), spare-1's backup
# of X (under X's name) completes on the live side.
split_writes_during_the_cut() {
  echo "written by blade-1 during the cut" > "$split_data/b1-during.txt"
  docker cp "$split_data/b1-during.txt" dcisplit_blade-1_1:/var/lib/dci/root/during.txt || return 1
  if docker exec dcisplit_blade-1_1 dcish backup now >/dev/null 2>&1; then
    echo "blade-1's backup completed though its holders are across the cut"; return 1
  fi
  echo "written by spare-1 as $split_x" > "$split_data/x-during.txt"
  docker cp "$split_data/x-during.txt" "dcisplit_spare-1_1:/var/lib/dci/blades/$split_x/during.txt" || return 1
  local deadline=$((SECONDS+30)) out
  # The dead nodes stop counting as holders 2 s after their deaths.
  while [ $SECONDS -lt $deadline ]; do
    out=$(docker exec dcisplit_spare-1_1 dcish backup now 2>&1) && { echo "$out"; return 0; }
    sleep 2
  done
  echo "$out"
  return 1
}

# After healing: blade-1, blade-2 and Y on their own nodes, X on spare-1, X's old node a spare,
# in every container.
split_agrees_after_healing() {
  seats_own_blades "$1" blade-1 blade-2 "$split_y" && [ "$(seat_of "$1" "$split_x")" = "spare-1 held" ] &&
    [ "$(role_of "$1" "$split_x")" = "alive spare" ] && [ "$(holders_in "$1" | sort | uniq -d)" = "" ]
}
split_one_holder_per_blade_after_healing() {
  heal_nets "${split_everyone[@]}"
  local start=$SECONDS c
  if until_every 60 0.5 split_agrees_after_healing -- "${split_everyone[@]}"; then
    echo "healed: every container agrees within $((SECONDS-start))s; $split_x's old node is a spare"
    return 0
  fi
  for c in "${split_everyone[@]}"; do echo "--- $c"; docker exec "$c" dcish nodes; docker exec "$c" dcish seats; done
  return 1
}

# "ID KIND COMPLETE" of blade $2's latest archive (ID is EPOCH.NUMBER), as container $1 lists them.
split_latest() {
  docker exec "$1" dcish --json archives "$2" 2>/dev/null | python3 -c '
import json, sys
a = json.load(sys.stdin)[-1]
print(a["id"], a["kind"], "complete" if a["complete"] else "incomplete")' 2>/dev/null
}

# After healing the data is reconciled: blade-1's archive made during the cut is complete on
# its holders, X's latest (made by spare-1: the first of its epoch, so a snapshot of what it
# restored) is complete, and X restored on blade-2 holds what spare-1 wrote.
split_data_reconciled() {
  local deadline=$((SECONDS+60)) b1 x
  while [ $SECONDS -lt $deadline ]; do
    b1=$(split_latest dcisplit_blade-3_1 blade-1)
    x=$(split_latest dcisplit_blade-4_1 "$split_x")
    [[ "$b1" = *".2 "*" complete" ]] && [[ "$x" = *".2 snapshot complete" ]] && break
    sleep 1
  done
  echo "blade-1's latest archive: $b1; $split_x's: $x"
  [[ "$b1" = *".2 "*" complete" ]] && [[ "$x" = *".2 snapshot complete" ]] || {
    docker exec dcisplit_blade-1_1 dcish archives blade-1; docker exec dcisplit_blade-1_1 dcish archives "$split_x"; return 1; }
  docker exec dcisplit_blade-2_1 dcish restore "$split_x" --to "/var/lib/dci/restores/$split_x" || return 1
  rm -rf "$split_data/again" && docker cp "dcisplit_blade-2_1:/var/lib/dci/restores/$split_x" "$split_data/again" || return 1
  cp "$split_data/x-during.txt" "$split_data/$split_x/root/during.txt"
  diff -r "$split_data/$split_x/root" "$split_data/again" && echo "$split_x restored on blade-2: its files and what spare-1 wrote, byte for byte"
}

if split_compose up -d --force-recreate >/dev/null 2>&1; then
  check "split mesh: five members alive and four blades seated everywhere" split_mesh_seated
  check "split mesh: every blade backed up onto the other side" split_backed_up
  check "split 3 | 2: only the 3-node side elects; the 2-node side lets its seats go" split_only_the_three_elect
  check "split: the blade taken over has its files on spare-1" split_x_restored
  check "split: writes during the cut" split_writes_during_the_cut
  check "split healed: one holder per blade, the old holder a spare" split_one_holder_per_blade_after_healing
  check "split healed: data reconciled" split_data_reconciled
else
  echo "compose: the split mesh did not start"; failed=$((failed+1))
fi
split_cleanup

if [ -n "$split_alone" ]; then
  echo "compose: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
fi
