//! Packages as an operator uses them, on real agents on loopback: `dcish keygen`, `package build`,
//! `deploy` to a node set, upgrade, `packages`, `undeploy`, the rollback of a failing install, and
//! every refusal (unsigned, unknown key, hash mismatch, path escape, other platform, step timeout)
//! with nothing left behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{free_port, ok, wait_until, Node, DCISH};
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// `dcish ARGS` with no agent (keygen, package build).
fn offline(args: &[&str]) -> Output {
    Command::new(DCISH).args(args).output().unwrap()
}

/// An operator key pair under `dir`; answers the secret key's path.
fn key(dir: &Path, name: &str) -> PathBuf {
    let file = dir.join(name);
    ok(offline(&["keygen", file.to_str().unwrap()]));
    file
}

/// Builds `src` into `out`, signed with `key` when given.
fn build(src: &Path, key: Option<&Path>, out: &Path) -> PathBuf {
    let mut args = vec!["package", "build", src.to_str().unwrap()];
    if let Some(k) = key {
        args.extend(["--sign", k.to_str().unwrap()]);
    }
    args.extend(["-o", out.to_str().unwrap()]);
    ok(offline(&args));
    out.to_path_buf()
}

/// Agents b1..bN, each trusting `trusted`, in one mesh.
fn mesh(root: &Path, n: usize, trusted: &Path) -> Vec<Node> {
    let flags = ["--trusted-key", trusted.to_str().unwrap()];
    let first = free_port();
    let mut nodes = vec![Node::start(root, "b1", first, &[], &flags)];
    for i in 2..=n {
        nodes.push(Node::start(
            root,
            &format!("b{i}"),
            free_port(),
            &[first],
            &flags,
        ));
    }
    for node in &nodes {
        wait_until(Duration::from_secs(20), || node.sees_alive(n))
            .unwrap_or_else(|| panic!("{} never saw {n} alive members", node.name));
    }
    nodes
}

/// `dcish --json deploy PKG --to SET` on `node`: (success, the per-blade rows by blade).
fn deploy(node: &Node, package: &Path, set: &str) -> (bool, Vec<Value>) {
    let out = node.dcish(&["--json", "deploy", package.to_str().unwrap(), "--to", set]);
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), rows)
}

fn statuses(rows: &[Value]) -> Vec<(String, String)> {
    rows.iter()
        .map(|r| {
            (
                r["blade"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// What `dcish packages SET` lists: (blade, name, version).
fn installed(node: &Node, set: &str) -> Vec<(String, String, String)> {
    let v: Value = serde_json::from_str(&ok(node.dcish(&["--json", "packages", set]))).unwrap();
    assert_eq!(v["errors"], Value::Array(vec![]), "{v}");
    let mut rows: Vec<(String, String, String)> = v["installed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            (s("blade"), s("name"), s("version"))
        })
        .collect();
    rows.sort();
    rows
}

/// A counter of `dcish status` on `node`.
fn counter(node: &Node, name: &str) -> u64 {
    let v: Value = serde_json::from_str(&ok(node.dcish(&["--json", "status"]))).unwrap();
    v["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}: {v}"))
}

/// Sends text to the `upper` peerlet on `blade`: its reply (the answer object), or the error.
fn upper_reply(node: &Node, blade: &str, text: &str) -> Result<Value, String> {
    let out = node.dcish(&[
        "--json",
        "send",
        blade,
        "--app",
        "upper",
        &format!("<text xmlns=\"urn:t:1\">{text}</text>"),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let answer = &v["answers"][0];
    match answer["kind"].as_str() {
        Some("reply") => Ok(answer.clone()),
        _ => Err(format!("{v} {}", String::from_utf8_lossy(&out.stderr))),
    }
}

/// The `upper` peerlet's answer on `blade`, or the error.
fn upper(node: &Node, blade: &str, text: &str) -> Result<String, String> {
    upper_reply(node, blade, text).map(|a| a["payload"].as_str().unwrap_or_default().to_string())
}

/// The node id that answered `upper` on `blade`, if it answered.
fn upper_answered_by(node: &Node, blade: &str) -> Option<String> {
    let reply = upper_reply(node, blade, "x").ok()?;
    reply["node"].as_str().map(str::to_owned)
}

/// A copy of the example package's source at `version`, in its own directory.
fn upper_source(root: &Path, version: &str) -> PathBuf {
    let dir = root.join(format!("upper-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    let example = Path::new(REPO).join("peerlets/upper");
    for f in ["upper.py", "peerlet.toml"] {
        std::fs::copy(example.join(f), dir.join(f)).unwrap();
    }
    std::fs::copy(example.join("package/install.xml"), dir.join("install.xml")).unwrap();
    let manifest = std::fs::read_to_string(example.join("package/package.toml"))
        .unwrap()
        .replace("version = \"1.0.0\"", &format!("version = \"{version}\""))
        .replace("../", "");
    std::fs::write(dir.join("package.toml"), manifest).unwrap();
    dir
}

#[test]
fn a_signed_package_is_deployed_upgraded_listed_and_removed_across_a_set() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let op = key(root, "op.key");
    let nodes = mesh(root, 3, &root.join("op.key.pub"));
    let b1 = &nodes[0];

    // The example package as shipped, deployed from b1 to every blade.
    let v1 = build(
        &Path::new(REPO).join("peerlets/upper/package"),
        Some(&op),
        &root.join("upper-1.dcipkg"),
    );
    let (success, rows) = deploy(b1, &v1, "b[1-3]");
    assert!(success, "{rows:?}");
    let all = |status: &str| {
        ["b1", "b2", "b3"]
            .map(|b| (b.to_string(), status.to_string()))
            .to_vec()
    };
    assert_eq!(statuses(&rows), all("installed"));
    // The installed peerlet answers on a blade that never had it configured.
    let answer = upper(b1, "b3", "hello package").unwrap();
    assert!(answer.contains("HELLO PACKAGE"), "{answer}");

    // The same package again: nothing to do.
    let (success, rows) = deploy(b1, &v1, "b[1-3]");
    assert!(success);
    assert_eq!(statuses(&rows), all("already-installed"));
    let v = |version: &str| {
        ["b1", "b2", "b3"]
            .map(|b| (b.to_string(), "upper".to_string(), version.to_string()))
            .to_vec()
    };
    assert_eq!(installed(b1, "@all"), v("1.0.0"));

    // An upgrade, first to b2 alone: b2 takes every block from the origin.
    let v2 = build(
        &upper_source(root, "1.1.0"),
        Some(&op),
        &root.join("upper-2.dcipkg"),
    );
    let (success, rows) = deploy(b1, &v2, "b2");
    assert!(success, "{rows:?}");
    assert_eq!(statuses(&rows), vec![("b2".into(), "upgraded".into())]);
    assert!(counter(&nodes[1], "package-bytes-from-origin") > 0);
    // Then to all, from b1 again: b2 has it (and says so without fetching), b3 takes every block
    // from b2 and none from the origin, and the origin installs from its own copy.
    let (b3_origin, b3_peers) = (
        counter(&nodes[2], "package-bytes-from-origin"),
        counter(&nodes[2], "package-bytes-from-peers"),
    );
    let (success, rows) = deploy(b1, &v2, "@all");
    assert!(success, "{rows:?}");
    assert_eq!(
        statuses(&rows),
        vec![
            ("b1".into(), "upgraded".into()),
            ("b2".into(), "already-installed".into()),
            ("b3".into(), "upgraded".into()),
        ]
    );
    assert_eq!(counter(&nodes[2], "package-bytes-from-origin"), b3_origin);
    assert!(counter(&nodes[2], "package-bytes-from-peers") > b3_peers);
    assert_eq!(installed(b1, "@all"), v("1.1.0"));
    for n in &nodes {
        assert!(!n.data_dir.join("packages/upper/1.0.0").exists());
        assert!(!n.data_dir.join("packages/upper/1.0.0.dcipkg").exists());
        assert!(n.data_dir.join("packages/upper/1.1.0/upper.py").is_file());
        assert!(n.data_dir.join("packages/upper/1.1.0.dcipkg").is_file());
    }
    assert!(upper(b1, "b2", "again").unwrap().contains("AGAIN"));

    // An older version is refused where a newer one is installed.
    let (success, rows) = deploy(b1, &v1, "b3");
    assert!(!success);
    assert_eq!(rows[0]["status"], "failed");
    assert!(
        rows[0]["output"].as_str().unwrap().contains("newer"),
        "{rows:?}"
    );

    // Undeploy from one blade: gone there, with its peerlet; still on the others.
    let out = b1.dcish(&["--json", "undeploy", "upper", "--from", "b2"]);
    let rows: Vec<Value> = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(
        statuses(&rows),
        vec![("b2".to_string(), "removed".to_string())]
    );
    assert!(!nodes[1].data_dir.join("packages/upper").exists());
    assert_eq!(
        installed(b1, "b[2-3]"),
        vec![("b3".into(), "upper".into(), "1.1.0".into())]
    );
    assert!(upper(b1, "b2", "gone").is_err());
    let rows: Vec<Value> = serde_json::from_str(&ok(
        b1.dcish(&["--json", "undeploy", "upper", "--from", "b2"])
    ))
    .unwrap();
    assert_eq!(rows[0]["status"], "not-installed");

    // Deployed back to b2 at a time of day two seconds ahead: dcish waits for it, then deploys;
    // a time that is not one is refused in one line before anything is sent.
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    let at = format!(
        "{:02}:{:02}:{:02}",
        at % 86_400 / 3600,
        at % 3600 / 60,
        at % 60
    );
    let asked = Instant::now();
    let out = b1.dcish(&[
        "--json",
        "deploy",
        v2.to_str().unwrap(),
        "--to",
        "b2",
        "--at",
        &at,
    ]);
    let rows: Vec<Value> = serde_json::from_str(&ok(out)).unwrap();
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "deployed before {at}"
    );
    assert_eq!(statuses(&rows), vec![("b2".into(), "installed".into())]);
    let out = b1.dcish(&[
        "deploy",
        v2.to_str().unwrap(),
        "--to",
        "b2",
        "--at",
        "25:00",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.lines().count() == 1, "{err}");
    assert!(err.contains("--at \"25:00\" is not HH:MM"), "{err}");
}

/// A package source named `name` with one file and these instructions.
fn source(root: &Path, name: &str, platform: &str, install: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        format!(
            "name = \"{name}\"\nversion = \"1.0\"\nplatform = \"{platform}\"\n[files]\n\"data.txt\" = \"data.txt\"\n\"peerlet.toml\" = \"peerlet.toml\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("data.txt"), "some data\n").unwrap();
    std::fs::write(
        dir.join("peerlet.toml"),
        format!("app = \"{name}-app\"\ncommand = [\"cat\"]\nmode = \"wrap\"\n"),
    )
    .unwrap();
    std::fs::write(dir.join("install.xml"), install).unwrap();
    dir
}

fn install_xml(steps: &str) -> String {
    format!("<install xmlns=\"urn:dci:package:1\">{steps}</install>")
}

/// Deploys `package` to b1 and b2 and expects both to refuse it with `why`, leaving nothing.
fn refused(nodes: &[Node], package: &Path, name: &str, why: &str, step: Option<&str>) {
    let (success, rows) = deploy(&nodes[0], package, "b[1-2]");
    assert!(!success, "{name}: {rows:?}");
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r["status"], "failed", "{name}: {r}");
        let output = r["output"].as_str().unwrap();
        assert!(output.contains(why), "{name}: {output:?} lacks {why:?}");
        assert_eq!(r["step"].as_str(), step, "{name}: {r}");
    }
    for n in nodes {
        assert!(
            !n.data_dir.join("packages").join(name).exists(),
            "{name} left files on {}",
            n.name
        );
    }
    assert_eq!(installed(&nodes[0], "@all"), vec![], "{name}");
}

#[test]
fn bad_packages_are_refused_per_blade_and_a_failing_install_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let op = key(root, "op.key");
    let stranger = key(root, "stranger.key");
    let nodes = mesh(root, 2, &root.join("op.key.pub"));
    let place = "<place file=\"data.txt\"/><place file=\"peerlet.toml\"/>";

    let good = source(root, "good", "any", &install_xml(place));
    let unsigned = build(&good, None, &root.join("unsigned.dcipkg"));
    refused(&nodes, &unsigned, "good", "unsigned", None);

    let foreign = build(&good, Some(&stranger), &root.join("foreign.dcipkg"));
    refused(&nodes, &foreign, "good", "does not trust", None);

    // A byte of the last file (by path) changed after signing; files end before the 96-byte signature.
    let signed = build(&good, Some(&op), &root.join("good.dcipkg"));
    let mut bytes = std::fs::read(&signed).unwrap();
    let at = bytes.len() - 96 - 2;
    bytes[at] ^= 1;
    let tampered = root.join("tampered.dcipkg");
    std::fs::write(&tampered, bytes).unwrap();
    refused(
        &nodes,
        &tampered,
        "good",
        "hash mismatch for peerlet.toml",
        None,
    );

    let other = source(root, "other", "plan9-mips", &install_xml(place));
    let other = build(&other, Some(&op), &root.join("other.dcipkg"));
    refused(&nodes, &other, "other", "built for plan9-mips", None);

    let escape = source(
        root,
        "escape",
        "any",
        &install_xml(
            "<place file=\"data.txt\"/><place file=\"data.txt\" to=\"../../../escaped.txt\"/>",
        ),
    );
    let escape = build(&escape, Some(&op), &root.join("escape.dcipkg"));
    refused(
        &nodes,
        &escape,
        "escape",
        "escapes the install root",
        Some("place ../../../escaped.txt"),
    );
    for n in &nodes {
        assert!(!n.data_dir.join("escaped.txt").exists());
    }

    let slow = source(
        root,
        "slow",
        "any",
        &install_xml(&format!(
            "{place}<run timeout-ms=\"300\"><arg>sh</arg><arg>-c</arg><arg>sleep 30 &amp; sleep 30</arg></run>"
        )),
    );
    let slow = build(&slow, Some(&op), &root.join("slow.dcipkg"));
    refused(
        &nodes,
        &slow,
        "slow",
        "timed out after 300 ms",
        Some("run sh -c sleep 30 & sleep 30"),
    );

    // A step fails after a peerlet was registered: the registration is undone with the files.
    let broken = source(
        root,
        "broken",
        "any",
        &install_xml(&format!(
            "{place}<register-peerlet manifest=\"peerlet.toml\"/><run timeout-ms=\"5000\"><arg>sh</arg><arg>-c</arg><arg>echo cannot configure &gt;&amp;2; exit 3</arg></run>"
        )),
    );
    let broken = build(&broken, Some(&op), &root.join("broken.dcipkg"));
    refused(
        &nodes,
        &broken,
        "broken",
        "exit 3: cannot configure",
        Some("run sh -c echo cannot configure >&2; exit 3"),
    );
    let out = nodes[0].dcish(&[
        "--json",
        "send",
        "b2",
        "--app",
        "broken-app",
        "<a xmlns=\"urn:t:1\"/>",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("unknown-app"), "{text}");

    // The good package, signed by the trusted key, still installs after all that.
    let (success, rows) = deploy(&nodes[0], &signed, "b[1-2]");
    assert!(success, "{rows:?}");
}

#[test]
fn an_envelope_for_a_missing_peerlet_makes_its_blade_retrieve_it_from_a_peer_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let op = key(root, "op.key");
    let public = root.join("op.key.pub");
    let config = root.join("on-demand.toml");
    std::fs::write(
        &config,
        format!(
            "[packages]\non_demand = true\ntrusted_keys = [{:?}]\n",
            public.to_str().unwrap()
        ),
    )
    .unwrap();
    let trusted = ["--trusted-key", public.to_str().unwrap()];
    let first = free_port();
    let nodes = [
        Node::start(
            root,
            "b1",
            first,
            &[],
            &["--config", config.to_str().unwrap()],
        ),
        Node::start(root, "b2", free_port(), &[first], &trusted),
        Node::start(root, "b3", free_port(), &[first], &trusted),
    ];
    for node in &nodes {
        wait_until(Duration::from_secs(20), || node.sees_alive(3))
            .unwrap_or_else(|| panic!("{} never saw 3 alive members", node.name));
    }
    let b2 = &nodes[1];
    let package = build(
        &Path::new(REPO).join("peerlets/upper/package"),
        Some(&op),
        &root.join("upper.dcipkg"),
    );
    let (success, rows) = deploy(b2, &package, "b2");
    assert!(success, "{rows:?}");

    // b1 allows on-demand retrieval: the envelope waits while b1 takes the package from b2,
    // installs it, and then it is answered.
    let answer = upper(b2, "b1", "fetched on demand").unwrap();
    assert!(answer.contains("FETCHED ON DEMAND"), "{answer}");
    assert_eq!(
        installed(b2, "b1"),
        vec![("b1".into(), "upper".into(), "1.0.0".into())]
    );

    // A type no peer provides: the sender is told so.
    let out = b2.dcish(&[
        "--json",
        "send",
        "b1",
        "--app",
        "nosuch",
        "<a xmlns=\"urn:t:1\"/>",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["answers"][0]["code"], "unavailable", "{v}");
    assert!(
        v["answers"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no peer holds a package providing peerlet:nosuch"),
        "{v}"
    );

    // b3 does not allow it (the default): unknown type, nothing installed.
    let err = upper(b2, "b3", "x").unwrap_err();
    assert!(err.contains("unknown-app"), "{err}");
    assert_eq!(installed(b2, "b3"), vec![]);
}

#[test]
fn with_run_as_install_commands_run_as_that_user_without_roots_groups() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: [packages] run_as needs dcid to run as root");
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // nobody must reach the install root through the temp dir, which tempfile makes 0700.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    for parent in root.ancestors().skip(1) {
        let mode = std::fs::metadata(parent).unwrap().permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(mode | 0o001))
                .unwrap();
        }
    }
    let op = key(root, "op.key");
    let packages = root.join("installed");
    let config = root.join("run-as.toml");
    std::fs::write(
        &config,
        format!(
            "[packages]\nrun_as = \"nobody\"\nroot = {:?}\ntrusted_keys = [{:?}]\n",
            packages.to_str().unwrap(),
            root.join("op.key.pub").to_str().unwrap()
        ),
    )
    .unwrap();
    let node = Node::start(
        root,
        "b1",
        free_port(),
        &[],
        &["--config", config.to_str().unwrap()],
    );
    wait_until(Duration::from_secs(20), || {
        node.members()
            .is_some_and(|m| m.iter().any(|m| m["state"] == "alive"))
    })
    .expect("b1 never saw itself alive");

    let ids = source(
        root,
        "ids",
        "any",
        &install_xml(
            "<place file=\"data.txt\"/><run timeout-ms=\"10000\"><arg>sh</arg><arg>-c</arg><arg>id -u &gt; uid.txt; id -G &gt; groups.txt</arg></run>\
             <place file=\"peerlet.toml\" to=\"late/peerlet.toml\"/><run timeout-ms=\"10000\"><arg>sh</arg><arg>-c</arg><arg>echo appended &gt;&gt; late/peerlet.toml</arg></run>",
        ),
    );
    let ids = build(&ids, Some(&op), &root.join("ids.dcipkg"));
    let (success, rows) = deploy(&node, &ids, "b1");
    assert!(success, "{rows:?}");

    let installed = packages.join("ids/1.0");
    let read = |f: &str| std::fs::read_to_string(installed.join(f)).unwrap();
    assert_eq!(read("uid.txt").trim(), "65534");
    let groups = read("groups.txt");
    assert!(!groups.split_whitespace().any(|g| g == "0"), "{groups}");
    // The directory, and the files placed before and after the first command, were given to
    // nobody: the last command could write to the file placed after.
    assert!(read("late/peerlet.toml").ends_with("appended\n"));
    for path in [
        installed.clone(),
        installed.join("data.txt"),
        installed.join("late"),
        installed.join("late/peerlet.toml"),
    ] {
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), 65534, "{path:?}");
    }
    assert!(!node.data_dir.join("packages").exists());
}

#[test]
fn a_package_deployed_to_a_blade_follows_it_to_the_node_that_takes_it_over() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let op = key(root, "op.key");
    let pubkey = root.join("op.key.pub");
    let trusted = ["--trusted-key", pubkey.to_str().unwrap()];
    let (b1_root, spare_root) = (root.join("b1-data"), root.join("spare-data"));
    std::fs::create_dir_all(b1_root.join("docs")).unwrap();
    std::fs::write(b1_root.join("docs/a.txt"), b"the blade's own file\n").unwrap();
    let first = free_port();
    let b1 = Node::start(
        root,
        "b1",
        first,
        &[],
        &[&trusted[..], &["--backup-root", b1_root.to_str().unwrap()]].concat(),
    );
    let b2 = Node::start(root, "b2", free_port(), &[first], &trusted);
    let spare = Node::start(
        root,
        "spare",
        free_port(),
        &[first],
        &[
            &trusted[..],
            &[
                "--role",
                "spare",
                "--backup-root",
                spare_root.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    let seat_of = |n: &Node| -> Option<(String, u64)> {
        let v: Value = serde_json::from_slice(&n.dcish(&["--json", "seats"]).stdout).ok()?;
        let s = v.as_array()?.iter().find(|s| s["blade"] == "b1")?.clone();
        if s["state"] != "held" {
            return None;
        }
        Some((s["holder"].as_str()?.to_string(), s["epoch"].as_u64()?))
    };
    let b1_id = b1.id();
    assert!(
        wait_until(Duration::from_secs(60), || [&b1, &b2, &spare]
            .iter()
            .all(|n| seat_of(n) == Some((b1_id.clone(), 1))))
        .is_some(),
        "b1 never seated"
    );

    // Deployed to b1 only: kept in b1's data set beside its files, and backed up with them.
    let package = build(
        &Path::new(REPO).join("peerlets/upper/package"),
        Some(&op),
        &root.join("upper.dcipkg"),
    );
    let (success, rows) = deploy(&b1, &package, "b1");
    assert!(success, "{rows:?}");
    assert!(b1_root.join(".dci/packages/upper.dcipkg").is_file());
    assert_eq!(upper_answered_by(&b2, "b1"), Some(b1_id.clone()));
    assert!(ok(b1.dcish(&["backup", "now"])).contains("complete"));

    // The spare takes b1 over: it restores the data set, installs the package from it, and
    // answers `upper` as b1.
    ok(b2.dcish(&["failover", "b1"]));
    let spare_id = spare.id();
    assert!(
        wait_until(Duration::from_secs(60), || {
            upper_answered_by(&b2, "b1").as_deref() == Some(spare_id.as_str())
        })
        .is_some(),
        "the package did not follow b1 to the spare: {:?}\n{}",
        seat_of(&b2),
        spare.log_text()
    );
    assert_eq!(seat_of(&b2), Some((spare_id, 2)));
    assert!(spare.data_dir.join("packages/upper/1.0.0").is_dir());
}
