//! Shared harness: real `dcid` processes on loopback, driven through the real `dcish`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const DCID: &str = env!("CARGO_BIN_EXE_dcid");
pub const DCISH: &str = env!("CARGO_BIN_EXE_dcish");

/// The standard output of a `dcish` run that must succeed; otherwise fails showing both outputs.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "dcish failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dcish --json archives BLADE` as `node` sees it; empty when it fails.
pub fn archives(node: &Node, blade: &str) -> Vec<Value> {
    let out = node.dcish(&["--json", "archives", blade]);
    if !out.status.success() {
        return Vec::new();
    }
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// An archive's id from its `--json` object, as (epoch, number): `"3.12"` is (3, 12).
pub fn archive_id(archive: &Value) -> Option<(u64, u64)> {
    let (epoch, number) = archive["id"].as_str()?.split_once('.')?;
    Some((epoch.parse().ok()?, number.parse().ok()?))
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

/// Writes a fresh cluster key with `dcid keygen` and returns its path.
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new(DCID)
        .arg("keygen")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "keygen failed: {out:?}");
    path
}

/// One running agent with its own data dir and log file; killed on drop.
pub struct Node {
    pub name: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts `dcid` listening on 127.0.0.1:`port`, joining `join` ports, with `extra` flags.
    pub fn start(root: &Path, name: &str, port: u16, join: &[u16], extra: &[&str]) -> Node {
        let data_dir = root.join(name);
        let log = root.join(format!("{name}.log"));
        let mut cmd = Command::new(DCID);
        cmd.arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--no-mdns")
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for p in join {
            cmd.arg("--join").arg(format!("127.0.0.1:{p}"));
        }
        let child = cmd.spawn().expect("cannot start dcid");
        let node = Node {
            name: name.into(),
            port,
            data_dir,
            log,
            child: Some(child),
        };
        wait_until(Duration::from_secs(20), || node.socket().exists()).unwrap_or_else(|| {
            panic!(
                "{name} never opened its control socket:\n{}",
                node.log_text()
            )
        });
        node
    }

    pub fn socket(&self) -> PathBuf {
        self.data_dir.join("dcid.sock")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `dcish --agent <socket> ARGS`.
    pub fn dcish(&self, args: &[&str]) -> Output {
        Command::new(DCISH)
            .arg("--agent")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("cannot run dcish")
    }

    /// `dcish --json nodes`, parsed; `None` if it failed.
    pub fn members(&self) -> Option<Vec<Value>> {
        let out = self.dcish(&["--json", "nodes"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice::<Vec<Value>>(&out.stdout).ok()
    }

    /// Whether this node sees exactly `n` members alive (itself included).
    pub fn sees_alive(&self, n: usize) -> bool {
        self.members()
            .is_some_and(|m| m.iter().filter(|m| m["state"] == "alive").count() == n)
    }

    /// The state this node reports for the member named `name`.
    pub fn state_of(&self, name: &str) -> Option<String> {
        self.members()?
            .iter()
            .find(|m| m["name"] == name)
            .and_then(|m| m["state"].as_str().map(String::from))
    }

    pub fn id(&self) -> String {
        let members = self.members().expect("nodes failed");
        members
            .iter()
            .find(|m| m["name"] == self.name.as_str())
            .and_then(|m| m["id"].as_str())
            .expect("own entry missing")
            .to_string()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not stop on SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `cond` every 100 ms until it holds (returns the time it took) or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Waits (20 s at most) until every node sees `n` members alive; else fails with the log of the
/// first that does not.
pub fn all_see_alive(nodes: &[Node], n: usize) {
    for node in nodes {
        wait_until(Duration::from_secs(20), || node.sees_alive(n)).unwrap_or_else(|| {
            panic!(
                "{} never saw {n} alive members:\n{}",
                node.name,
                node.log_text()
            )
        });
    }
}

/// Runs `dcid` with `args` expecting it to refuse to start; returns (exit code, stderr).
pub fn dcid_refuses(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(DCID)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("dcid {args:?} kept running instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
