//! Typed payloads of the control socket (namespace [`CONTROL_NAMESPACE`]), shared by the agent and
//! `dcish` so that both sides agree on every command.
//!
//! The control socket carries ordinary envelopes (see the crate docs and `proto/README.md`) whose
//! sender and target application is [`CONTROL_APP`]. A request's payload is one command element;
//! the answer is a reply whose payload is the command's result, or an error envelope whose payload
//! is [`error_payload`].
//!
//! Parsing is as strict as the envelope header: the payload must be exactly one element in the
//! control namespace, with the attributes and children `proto/control.xsd` defines and no others.
//!
//! Adding a command: a [`ControlRequest`] variant, its element in `proto/control.xsd`, its name in
//! [`ControlRequest::element`] and [`ControlRequest::from_payload`], and, if its reply is not an
//! existing one, a reply type with `*_to_payload`/`*_from_payload` here. The compiler then points
//! at every `match` on `ControlRequest` in the agent.

use std::rc::Rc;

use crate::error::shown;
use crate::xml::{self, Child, Node};
use crate::{Limits, Payload, ProtoError, NAMESPACE};

/// The namespace of control payloads; the version is part of it.
pub const CONTROL_NAMESPACE: &str = "urn:dci:control:1";

/// The application name of the control socket's sender and target.
pub const CONTROL_APP: &str = "control";

/// Member states as spelled on the wire.
pub const STATES: [&str; 5] = ["alive", "unreachable-link", "suspect", "dead", "left"];

/// Member roles as spelled on the wire.
pub const ROLES: [&str; 2] = ["active", "spare"];

/// Liveness channels as spelled on the wire: direct and indirect probes, and the member's own
/// announcements relayed by third parties.
pub const CHANNELS: [&str; 2] = ["probe", "relay"];

/// Heartbeat channel states: `ok` (a valid heartbeat within the window), `failed`, `idle`
/// (nothing expected yet), `disabled`.
pub const CHANNEL_STATES: [&str; 4] = ["ok", "failed", "idle", "disabled"];

/// Event kinds as spelled on the wire.
pub const EVENT_KINDS: [&str; 9] = [
    "joined",
    "alive",
    "suspect",
    "dead",
    "left",
    "metadata-changed",
    "link-unreachable",
    "degraded",
    "recovered",
];

/// Seat states as spelled on the wire, as the answering agent sees the seat: `held` (the holder
/// is up, and serves it if it is the answering agent), `restoring` (the answering agent won it and
/// is restoring its data), `down` (the holder is dead or left, or it is the answering agent and
/// holds no lease: nobody serves the blade until an election moves it).
pub const SEAT_STATES: [&str; 3] = ["held", "restoring", "down"];

/// A command sent by `dcish` to its local agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRequest {
    /// The member table, `<nodes/>`; answered by [`members_to_payload`].
    Nodes,
    /// The recent membership events, `<events/>`; answered by [`events_to_payload`].
    Events,
    /// The agent's counters (refused input, notices), `<counters/>`; answered by
    /// [`counters_to_payload`].
    Counters,
    /// The seat table, `<seats/>`; answered by [`seats_to_payload`].
    Seats,
    /// The failure notices this agent received lately (its own included), `<notices/>`;
    /// answered by [`notices_to_payload`].
    Notices,
    /// Look for members again now, `<discover/>`: the agent dials its seeds afresh (mDNS, when
    /// on, keeps looking by itself); answered by [`members_to_payload`] with the table as it is.
    Discover,
    /// An operator declares `blade`'s holder failed: it hands the blade over to `to` (a node
    /// name) or to the first spare in rank order, `<failover blade="B" to="N"/>`; answered by
    /// [`handover_to_payload`] once the holder was asked.
    Failover {
        /// The blade.
        blade: String,
        /// The node that should take it, by name; the best-ranked spare when absent.
        to: Option<String>,
    },
    /// An operator removes a dead or departed member for good, `<forget node="N"/>` (a name
    /// or node id): it no longer counts in election quorums, on any live node. Answered by
    /// [`forgotten_to_payload`].
    Forget {
        /// The member, by name or node id.
        node: String,
    },
}

impl ControlRequest {
    /// The command's element name in the control namespace.
    pub fn element(&self) -> &'static str {
        match self {
            ControlRequest::Nodes => "nodes",
            ControlRequest::Events => "events",
            ControlRequest::Counters => "counters",
            ControlRequest::Seats => "seats",
            ControlRequest::Discover => "discover",
            ControlRequest::Notices => "notices",
            ControlRequest::Failover { .. } => "failover",
            ControlRequest::Forget { .. } => "forget",
        }
    }

    /// The request payload.
    pub fn to_payload(&self) -> Payload {
        let mut s = format!("<{} xmlns=\"{CONTROL_NAMESPACE}\"", self.element());
        match self {
            ControlRequest::Nodes
            | ControlRequest::Events
            | ControlRequest::Counters
            | ControlRequest::Seats
            | ControlRequest::Discover
            | ControlRequest::Notices => {}
            ControlRequest::Failover { blade, to } => {
                push_attribute(&mut s, "blade", blade);
                if let Some(to) = to {
                    push_attribute(&mut s, "to", to);
                }
            }
            ControlRequest::Forget { node } => push_attribute(&mut s, "node", node),
        }
        s.push_str("/>");
        Payload::trusted(s)
    }

    /// Reads a request payload: exactly one command element in the control namespace. An unknown
    /// command is `InvalidField { field: "command", .. }`.
    pub fn from_payload(payload: &Payload) -> Result<ControlRequest, ProtoError> {
        let root = only_element(payload, "command", CONTROL_NAMESPACE)?;
        let request = match root.local.as_str() {
            "nodes" => ControlRequest::Nodes,
            "events" => ControlRequest::Events,
            "counters" => ControlRequest::Counters,
            "seats" => ControlRequest::Seats,
            "discover" => ControlRequest::Discover,
            "notices" => ControlRequest::Notices,
            "failover" => {
                let [blade, to] = attributes(&root, "failover", ["blade", "to"])?;
                no_content(&root, "failover")?;
                return Ok(ControlRequest::Failover {
                    blade: required("failover/@blade", blade)?.to_owned(),
                    to: to.map(str::to_owned),
                });
            }
            "forget" => {
                let [node] = attributes(&root, "forget", ["node"])?;
                no_content(&root, "forget")?;
                return Ok(ControlRequest::Forget {
                    node: required("forget/@node", node)?.to_owned(),
                });
            }
            other => {
                return Err(ProtoError::invalid(
                    "command",
                    format!("unknown command <{}>", shown(other)),
                ))
            }
        };
        // The other commands take no arguments.
        let [] = attributes(&root, request.element(), [])?;
        no_content(&root, request.element())?;
        Ok(request)
    }
}

/// One row of the member table (`dcish nodes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member's node id (libp2p peer id).
    pub id: String,
    /// The member's name (its blade name, or its configured node name).
    pub name: String,
    /// The membership state, one of [`STATES`].
    pub state: String,
    /// The role, one of [`ROLES`].
    pub role: String,
    /// The zone it runs in.
    pub zone: String,
    /// The member's SWIM incarnation.
    pub incarnation: u64,
    /// Milliseconds since the answering agent last heard from it; 0 for the agent itself.
    pub last_heard_ms: u64,
    /// The member's agent version.
    pub version: String,
    /// Its listen addresses (multiaddrs), in the order the member gave them.
    pub addrs: Vec<String>,
    /// Whether it reports sustained degradation.
    pub degraded: bool,
    /// Its resource figures in percent: CPU, memory, disk, load per core (absent when unknown).
    pub resources: [Option<u8>; 4],
    /// This agent's heartbeat status table for it (empty for the agent itself).
    pub channels: Vec<ChannelInfo>,
    /// The blade it acts as now and the epoch of its seat, from its metadata.
    pub blade: Option<(String, u64)>,
}

/// One row of the heartbeat status table: how one liveness channel sees one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The channel, one of [`CHANNELS`].
    pub name: String,
    /// Whether the channel is in use.
    pub enabled: bool,
    /// The last valid heartbeat's serial (probe sequence, or announced incarnation); 0 if none.
    pub serial: u64,
    /// Milliseconds since the last valid heartbeat; absent if none yet.
    pub last_ms: Option<u64>,
    /// One of [`CHANNEL_STATES`].
    pub state: String,
}

/// One row of the seat table (`dcish seats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatInfo {
    /// The blade's name.
    pub blade: String,
    /// The holder's node id.
    pub holder: String,
    /// The holder's member name (empty when the answering agent does not know it).
    pub holder_name: String,
    /// The epoch the holder won.
    pub epoch: u64,
    /// One of [`SEAT_STATES`].
    pub state: String,
    /// The helpers serving its read-only traffic, as its holder announces them.
    pub helpers: Vec<HelperInfo>,
    /// The steps of the takeover that seated it, when the answering agent is its holder and
    /// took it over (empty otherwise).
    pub steps: Vec<StepInfo>,
}

/// One step of a takeover (`dcish status`, `dcish seats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepInfo {
    /// Which step: `seat`, `restore`, `peerlets`, `notice`, `adopt` or `replicas`.
    pub step: String,
    /// How it stands, in words.
    pub what: String,
    /// When it last changed, in milliseconds after the seat was won.
    pub after_ms: u64,
}

/// A helper of a loaded blade (`dcish seats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperInfo {
    /// Its node id.
    pub node: String,
    /// Its member name (empty when unknown).
    pub name: String,
}

/// The reply payload of [`ControlRequest::Seats`].
pub fn seats_to_payload(seats: &[SeatInfo]) -> Payload {
    let mut s = format!("<seats xmlns=\"{CONTROL_NAMESPACE}\">");
    for seat in seats {
        s.push_str("<seat");
        push_attribute(&mut s, "blade", &seat.blade);
        push_attribute(&mut s, "holder", &seat.holder);
        push_attribute(&mut s, "holder-name", &seat.holder_name);
        push_attribute(&mut s, "epoch", &seat.epoch.to_string());
        push_attribute(&mut s, "state", &seat.state);
        s.push('>');
        for h in &seat.helpers {
            s.push_str("<helper");
            push_attribute(&mut s, "node", &h.node);
            push_attribute(&mut s, "name", &h.name);
            s.push_str("/>");
        }
        for step in &seat.steps {
            s.push_str("<step");
            push_attribute(&mut s, "name", &step.step);
            push_attribute(&mut s, "what", &step.what);
            push_attribute(&mut s, "after-ms", &step.after_ms.to_string());
            s.push_str("/>");
        }
        s.push_str("</seat>");
    }
    s.push_str("</seats>");
    Payload::trusted(s)
}

/// Reads the reply payload of [`ControlRequest::Seats`]; refuses a state outside
/// [`SEAT_STATES`].
pub fn seats_from_payload(payload: &Payload) -> Result<Vec<SeatInfo>, ProtoError> {
    let root = named_element(payload, "seats", CONTROL_NAMESPACE)?;
    let [] = attributes(&root, "seats", [])?;
    elements(&root, "seats", &["seat"])?
        .into_iter()
        .map(|e| {
            let [blade, holder, holder_name, epoch, state] = attributes(
                e,
                "seat",
                ["blade", "holder", "holder-name", "epoch", "state"],
            )?;
            let children = elements(e, "seat", &["helper", "step"])?;
            let (helpers, steps): (Vec<&Node>, Vec<&Node>) =
                children.into_iter().partition(|c| c.local == "helper");
            let steps = steps
                .into_iter()
                .map(|t| {
                    let [name, what, after] = attributes(t, "step", ["name", "what", "after-ms"])?;
                    no_content(t, "step")?;
                    Ok(StepInfo {
                        step: required("step/@name", name)?.to_owned(),
                        what: required("step/@what", what)?.to_owned(),
                        after_ms: number("step/@after-ms", after)?,
                    })
                })
                .collect::<Result<Vec<_>, ProtoError>>()?;
            let helpers = helpers
                .into_iter()
                .map(|h| {
                    let [node, name] = attributes(h, "helper", ["node", "name"])?;
                    no_content(h, "helper")?;
                    Ok(HelperInfo {
                        node: required("helper/@node", node)?.to_owned(),
                        name: name.unwrap_or_default().to_owned(),
                    })
                })
                .collect::<Result<Vec<_>, ProtoError>>()?;
            Ok(SeatInfo {
                helpers,
                steps,
                blade: required("seat/@blade", blade)?.to_owned(),
                holder: required("seat/@holder", holder)?.to_owned(),
                holder_name: required("seat/@holder-name", holder_name)?.to_owned(),
                epoch: number("seat/@epoch", epoch)?,
                state: one_of("seat/@state", required("seat/@state", state)?, &SEAT_STATES)?
                    .to_owned(),
            })
        })
        .collect()
}

/// The answer to [`ControlRequest::Failover`]: who was asked to hand which blade to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverInfo {
    /// The blade.
    pub blade: String,
    /// The holder's node id, asked to release it.
    pub holder: String,
    /// The epoch it holds (the successor claims a higher one).
    pub epoch: u64,
    /// The node id that should take it.
    pub to: String,
    /// Its member name.
    pub to_name: String,
}

/// The reply payload of [`ControlRequest::Failover`].
pub fn handover_to_payload(h: &HandoverInfo) -> Payload {
    let mut s = format!("<handover xmlns=\"{CONTROL_NAMESPACE}\"");
    push_attribute(&mut s, "blade", &h.blade);
    push_attribute(&mut s, "holder", &h.holder);
    push_attribute(&mut s, "epoch", &h.epoch.to_string());
    push_attribute(&mut s, "to", &h.to);
    push_attribute(&mut s, "to-name", &h.to_name);
    s.push_str("/>");
    Payload::trusted(s)
}

/// Reads the reply payload of [`ControlRequest::Failover`].
pub fn handover_from_payload(payload: &Payload) -> Result<HandoverInfo, ProtoError> {
    let root = named_element(payload, "handover", CONTROL_NAMESPACE)?;
    let [blade, holder, epoch, to, to_name] = attributes(
        &root,
        "handover",
        ["blade", "holder", "epoch", "to", "to-name"],
    )?;
    no_content(&root, "handover")?;
    Ok(HandoverInfo {
        blade: required("handover/@blade", blade)?.to_owned(),
        holder: required("handover/@holder", holder)?.to_owned(),
        epoch: number("handover/@epoch", epoch)?,
        to: required("handover/@to", to)?.to_owned(),
        to_name: required("handover/@to-name", to_name)?.to_owned(),
    })
}

/// The reply payload of [`ControlRequest::Forget`]: the member's node id and name.
pub fn forgotten_to_payload(id: &str, name: &str) -> Payload {
    let mut s = format!("<forgotten xmlns=\"{CONTROL_NAMESPACE}\"");
    push_attribute(&mut s, "id", id);
    push_attribute(&mut s, "name", name);
    s.push_str("/>");
    Payload::trusted(s)
}

/// Reads the reply payload of [`ControlRequest::Forget`] as `(id, name)`.
pub fn forgotten_from_payload(payload: &Payload) -> Result<(String, String), ProtoError> {
    let root = named_element(payload, "forgotten", CONTROL_NAMESPACE)?;
    let [id, name] = attributes(&root, "forgotten", ["id", "name"])?;
    no_content(&root, "forgotten")?;
    Ok((
        required("forgotten/@id", id)?.to_owned(),
        required("forgotten/@name", name)?.to_owned(),
    ))
}

/// The resource attributes, in [`MemberInfo::resources`] order.
const RESOURCE_ATTRS: [&str; 4] = ["cpu", "memory", "disk", "load"];

/// One entry of the recent-events list (`dcish events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    /// The member's node id.
    pub id: String,
    /// The member's name.
    pub name: String,
    /// One of [`EVENT_KINDS`].
    pub kind: String,
    /// When the answering agent saw it, ms since the Unix epoch.
    pub at_ms: u64,
    /// More, for people.
    pub detail: String,
}

/// The reply payload of [`ControlRequest::Nodes`]. Values are escaped; characters XML cannot
/// carry become U+FFFD. `state` and `role` are written as given: a value outside [`STATES`] or
/// [`ROLES`] makes the payload one that [`members_from_payload`] refuses.
pub fn members_to_payload(members: &[MemberInfo]) -> Payload {
    let mut s = format!("<members xmlns=\"{CONTROL_NAMESPACE}\">");
    for m in members {
        s.push_str("<member");
        for (name, value) in [
            ("id", m.id.as_str()),
            ("name", m.name.as_str()),
            ("state", m.state.as_str()),
            ("role", m.role.as_str()),
            ("zone", m.zone.as_str()),
            ("incarnation", m.incarnation.to_string().as_str()),
            ("last-heard-ms", m.last_heard_ms.to_string().as_str()),
            ("version", m.version.as_str()),
            ("degraded", if m.degraded { "true" } else { "false" }),
        ] {
            push_attribute(&mut s, name, value);
        }
        for (name, value) in RESOURCE_ATTRS.iter().zip(m.resources) {
            if let Some(v) = value {
                push_attribute(&mut s, name, &v.to_string());
            }
        }
        if let Some((blade, epoch)) = &m.blade {
            push_attribute(&mut s, "blade", blade);
            push_attribute(&mut s, "epoch", &epoch.to_string());
        }
        if m.addrs.is_empty() && m.channels.is_empty() {
            s.push_str("/>");
            continue;
        }
        s.push('>');
        for a in &m.addrs {
            s.push_str("<addr>");
            xml::escape_text(&mut s, a);
            s.push_str("</addr>");
        }
        for c in &m.channels {
            s.push_str("<channel");
            push_attribute(&mut s, "name", &c.name);
            push_attribute(&mut s, "enabled", if c.enabled { "true" } else { "false" });
            push_attribute(&mut s, "serial", &c.serial.to_string());
            if let Some(ms) = c.last_ms {
                push_attribute(&mut s, "last-ms", &ms.to_string());
            }
            push_attribute(&mut s, "state", &c.state);
            s.push_str("/>");
        }
        s.push_str("</member>");
    }
    s.push_str("</members>");
    Payload::trusted(s)
}

fn push_attribute(s: &mut String, name: &str, value: &str) {
    s.push(' ');
    s.push_str(name);
    s.push_str("=\"");
    xml::escape_attribute(s, value);
    s.push('"');
}

/// The reply payload of [`ControlRequest::Events`].
pub fn events_to_payload(events: &[EventInfo]) -> Payload {
    let mut s = format!("<events xmlns=\"{CONTROL_NAMESPACE}\">");
    for e in events {
        s.push_str("<event");
        push_attribute(&mut s, "id", &e.id);
        push_attribute(&mut s, "name", &e.name);
        push_attribute(&mut s, "kind", &e.kind);
        push_attribute(&mut s, "at", &e.at_ms.to_string());
        s.push('>');
        xml::escape_text(&mut s, &e.detail);
        s.push_str("</event>");
    }
    s.push_str("</events>");
    Payload::trusted(s)
}

/// One failure notice as the answering agent received it (`dcish notices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeInfo {
    /// The notice.
    pub notice: crate::notice::FailureNotice,
    /// The name (or node id, if unknown) of the member that sent it.
    pub from: String,
}

/// The reply payload of [`ControlRequest::Notices`], oldest first.
pub fn notices_to_payload(notices: &[NoticeInfo]) -> Payload {
    let mut s = format!("<notices xmlns=\"{CONTROL_NAMESPACE}\">");
    for n in notices {
        let f = &n.notice;
        s.push_str("<notice");
        push_attribute(&mut s, "from", &n.from);
        push_attribute(&mut s, "level", f.level.as_str());
        push_attribute(&mut s, "part", f.part.as_str());
        push_attribute(&mut s, "id", &f.id);
        for (name, value) in [("name", &f.name), ("address", &f.address)] {
            if let Some(v) = value {
                push_attribute(&mut s, name, v);
            }
        }
        push_attribute(&mut s, "at", &f.at_ms.to_string());
        s.push('>');
        xml::escape_text(&mut s, &f.detail);
        s.push_str("</notice>");
    }
    s.push_str("</notices>");
    Payload::trusted(s)
}

/// Reads the reply payload of [`ControlRequest::Notices`].
pub fn notices_from_payload(payload: &Payload) -> Result<Vec<NoticeInfo>, ProtoError> {
    let root = named_element(payload, "notices", CONTROL_NAMESPACE)?;
    let [] = attributes(&root, "notices", [])?;
    elements(&root, "notices", &["notice"])?
        .into_iter()
        .map(|e| {
            let [from, level, part, id, name, address, at] = attributes(
                e,
                "notice",
                ["from", "level", "part", "id", "name", "address", "at"],
            )?;
            Ok(NoticeInfo {
                from: required("notice/@from", from)?.to_owned(),
                notice: crate::notice::FailureNotice {
                    level: required("notice/@level", level)?.parse()?,
                    part: required("notice/@part", part)?.parse()?,
                    id: required("notice/@id", id)?.to_owned(),
                    name: name.map(str::to_owned),
                    address: address.map(str::to_owned),
                    at_ms: number("notice/@at", at)?,
                    detail: text_content(e, "notice")?,
                },
            })
        })
        .collect()
}

/// The reply payload of [`ControlRequest::Counters`]: named counters, in the given order.
pub fn counters_to_payload(counters: &[(String, u64)]) -> Payload {
    let mut s = format!("<counters xmlns=\"{CONTROL_NAMESPACE}\">");
    for (name, value) in counters {
        s.push_str("<counter");
        push_attribute(&mut s, "name", name);
        push_attribute(&mut s, "value", &value.to_string());
        s.push_str("/>");
    }
    s.push_str("</counters>");
    Payload::trusted(s)
}

/// Reads the reply payload of [`ControlRequest::Counters`].
pub fn counters_from_payload(payload: &Payload) -> Result<Vec<(String, u64)>, ProtoError> {
    let root = named_element(payload, "counters", CONTROL_NAMESPACE)?;
    let [] = attributes(&root, "counters", [])?;
    elements(&root, "counters", &["counter"])?
        .into_iter()
        .map(|c| {
            let [name, value] = attributes(c, "counter", ["name", "value"])?;
            no_content(c, "counter")?;
            Ok((
                required("counter/@name", name)?.to_owned(),
                number("counter/@value", value)?,
            ))
        })
        .collect()
}

/// Reads the reply payload of [`ControlRequest::Events`]; refuses a kind outside
/// [`EVENT_KINDS`].
pub fn events_from_payload(payload: &Payload) -> Result<Vec<EventInfo>, ProtoError> {
    let root = named_element(payload, "events", CONTROL_NAMESPACE)?;
    let [] = attributes(&root, "events", [])?;
    elements(&root, "events", &["event"])?
        .into_iter()
        .map(|e| {
            let [id, name, kind, at] = attributes(e, "event", ["id", "name", "kind", "at"])?;
            let kind = one_of("event/@kind", required("event/@kind", kind)?, &EVENT_KINDS)?;
            Ok(EventInfo {
                id: required("event/@id", id)?.to_owned(),
                name: required("event/@name", name)?.to_owned(),
                kind: kind.to_owned(),
                at_ms: number("event/@at", at)?,
                detail: text_content(e, "event")?,
            })
        })
        .collect()
}

fn one_of<'v>(
    field: &'static str,
    value: &'v str,
    allowed: &[&str],
) -> Result<&'v str, ProtoError> {
    if allowed.contains(&value) {
        Ok(value)
    } else {
        Err(ProtoError::invalid(
            field,
            format!("{} is not one of {}", shown(value), allowed.join(", ")),
        ))
    }
}

fn boolean(field: &'static str, value: Option<&str>) -> Result<bool, ProtoError> {
    match required(field, value)? {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(ProtoError::invalid(
            field,
            format!("{} is not true or false", shown(other)),
        )),
    }
}

fn percent(field: &'static str, value: Option<&str>) -> Result<Option<u8>, ProtoError> {
    value
        .map(|v| {
            let n = number(field, Some(v))?;
            u8::try_from(n)
                .map_err(|_| ProtoError::invalid(field, format!("{} is out of range", shown(v))))
        })
        .transpose()
}

/// Reads the reply payload of [`ControlRequest::Nodes`]. Refuses a state or role outside
/// [`STATES`]/[`ROLES`], a missing or unknown attribute, and any element the schema does not
/// define.
pub fn members_from_payload(payload: &Payload) -> Result<Vec<MemberInfo>, ProtoError> {
    let root = named_element(payload, "members", CONTROL_NAMESPACE)?;
    let [] = attributes(&root, "members", [])?;
    elements(&root, "members", &["member"])?
        .into_iter()
        .map(member)
        .collect()
}

fn member(e: &Node) -> Result<MemberInfo, ProtoError> {
    let [id, name, state, role, zone, incarnation, last_heard, version, degraded, cpu, memory, disk, load, blade, epoch] =
        attributes(
            e,
            "member",
            [
                "id",
                "name",
                "state",
                "role",
                "zone",
                "incarnation",
                "last-heard-ms",
                "version",
                "degraded",
                "cpu",
                "memory",
                "disk",
                "load",
                "blade",
                "epoch",
            ],
        )?;
    let blade = match (blade, epoch) {
        (Some(b), e @ Some(_)) => Some((b.to_owned(), number("member/@epoch", e)?)),
        (None, None) => None,
        (Some(_), None) => return Err(ProtoError::MissingField("member/@epoch")),
        (None, Some(_)) => return Err(ProtoError::MissingField("member/@blade")),
    };
    let state = required("member/@state", state)?;
    if !STATES.contains(&state) {
        return Err(ProtoError::invalid(
            "member/@state",
            format!("{} is not one of {}", shown(state), STATES.join(", ")),
        ));
    }
    let role = required("member/@role", role)?;
    if !ROLES.contains(&role) {
        return Err(ProtoError::invalid(
            "member/@role",
            format!("{} is not one of {}", shown(role), ROLES.join(", ")),
        ));
    }
    let children = elements(e, "member", &["addr", "channel"])?;
    // The schema's order: every address, then every channel.
    if let Some(w) = children
        .windows(2)
        .find(|w| w[0].local == "channel" && w[1].local == "addr")
    {
        return Err(ProtoError::invalid(
            "member",
            format!("<{}> after <channel>", w[1].local),
        ));
    }
    let mut addrs = Vec::new();
    let mut channels = Vec::new();
    for c in children {
        if c.local == "addr" {
            let [] = attributes(c, "addr", [])?;
            addrs.push(text_content(c, "member/addr")?);
            continue;
        }
        let [name, enabled, serial, last_ms, state] = attributes(
            c,
            "channel",
            ["name", "enabled", "serial", "last-ms", "state"],
        )?;
        no_content(c, "channel")?;
        channels.push(ChannelInfo {
            name: one_of("channel/@name", required("channel/@name", name)?, &CHANNELS)?.to_owned(),
            enabled: boolean("channel/@enabled", enabled)?,
            serial: number("channel/@serial", serial)?,
            last_ms: last_ms
                .map(|v| number("channel/@last-ms", Some(v)))
                .transpose()?,
            state: one_of(
                "channel/@state",
                required("channel/@state", state)?,
                &CHANNEL_STATES,
            )?
            .to_owned(),
        });
    }
    Ok(MemberInfo {
        id: required("member/@id", id)?.to_owned(),
        name: required("member/@name", name)?.to_owned(),
        state: state.to_owned(),
        role: role.to_owned(),
        zone: required("member/@zone", zone)?.to_owned(),
        incarnation: number("member/@incarnation", incarnation)?,
        last_heard_ms: number("member/@last-heard-ms", last_heard)?,
        version: required("member/@version", version)?.to_owned(),
        addrs,
        degraded: boolean("member/@degraded", degraded)?,
        resources: [
            percent("member/@cpu", cpu)?,
            percent("member/@memory", memory)?,
            percent("member/@disk", disk)?,
            percent("member/@load", load)?,
        ],
        channels,
        blade,
    })
}

/// An error payload: a machine-readable code (e.g. `unknown-command`, `bad-envelope`) and a
/// message for people, kept to one line (line breaks become spaces).
pub fn error_payload(code: &str, message: &str) -> Payload {
    let message: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut s = format!("<error xmlns=\"{CONTROL_NAMESPACE}\" code=\"");
    xml::escape_attribute(&mut s, code);
    s.push_str("\">");
    xml::escape_text(&mut s, &message);
    s.push_str("</error>");
    Payload::trusted(s)
}

/// Reads an error payload as `(code, message)`; `None` if the payload is not one.
pub fn error_from_payload(payload: &Payload) -> Option<(String, String)> {
    let root = only_element(payload, "error", CONTROL_NAMESPACE).ok()?;
    if root.local != "error" {
        return None;
    }
    let [code] = attributes(&root, "error", ["code"]).ok()?;
    let message = text_content(&root, "error").ok()?;
    Some((code?.to_owned(), message))
}

/// The one element a typed payload consists of, in `namespace`; whitespace, comments and
/// processing instructions may surround it.
pub(crate) fn only_element(
    payload: &Payload,
    field: &'static str,
    namespace: &str,
) -> Result<Node, ProtoError> {
    let tree = xml::parse_tree(payload.as_str(), NAMESPACE, Limits::default().max_depth)?;
    let mut root = None;
    for child in tree {
        match child {
            Child::Text(t) if t.bytes().all(xml::is_space) => {}
            Child::Text(_) => {
                return Err(ProtoError::invalid(
                    "payload",
                    "text around the control element",
                ))
            }
            Child::Element(_) if root.is_some() => {
                return Err(ProtoError::invalid(field, "more than one element"))
            }
            Child::Element(e) => root = Some(e),
        }
    }
    let root = root.ok_or(ProtoError::MissingField(field))?;
    if root.namespace.as_deref() != Some(namespace) {
        return Err(ProtoError::invalid(
            "payload",
            format!(
                "<{}> is in namespace {}, not {namespace}",
                shown(&root.local),
                shown(root.namespace.as_deref().unwrap_or(""))
            ),
        ));
    }
    Ok(root)
}

/// The one element of a typed reply payload, which must be `<name>` in `namespace`.
pub(crate) fn named_element(
    payload: &Payload,
    name: &'static str,
    namespace: &str,
) -> Result<Node, ProtoError> {
    let root = only_element(payload, name, namespace)?;
    if root.local != name {
        return Err(ProtoError::invalid(
            "payload",
            format!("expected <{name}>, found <{}>", shown(&root.local)),
        ));
    }
    Ok(root)
}

/// The values of `allowed` attributes, in that order; any other attribute is refused.
pub(crate) fn attributes<'n, const N: usize>(
    e: &'n Node,
    element: &str,
    allowed: [&str; N],
) -> Result<[Option<&'n str>; N], ProtoError> {
    let mut values = [None; N];
    for (name, value) in &e.attributes {
        match allowed.iter().position(|a| a == name) {
            Some(i) => values[i] = Some(value.as_str()),
            None => {
                return Err(ProtoError::invalid(
                    format!("{element}/@{}", shown(name)),
                    "unknown attribute",
                ))
            }
        }
    }
    Ok(values)
}

/// The children of `e`, which must all be elements named in `names`, in the control namespace
/// (whitespace between them aside).
fn elements<'n>(e: &'n Node, element: &str, names: &[&str]) -> Result<Vec<&'n Node>, ProtoError> {
    let mut out = Vec::new();
    for child in &e.children {
        match child {
            Child::Text(t) if t.bytes().all(xml::is_space) => {}
            Child::Text(_) => return Err(ProtoError::invalid(element, "text is not allowed here")),
            Child::Element(c) if names.contains(&c.local.as_str()) && in_control(c) => out.push(c),
            Child::Element(c) => {
                return Err(ProtoError::invalid(
                    element,
                    format!("unexpected <{}>", shown(&c.local)),
                ))
            }
        }
    }
    Ok(out)
}

fn in_control(e: &Node) -> bool {
    e.namespace.as_ref().map(Rc::as_ref) == Some(CONTROL_NAMESPACE)
}

/// The text of an element that may hold only text.
pub(crate) fn text_content(e: &Node, field: &str) -> Result<String, ProtoError> {
    let mut out = String::new();
    for child in &e.children {
        match child {
            Child::Text(t) => out.push_str(t),
            Child::Element(_) => return Err(ProtoError::invalid(field, "may hold only text")),
        }
    }
    Ok(out)
}

/// Refuses any content in an element the schema declares empty.
pub(crate) fn no_content(e: &Node, field: &str) -> Result<(), ProtoError> {
    if e.children.is_empty() {
        Ok(())
    } else {
        Err(ProtoError::invalid(field, "must be empty"))
    }
}

pub(crate) fn required<'v>(
    field: &'static str,
    value: Option<&'v str>,
) -> Result<&'v str, ProtoError> {
    value.ok_or(ProtoError::MissingField(field))
}

pub(crate) fn number(field: &'static str, value: Option<&str>) -> Result<u64, ProtoError> {
    let value = required(field, value)?;
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProtoError::invalid(
            field,
            format!("{} is not an unsigned decimal number", shown(value)),
        ));
    }
    value
        .parse()
        .map_err(|_| ProtoError::invalid(field, format!("{} is out of range", shown(value))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> MemberInfo {
        MemberInfo {
            id: "12D3KooWx".into(),
            name: "blade-01 \"<&>\"".into(),
            state: "alive".into(),
            role: "spare".into(),
            zone: "z&1\tz".into(),
            incarnation: 3,
            last_heard_ms: 120,
            version: "0.1.0".into(),
            addrs: vec![
                "/ip4/127.0.0.1/tcp/7946".into(),
                String::new(),
                " /dns4/a&b\r\n ".into(),
            ],
            degraded: true,
            blade: Some(("blade-<2>".into(), 7)),
            resources: [Some(12), None, Some(100), Some(255)],
            channels: vec![
                ChannelInfo {
                    name: "probe".into(),
                    enabled: true,
                    serial: 41,
                    last_ms: Some(150),
                    state: "ok".into(),
                },
                ChannelInfo {
                    name: "relay".into(),
                    enabled: false,
                    serial: 0,
                    last_ms: None,
                    state: "disabled".into(),
                },
            ],
        }
    }

    #[test]
    fn the_member_table_round_trips() {
        let mut bare = member();
        bare.addrs.clear();
        bare.channels.clear();
        bare.resources = [None; 4];
        bare.blade = None;
        let rows = vec![member(), bare];
        let payload = members_to_payload(&rows);
        Payload::new(payload.as_str()).unwrap();
        assert_eq!(members_from_payload(&payload).unwrap(), rows);
        assert_eq!(members_from_payload(&members_to_payload(&[])).unwrap(), []);
    }

    #[test]
    fn a_state_or_role_outside_the_allowed_sets_is_refused() {
        let mut m = member();
        m.state = "zombie".into();
        let err = members_from_payload(&members_to_payload(&[m])).unwrap_err();
        assert!(err.to_string().contains("member/@state"), "{err}");
        let mut m = member();
        m.role = "primary".into();
        assert!(members_from_payload(&members_to_payload(&[m])).is_err());
    }

    #[test]
    fn member_tables_with_extra_or_missing_parts_are_refused() {
        let ns = CONTROL_NAMESPACE;
        let full = "id=\"a\" name=\"b\" state=\"alive\" role=\"active\" zone=\"z\" incarnation=\"1\" last-heard-ms=\"0\" version=\"v\" degraded=\"false\"";
        let ch = "<channel name=\"probe\" enabled=\"true\" serial=\"1\" state=\"ok\"/>";
        for bad in [
            format!("<members xmlns=\"{ns}\"><member {full} extra=\"1\"/></members>"),
            format!("<members xmlns=\"{ns}\"><member id=\"a\"/></members>"),
            format!("<members xmlns=\"{ns}\"><member {full}><port/></member></members>"),
            format!("<members xmlns=\"{ns}\"><member {full}><addr><b xmlns=\"urn:b\"/></addr></member></members>"),
            format!("<members xmlns=\"{ns}\">text<member {full}/></members>"),
            format!("<members xmlns=\"urn:other\"><member {full}/></members>"),
            format!("<members xmlns=\"{ns}\"/><members xmlns=\"{ns}\"/>"),
            format!("<members xmlns=\"{ns}\"><member {}/></members>", full.replace("\"1\"", "\"-1\"")),
            format!("<members xmlns=\"{ns}\"><member {} cpu=\"256\"/></members>", full),
            format!("<members xmlns=\"{ns}\"><member {}/></members>", full.replace("false", "no")),
            format!("<members xmlns=\"{ns}\"><member {full}>{ch}<addr>x</addr></member></members>"),
            format!("<members xmlns=\"{ns}\"><member {full}>{}</member></members>", ch.replace("probe", "smoke")),
            format!("<members xmlns=\"{ns}\"><member {full}>{}</member></members>", ch.replace("ok", "fine")),
            format!("<members xmlns=\"{ns}\"><member {full}>{}</member></members>", ch.replace("/>", ">x</channel>")),
        ] {
            let payload = Payload::new(bad.as_str()).unwrap();
            assert!(members_from_payload(&payload).is_err(), "accepted {bad}");
        }
        let prefixed = format!("<c:members xmlns:c=\"{ns}\"><c:member {full}/></c:members>");
        let rows = members_from_payload(&Payload::new(prefixed).unwrap()).unwrap();
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn the_event_list_round_trips_and_refuses_unknown_kinds() {
        let events = vec![EventInfo {
            id: "12D3KooWx".into(),
            name: "blade-<1>".into(),
            kind: "link-unreachable".into(),
            at_ms: 1_795_305_600_900,
            detail: "probes fail & relay ok".into(),
        }];
        let payload = events_to_payload(&events);
        Payload::new(payload.as_str()).unwrap();
        assert_eq!(events_from_payload(&payload).unwrap(), events);
        let mut bad = events.clone();
        bad[0].kind = "exploded".into();
        assert!(events_from_payload(&events_to_payload(&bad)).is_err());
        assert_eq!(
            ControlRequest::from_payload(&ControlRequest::Events.to_payload()).unwrap(),
            ControlRequest::Events
        );
        let counters = vec![("membership-forged".to_owned(), 3), ("a&b".to_owned(), 0)];
        let payload = counters_to_payload(&counters);
        Payload::new(payload.as_str()).unwrap();
        assert_eq!(counters_from_payload(&payload).unwrap(), counters);
        let bad = format!(
            "<counters xmlns=\"{CONTROL_NAMESPACE}\"><counter name=\"x\" value=\"-1\"/></counters>"
        );
        assert!(counters_from_payload(&Payload::new(bad).unwrap()).is_err());
    }

    #[test]
    fn the_seat_table_round_trips_and_refuses_unknown_states() {
        let seats = vec![SeatInfo {
            blade: "blade-<1>".into(),
            holder: "12D3KooWx".into(),
            holder_name: "spare & 1".into(),
            epoch: 2,
            state: "restoring".into(),
            helpers: vec![HelperInfo {
                node: "12D3KooWy".into(),
                name: "spare-2".into(),
            }],
            steps: vec![
                StepInfo {
                    step: "seat".into(),
                    what: "won at epoch 2 <from b1>".into(),
                    after_ms: 0,
                },
                StepInfo {
                    step: "adopt".into(),
                    what: "fetching archive 1.2 (2 of 3) & more".into(),
                    after_ms: 1_250,
                },
            ],
        }];
        let payload = seats_to_payload(&seats);
        Payload::new(payload.as_str()).unwrap();
        assert_eq!(seats_from_payload(&payload).unwrap(), seats);
        assert_eq!(seats_from_payload(&seats_to_payload(&[])).unwrap(), []);
        let mut bad = seats.clone();
        bad[0].state = "vacant".into();
        assert!(seats_from_payload(&seats_to_payload(&bad)).is_err());
        let ns = CONTROL_NAMESPACE;
        let extra = format!("<seats xmlns=\"{ns}\"><seat blade=\"b\" holder=\"h\" holder-name=\"\" epoch=\"1\" state=\"held\" x=\"1\"/></seats>");
        assert!(seats_from_payload(&Payload::new(extra).unwrap()).is_err());
        let seat = "<seat blade=\"b\" holder=\"h\" holder-name=\"\" epoch=\"1\" state=\"held\">";
        for step in [
            "<step name=\"seat\" what=\"w\" after-ms=\"-1\"/>",
            "<step name=\"seat\" after-ms=\"1\"/>",
            "<step name=\"seat\" what=\"w\" after-ms=\"1\">text</step>",
        ] {
            let bad = format!("<seats xmlns=\"{ns}\">{seat}{step}</seat></seats>");
            assert!(
                seats_from_payload(&Payload::new(bad).unwrap()).is_err(),
                "{step}"
            );
        }
        assert_eq!(
            ControlRequest::from_payload(&ControlRequest::Seats.to_payload()).unwrap(),
            ControlRequest::Seats
        );
    }

    #[test]
    fn failover_and_forget_requests_and_their_answers_round_trip_and_the_blade_is_required() {
        for to in [None, Some("spare <1>".to_string())] {
            let r = ControlRequest::Failover {
                blade: "b&1".into(),
                to,
            };
            assert_eq!(ControlRequest::from_payload(&r.to_payload()).unwrap(), r);
        }
        let ns = CONTROL_NAMESPACE;
        for bad in [
            format!("<failover xmlns=\"{ns}\"/>"),
            format!("<failover xmlns=\"{ns}\" blade=\"b\" now=\"yes\"/>"),
            format!("<failover xmlns=\"{ns}\" blade=\"b\">x</failover>"),
        ] {
            let payload = Payload::new(bad.as_str()).unwrap();
            assert!(
                ControlRequest::from_payload(&payload).is_err(),
                "accepted {bad}"
            );
        }
        let r = ControlRequest::Forget { node: "b&1".into() };
        assert_eq!(ControlRequest::from_payload(&r.to_payload()).unwrap(), r);
        let p = forgotten_to_payload("12D3KooWa", "b<1>");
        Payload::new(p.as_str()).unwrap();
        assert_eq!(
            forgotten_from_payload(&p).unwrap(),
            ("12D3KooWa".to_string(), "b<1>".to_string())
        );
        let h = HandoverInfo {
            blade: "b1".into(),
            holder: "12D3KooWa".into(),
            epoch: 3,
            to: "12D3KooWb".into(),
            to_name: "spare".into(),
        };
        let payload = handover_to_payload(&h);
        Payload::new(payload.as_str()).unwrap();
        assert_eq!(handover_from_payload(&payload).unwrap(), h);
    }

    #[test]
    fn requests_and_errors_round_trip() {
        for r in [
            ControlRequest::Nodes,
            ControlRequest::Discover,
            ControlRequest::Notices,
        ] {
            assert_eq!(ControlRequest::from_payload(&r.to_payload()).unwrap(), r);
        }
        let n = NoticeInfo {
            notice: crate::notice::FailureNotice {
                level: crate::notice::Level::SystemDown,
                part: crate::notice::Part::Node,
                id: "12D3KooWa".into(),
                name: Some("b<2>".into()),
                address: None,
                at_ms: 7,
                detail: "silent for 3 s & more".into(),
            },
            from: "b1".into(),
        };
        let p = notices_to_payload(std::slice::from_ref(&n));
        assert_eq!(notices_from_payload(&p).unwrap(), vec![n]);
        crate::backup::tests::assert_valid(
            concat!(env!("CARGO_MANIFEST_DIR"), "/control.xsd"),
            &[p, ControlRequest::Notices.to_payload()],
        );
        let p = ControlRequest::Nodes.to_payload();
        let e = error_payload("unknown-command", "no <such> command\nreally & \u{1}truly");
        Payload::new(e.as_str()).unwrap();
        assert_eq!(
            error_from_payload(&e).unwrap(),
            (
                "unknown-command".into(),
                "no <such> command really &  truly".into()
            )
        );
        assert!(error_from_payload(&p).is_none());
        assert!(error_from_payload(&Payload::empty()).is_none());
    }

    #[test]
    fn unknown_commands_foreign_namespaces_and_arguments_are_refused() {
        let ns = CONTROL_NAMESPACE;
        for bad in [
            format!("<reboot xmlns=\"{ns}\"/>"),
            "<nodes xmlns=\"urn:other\"/>".to_owned(),
            format!("<nodes xmlns=\"{ns}\" all=\"yes\"/>"),
            format!("<nodes xmlns=\"{ns}\">all</nodes>"),
            format!("<nodes xmlns=\"{ns}\"/><nodes xmlns=\"{ns}\"/>"),
            String::new(),
        ] {
            let payload = Payload::new(bad.as_str()).unwrap();
            assert!(
                ControlRequest::from_payload(&payload).is_err(),
                "accepted {bad}"
            );
        }
        let err = ControlRequest::from_payload(
            &Payload::new(format!("<reboot xmlns=\"{ns}\"/>")).unwrap(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, ProtoError::InvalidField { field, .. } if field == "command"),
            "{err:?}"
        );
    }
}
