//! `dcish move` and `dcish swap`: the seeds' move manager (seed 003, Figures 18-21) as a plan of
//! hand-overs, each one the path of `dcish failover --to`: the holder makes a last backup of its
//! own data set, releases the blade to the chosen node, which claims it through the same majority
//! as any takeover and restores the blade's latest archive. A node holds one blade at a time, so
//! the steps run one after another, each once the node it targets is a spare holding no blade.
//!
//! **Cascade** (Figure 19: "user A gets moved to the new computer, user B gets moved to user A's
//! old computer, user C gets moved to user B's old computer"). A link `X:T` moves blade `X` onto
//! `T`: when `T` is a blade that moves in the same cascade, onto the node holding `T` now, which
//! `T`'s own link frees first; otherwise `T` names a node, which must be a live spare holding no
//! blade (the "new computer"). The seed's example is `A:new,B:A,C:B`, in any order; the steps run
//! from the free end of each chain (`A`, then `B`, then `C`). A loop of links is a swap, refused.
//!
//! **Swap** (Figure 20, through "a temporary third location"): `A` goes to a spare, `B` to the
//! node `A` left, then `A` to the node `B` left; the spare is free again at the end.

use clap::Args;
use dci_proto::control::{MemberInfo, SeatInfo};

use super::client::{Client, ClientError};
use super::{ask_hand_over, fetch_members, fetch_seats, seats_json, wait_moved, ShellError};

/// `dcish move` arguments.
#[derive(Debug, Args)]
pub struct MoveArgs {
    /// The blade to move (one-to-one, with --to).
    #[arg(required_unless_present = "cascade", conflicts_with = "cascade")]
    pub blade: Option<String>,
    /// The node (by name) that takes the blade: a live spare holding no blade.
    #[arg(long, required_unless_present = "cascade", conflicts_with = "cascade")]
    pub to: Option<String>,
    /// A cascade, `A:B,B:C,...`: each blade moves onto the node holding the blade after its
    /// colon when that one moves too, else onto the node of that name (a spare).
    #[arg(long, value_name = "LINKS")]
    pub cascade: Option<String>,
    /// Start at this time of day, `HH:MM` or `HH:MM:SS` UTC (the next one to come); the plan is
    /// checked now and again then.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

/// How long from `now` (seconds since the Unix epoch) until the next `HH:MM[:SS]` UTC (now
/// itself included).
pub fn until(at: &str, now: u64) -> Result<std::time::Duration, ShellError> {
    let bad = || {
        refused(
            "bad-time",
            format!("--at {at:?} is not HH:MM or HH:MM:SS (UTC)"),
        )
    };
    let parts: Vec<u64> = at
        .split(':')
        .map(|p| {
            (p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
                .ok_or_else(bad)
        })
        .collect::<Result<_, _>>()?;
    let target = match parts[..] {
        [h, m] if h < 24 && m < 60 => h * 3600 + m * 60,
        [h, m, s] if h < 24 && m < 60 && s < 60 => h * 3600 + m * 60 + s,
        _ => return Err(bad()),
    };
    let today = now % 86_400;
    let wait = if target >= today {
        target - today
    } else {
        86_400 - today + target
    };
    Ok(std::time::Duration::from_secs(wait))
}

/// How long to wait for `at`, if given: checked before anything else, so that a malformed time
/// is refused whatever the mesh looks like.
pub(super) fn wait_of(at: Option<&str>) -> Result<Option<std::time::Duration>, ShellError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    at.map(|at| until(at, now)).transpose()
}

/// Waits `wait`, if given, on a connection made again afterwards; says whether it waited.
pub(super) async fn wait_for(
    client: &mut Client,
    wait: Option<std::time::Duration>,
) -> Result<bool, ShellError> {
    let Some(wait) = wait else {
        return Ok(false);
    };
    tokio::time::sleep(wait).await;
    client.reconnect().await?;
    Ok(true)
}

/// One hand-over of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The blade moved.
    pub blade: String,
    /// The node (by name) that takes it; the best-ranked spare when `None`.
    pub to: Option<String>,
}

/// How long a step waits for its target to be a spare holding no blade (the step before it
/// freed that node; its new role travels by gossip).
const FREE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn refused(code: &str, message: String) -> ShellError {
    ClientError::Refused {
        code: code.into(),
        message,
    }
}

/// Whether membership counts `m` alive on some channel.
fn up(m: &MemberInfo) -> bool {
    m.state != "dead" && m.state != "left"
}

/// Whether `m` may take a blade: alive, a spare, acting as no blade.
fn free(m: &MemberInfo) -> bool {
    up(m) && m.role == "spare" && m.blade.is_none()
}

fn seat_of<'a>(seats: &'a [SeatInfo], blade: &str) -> Result<&'a SeatInfo, ShellError> {
    seats
        .iter()
        .find(|s| s.blade == blade)
        .ok_or_else(|| refused("no-seat", format!("no node holds blade {blade}")))
}

/// Checks that `blade` is served now, so that its holder can hand it over.
fn held<'a>(seats: &'a [SeatInfo], blade: &str) -> Result<&'a SeatInfo, ShellError> {
    let s = seat_of(seats, blade)?;
    if s.state != "held" {
        return Err(refused(
            "holder-down",
            format!(
                "blade {blade} is {}: only a served blade can be moved",
                s.state
            ),
        ));
    }
    Ok(s)
}

/// Checks that the node named `name` may take a blade now.
fn check_target(members: &[MemberInfo], name: &str) -> Result<(), ShellError> {
    match members.iter().find(|m| m.name == name) {
        Some(m) if free(m) => Ok(()),
        Some(_) => Err(refused(
            "not-a-spare",
            format!("{name} is not a live spare holding no blade"),
        )),
        None => Err(refused(
            "no-such-node",
            format!("no blade or node named {name}"),
        )),
    }
}

/// A one-to-one move: `blade` to the node named `to`.
pub fn plan_one(
    blade: &str,
    to: &str,
    seats: &[SeatInfo],
    members: &[MemberInfo],
) -> Result<Vec<Step>, ShellError> {
    held(seats, blade)?;
    check_target(members, to)?;
    Ok(vec![Step {
        blade: blade.into(),
        to: Some(to.into()),
    }])
}

/// Parses `A:B,B:C,...` into links.
pub fn parse_cascade(text: &str) -> Result<Vec<(String, String)>, ShellError> {
    text.split(',')
        .map(|link| {
            let link = link.trim();
            match link.split_once(':') {
                Some((x, t)) if !x.trim().is_empty() && !t.trim().is_empty() => {
                    Ok((x.trim().to_owned(), t.trim().to_owned()))
                }
                _ => Err(refused(
                    "bad-cascade",
                    format!("cascade link {link:?} is not BLADE:TARGET"),
                )),
            }
        })
        .collect()
}

/// A cascade: the links in the order they can run (see the module docs).
pub fn plan_cascade(
    links: &[(String, String)],
    seats: &[SeatInfo],
    members: &[MemberInfo],
) -> Result<Vec<Step>, ShellError> {
    let sources: Vec<&str> = links.iter().map(|(x, _)| x.as_str()).collect();
    for (i, (x, t)) in links.iter().enumerate() {
        held(seats, x)?;
        if sources[..i].contains(&x.as_str()) {
            return Err(refused("bad-cascade", format!("blade {x} moves twice")));
        }
        if x == t {
            return Err(refused(
                "bad-cascade",
                format!("blade {x} moves onto itself"),
            ));
        }
        if links[..i].iter().any(|(_, u)| u == t) {
            return Err(refused("bad-cascade", format!("two blades move onto {t}")));
        }
    }
    // Each link's target node, and the link that must run first to free it.
    let mut resolved: Vec<(String, Option<usize>)> = Vec::with_capacity(links.len());
    for (x, t) in links {
        match sources.iter().position(|s| s == t) {
            Some(dep) => resolved.push((held(seats, t)?.holder_name.clone(), Some(dep))),
            None => {
                if members.iter().any(|m| m.name == *t && free(m)) {
                    resolved.push((t.clone(), None));
                } else if let Some(s) = seats.iter().find(|s| s.blade == *t) {
                    return Err(refused(
                        "bad-cascade",
                        format!(
                            "{x} cannot move onto {t}: {} holds blade {t}, which does not move in this cascade",
                            s.holder_name
                        ),
                    ));
                } else {
                    check_target(members, t)?;
                    resolved.push((t.clone(), None));
                }
            }
        }
    }
    // From the free end of each chain: a link runs once the link that frees its target ran.
    let mut done = vec![false; links.len()];
    let mut steps = Vec::with_capacity(links.len());
    while steps.len() < links.len() {
        let ready = (0..links.len())
            .find(|&i| !done[i] && resolved[i].1.is_none_or(|d| done[d]))
            .ok_or_else(|| {
                let looped: Vec<&str> = (0..links.len())
                    .filter(|&i| !done[i])
                    .map(|i| links[i].0.as_str())
                    .collect();
                refused(
                    "bad-cascade",
                    format!(
                        "the cascade loops through {}: use dcish swap",
                        looped.join(", ")
                    ),
                )
            })?;
        done[ready] = true;
        steps.push(Step {
            blade: links[ready].0.clone(),
            to: Some(resolved[ready].0.clone()),
        });
    }
    Ok(steps)
}

/// A swap of `a` and `b` through a spare.
pub fn plan_swap(
    a: &str,
    b: &str,
    seats: &[SeatInfo],
    members: &[MemberInfo],
) -> Result<Vec<Step>, ShellError> {
    if a == b {
        return Err(refused(
            "bad-swap",
            format!("{a} cannot be swapped with itself"),
        ));
    }
    let node_a = held(seats, a)?.holder_name.clone();
    let node_b = held(seats, b)?.holder_name.clone();
    if !members.iter().any(free) {
        return Err(refused(
            "no-spare",
            format!("no live spare to hold {a} while it swaps with {b}"),
        ));
    }
    Ok(vec![
        Step {
            blade: a.into(),
            to: None,
        },
        Step {
            blade: b.into(),
            to: Some(node_a),
        },
        Step {
            blade: a.into(),
            to: Some(node_b),
        },
    ])
}

/// Waits until the node named `name` is a spare holding no blade.
async fn wait_free(client: &mut Client, name: &str) -> Result<(), ShellError> {
    let deadline = std::time::Instant::now() + FREE_WAIT;
    loop {
        let members = fetch_members(client).await?;
        if members.iter().any(|m| m.name == name && free(m)) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(refused(
                "not-free",
                format!(
                    "{name} did not become a spare holding no blade within {} s",
                    FREE_WAIT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Runs `steps` in order; a failed step stops the plan and says what was done before it.
async fn execute(client: &mut Client, steps: &[Step], json: bool) -> Result<String, ShellError> {
    let mut seats: Vec<SeatInfo> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let result = async {
            if let Some(to) = &step.to {
                wait_free(client, to).await?;
            }
            let h = ask_hand_over(client, &step.blade, step.to.clone()).await?;
            wait_moved(client, &h).await
        }
        .await;
        match result {
            Ok(s) => {
                lines.push(format!(
                    "moved {} to {} ({}) at epoch {}",
                    s.blade, s.holder_name, s.holder, s.epoch
                ));
                seats.push(s);
            }
            Err(e) => {
                let done = if lines.is_empty() {
                    "nothing moved".to_string()
                } else {
                    format!("done: {}", lines.join("; "))
                };
                let (code, message) = match e {
                    ClientError::Refused { code, message } => (code, message),
                    other => ("failed".into(), other.to_string()),
                };
                return Err(refused(
                    &code,
                    format!(
                        "step {} of {} ({} to {}) failed: {message}; {done}",
                        i + 1,
                        steps.len(),
                        step.blade,
                        step.to.as_deref().unwrap_or("a spare")
                    ),
                ));
            }
        }
    }
    Ok(if json {
        seats_json(&seats)
    } else {
        lines.join("\n")
    })
}

/// `dcish move`.
pub async fn move_blades(
    client: &mut Client,
    args: &MoveArgs,
    json: bool,
) -> Result<String, ShellError> {
    let plan =
        |seats: &[SeatInfo], members: &[MemberInfo]| match (&args.cascade, &args.blade, &args.to) {
            (Some(text), _, _) => plan_cascade(&parse_cascade(text)?, seats, members),
            (None, Some(blade), Some(to)) => plan_one(blade, to, seats, members),
            _ => Err(refused(
                "usage",
                "give BLADE --to NODE, or --cascade A:B,...".into(),
            )),
        };
    let wait = wait_of(args.at.as_deref())?;
    let mut steps = plan(&fetch_seats(client).await?, &fetch_members(client).await?)?;
    if wait_for(client, wait).await? {
        steps = plan(&fetch_seats(client).await?, &fetch_members(client).await?)?;
    }
    execute(client, &steps, json).await
}

/// `dcish swap`.
pub async fn swap(
    client: &mut Client,
    (a, b): (&str, &str),
    at: Option<&str>,
    json: bool,
) -> Result<String, ShellError> {
    let wait = wait_of(at)?;
    let mut steps = plan_swap(
        a,
        b,
        &fetch_seats(client).await?,
        &fetch_members(client).await?,
    )?;
    if wait_for(client, wait).await? {
        steps = plan_swap(
            a,
            b,
            &fetch_seats(client).await?,
            &fetch_members(client).await?,
        )?;
    }
    execute(client, &steps, json).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(blade: &str, holder: &str, state: &str) -> SeatInfo {
        SeatInfo {
            blade: blade.into(),
            holder: format!("id-{holder}"),
            holder_name: holder.into(),
            epoch: 1,
            state: state.into(),
            helpers: Vec::new(),
            steps: Vec::new(),
        }
    }

    fn member(name: &str, role: &str, blade: Option<&str>) -> MemberInfo {
        MemberInfo {
            id: format!("id-{name}"),
            name: name.into(),
            state: "alive".into(),
            role: role.into(),
            zone: "default".into(),
            incarnation: 0,
            last_heard_ms: 0,
            version: "0".into(),
            addrs: Vec::new(),
            degraded: false,
            resources: [None; 4],
            channels: Vec::new(),
            blade: blade.map(|b| (b.to_owned(), 1)),
        }
    }

    /// Blades a, b, c on their own nodes; spares s and t.
    fn mesh() -> (Vec<SeatInfo>, Vec<MemberInfo>) {
        let seats = vec![
            seat("a", "a", "held"),
            seat("b", "b", "held"),
            seat("c", "c", "held"),
        ];
        let members = vec![
            member("a", "active", Some("a")),
            member("b", "active", Some("b")),
            member("c", "active", Some("c")),
            member("s", "spare", None),
            member("t", "spare", None),
        ];
        (seats, members)
    }

    fn step(blade: &str, to: Option<&str>) -> Step {
        Step {
            blade: blade.into(),
            to: to.map(String::from),
        }
    }

    fn message(e: ShellError) -> String {
        let text = e.to_string();
        assert_eq!(text.lines().count(), 1, "{text}");
        text
    }

    #[test]
    fn a_cascade_runs_from_the_free_end_of_each_chain() {
        let (seats, members) = mesh();
        // The seed's example: A to the new computer, B to A's, C to B's; given in any order.
        let links = parse_cascade("c:b, b:a,a:s").unwrap();
        assert_eq!(
            plan_cascade(&links, &seats, &members).unwrap(),
            [
                step("a", Some("s")),
                step("b", Some("a")),
                step("c", Some("b"))
            ]
        );
        // Two chains side by side.
        let links = parse_cascade("a:s,b:t").unwrap();
        assert_eq!(
            plan_cascade(&links, &seats, &members).unwrap(),
            [step("a", Some("s")), step("b", Some("t"))]
        );
    }

    #[test]
    fn a_cascade_that_cannot_run_is_refused_in_one_line() {
        let (seats, members) = mesh();
        for (text, why) in [
            ("a:b,b:a", "loops"),
            ("a:s,a:t", "moves twice"),
            ("a:s,b:s", "two blades"),
            ("a:a", "onto itself"),
            ("a:b", "does not move in this cascade"),
            ("x:s", "no node holds blade x"),
            ("a:nowhere", "no blade or node named nowhere"),
            ("a", "not BLADE:TARGET"),
            ("a:s,", "not BLADE:TARGET"),
        ] {
            let err = parse_cascade(text)
                .and_then(|links| plan_cascade(&links, &seats, &members))
                .expect_err(text);
            let err = message(err);
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn a_move_needs_a_served_blade_and_a_free_target() {
        let (mut seats, members) = mesh();
        assert_eq!(
            plan_one("a", "s", &seats, &members).unwrap(),
            [step("a", Some("s"))]
        );
        assert!(
            message(plan_one("a", "b", &seats, &members).unwrap_err()).contains("not a live spare")
        );
        assert!(message(plan_one("a", "zz", &seats, &members).unwrap_err())
            .contains("no blade or node named zz"));
        assert!(message(plan_one("zz", "s", &seats, &members).unwrap_err())
            .contains("no node holds blade zz"));
        seats[0].state = "down".into();
        assert!(message(plan_one("a", "s", &seats, &members).unwrap_err()).contains("a is down"));
    }

    #[test]
    fn a_swap_goes_through_a_spare_and_needs_one() {
        let (seats, mut members) = mesh();
        assert_eq!(
            plan_swap("a", "b", &seats, &members).unwrap(),
            [step("a", None), step("b", Some("a")), step("a", Some("b"))]
        );
        assert!(message(plan_swap("a", "a", &seats, &members).unwrap_err()).contains("itself"));
        members.retain(|m| m.role != "spare");
        let err = message(plan_swap("a", "b", &seats, &members).unwrap_err());
        assert!(err.contains("no live spare"), "{err}");
    }

    #[test]
    fn a_time_of_day_is_waited_for_until_its_next_occurrence() {
        let day = 86_400;
        let ten = 10 * 3600;
        let secs = |d: std::time::Duration| d.as_secs();
        assert_eq!(secs(until("10:00", 5 * day + ten).unwrap()), 0);
        assert_eq!(secs(until("10:00:30", 5 * day + ten).unwrap()), 30);
        assert_eq!(secs(until("09:59", 5 * day + ten).unwrap()), day - 60);
        assert_eq!(secs(until("23:59:59", 0).unwrap()), day - 1);
        for bad in [
            "24:00",
            "10:60",
            "9:00",
            "10",
            "10:00:00:00",
            "aa:bb",
            "",
            "10:00:60",
        ] {
            let err = message(until(bad, 0).unwrap_err());
            assert!(err.contains("HH:MM"), "{bad}: {err}");
        }
    }
}
