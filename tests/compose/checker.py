#!/usr/bin/env python3
"""Checks a campaign run (see tests/compose/campaign.sh for what the run directory holds).

Invariants, each a list of violations in the report:
  archives   every acknowledged archive restores byte for byte on another node (`dcish restore
             --archive ID --on OTHER`, then diff -r against the tree acknowledged), unless
             replication_factor or more of its holders at the acknowledgement were wiped since
             (an archive acknowledged just as its blade changed hands has no known tree: counted
             as tree_unknown, not checked)
  seats      at most one holder per blade at any epoch, over every seat table and every member's
             announced blade and epoch, in every container, at every sample
  envelopes  every envelope the workload sent was answered (an answer or an error), or, when
             dcish saw no answer in time, it is in the message log of some node as received
  panics     no agent log says it panicked
Writes RUN/report.json, prints one summary line, exits 1 on any violation.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def sh(*args, timeout=180):
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return 124, "", "timed out"


def running(project):
    rc, out, _ = sh("docker", "ps", "--filter", f"name=^{project}_", "--filter", "status=running",
                    "--format", "{{.Names}}")
    return sorted(out.split()) if rc == 0 else []


def check_panics(run):
    found = set()
    for path in glob.glob(f"{run}/logs/*.log"):
        container = os.path.basename(path).rsplit(".", 2)[0]
        with open(path, errors="replace") as f:
            for line in f:
                if "panicked" in line or "RUST_BACKTRACE" in line:
                    found.add((container, line.strip()[:300]))
    return [{"container": c, "line": l} for c, l in sorted(found)]


def check_seats(samples):
    """(blade, epoch) -> holder ids seen, from seat tables and from members' announcements."""
    seen = {}
    for s in samples:
        for blade, holder, name, epoch, _state in s["seats"]:
            seen.setdefault((blade, epoch), {}).setdefault(holder, (s["c"], s["t"], name, "seat"))
        for name, mid, state, blade, epoch in s["nodes"]:
            if blade is not None and epoch is not None:
                seen.setdefault((blade, epoch), {}).setdefault(mid, (s["c"], s["t"], name, "member " + state))
    violations = []
    for (blade, epoch), holders in sorted(seen.items()):
        if len(holders) > 1:
            violations.append({"blade": blade, "epoch": epoch,
                                "holders": {h: list(v) for h, v in holders.items()}})
    epochs = {}
    for blade, epoch in seen:
        epochs[blade] = max(epochs.get(blade, 0), epoch)
    return violations, {"pairs": len(seen), "highest_epochs": epochs}


def check_archives(run, project, acks, faults, factor, limit):
    wipes = [(f["t"], f["node"]) for f in faults if f["kind"] == "wipe"]
    acked = [a for a in acks if a["type"] == "backup" and a["rc"] == 0 and a.get("copy")]
    if limit and len(acked) > limit:
        # Evenly spread, and always the last of each blade.
        last = {a["blade"]: a for a in acked}
        step = len(acked) / limit
        picked = {id(acked[int(i * step)]) for i in range(limit)} | {id(a) for a in last.values()}
        chosen = [a for a in acked if id(a) in picked]
    else:
        chosen = acked
    up = running(project)
    violations, excused, checked = [], [], 0
    for n, a in enumerate(chosen):
        lost = sorted({node for t, node in wipes if t > a["t"] and node in a["holders"]})
        if len(lost) >= factor:
            excused.append({"copy": a["copy"], "holders_wiped": lost})
            continue
        owner = f"{project}_{a.get('node', a['blade'])}_1"
        others = [c for c in up if c != owner] or up
        on = others[n % len(others)]
        asker = next((c for c in up if c != on), on)
        node = on[len(project) + 1:-2]
        into = f"/var/lib/dci/restores/check-{a['copy']}"
        rc, out, err = sh("docker", "exec", asker, "dcish", "restore", a["blade"], "--archive",
                          str(a["archive"]), "--to", into, "--on", node)
        checked += 1
        if rc != 0:
            violations.append({"copy": a["copy"], "on": node, "error": (err or out).strip()[:300]})
            continue
        with tempfile.TemporaryDirectory() as tmp:
            rc, _, err = sh("docker", "cp", f"{on}:{into}", f"{tmp}/restored")
            if rc != 0:
                violations.append({"copy": a["copy"], "on": node, "error": err.strip()[:300]})
                continue
            rc, out, _ = sh("diff", "-r", f"{run}/acked/{a['copy']}", f"{tmp}/restored")
            if rc != 0:
                violations.append({"copy": a["copy"], "on": node, "diff": out[:600]})
    moved = sum(1 for a in acks if a["type"] == "backup" and a["rc"] == 0 and not a.get("copy"))
    return violations, {"acknowledged": len(acked), "restored": checked, "excused": excused,
                        "tree_unknown": moved,
                        "backups_tried": sum(1 for a in acks if a["type"] == "backup")}


def received_ids(project):
    """Ids of echo envelopes that some running node logged as received."""
    ids = set()
    for c in running(project):
        rc, out, _ = sh("docker", "exec", c, "dcish", "--json", "log", "--app", "echo", "--limit", "100000")
        if rc != 0:
            continue
        for r in json.loads(out):
            if r["dir"] == "in" and r["target_app"] == "echo":
                ids.add(r["id"])
    return ids


def check_envelopes(project, acks, faults):
    sends = [a for a in acks if a["type"] == "send"]
    sent = [a for a in sends if a["id"]]
    wipes = [f["t"] for f in faults if f["kind"] == "wipe"]
    figures = {"tried": len(sends), "not_sent": len(sends) - len(sent), "answered": 0,
               "errors": {}, "unanswered_but_received": 0, "unverifiable": 0}
    silent = []
    for a in sent:
        if a["answers"]:
            figures["answered"] += 1
            for kind, _blade, code in a["answers"]:
                if kind == "error":
                    figures["errors"][code] = figures["errors"].get(code, 0) + 1
        else:
            silent.append(a)
    violations = []
    if silent:
        ids = received_ids(project)
        for a in silent:
            if a["id"] in ids:
                figures["unanswered_but_received"] += 1
            elif any(t > a["t"] for t in wipes):
                figures["unverifiable"] += 1  # the node that received it may have been wiped since
            else:
                violations.append({"id": a["id"], "from": a["from"], "to": a["to"], "t": a["t"],
                                   "error": a["error"]})
    return violations, figures


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--project", required=True)
    ap.add_argument("--factor", type=int, default=2)
    ap.add_argument("--max-restores", type=int, default=0, help="0: every acknowledged archive")
    args = ap.parse_args()
    start = time.time()
    acks = lines(f"{args.run}/acks.jsonl")
    faults = lines(f"{args.run}/faults.jsonl")
    samples = lines(f"{args.run}/samples.jsonl")
    report = {"faults": {}, "samples": len(samples)}
    for f in faults:
        report["faults"][f["kind"]] = report["faults"].get(f["kind"], 0) + 1
    v_seats, report["seats"] = check_seats(samples)
    v_arch, report["archives"] = check_archives(args.run, args.project, acks, faults, args.factor,
                                                args.max_restores)
    v_env, report["envelopes"] = check_envelopes(args.project, acks, faults)
    v_panic = check_panics(args.run)
    report["violations"] = {"archives": v_arch, "seats": v_seats, "envelopes": v_env, "panics": v_panic}
    report["check_seconds"] = round(time.time() - start, 1)
    with open(f"{args.run}/report.json", "w") as f:
        json.dump(report, f, indent=2)
    a, e = report["archives"], report["envelopes"]
    bad = sum(len(v) for v in report["violations"].values())
    print(f"checker: {a['restored']}/{a['acknowledged']} acknowledged archives restored "
          f"({a['backups_tried']} backups tried, {len(a['excused'])} excused), "
          f"{len(v_arch)} not byte for byte; {report['seats']['pairs']} (blade, epoch) pairs over "
          f"{len(samples)} samples, {len(v_seats)} with two holders; {e['answered']}/{e['tried']} envelopes "
          f"answered, {e['unanswered_but_received']} received late, {e['not_sent']} not sent, "
          f"{len(v_env)} lost; {len(v_panic)} panics: {'ok' if bad == 0 else 'VIOLATIONS'}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
