//! The envelope codec against its examples, its schema (through xmllint, an independent validator),
//! hostile input, and arbitrary values.

use std::path::{Path, PathBuf};
use std::process::Command;

use dci_proto::{Destination, Envelope, Kind, Limits, Payload, ProtoError, Sender, Target};
use proptest::prelude::*;

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "examples missing");
    files
}

/// Validates `xml` with `xmllint --schema proto/dci.xsd`; `None` when xmllint is not installed.
fn xmllint(xml: &str) -> Option<Result<(), String>> {
    let dir = tempfile_dir();
    let file = dir.join(format!("{}.xml", uuid::Uuid::new_v4()));
    std::fs::write(&file, xml).unwrap();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("dci.xsd");
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(schema)
        .arg(&file)
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&file);
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    })
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("dci-proto-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn parse(xml: &str) -> Result<Envelope, ProtoError> {
    Envelope::from_xml(xml.as_bytes(), &Limits::default())
}

#[test]
fn every_example_parses_round_trips_and_validates_against_the_schema() {
    let mut kinds = std::collections::HashSet::new();
    let mut dests = std::collections::HashSet::new();
    for file in examples() {
        let text = std::fs::read_to_string(&file).unwrap();
        let env = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        kinds.insert(env.kind);
        dests.insert(env.target.to.element());
        let again = parse(&env.to_xml()).unwrap();
        assert_eq!(again, env, "{} does not round-trip", file.display());
        match xmllint(&text) {
            Some(r) => r.unwrap_or_else(|e| panic!("{} fails the schema: {e}", file.display())),
            None => eprintln!("xmllint not installed: schema check skipped"),
        }
        if let Some(r) = xmllint(&env.to_xml()) {
            r.unwrap_or_else(|e| panic!("re-serialized {} fails the schema: {e}", file.display()));
        }
    }
    assert_eq!(kinds.len(), 4, "examples must cover every kind");
    assert_eq!(dests.len(), 4, "examples must cover every destination");
}

#[test]
fn the_payload_is_kept_byte_for_byte() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/reply-to-node.xml"),
    )
    .unwrap();
    let env = parse(&text).unwrap();
    assert!(env.payload.as_str().contains("<![CDATA[blade-02\n]]>"));
    assert!(env.to_xml().contains(env.payload.as_str()));
}

const GOOD: &str = r#"<envelope xmlns="urn:dci:envelope:1" id="6f1c2a3e-8b4d-4c5e-9f60-718293a4b5c6" kind="request" ttl="9" created="1"><sender node="n" app="a"/><target><broadcast/></target><payload><x xmlns="urn:x"/></payload></envelope>"#;

#[test]
fn a_minimal_envelope_parses() {
    let env = parse(GOOD).unwrap();
    assert_eq!(env.target.to, Destination::Broadcast);
    assert_eq!(env.ttl, 9);
}

#[test]
fn doctype_anywhere_is_refused() {
    let billion_laughs = format!("<!DOCTYPE lolz [<!ENTITY lol \"lol\">]>{GOOD}");
    assert_eq!(parse(&billion_laughs), Err(ProtoError::Dtd));
    let inside = GOOD.replace("<x xmlns=\"urn:x\"/>", "<!DOCTYPE x><x xmlns=\"urn:x\"/>");
    assert_eq!(parse(&inside), Err(ProtoError::Dtd));
}

#[test]
fn undeclared_entities_are_refused_not_expanded() {
    let bad = GOOD.replace("<x xmlns=\"urn:x\"/>", "<x xmlns=\"urn:x\">&lol;</x>");
    assert!(parse(&bad).is_err());
    let ok = GOOD.replace("<x xmlns=\"urn:x\"/>", "<x xmlns=\"urn:x\">&amp;&#65;</x>");
    parse(&ok).unwrap();
}

#[test]
fn a_wrong_or_missing_namespace_is_refused() {
    assert_eq!(
        parse(&GOOD.replace("urn:dci:envelope:1", "urn:dci:envelope:2")),
        Err(ProtoError::Namespace)
    );
    assert_eq!(
        parse(&GOOD.replace(" xmlns=\"urn:dci:envelope:1\"", "")),
        Err(ProtoError::Namespace)
    );
    let unqualified_payload = GOOD.replace("<x xmlns=\"urn:x\"/>", "<x/>");
    assert!(matches!(
        parse(&unqualified_payload),
        Err(ProtoError::InvalidField { .. })
    ));
}

#[test]
fn missing_and_invalid_fields_are_named() {
    let no_id = GOOD.replace(" id=\"6f1c2a3e-8b4d-4c5e-9f60-718293a4b5c6\"", "");
    assert_eq!(parse(&no_id), Err(ProtoError::MissingField("id")));
    let bad_ttl = GOOD.replace("ttl=\"9\"", "ttl=\"256\"");
    assert!(
        matches!(parse(&bad_ttl), Err(ProtoError::InvalidField { ref field, .. }) if field == "ttl")
    );
    let bad_kind = GOOD.replace("kind=\"request\"", "kind=\"shout\"");
    assert!(
        matches!(parse(&bad_kind), Err(ProtoError::InvalidField { ref field, .. }) if field == "kind")
    );
    let extra = GOOD.replace("kind=\"request\"", "kind=\"request\" admin=\"yes\"");
    assert!(matches!(
        parse(&extra),
        Err(ProtoError::InvalidField { .. })
    ));
    let no_payload = GOOD.replace("<payload><x xmlns=\"urn:x\"/></payload>", "");
    assert_eq!(parse(&no_payload), Err(ProtoError::MissingField("payload")));
    let ttl0 = GOOD.replace("ttl=\"9\"", "ttl=\"0\"");
    assert_eq!(parse(&ttl0).unwrap().ttl, 0);
}

#[test]
fn malformed_truncated_and_trailing_input_is_refused() {
    for bad in [
        "",
        "not xml",
        &GOOD[..GOOD.len() - 5],
        &format!("{GOOD}<extra/>"),
        &GOOD.replace("</payload>", "</payloadx>"),
        &GOOD.replace("<x xmlns=\"urn:x\"/>", "<x xmlns=\"urn:x\">"),
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad}");
    }
}

#[test]
fn oversized_and_too_deep_input_is_refused() {
    let limits = Limits {
        max_envelope_bytes: 100,
        ..Limits::default()
    };
    assert!(matches!(
        Envelope::from_xml(GOOD.as_bytes(), &limits),
        Err(ProtoError::TooLarge { .. })
    ));
    let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
    let nested = GOOD.replace(
        "<x xmlns=\"urn:x\"/>",
        &format!("<x xmlns=\"urn:x\">{deep}</x>"),
    );
    assert!(matches!(parse(&nested), Err(ProtoError::TooDeep(_))));
}

#[test]
fn every_error_is_one_line() {
    let errors = [
        parse("").unwrap_err(),
        parse("<a").unwrap_err(),
        parse(&format!("<!DOCTYPE x>{GOOD}")).unwrap_err(),
    ];
    for e in errors {
        assert!(!e.to_string().contains('\n'), "{e:?}");
    }
}

fn name() -> impl Strategy<Value = String> {
    "[ -~\u{e9}\u{4e2d}]{1,20}"
}

fn payload() -> impl Strategy<Value = Payload> {
    let text = "[ -~]{0,20}".prop_map(|t| quick_xml::escape::escape(t.as_str()).into_owned());
    (text.clone(), text, 0usize..4).prop_map(|(a, b, shape)| {
        let xml = match shape {
            0 => format!("<p xmlns=\"urn:p\">{a}</p>"),
            1 => format!(
                "<q:p xmlns:q=\"urn:q\" q:attr=\"{b}\"><q:c>{a}</q:c><!-- {} --></q:p>",
                b.replace("--", "")
            ),
            2 => format!(
                "<p xmlns=\"urn:p\"><![CDATA[{}]]></p> tail",
                a.replace("]]>", "")
            ),
            _ => String::new(),
        };
        Payload::new(xml).unwrap()
    })
}

fn envelope() -> impl Strategy<Value = Envelope> {
    let uuid = any::<u128>().prop_map(uuid::Uuid::from_u128);
    let kind = prop_oneof![
        Just(Kind::Request),
        Just(Kind::Reply),
        Just(Kind::Event),
        Just(Kind::Error)
    ];
    let dest = prop_oneof![
        name().prop_map(Destination::Node),
        name().prop_map(Destination::Blade),
        name().prop_map(Destination::Group),
        Just(Destination::Broadcast),
    ];
    (
        (uuid.clone(), kind, any::<u8>(), any::<u64>()),
        (
            name(),
            proptest::option::of(name()),
            name(),
            proptest::option::of(uuid.clone()),
        ),
        (
            dest,
            proptest::option::of(name()),
            proptest::option::of(uuid.clone()),
        ),
        (
            proptest::option::of(uuid),
            proptest::option::of(any::<u64>()),
            payload(),
        ),
    )
        .prop_map(
            |((id, kind, ttl, created_ms), s, t, (correlation, epoch, payload))| Envelope {
                id,
                kind,
                ttl,
                created_ms,
                sender: Sender {
                    node: s.0,
                    blade: s.1,
                    app: s.2,
                    instance: s.3,
                },
                target: Target {
                    to: t.0,
                    app: t.1,
                    instance: t.2,
                },
                correlation,
                epoch,
                payload,
            },
        )
}

proptest! {
    #[test]
    fn any_envelope_round_trips(env in envelope()) {
        prop_assert_eq!(parse(&env.to_xml()).unwrap(), env);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Envelope::from_xml(&bytes, &Limits::default());
    }

    #[test]
    fn mutations_of_a_valid_envelope_never_panic_the_parser(
        cuts in proptest::collection::vec((0usize..400, any::<u8>()), 1..8)
    ) {
        let mut bytes = GOOD.as_bytes().to_vec();
        for (at, b) in cuts {
            let at = at % bytes.len();
            bytes[at] = b;
        }
        let _ = Envelope::from_xml(&bytes, &Limits::default());
    }
}

#[test]
fn generated_envelopes_validate_against_the_schema() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    for _ in 0..24 {
        let env = envelope().new_tree(&mut runner).unwrap().current();
        match xmllint(&env.to_xml()) {
            Some(r) => r.unwrap_or_else(|e| panic!("{} fails the schema: {e}", env.to_xml())),
            None => return eprintln!("xmllint not installed: schema check skipped"),
        }
    }
}
