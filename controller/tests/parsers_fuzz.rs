//! Property tests of the controller's parsers on hostile input (issue 9 §2):
//! chain files and NF manifests built from fragments of the real grammar,
//! mangled, or arbitrary bytes. Whatever comes in, parsing and compiling
//! return a value or an error with a message, never panic, and a manifest the
//! registry refuses leaves it unchanged.

use controller::chain::ChainSet;
use controller::registry::{NfManifest, Registry, Subscription};
use proptest::prelude::*;

/// Pieces of chain files, valid and not, to splice together.
const CHAIN_PIECES: &[&str] = &[
    "[[chain]]\n",
    "name = \"web\"\n",
    "name = \"\"\n",
    "nfs = [\"ids\", \"counter\"]\n",
    "nfs = [[\"ids\", \"counter\"], \"logger\"]\n",
    "nfs = [[]]\n",
    "nfs = []\n",
    "nfs = [\"ids\", \"ids\"]\n",
    "fail = \"closed\"\n",
    "fail = \"sideways\"\n",
    "on_unmonitored = \"pass\"\n",
    "on_unmonitored = \"drop\"\n",
    "on_unmonitored = 3\n",
    "[chain.match]\n",
    "protocol = \"tcp\"\n",
    "protocol = \"udp\"\n",
    "protocol = 300\n",
    "ports = [80, 443]\n",
    "ports = [70000]\n",
    "prefixes = [\"10.0.0.0/8\"]\n",
    "prefixes = [\"10.0.0.0/99\", \"::1/128\", \"nonsense\"]\n",
    "[chain.fail]\n",
    "ids = \"open\"\n",
    "\"\u{0}\" = 1\n",
    "= =\n",
    "[[chain]\n",
    "name = \"a\u{202e}b\"\n",
];

const EVENTS: &[&str] = &[
    "PKT",
    "PKT/TCP",
    "PKT/UDP",
    "FLOW/TCP",
    "FLOW/TCP/SYN",
    "DATA_RDY",
    "DATA_RDY/CLIENT",
    "FLOW/END",
    "ALERT",
    "ALERT/IDS",
    "",
    "/",
    "PKT//TCP",
    "NOPE/X",
];

fn chain_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::collection::vec(proptest::sample::select(CHAIN_PIECES), 0..24).prop_map(|v| v.concat()),
        1 => any::<String>(),
        1 => proptest::collection::vec(any::<u8>(), 0..512).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

fn manifest() -> impl Strategy<Value = NfManifest> {
    let name = prop_oneof![
        proptest::sample::select(&["ids", "counter", "logger", "", " ", "a/b", "x\u{0}"][..]).prop_map(String::from),
        "[a-z]{1,8}",
        any::<String>(),
    ];
    let event = prop_oneof![proptest::sample::select(EVENTS).prop_map(String::from), any::<String>()];
    (
        name,
        proptest::collection::vec(event.clone(), 0..6),
        proptest::collection::vec(event.clone(), 0..3),
        proptest::collection::vec(event, 0..3),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(name, subs, publications, declares, modifies_packets, requests_stack_actions)| NfManifest {
            name,
            version: "0".into(),
            subscriptions: subs.into_iter().map(|event| Subscription { event, filter: None }).collect(),
            publications,
            declares,
            modifies_packets,
            requests_stack_actions,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn chain_files_parse_and_compile_without_panicking(text in chain_text(), nfs in proptest::collection::vec(manifest(), 0..5)) {
        let mut reg = Registry::new();
        for m in nfs {
            let _ = reg.register(m);
        }
        match ChainSet::parse(&text, "fuzz.toml") {
            Ok(set) => {
                if let Err(e) = set.compile(&reg) {
                    prop_assert!(!e.to_string().is_empty());
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty(), "an error says what is wrong"),
        }
    }

    #[test]
    fn manifests_register_or_are_refused_cleanly(nfs in proptest::collection::vec(manifest(), 1..8)) {
        let mut reg = Registry::new();
        for m in nfs {
            let name = m.name.clone();
            let before = reg.list().count();
            match reg.register(m) {
                Ok(_) => prop_assert!(reg.get(&name).is_some()),
                Err(e) => {
                    prop_assert!(!e.to_string().is_empty());
                    prop_assert_eq!(reg.list().count(), before, "a refused manifest changed the registry");
                }
            }
        }
    }

    #[test]
    fn manifest_json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), text in any::<String>()) {
        let _ = serde_json::from_slice::<NfManifest>(&bytes);
        let _ = serde_json::from_str::<NfManifest>(&text);
        let _ = serde_json::from_slice::<controller::api::Request>(&bytes);
    }
}
