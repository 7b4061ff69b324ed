//! The network is hostile: what the parser refuses, and how it says so.

use dci_proto::{Destination, Envelope, Limits, ProtoError};

use crate::support::parse;

const ID: &str = "6f1c2a3e-8b4d-4c5e-9f60-718293a4b5c6";
const PAYLOAD: &str = "<x xmlns=\"urn:x\"/>";

/// A minimal valid envelope.
fn good() -> String {
    format!(
        "<envelope xmlns=\"urn:dci:envelope:1\" id=\"{ID}\" kind=\"request\" ttl=\"9\" created=\"1\">\
         <sender node=\"n\" app=\"a\"/><target><broadcast/></target><payload>{PAYLOAD}</payload></envelope>"
    )
}

/// `good()` with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    let g = good();
    assert!(g.contains(from), "{from} is not in the test envelope");
    g.replacen(from, to, 1)
}

fn with_payload(payload: &str) -> String {
    edit(PAYLOAD, payload)
}

fn invalid_field(result: Result<Envelope, ProtoError>) -> String {
    match result {
        Err(ProtoError::InvalidField { field, .. }) => field,
        other => panic!("expected InvalidField, got {other:?}"),
    }
}

#[test]
fn a_minimal_envelope_parses() {
    let env = parse(&good()).unwrap();
    assert_eq!(env.target.to, Destination::Broadcast);
    assert_eq!(env.ttl, 9);
    assert_eq!(env.payload.as_str(), PAYLOAD);
}

#[test]
fn doctype_anywhere_is_refused() {
    let laughs = "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]>";
    assert_eq!(parse(&format!("{laughs}{}", good())), Err(ProtoError::Dtd));
    assert_eq!(
        parse(&format!(
            "<?xml version=\"1.0\"?><!DOCTYPE envelope SYSTEM \"file:///etc/passwd\">{}",
            good()
        )),
        Err(ProtoError::Dtd)
    );
    assert_eq!(
        parse(&with_payload(&format!("{laughs}{PAYLOAD}"))),
        Err(ProtoError::Dtd)
    );
    assert_eq!(
        parse(&with_payload("<x xmlns=\"urn:x\"><!doctype y></x>")),
        Err(ProtoError::Dtd)
    );
    assert_eq!(
        parse(&edit("<target>", "<!DOCTYPE t><target>")),
        Err(ProtoError::Dtd)
    );
}

#[test]
fn entity_declarations_anywhere_are_refused() {
    for declaration in [
        "<!ENTITY e 'x'>",
        "<!ELEMENT x ANY>",
        "<!ATTLIST x a CDATA #IMPLIED>",
        "<!NOTATION n SYSTEM 'n'>",
    ] {
        assert_eq!(
            parse(&with_payload(&format!(
                "<x xmlns=\"urn:x\">{declaration}</x>"
            ))),
            Err(ProtoError::Dtd),
            "{declaration}"
        );
        assert_eq!(
            parse(&format!("{declaration}{}", good())),
            Err(ProtoError::Dtd)
        );
    }
}

#[test]
fn markup_declarations_inside_cdata_are_only_text() {
    let payload = "<x xmlns=\"urn:x\"><![CDATA[<!DOCTYPE html><!ENTITY e 'x'>]]></x>";
    assert_eq!(
        parse(&with_payload(payload)).unwrap().payload.as_str(),
        payload
    );
}

#[test]
fn only_predefined_entities_and_character_references_are_expanded() {
    assert!(parse(&with_payload("<x xmlns=\"urn:x\">&lol;</x>")).is_err());
    assert!(parse(&edit("node=\"n\"", "node=\"&nbsp;\"")).is_err());
    let env = parse(&edit(
        "node=\"n\"",
        "node=\"&lt;&#65;&#x42;&amp;&quot;&apos;&gt;\"",
    ))
    .unwrap();
    assert_eq!(env.sender.node, "<AB&\"'>");
    parse(&with_payload(
        "<x xmlns=\"urn:x\" a=\"&amp;&#65;\">&amp;&#x1F600;</x>",
    ))
    .unwrap();
    for bad in [
        "&#0;",
        "&#xFFFE;",
        "&#xD800;",
        "&#1114112;",
        "&#;",
        "&#x;",
        "&amp",
        "&",
    ] {
        assert!(
            parse(&with_payload(&format!("<x xmlns=\"urn:x\">{bad}</x>"))).is_err(),
            "accepted {bad}"
        );
    }
}

#[test]
fn a_wrong_or_missing_namespace_is_refused() {
    assert_eq!(
        parse(&edit("urn:dci:envelope:1", "urn:dci:envelope:2")),
        Err(ProtoError::Namespace)
    );
    assert_eq!(
        parse(&edit(" xmlns=\"urn:dci:envelope:1\"", "")),
        Err(ProtoError::Namespace)
    );
    let prefixed = good()
        .replacen("<envelope xmlns=", "<e:envelope xmlns:e=", 1)
        .replace("</envelope>", "</e:envelope>");
    assert_eq!(parse(&prefixed), Err(ProtoError::Namespace));
}

#[test]
fn an_unknown_root_element_is_named() {
    let other = good()
        .replacen("<envelope", "<message", 1)
        .replace("</envelope>", "</message>");
    assert_eq!(invalid_field(parse(&other)), "root");
}

#[test]
fn payload_elements_need_a_namespace_of_their_own() {
    for bad in [
        "<x/>",
        "<x xmlns=\"\"/>",
        "<x xmlns=\"urn:dci:envelope:1\"/>",
        "text<y xmlns=\"urn:y\"/><x/>",
    ] {
        assert_eq!(invalid_field(parse(&with_payload(bad))), "payload", "{bad}");
    }
    assert!(
        parse(&with_payload("<p:x/>")).is_err(),
        "an undeclared prefix"
    );
    parse(&with_payload(
        "<p:x xmlns:p=\"urn:p\"><y xmlns=\"\"/></p:x> and text",
    ))
    .unwrap();
}

#[test]
fn missing_fields_are_named() {
    for (attribute, field) in [
        (format!(" id=\"{ID}\""), "id"),
        (" kind=\"request\"".into(), "kind"),
        (" ttl=\"9\"".into(), "ttl"),
        (" created=\"1\"".into(), "created"),
        (" node=\"n\"".into(), "sender/@node"),
        (" app=\"a\"".into(), "sender/@app"),
    ] {
        assert_eq!(
            parse(&edit(&attribute, "")),
            Err(ProtoError::MissingField(field))
        );
    }
    for (element, field) in [
        ("<sender node=\"n\" app=\"a\"/>", "sender"),
        ("<target><broadcast/></target>", "target"),
        (&format!("<payload>{PAYLOAD}</payload>"), "payload"),
    ] {
        assert_eq!(
            parse(&edit(element, "")),
            Err(ProtoError::MissingField(field))
        );
    }
    assert!(matches!(
        parse(&edit("<broadcast/>", "")),
        Err(ProtoError::MissingField(_))
    ));
}

#[test]
fn invalid_fields_are_named() {
    for (from, to, field) in [
        (ID, "not-a-uuid", "id"),
        (ID, "6f1c2a3e8b4d4c5e9f60718293a4b5c6", "id"),
        (ID, "{6f1c2a3e-8b4d-4c5e-9f60-718293a4b5c6}", "id"),
        ("kind=\"request\"", "kind=\"shout\"", "kind"),
        ("kind=\"request\"", "kind=\"Request\"", "kind"),
        ("ttl=\"9\"", "ttl=\"256\"", "ttl"),
        ("ttl=\"9\"", "ttl=\"-1\"", "ttl"),
        ("ttl=\"9\"", "ttl=\"+9\"", "ttl"),
        ("ttl=\"9\"", "ttl=\" 9\"", "ttl"),
        ("ttl=\"9\"", "ttl=\"\"", "ttl"),
        (
            "created=\"1\"",
            "created=\"18446744073709551616\"",
            "created",
        ),
        ("created=\"1\"", "created=\"1\" epoch=\"x\"", "epoch"),
        (
            "created=\"1\"",
            "created=\"1\" correlation=\"x\"",
            "correlation",
        ),
        ("app=\"a\"", "app=\"a\" instance=\"x\"", "sender/@instance"),
        ("node=\"n\"", "node=\"\"", "sender/@node"),
        ("app=\"a\"", "app=\"a\" blade=\"\"", "sender/@blade"),
        ("<target>", "<target app=\"\">", "target/@app"),
        ("<broadcast/>", "<node></node>", "target/node"),
        ("<broadcast/>", "<group/>", "target/group"),
        (
            "<broadcast/>",
            "<blade><b xmlns=\"urn:b\"/></blade>",
            "target/blade",
        ),
        (
            "<broadcast/>",
            "<broadcast>x</broadcast>",
            "target/broadcast",
        ),
    ] {
        assert_eq!(invalid_field(parse(&edit(from, to))), field, "{to}");
    }
}

#[test]
fn the_codec_accepts_every_ttl_and_leaves_clamping_to_the_router() {
    assert_eq!(parse(&edit("ttl=\"9\"", "ttl=\"0\"")).unwrap().ttl, 0);
    assert_eq!(parse(&edit("ttl=\"9\"", "ttl=\"255\"")).unwrap().ttl, 255);
    assert_eq!(parse(&edit("ttl=\"9\"", "ttl=\"007\"")).unwrap().ttl, 7);
}

#[test]
fn unknown_header_attributes_and_elements_are_refused() {
    for (from, to, field) in [
        (
            "kind=\"request\"",
            "kind=\"request\" admin=\"yes\"",
            "envelope/@admin",
        ),
        (
            "kind=\"request\"",
            "kind=\"request\" xmlns:p=\"urn:p\"",
            "envelope/@xmlns:p",
        ),
        (
            "kind=\"request\"",
            "kind=\"request\" xml:lang=\"en\"",
            "envelope/@xml:lang",
        ),
        ("app=\"a\"", "app=\"a\" role=\"root\"", "sender/@role"),
        ("<target>", "<target via=\"x\">", "target/@via"),
        (
            "<broadcast/>",
            "<broadcast all=\"1\"/>",
            "target/broadcast/@all",
        ),
        (
            "<payload>",
            "<payload encoding=\"b64\">",
            "payload/@encoding",
        ),
        ("<target>", "<trace/><target>", "envelope"),
        (
            "<target>",
            "<sender node=\"n\" app=\"a\"/><target>",
            "envelope",
        ),
        ("<broadcast/>", "<everyone/>", "target"),
        ("<broadcast/>", "<broadcast/><node>n</node>", "target"),
        ("</payload>", "</payload><signature/>", "envelope"),
    ] {
        assert_eq!(invalid_field(parse(&edit(from, to))), field, "{to}");
    }
}

#[test]
fn text_in_the_header_is_refused() {
    for (from, to) in [
        ("<target>", "hello<target>"),
        ("<target>", "<![CDATA[ ]]><target>"),
        ("<target>", "&#32;<target>"),
        ("<broadcast/>", "x<broadcast/>"),
        (
            "<sender node=\"n\" app=\"a\"/>",
            "<sender node=\"n\" app=\"a\"> </sender>",
        ),
    ] {
        assert!(parse(&edit(from, to)).is_err(), "accepted {to}");
    }
}

#[test]
fn the_header_may_carry_comments_whitespace_and_a_declaration() {
    let decorated = format!(
        "\u{FEFF}<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!-- hi -->\n{}\n<!-- bye -->\n",
        good()
            .replace("<sender", "\n  <!-- s --><?pi x?>\n  <sender")
            .replace("<broadcast/>", " <broadcast><!-- all --></broadcast> ")
            .replace("<target>", "<target>\r\n")
    );
    assert_eq!(parse(&decorated).unwrap(), parse(&good()).unwrap());
    let named = edit(
        "<broadcast/>",
        "<node>\n a<!-- c -->b<![CDATA[&c]]>\r\n</node>",
    );
    assert_eq!(
        parse(&named).unwrap().target.to,
        Destination::Node("\n ab&c\n".into())
    );
}

#[test]
fn malformed_truncated_and_trailing_input_is_refused() {
    let g = good();
    for bad in [
        String::new(),
        "   ".into(),
        "not xml".into(),
        g[..g.len() - 5].to_string(),
        g[..g.len() / 2].to_string(),
        format!("{g}<extra/>"),
        format!("{g}<envelope/>"),
        format!("{g} trailing"),
        format!("{g}<!-- unterminated"),
        format!("text {g}"),
        g.replace("</payload>", "</payloadx>"),
        with_payload("<x xmlns=\"urn:x\">"),
        with_payload("</x>"),
        with_payload("<x xmlns=\"urn:x\" a=\"1\" a=\"2\"/>"),
        with_payload("<x xmlns=\"urn:x\" a=\"<\"/>"),
        with_payload("<x xmlns=\"urn:x\">]]></x>"),
        with_payload("<?xml version=\"1.0\"?><x xmlns=\"urn:x\"/>"),
        edit("kind=\"request\" ttl", "kind=\"request\"ttl"),
        edit("node=\"n\"", "node=n"),
        format!("  <?xml version=\"1.0\"?>{g}"),
    ] {
        assert!(parse(&bad).is_err(), "accepted {bad:?}");
    }
    assert!(Envelope::from_xml(&[0xff, 0xfe, b'<'], &Limits::default()).is_err());
}

#[test]
fn characters_xml_forbids_are_refused() {
    for c in ['\u{0}', '\u{1}', '\u{b}', '\u{1f}', '\u{fffe}', '\u{ffff}'] {
        assert!(
            parse(&edit("node=\"n\"", &format!("node=\"n{c}\""))).is_err(),
            "{c:?}"
        );
        assert!(
            parse(&with_payload(&format!("<x xmlns=\"urn:x\">{c}</x>"))).is_err(),
            "{c:?}"
        );
    }
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let limits = Limits {
        max_envelope_bytes: 64,
        ..Limits::default()
    };
    let garbage = vec![b'<'; 65];
    assert_eq!(
        Envelope::from_xml(&garbage, &limits),
        Err(ProtoError::TooLarge {
            what: "envelope",
            len: 65,
            max: 64
        })
    );
    assert!(Envelope::from_xml(&garbage[..64], &limits)
        .is_err_and(|e| !matches!(e, ProtoError::TooLarge { .. })));
}

#[test]
fn an_oversized_payload_is_refused() {
    let limits = Limits {
        max_payload_bytes: 100,
        ..Limits::default()
    };
    let fits = with_payload(&format!("<x xmlns=\"urn:x\">{}</x>", "a".repeat(100 - 21)));
    Envelope::from_xml(fits.as_bytes(), &limits).unwrap();
    let over = with_payload(&format!("<x xmlns=\"urn:x\">{}</x>", "a".repeat(100 - 20)));
    assert!(matches!(
        Envelope::from_xml(over.as_bytes(), &limits),
        Err(ProtoError::TooLarge {
            what: "payload",
            ..
        })
    ));
    let huge = with_payload(&format!("<x xmlns=\"urn:x\">{}</x>", "<y/>".repeat(10_000)));
    assert!(matches!(
        Envelope::from_xml(huge.as_bytes(), &limits),
        Err(ProtoError::TooLarge {
            what: "payload",
            ..
        })
    ));
}

#[test]
fn nesting_deeper_than_the_limit_is_refused() {
    let limits = Limits {
        max_depth: 8,
        ..Limits::default()
    };
    let nested = |depth: usize| {
        with_payload(&format!(
            "<x xmlns=\"urn:x\">{}<leaf/>{}</x>",
            "<a>".repeat(depth - 2),
            "</a>".repeat(depth - 2)
        ))
    };
    Envelope::from_xml(nested(8).as_bytes(), &limits).unwrap();
    assert_eq!(
        Envelope::from_xml(nested(9).as_bytes(), &limits),
        Err(ProtoError::TooDeep(8))
    );
    let deep = nested(100_000);
    assert_eq!(
        Envelope::from_xml(deep.as_bytes(), &Limits::default()),
        Err(ProtoError::TooDeep(64))
    );
}

#[test]
fn many_attributes_on_one_element_are_checked_in_reasonable_time() {
    let attributes: String = (0..40_000).map(|i| format!(" a{i}=\"\"")).collect();
    let started = std::time::Instant::now();
    parse(&with_payload(&format!("<x xmlns=\"urn:x\"{attributes}/>"))).unwrap();
    let duplicate = with_payload(&format!("<x xmlns=\"urn:x\"{attributes} a7=\"\"/>"));
    assert!(parse(&duplicate).is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn piles_of_namespace_declarations_do_not_slow_name_lookups() {
    let declarations: String = (0..25_000).map(|i| format!(" xmlns:p{i}=\"u\"")).collect();
    let payload = format!(
        "<x xmlns=\"urn:x\"{declarations}>{}</x>",
        "<y/>".repeat(100_000)
    );
    let xml = with_payload(&payload);
    assert!(xml.len() < 1 << 20);
    let started = std::time::Instant::now();
    parse(&xml).unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn every_error_is_one_line() {
    let newline_value = edit("kind=\"request\"", "kind=\"re&#10;quest\nx\"");
    let long_value = edit(
        "kind=\"request\"",
        &format!("kind=\"{}\"", "k".repeat(10_000)),
    );
    let inputs = [
        String::new(),
        "<a".into(),
        format!("<!DOCTYPE x>{}", good()),
        newline_value,
        long_value,
        edit(ID, "\n\n\n"),
        with_payload("<x xmlns=\"urn:x\">\n</y\n>"),
        with_payload("<x\n\nxmlns=\"urn:x\" a\n=\n\"1\" a\n=\"2\"/>"),
        with_payload("<x\u{1}/>"),
    ];
    for input in inputs {
        let e = parse(&input).unwrap_err();
        let line = e.to_string();
        assert!(!line.contains(['\n', '\r']), "{e:?}");
        assert!(line.chars().count() <= 300, "{line}");
    }
}
