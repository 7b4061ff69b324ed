//! Control payloads inside envelopes, as the agent and dcish exchange them.

use dci_proto::control::{
    error_from_payload, error_payload, events_from_payload, events_to_payload,
    members_from_payload, members_to_payload, ChannelInfo, ControlRequest, EventInfo, MemberInfo,
    CHANNELS, CHANNEL_STATES, CONTROL_APP, EVENT_KINDS, ROLES, STATES,
};
use dci_proto::{Destination, Envelope, Kind, Sender, Target};
use proptest::prelude::*;

use crate::strategies::name;
use crate::support::{parse, xmllint};

fn shell() -> Sender {
    Sender {
        node: "dcish".into(),
        blade: None,
        app: CONTROL_APP.into(),
        instance: None,
    }
}

fn agent() -> Sender {
    Sender {
        node: "12D3KooWAgent".into(),
        blade: None,
        app: CONTROL_APP.into(),
        instance: None,
    }
}

fn channel() -> impl Strategy<Value = ChannelInfo> {
    (
        prop::sample::select(&CHANNELS[..]),
        any::<bool>(),
        any::<u64>(),
        any::<Option<u64>>(),
        prop::sample::select(&CHANNEL_STATES[..]),
    )
        .prop_map(|(name, enabled, serial, last_ms, state)| ChannelInfo {
            name: name.into(),
            enabled,
            serial,
            last_ms,
            state: state.into(),
        })
}

fn member() -> impl Strategy<Value = MemberInfo> {
    (
        (
            name(),
            name(),
            prop::sample::select(&STATES[..]),
            prop::sample::select(&ROLES[..]),
        ),
        (name(), any::<u64>(), any::<u64>(), name()),
        prop::collection::vec(name(), 0..3),
        (
            any::<bool>(),
            any::<[Option<u8>; 4]>(),
            prop::collection::vec(channel(), 0..3),
            prop::option::of((name(), any::<u64>())),
        ),
    )
        .prop_map(
            |(
                (id, name, state, role),
                (zone, incarnation, last_heard_ms, version),
                addrs,
                (degraded, resources, channels, blade),
            )| {
                MemberInfo {
                    id,
                    name,
                    state: state.into(),
                    role: role.into(),
                    zone,
                    incarnation,
                    last_heard_ms,
                    version,
                    addrs,
                    degraded,
                    resources,
                    channels,
                    blade,
                }
            },
        )
}

fn nodes_request() -> Envelope {
    Envelope::request(
        shell(),
        Target {
            to: Destination::Node("local".into()),
            app: Some(CONTROL_APP.into()),
            instance: None,
        },
        ControlRequest::Nodes.to_payload(),
    )
}

#[test]
fn a_nodes_exchange_travels_in_envelopes_that_validate() {
    let request = nodes_request();
    let wire = request.to_xml();
    let received = parse(&wire).unwrap();
    assert_eq!(
        ControlRequest::from_payload(&received.payload).unwrap(),
        ControlRequest::Nodes
    );
    let rows = vec![MemberInfo {
        id: "12D3KooWAgent".into(),
        name: "blade-01".into(),
        state: "alive".into(),
        role: "active".into(),
        zone: "default".into(),
        incarnation: 3,
        last_heard_ms: 0,
        version: "0.1.0".into(),
        addrs: vec!["/ip4/127.0.0.1/tcp/7946".into()],
        degraded: false,
        resources: [Some(3), Some(41), None, Some(120)],
        blade: Some(("blade-01".into(), 1)),
        channels: vec![ChannelInfo {
            name: "relay".into(),
            enabled: true,
            serial: 7,
            last_ms: Some(1200),
            state: "ok".into(),
        }],
    }];
    let reply = received.reply_to(agent(), Kind::Reply, members_to_payload(&rows));
    assert_eq!(reply.correlation, Some(request.id));
    assert_eq!(reply.target.to, Destination::Node("dcish".into()));
    let reply_wire = reply.to_xml();
    assert_eq!(
        members_from_payload(&parse(&reply_wire).unwrap().payload).unwrap(),
        rows
    );

    let events = vec![EventInfo {
        id: "12D3KooWAgent".into(),
        name: "blade-01".into(),
        kind: EVENT_KINDS[6].into(),
        at_ms: 1,
        detail: "probes fail".into(),
    }];
    let events_wire = received
        .reply_to(agent(), Kind::Reply, events_to_payload(&events))
        .to_xml();
    assert_eq!(
        events_from_payload(&parse(&events_wire).unwrap().payload).unwrap(),
        events
    );

    let refusal = received.reply_to(
        agent(),
        Kind::Error,
        error_payload("unknown-command", "unknown command <reboot>"),
    );
    let refusal_wire = refusal.to_xml();
    assert_eq!(
        error_from_payload(&parse(&refusal_wire).unwrap().payload),
        Some(("unknown-command".into(), "unknown command <reboot>".into()))
    );
    for xml in [wire, reply_wire, events_wire, refusal_wire] {
        if let Some(verdict) = xmllint(xml.as_bytes()) {
            verdict.unwrap_or_else(|e| panic!("{xml} fails the schema: {e}"));
        }
    }
}

proptest! {
    #[test]
    fn any_member_table_round_trips_through_an_envelope(rows in prop::collection::vec(member(), 0..4)) {
        let reply = nodes_request().reply_to(agent(), Kind::Reply, members_to_payload(&rows));
        let received = parse(&reply.to_xml()).unwrap();
        prop_assert_eq!(members_from_payload(&received.payload).unwrap(), rows);
    }

    #[test]
    fn any_error_round_trips_as_one_line(code in name(), message in name()) {
        let payload = error_payload(&code, &message);
        let (c, m) = error_from_payload(&payload).unwrap();
        prop_assert_eq!(c, code);
        prop_assert!(!m.contains(['\n', '\r']));
        prop_assert_eq!(m.chars().count(), message.chars().count());
    }
}
