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
  local secs=$1 cs=() c; shift
  while [ "$1" != -- ]; do cs+=("$1"); shift; done; shift
  until_every "$secs" 1 lists_alive "$@" -- "${cs[@]}" && return 0
  for c in "${cs[@]}"; do echo "--- $c"; docker exec "$c" dcish nodes; done
  return 1
}
# Whether container $1 lists every member after it alive.
lists_alive() {
  local c=$1 m; shift
  for m; do [ "$(state_of "$c" "$m")" = alive ] || return 1; done
}

# Polls, every $2 s for up to $1 s, until `CHECK CONTAINER ARG...` succeeds for every container
# after "--": `until_every SECONDS EVERY CHECK [ARG...] -- CONTAINER...`. Fails when time runs out.
until_every() {
  local deadline=$((SECONDS+$1)) every=$2 check=$3 args=() c ok; shift 3
  while [ "$1" != -- ]; do args+=("$1"); shift; done; shift
  while [ $SECONDS -lt $deadline ]; do
    ok=1
    for c in "$@"; do "$check" "$c" "${args[@]}" || { ok=0; break; }; done
    [ $ok -eq 1 ] && return 0
    sleep "$every"
  done
  return 1
}

# Drops all traffic between every container named in $1 and every one named in $2 (lists
# separated by spaces), with iptables in each container's own network namespace.
cut_apart() {
  local one=($1) other=($2) a b ip from to
  for a in "${one[@]}"; do
    for b in "${other[@]}"; do
      for from in "$a" "$b"; do
        to=$([ "$from" = "$a" ] && echo "$b" || echo "$a")
        ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$to")
        nsenter -t "$(docker inspect -f '{{.State.Pid}}' "$from")" -n iptables -I INPUT -s "$ip" -j DROP || return 1
        nsenter -t "$(docker inspect -f '{{.State.Pid}}' "$from")" -n iptables -I OUTPUT -d "$ip" -j DROP || return 1
      done
    done
  done
}

# Lifts every cut_apart rule in the containers named.
heal_nets() {
  local c
  for c in "$@"; do
    nsenter -t "$(docker inspect -f '{{.State.Pid}}' "$c")" -n iptables -F INPUT
    nsenter -t "$(docker inspect -f '{{.State.Pid}}' "$c")" -n iptables -F OUTPUT
  done
}

# Whether every container of "$@" seats blade-1..blade-4 each on its own node, waiting up to 30 s;
# prints every container's seat table when not.
own_blades_seated() {
  local c
  until_every 30 0.5 seats_own_blades blade-1 blade-2 blade-3 blade-4 -- "$@" && return 0
  for c in "$@"; do echo "--- $c"; docker exec "$c" dcish seats; done
  return 1
}
# Whether container $1 seats each blade after it on the blade's own node.
seats_own_blades() {
  local c=$1 b; shift
  for b; do [ "$(seat_of "$c" "$b")" = "$b held" ] || return 1; done
}
