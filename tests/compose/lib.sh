# Shared by the compose scenarios (sourced): checks, and what a container's dcish says.

passed=${passed:-0} failed=${failed:-0}

check() { # name, command...
  local name=$1; shift
  if "$@"; then echo "compose: $name ... ok"; passed=$((passed+1));
  else echo "compose: $name ... FAILED"; failed=$((failed+1)); fi
}

# The state container $1 reports for member $2 ("absent" if unlisted).
state_of() {
  docker exec "$1" dcish --json nodes 2>/dev/null | python3 -c '
import json, sys
rows = {m["name"]: m["state"] for m in json.load(sys.stdin)}
print(rows.get(sys.argv[1], "absent"))' "$2" 2>/dev/null
}

# "STATE ROLE" container $1 reports for member $2 ("absent" if unlisted).
role_of() {
  docker exec "$1" dcish --json nodes 2>/dev/null | python3 -c '
import json, sys
rows = {m["name"]: m for m in json.load(sys.stdin)}
m = rows.get(sys.argv[1])
print(m["state"] + " " + m["role"] if m else "absent")' "$2" 2>/dev/null
}

# "HOLDER STATE" of blade $2 in container $1's seat table ("absent" if it has no seat).
seat_of() {
  docker exec "$1" dcish --json seats 2>/dev/null | python3 -c '
import json, sys
seats = {s["blade"]: s for s in json.load(sys.stdin)}
s = seats.get(sys.argv[1])
print(s["holder_name"] + " " + s["state"] if s else "absent")' "$2" 2>/dev/null
}

# Every holder name in container $1's seat table, one per line.
holders_in() {
  docker exec "$1" dcish --json seats 2>/dev/null | python3 -c '
import json, sys
for s in json.load(sys.stdin): print(s["holder_name"])' 2>/dev/null
}

# Waits up to $1 seconds until every container of the rest of the arguments (up to "--") lists
# every member after "--" alive.
all_alive() {
  local deadline=$((SECONDS+$1)); shift
  local cs=() ms=() c m ok
  while [ "$1" != -- ]; do cs+=("$1"); shift; done; shift
  ms=("$@")
  while [ $SECONDS -lt $deadline ]; do
    ok=1
    for c in "${cs[@]}"; do
      for m in "${ms[@]}"; do [ "$(state_of "$c" "$m")" = alive ] || { ok=0; break; }; done
      [ $ok -eq 1 ] || break
    done
    [ $ok -eq 1 ] && return 0
    sleep 1
  done
  for c in "${cs[@]}"; do echo "--- $c"; docker exec "$c" dcish nodes; done
  return 1
}
