//! Every example envelope parses, round-trips and validates against the schema.

use std::collections::HashSet;

use dci_proto::control::{
    error_from_payload, members_from_payload, seats_from_payload, ControlRequest, CONTROL_APP,
};
use dci_proto::{Destination, Kind};

use crate::support::{example, example_files, parse, xmllint};

#[test]
fn every_example_parses_round_trips_and_validates_against_the_schema() {
    let files = example_files();
    assert!(files.len() >= 8, "examples are missing: {files:?}");
    let mut kinds = HashSet::new();
    let mut destinations = HashSet::new();
    for file in files {
        let name = file.display();
        let text = std::fs::read_to_string(&file).expect("example is readable");
        let env = parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        env.check().unwrap_or_else(|e| panic!("{name}: {e}"));
        kinds.insert(env.kind);
        destinations.insert(env.target.to.element());

        let again = env.to_xml();
        assert_eq!(
            parse(&again).as_ref(),
            Ok(&env),
            "{name} does not round-trip"
        );

        for (what, xml) in [("", text.as_str()), ("re-serialized ", again.as_str())] {
            if let Some(verdict) = xmllint(xml.as_bytes()) {
                verdict.unwrap_or_else(|e| panic!("{what}{name} fails the schema: {e}"));
            }
        }
    }
    assert_eq!(kinds.len(), 4, "the examples must cover every kind");
    assert_eq!(
        destinations.len(),
        4,
        "the examples must cover every destination"
    );
}

#[test]
fn the_payload_is_kept_byte_for_byte() {
    let env = parse(&example("reply-to-node.xml")).unwrap();
    assert!(env
        .payload
        .as_str()
        .starts_with("<result xmlns=\"urn:dci:exec:1\""));
    assert!(env.payload.as_str().contains("<![CDATA[blade-02\n]]>"));
    assert!(env.to_xml().contains(env.payload.as_str()));

    let text = example("event-to-group-annotated.xml");
    let env = parse(&text).unwrap();
    let start = text.find("<payload>").unwrap() + "<payload>".len();
    let end = text.find("</payload>").unwrap();
    assert_eq!(env.payload.as_str(), &text[start..end]);
    assert_eq!(env.target.to, Destination::Group("ops & on-call".into()));
}

#[test]
fn the_control_examples_carry_typed_control_payloads() {
    let request = parse(&example("control-nodes-request.xml")).unwrap();
    assert_eq!(request.kind, Kind::Request);
    assert_eq!(request.sender.app, CONTROL_APP);
    assert_eq!(request.target.app.as_deref(), Some(CONTROL_APP));
    assert_eq!(
        ControlRequest::from_payload(&request.payload).unwrap(),
        ControlRequest::Nodes
    );

    let reply = parse(&example("control-nodes-reply.xml")).unwrap();
    assert_eq!(reply.correlation, Some(request.id));
    let members = members_from_payload(&reply.payload).unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(members[0].last_heard_ms, 0);
    assert_eq!(members[0].addrs, ["/ip4/127.0.0.1/tcp/7946"]);
    assert_eq!(
        (members[1].state.as_str(), members[1].role.as_str()),
        ("suspect", "spare")
    );

    let seats = parse(&example("control-seats-reply.xml")).unwrap();
    let seats = seats_from_payload(&seats.payload).unwrap();
    assert_eq!(
        (seats[0].holder_name.as_str(), seats[0].epoch),
        ("spare-1", 2)
    );

    let error = parse(&example("control-error.xml")).unwrap();
    assert_eq!(error.kind, Kind::Error);
    assert_eq!(
        error_from_payload(&error.payload),
        Some(("unknown-command".into(), "unknown command <reboot>".into()))
    );
}
