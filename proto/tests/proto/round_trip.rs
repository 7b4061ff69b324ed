//! Arbitrary envelopes round-trip and validate; arbitrary input never panics the parser; and the
//! parser accepts nothing that xmllint refuses.

use dci_proto::notice::{FailureNotice, NOTICE_NAMESPACE};
use dci_proto::{Destination, Envelope, Kind, Limits};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::strategies::{apply, edits, envelope, name};
use crate::support::{example, example_files, parse, xmllint};

/// How many generated envelopes go through xmllint (a process each).
const SCHEMA_SAMPLES: usize = 40;

/// How many accepted mutants go through xmllint (`DCI_PROTO_MUTANT_SAMPLES` overrides it for a
/// deeper run); at most 500 mutants are tried per sample.
const MUTANT_SAMPLES: usize = 40;
const TRIES_PER_SAMPLE: usize = 500;

/// A runner seeded from `DCI_PROTO_SEED` (default 0), so that a failure can be replayed.
fn seeded_runner() -> (TestRunner, u64) {
    let seed = std::env::var("DCI_PROTO_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0u64);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
    (TestRunner::new_with_rng(Config::default(), rng), seed)
}

proptest! {
    #[test]
    fn any_checked_envelope_round_trips(env in envelope()) {
        prop_assert!(env.check().is_ok());
        let xml = env.to_xml();
        prop_assert_eq!(parse(&xml), Ok(env));
    }

    #[test]
    fn kinds_and_destinations_read_back_what_they_display(d in prop_oneof![
        name().prop_map(Destination::Node),
        name().prop_map(Destination::Blade),
        name().prop_map(Destination::Group),
        Just(Destination::Broadcast),
    ]) {
        prop_assert_eq!(d.to_string().parse::<Destination>(), Ok(d));
        for k in [Kind::Request, Kind::Reply, Kind::Event, Kind::Error] {
            prop_assert_eq!(k.to_string().parse::<Kind>(), Ok(k));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Envelope::from_xml(&bytes, &Limits::default());
    }

    #[test]
    fn mutations_of_valid_envelopes_never_panic_the_parser(
        base in prop::sample::select(example_files()),
        edits in edits(),
    ) {
        let text = std::fs::read(&base).expect("example is readable");
        let _ = Envelope::from_xml(&apply(&text, &edits), &Limits::default());
        let tight = Limits { max_envelope_bytes: 4096, max_payload_bytes: 300, max_depth: 2 };
        let _ = Envelope::from_xml(&apply(&text, &edits), &tight);
    }
}

#[test]
fn generated_envelopes_validate_against_the_schema() {
    let mut runner = TestRunner::deterministic();
    let strategy = envelope();
    for _ in 0..SCHEMA_SAMPLES {
        let env = strategy
            .new_tree(&mut runner)
            .expect("a generated envelope")
            .current();
        let xml = env.to_xml();
        match xmllint(xml.as_bytes()) {
            Some(verdict) => verdict.unwrap_or_else(|e| panic!("{xml} fails the schema: {e}")),
            None => return,
        }
    }
}

/// The codec must be at least as strict as the schema. xmllint also validates typed payloads
/// (notices here), which the envelope codec leaves to their owner, so a notice payload must also
/// pass `FailureNotice::from_payload`. Control examples are left out for the same reason.
#[test]
fn mutants_the_parser_accepts_are_accepted_by_xmllint() {
    let corpus: Vec<String> = [
        "request-to-blade.xml",
        "reply-to-node.xml",
        "event-broadcast.xml",
        "error-to-group.xml",
        "event-to-group-annotated.xml",
    ]
    .into_iter()
    .map(example)
    .collect();
    let samples = std::env::var("DCI_PROTO_MUTANT_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(MUTANT_SAMPLES);
    let (mut runner, seed) = seeded_runner();
    let strategy = (prop::sample::select(corpus), edits());
    let mut accepted = 0;
    for _ in 0..samples * TRIES_PER_SAMPLE {
        let (base, edits) = strategy
            .new_tree(&mut runner)
            .expect("a generated mutant")
            .current();
        let mutant = apply(base.as_bytes(), &edits);
        let Ok(env) = Envelope::from_xml(&mutant, &Limits::default()) else {
            continue;
        };
        let typed_refused = env.payload.as_str().contains(NOTICE_NAMESPACE)
            && FailureNotice::from_payload(&env.payload).is_err();
        if mutant == base.as_bytes() || typed_refused {
            continue;
        }
        match xmllint(&mutant) {
            Some(verdict) => verdict.unwrap_or_else(|e| {
                panic!(
                    "accepted by the parser, refused by xmllint (DCI_PROTO_SEED={seed}, {edits:?}):\n{}\n{e}",
                    String::from_utf8_lossy(&mutant)
                )
            }),
            None => return,
        }
        accepted += 1;
        if accepted == samples {
            return;
        }
    }
    panic!(
        "DCI_PROTO_SEED={seed}: only {accepted} mutants were accepted; the corpus is too fragile"
    );
}
