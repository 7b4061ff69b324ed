//! The web console, driven in headless Chromium through chromedriver against a 3-agent loopback
//! mesh of real `dcid` processes: log in, see the members, change a blade's exclusions, back up,
//! restore one file from the archive view, log out; and the refusals (wrong password, missing or
//! wrong CSRF token, no session) as plain HTTP requests.
//!
//! Needs `chromedriver` and `chromium` (Debian's `chromium-driver` and `chromium`). Without them
//! the test says it was skipped, unless `DCI_REQUIRE_BROWSER=1` (as in CI), where it fails.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{all_see_alive, free_port, ok, wait_until, Node};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const USER: &str = "ops";
const PASSWORD: &str = "correct horse battery";
/// How long the page may take to show what a step waits for.
const STEP: Duration = Duration::from_secs(60);

/// `chromedriver` on the PATH, or why the test cannot run.
fn chromedriver() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("chromedriver"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "chromedriver is not on the PATH (apt-get install chromium chromium-driver)".into()
        })
}

/// A chromedriver process, killed on drop.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_driver(bin: &Path) -> Driver {
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start chromedriver");
    let driver = Driver(child, port);
    wait_until(Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .expect("chromedriver never listened");
    driver
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    let mut chrome = json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,900", "--lang=en-US"],
    });
    if Path::new("/usr/bin/chromium").exists() {
        chrome["binary"] = json!("/usr/bin/chromium");
    }
    caps.insert("goog:chromeOptions".into(), chrome);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("cannot open a browser session through chromedriver")
}

/// One plain HTTP/1.1 request; returns (status, headers, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// The session cookie a successful login sets, as `name=value`.
fn login_cookie(port: u16) -> String {
    let body = format!("user={USER}&password={}", PASSWORD.replace(' ', "+"));
    let (status, head, _) = http(
        port,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &body,
    );
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("no session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    cookie.split(';').next().unwrap().to_owned()
}

/// The page's text, for a failure message.
async fn page_text(c: &Client) -> String {
    match c.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(e) => format!("(no page: {e})"),
    }
}

/// Waits until `css` matches an element whose text contains `needle`.
async fn wait_text(c: &Client, css: &str, needle: &str) {
    let start = std::time::Instant::now();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if e.text().await.unwrap_or_default().contains(needle) {
                return;
            }
        }
        if start.elapsed() > STEP {
            panic!(
                "{css} never showed {needle:?}; the page has:\n{}",
                page_text(c).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `css` matches at least `n` elements and returns them.
async fn wait_count(c: &Client, css: &str, n: usize) -> Vec<fantoccini::elements::Element> {
    let start = std::time::Instant::now();
    loop {
        let found = c.find_all(Locator::Css(css)).await.unwrap_or_default();
        if found.len() >= n {
            return found;
        }
        if start.elapsed() > STEP {
            let page = page_text(c).await;
            panic!(
                "{css} matched {} of {n} elements; the page has:\n{page}",
                found.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Clicks the element `css` matches. The console redraws its tables every few seconds, so an
/// element found may be replaced before the click lands: it is then found again.
async fn click(c: &Client, css: &str) {
    use fantoccini::error::{CmdError, ErrorStatus};
    for _ in 0..20 {
        let clicked = match c.find(Locator::Css(css)).await {
            Ok(e) => e.click().await,
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => return,
            Err(CmdError::Standard(e)) if e.error == ErrorStatus::StaleElementReference => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot click {css}: {e}"),
        }
    }
    panic!("{css} was redrawn under every one of 20 clicks");
}

async fn set_field(c: &Client, css: &str, value: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

/// A blade's data: what the exclusions will leave out, and a file to lose and restore.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("docs")).unwrap();
    fs::create_dir_all(root.join("cache")).unwrap();
    fs::write(
        root.join("docs/a.txt"),
        b"alpha: the file the operator restores\n",
    )
    .unwrap();
    fs::write(root.join("docs/b.txt"), b"beta\n").unwrap();
    fs::write(root.join("keep.txt"), b"kept\n").unwrap();
    fs::write(root.join("cache/junk.bin"), b"cached junk").unwrap();
    fs::write(root.join("notes.log"), b"a log line\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_configures_backs_up_and_restores_a_file_from_the_browser() {
    let driver_bin = match chromedriver() {
        Ok(p) => p,
        Err(why) if std::env::var("DCI_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("DCI_REQUIRE_BROWSER=1 but the browser test cannot run: {why}")
        }
        Err(why) => {
            eprintln!("console browser test skipped: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();

    // The operator makes a password hash the documented way.
    let mut hash = Command::new(common::DCISH)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    hash.stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    let out = hash.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    let http_port = free_port();
    let config = root.join("b1.toml");
    fs::write(
        &config,
        format!(
            "[console]\nhttp = \"127.0.0.1:{http_port}\"\n\n[[console.users]]\nname = \"{USER}\"\npassword_hash = \"{hash}\"\n"
        ),
    )
    .unwrap();
    let roots: Vec<PathBuf> = (1..=3).map(|i| root.join(format!("data{i}"))).collect();
    for r in &roots {
        make_tree(r);
    }
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let start = |i: usize, extra: &[&str]| {
        let name = format!("b{}", i + 1);
        let root_arg = roots[i].to_str().unwrap().to_owned();
        let mut args = vec!["--backup-root", &root_arg, "--replication-factor", "1"];
        args.extend_from_slice(extra);
        let join: Vec<u16> = if i == 0 { vec![] } else { vec![ports[0]] };
        Node::start(root, &name, ports[i], &join, &args)
    };
    let nodes = vec![
        start(0, &["--config", config.to_str().unwrap()]),
        start(1, &[]),
        start(2, &[]),
    ];
    all_see_alive(&nodes, 3);

    let driver = start_driver(&driver_bin);
    let c = browser(&driver).await;
    let base = format!("http://127.0.0.1:{http_port}");

    // Nothing is shown without a session: the console sends the browser to the login page.
    c.goto(&format!("{base}/")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));

    // A wrong password is refused, and says so.
    set_field(&c, "#user", USER).await;
    set_field(&c, "#password", "wrong password").await;
    click(&c, "#login").await;
    wait_text(&c, "#login-error", "wrong user name or password").await;
    // Failed logins slow their address down: wait out the first delay.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    set_field(&c, "#user", USER).await;
    set_field(&c, "#password", PASSWORD).await;
    click(&c, "#login").await;

    // The overview lists the three members, alive, and the seats.
    wait_count(&c, "#members tbody tr[data-state=alive]", 3).await;
    wait_count(&c, "#seats tbody tr", 3).await;
    wait_text(&c, "#node", "b1").await;
    for name in ["b1", "b2", "b3"] {
        wait_text(&c, &format!("#members tr[data-name={name}]"), name).await;
    }
    // Let the load bars fill in before the picture is taken.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let png = c.screenshot().await.unwrap();
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console-overview.png");
    fs::create_dir_all(shot.parent().unwrap()).unwrap();
    fs::write(&shot, &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");

    // "Discover nodes" goes through the agent and answers with the member table.
    click(&c, "#discover").await;
    wait_text(&c, "#discover-status", "3 members known").await;

    // b2's page, from b1's console: its settings live on b2.
    click(&c, "#members tr[data-name=b2] a").await;
    let start_wait = std::time::Instant::now();
    while c
        .find(Locator::Css("#factor"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
        != "1"
    {
        assert!(start_wait.elapsed() < STEP, "b2's settings never loaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The form checks its input before sending.
    set_field(&c, "#root", "relative/dir").await;
    click(&c, "#save-settings").await;
    wait_text(&c, "#settings-status", "absolute path").await;
    set_field(&c, "#root", roots[1].to_str().unwrap()).await;
    set_field(&c, "#exclude-dirs", "cache").await;
    set_field(&c, "#exclude-exts", "log").await;
    click(&c, "#save-settings").await;
    wait_text(&c, "#settings-status", "saved").await;

    // The shell, on a third agent, sees the change: one control path, one answer.
    let seen: Value =
        serde_json::from_str(&ok(nodes[2].dcish(&["--json", "settings", "b2"]))).unwrap();
    assert_eq!(seen["exclude_dirs"], json!(["cache"]), "{seen}");
    assert_eq!(seen["exclude_exts"], json!(["log"]), "{seen}");
    assert!(
        nodes[1].data_dir.join("backup-settings.json").exists(),
        "b2 keeps the change across restarts"
    );
    // Each console action was logged as the envelope it sent.
    let log = nodes[0].log_text();
    assert!(
        log.contains("console request") && log.contains("configure"),
        "b1's log has no console envelope for the change"
    );

    // Back up b2 now; the job shows its progress, then its archive.
    click(&c, "#backup-now").await;
    wait_count(&c, "#jobs li[data-state=done]", 1).await;
    wait_text(&c, "#jobs", "files,").await;

    // The recovery view lists the archive; its contents leave the exclusions out.
    click(&c, "#recovery-link").await;
    let rows = wait_count(&c, "#archives tbody tr[data-archive]", 1).await;
    assert_eq!(rows.len(), 1);
    wait_text(&c, "#archives", "Recover sequentially to this archive").await;
    c.find(Locator::LinkText("View contents"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let files = wait_count(&c, "#files tbody tr[data-path]", 3).await;
    let mut paths = Vec::new();
    for f in files {
        paths.push(f.attr("data-path").await.unwrap().unwrap_or_default());
    }
    paths.sort();
    assert_eq!(
        paths,
        ["docs/a.txt", "docs/b.txt", "keep.txt"],
        "the exclusions were not applied"
    );

    // The operator loses a file and restores only it from the archive view.
    let lost = roots[1].join("docs/a.txt");
    let original = fs::read(&lost).unwrap();
    fs::remove_file(&lost).unwrap();
    fs::write(roots[1].join("docs/b.txt"), b"changed since the backup\n").unwrap();
    click(&c, "input[data-path='docs/a.txt']").await;
    click(&c, "#restore-selected").await;
    c.accept_alert().await.unwrap();
    wait_count(&c, "#jobs li[data-state=done]", 2).await;
    wait_text(&c, "#jobs", "restored ").await;
    assert_eq!(
        fs::read(&lost).unwrap(),
        original,
        "the restored bytes differ"
    );
    assert_eq!(
        fs::read(roots[1].join("docs/b.txt")).unwrap(),
        b"changed since the backup\n",
        "a partial restore touched a file that was not selected"
    );

    // A blade dies: its failure notice reaches the alerts of every page.
    nodes[2].signal(libc::SIGKILL);
    wait_text(&c, "#alerts", "system-down").await;
    wait_text(&c, "#alerts", "node b3").await;

    // Logging out ends the session: the pages lead to the login page again.
    click(&c, "#logout").await;
    let start_wait = std::time::Instant::now();
    while !c.current_url().await.unwrap().path().ends_with("/login") {
        assert!(
            start_wait.elapsed() < STEP,
            "logout did not lead to the login page"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.goto(&format!("{base}/blade/b2")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    c.close().await.unwrap();

    // The refusals, as plain HTTP.
    let (status, _, body) = http(http_port, "GET", "/api/overview", &[], "");
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = http(
        http_port,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "user=ops&password=guess",
    );
    assert_eq!(status, 401, "a wrong password: {body}");
    assert!(body.contains("wrong user name or password"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let cookie = login_cookie(http_port);
    let with_cookie = [("Cookie", cookie.as_str())];
    let (status, _, body) = http(http_port, "POST", "/api/discover", &with_cookie, "");
    assert_eq!(
        (status, body.trim()),
        (403, "missing CSRF token (the x-csrf-token header)")
    );
    let (status, _, body) = http(
        http_port,
        "POST",
        "/api/discover",
        &[("Cookie", cookie.as_str()), ("X-CSRF-Token", "0123")],
        "",
    );
    assert_eq!((status, body.trim()), (403, "wrong CSRF token"));
    let (status, _, body) = http(http_port, "GET", "/api/session", &with_cookie, "");
    assert_eq!(status, 200, "{body}");
    let session: Value = serde_json::from_str(&body).unwrap();
    let token = session["csrf"].as_str().unwrap();
    let with_token = [("Cookie", cookie.as_str()), ("X-CSRF-Token", token)];
    let (status, _, body) = http(http_port, "POST", "/api/discover", &with_token, "");
    assert_eq!(status, 200, "{body}");
    // A change from another site is refused even with the cookie and token.
    let (status, _, _) = http(
        http_port,
        "POST",
        "/api/discover",
        &[
            with_token[0],
            with_token[1],
            ("Origin", "http://evil.example"),
        ],
        "",
    );
    assert_eq!(status, 403);
    // A body over the limit is refused before it is read.
    let big = "x".repeat(100 << 10);
    let (status, _, _) = http(
        http_port,
        "POST",
        "/api/blades/b2/settings",
        &[
            with_token[0],
            with_token[1],
            ("Content-Type", "application/json"),
        ],
        &big,
    );
    assert_eq!(status, 413);
}

#[test]
fn a_console_without_users_or_with_a_bad_address_hash_or_port_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let base = ["--data-dir", data_arg, "--listen", &listen, "--no-mdns"];
    let refuse = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        common::dcid_refuses(&args)
    };
    let (code, err) = refuse(&["--http", "127.0.0.1:0"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("console.users") && err.contains("hash-password"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let (code, err) = refuse(&["--http", "localhost:8080"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("console.http"), "{err}");

    let config = dir.path().join("bad-hash.toml");
    fs::write(
        &config,
        "[console]\nhttp = \"127.0.0.1:0\"\n[[console.users]]\nname = \"ops\"\npassword_hash = \"plain text\"\n",
    )
    .unwrap();
    let (code, err) = refuse(&["--config", config.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("console.users.password_hash"), "{err}");

    // The console's port is taken: refused before anything is written to the data dir.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$2CRGSBE3wNoRhRoRcrVW9LfYj1Ol4hK7cwcP0hvjV3o";
    let config = dir.path().join("taken.toml");
    fs::write(
        &config,
        format!("[console]\nhttp = \"127.0.0.1:{port}\"\n[[console.users]]\nname = \"ops\"\npassword_hash = \"{hash}\"\n"),
    )
    .unwrap();
    let (code, err) = refuse(&["--config", config.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot serve the console on"), "{err}");
    assert!(!data.exists(), "the data dir was written");
}

#[test]
fn backup_settings_changed_by_an_operator_are_checked_kept_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tree");
    make_tree(&data);
    let root_arg = data.to_str().unwrap().to_owned();
    let extra = [
        "--backup-root",
        root_arg.as_str(),
        "--replication-factor",
        "0",
    ];
    let port = free_port();
    let node = Node::start(dir.path(), "b1", port, &[], &extra);
    for (args, says) in [
        (&["configure", "b1", "--factor", "17"][..], "at most 16"),
        (
            &["configure", "b1", "--exclude-exts", "tar.gz"][..],
            "one word",
        ),
        (
            &["configure", "b1", "--exclude-dirs", "../up"][..],
            "relative to the backup root",
        ),
        (
            &["configure", "b1", "--root", "/nonexistent/dir"][..],
            "not a directory",
        ),
        (
            &["configure", "b1", "--schedule", "now and then"][..],
            "expected hourly",
        ),
        (
            &["configure", "nosuch", "--factor", "1"][..],
            "no live node named nosuch",
        ),
    ] {
        let out = node.dcish(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // Nothing refused was kept.
    assert!(!node.data_dir.join("backup-settings.json").exists());
    let out = ok(node.dcish(&[
        "configure",
        "b1",
        "--exclude-dirs",
        "cache, tmp",
        "--schedule",
        "daily 02:30",
    ]));
    assert!(
        out.contains("cache, tmp") && out.contains("daily 02:30"),
        "{out}"
    );

    // A backup follows the change at once.
    ok(node.dcish(&["backup", "now"]));
    let listing = ok(node.dcish(&["--json", "ls", "/archives/b1/latest/"]));
    assert!(
        !listing.contains("cache") && listing.contains("docs"),
        "{listing}"
    );

    // And the change outlives the agent.
    assert!(node.terminate().success());
    let node = Node::start(dir.path(), "b1", port, &[], &extra);
    let seen: Value = serde_json::from_str(&ok(node.dcish(&["--json", "settings", "b1"]))).unwrap();
    assert_eq!(seen["exclude_dirs"], json!(["cache", "tmp"]), "{seen}");
    assert_eq!(seen["schedule"], json!(["daily 02:30"]), "{seen}");
    assert_eq!(seen["factor"], json!(0), "{seen}");
    assert_eq!(seen["root"], json!(root_arg), "{seen}");
}
