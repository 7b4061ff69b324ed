#!/usr/bin/env bash
# Sourced by scripts/compose-test (after tests/compose/lib.sh), or run alone: the regression
# scenario of the archive a takeover missed.
#
# A chaos campaign (seed 1) once found every archive a new holder made of blade-4 restoring a file
# the blade no longer had. The new holder had restored the latest archive it could reach, then,
# once a cut healed, took in a newer archive of the old holder's that only a holder out of its
# sight kept, and made its first archive a delta on that one: the extra file was recorded as
# deleted, and restores never delete. The first archive under a new epoch is now a snapshot.
#
# Here, on the split mesh (tests/compose/split.yml: blade-3 backs up onto blade-1 and blade-2):
# blade-3 backs up its files; cut from blade-2, it writes one more file and backs up again, which
# only blade-1 keeps; spare-1 is cut from blade-1 and blade-3 is killed. spare-1 takes blade-3
# over with the files of the first archive, from blade-2. The cut heals and spare-1 takes the
# second archive in from blade-1. spare-1 then writes into blade-3 and backs it up: a restore of
# that archive on blade-4 holds exactly what spare-1 has, without the file spare-1 never had.

takein_alone=""
if [ "$(type -t check)" != function ]; then
  # Run alone (DCI_IMAGE=... tests/compose/takein.sh): the image must exist.
  set -uo pipefail
  cd "$(dirname "$0")/../.."
  . tests/compose/lib.sh
  key=scripts/compose/cluster.key
  [ -s "$key" ] || docker run --rm -v "$PWD/scripts/compose:/out" "${DCI_IMAGE:-dci:latest}" keygen /out/cluster.key >/dev/null
  takein_alone=1
  trap takein_cleanup EXIT
fi

takein_everyone=(dcitakein_blade-1_1 dcitakein_blade-2_1 dcitakein_blade-3_1 dcitakein_blade-4_1 dcitakein_spare-1_1)
takein_live=(dcitakein_blade-1_1 dcitakein_blade-2_1 dcitakein_blade-4_1 dcitakein_spare-1_1)
takein_data=$(mktemp -d)

takein_compose() {
  docker-compose -p dcitakein -f tests/compose/split.yml -f tests/compose/takein.yml "$@"
}

takein_cleanup() {
  takein_compose down --timeout 5 --remove-orphans -v >/dev/null 2>&1
  rm -rf "$takein_data"
}

takein_mesh_seated() {
  all_alive 60 "${takein_everyone[@]}" -- blade-1 blade-2 blade-3 blade-4 spare-1 &&
    own_blades_seated "${takein_everyone[@]}"
}

# The ids of blade-3's archives that container $1 lists, with "+" after the complete ones.
takein_ids() {
  docker exec "$1" dcish --json archives blade-3 2>/dev/null | python3 -c '
import json, sys
print(" ".join(a["id"] + ("+" if a["complete"] else "") for a in json.load(sys.stdin)))' 2>/dev/null
}

# blade-3's first archive is complete on both holders; its second, made while cut from blade-2,
# reaches blade-1 alone, and `dcish backup now` says it is incomplete.
takein_two_archives_one_out_of_reach() {
  local root=$takein_data/root
  mkdir -p "$root/etc" && head -c 300000 /dev/urandom > "$root/big.bin" &&
    echo "blade-3 data $(date +%s%N)" > "$root/etc/app.conf" || return 1
  docker cp "$root" dcitakein_blade-3_1:/var/lib/dci/ || return 1
  docker exec dcitakein_blade-3_1 dcish backup now >/dev/null || { echo "blade-3's first backup failed"; return 1; }
  cut_apart dcitakein_blade-3_1 dcitakein_blade-2_1 || return 1
  echo "only in the archive spare-1 will miss" > "$takein_data/missed.txt"
  docker cp "$takein_data/missed.txt" dcitakein_blade-3_1:/var/lib/dci/root/missed.txt || return 1
  if docker exec dcitakein_blade-3_1 dcish backup now >/dev/null 2>&1; then
    echo "blade-3's second backup completed though blade-2 is cut off"; return 1
  fi
  local ids
  ids=$(takein_ids dcitakein_blade-3_1)
  echo "blade-3's archives: $ids"
  [ "$ids" = "1.1+ 1.2" ]
}

# spare-1, cut from blade-1, takes blade-3 over once it is killed: it restores the first archive
# and, still cut, adopts it alone (the adoption comes after the blade is served, and the cut must
# outlast it).
takein_taken_over_without_the_second() {
  cut_apart dcitakein_spare-1_1 dcitakein_blade-1_1 || return 1
  docker kill dcitakein_blade-3_1 >/dev/null || return 1
  local deadline=$((SECONDS+60)) start=$SECONDS
  while [ $SECONDS -lt $deadline ]; do
    if [ "$(seat_of dcitakein_spare-1_1 blade-3)" = "spare-1 held" ] &&
      docker exec dcitakein_spare-1_1 dcish status 2>/dev/null | grep -q "archives adopted: 1,"; then
      rm -rf "$takein_data/got" &&
        docker cp dcitakein_spare-1_1:/var/lib/dci/blades/blade-3 "$takein_data/got" >/dev/null 2>&1 &&
        diff -r "$takein_data/root" "$takein_data/got" >/dev/null && {
          echo "spare-1 holds blade-3 within $((SECONDS-start))s, with the first archive's files, and adopted it alone"; return 0; }
    fi
    sleep 1
  done
  docker exec dcitakein_spare-1_1 dcish seats
  docker exec dcitakein_spare-1_1 dcish status | sed -n '/^takeover of/,/^$/p'
  [ -d "$takein_data/got" ] && diff -r "$takein_data/root" "$takein_data/got"
  return 1
}

# The cut heals: spare-1 takes the second archive in from blade-1.
takein_second_taken_in() {
  heal_nets "${takein_live[@]}"
  local deadline=$((SECONDS+60))
  while [ $SECONDS -lt $deadline ]; do
    docker logs dcitakein_spare-1_1 2>&1 | grep "took in an archive made out of this node's sight" |
      grep -q "blade-3" && { echo "spare-1: $(takein_ids dcitakein_spare-1_1)"; return 0; }
    sleep 1
  done
  echo "spare-1 took nothing in: $(takein_ids dcitakein_spare-1_1)"
  docker logs dcitakein_spare-1_1 2>&1 | grep -v "peersync failed" | tail -40 | cut -c1-300
  return 1
}

# spare-1's first archive of blade-3 is a snapshot, and restores on blade-4 as exactly what
# spare-1 has: the first archive's files and its own, not the file it never had.
takein_first_archive_restores_exactly() {
  echo "written by spare-1 as blade-3" > "$takein_data/root/by-spare.txt"
  docker cp "$takein_data/root/by-spare.txt" dcitakein_spare-1_1:/var/lib/dci/blades/blade-3/by-spare.txt || return 1
  local out deadline=$((SECONDS+30))
  while [ $SECONDS -lt $deadline ]; do
    out=$(docker exec dcitakein_spare-1_1 dcish backup now 2>&1) && break
    sleep 2
  done
  echo "$out" | tail -1
  [[ "$out" = *complete* ]] || return 1
  local kind
  kind=$(docker exec dcitakein_spare-1_1 dcish --json archives blade-3 | python3 -c '
import json, sys; a = json.load(sys.stdin)[-1]; print(a["id"], a["kind"])')
  docker exec dcitakein_blade-4_1 dcish restore blade-3 --to /var/lib/dci/restores/blade-3 >/dev/null || return 1
  rm -rf "$takein_data/again" &&
    docker cp dcitakein_blade-4_1:/var/lib/dci/restores/blade-3 "$takein_data/again" || return 1
  diff -r "$takein_data/root" "$takein_data/again" || { echo "blade-3's archive $kind restored on blade-4"; return 1; }
  [[ "$kind" = "2."*" snapshot" ]] || { echo "spare-1's first archive of blade-3: $kind"; return 1; }
  echo "blade-3's archive $kind restored on blade-4: spare-1's files, byte for byte, nothing more"
}

if takein_compose up -d --force-recreate >/dev/null 2>&1; then
  check "takein mesh: five members alive and four blades seated everywhere" takein_mesh_seated
  check "takein: blade-3's second archive reaches one holder" takein_two_archives_one_out_of_reach
  check "takein: spare-1 takes blade-3 over with the first archive's files" takein_taken_over_without_the_second
  check "takein: the healed cut brings the second archive to spare-1" takein_second_taken_in
  check "takein: spare-1's first archive restores as exactly its files" takein_first_archive_restores_exactly
else
  echo "compose: the takein mesh did not start"; failed=$((failed+1))
fi
takein_cleanup

if [ -n "$takein_alone" ]; then
  echo "compose: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
fi
