//! `l4lb`: an L4 load balancer NF in the style of Katran
//! (facebookincubator/katran), Meta's XDP load balancer.
//!
//! Packets to a VIP (address, port, protocol) go to one of its backends,
//! and every packet of a connection to the same one, with no state shared
//! between boxes that run the same configuration: the choice comes from
//! the packet (a server id) or from a consistent hash of its flow, and a
//! per-worker table only keeps connections where they are while the
//! backends change.
//!
//! # Modules
//!
//! | module | owns |
//! |---|---|
//! | [`hash`] | Katran's hash functions: MurmurHash3_x64_64, jhash, folly's IP-address hash |
//! | [`maglev`] | the Maglev ring as Katran builds it (65537 slots, V1 and V2 weights) |
//! | [`table`] | a worker's connection table: bounded, exact LRU |
//! | [`config`] | the TOML file and its checks (`l4lb --check`) |
//! | [`lb`] | [`Lb`]: the packet function [`Lb::process`] and the counters |
//! | [`nf`] | the NF around it (`nf_sdk`) |
//!
//! # Picking a backend
//!
//! For each packet to a VIP, the first of (see [`lb`] for every step):
//!
//! 1. **a server id in the packet**: on QUIC VIPs, in the destination
//!    connection id of packets other than Initial and 0-RTT (the first
//!    byte's top two bits give the version: v1 a 16-bit id in bits 2..18,
//!    v2 bytes 1..4, v3 bytes 1..5; at least 8 bytes); on TCP packets
//!    other than SYNs, in an option of kind `0xB7`, length 6 (Katran's TCP
//!    packet routing, TPR: the id is the option's four bytes as a
//!    little-endian `u32`, as Katran reads and writes it on x86), at most
//!    15 options looked at. An id of 0, a bad length or an id no backend
//!    has falls back to the next steps (counted);
//! 2. **the worker's connection table** (not for SYNs): per worker, LRU,
//!    `table_capacity` entries, evictions counted; UDP entries expire
//!    `udp_timeout_ms` after their flow's last packet;
//! 3. **the VIP's Maglev ring** at Katran's flow hash (jhash of the source
//!    address and both ports, the VIP left out) modulo 65537. SYNs always
//!    come here, and the answer is written to the table (also what a server
//!    id found), so the connection stays put when the ring changes.
//!
//! Each backend's place on the ring comes from Katran's endpoint hash of
//! its address (`folly::IPAddress::hash`): for the same VIPs and backends,
//! `l4lb` builds Katran's rings and picks Katran's backends, packet for
//! packet. Two boxes with one config agree on every new connection, and a
//! box that takes over another's flows (ECMP changing its mind) sends
//! them where they were.
//!
//! # Sending it there
//!
//! - **L2 direct server return** (`mode = "dsr"`, the default, and the only
//!   mode of the NF): the destination MAC becomes the backend's; the rest
//!   of the packet is untouched. The backend holds the VIP on `lo` (and
//!   answers no ARP for it), accepts the packet as its own and replies to
//!   the client directly.
//! - **IPIP** (`mode = "ipip"`, in the packet function): Katran's
//!   encapsulation, byte for byte: an outer IPv4 header (source
//!   `172.16.x.y` from the client's port and address as Katran's
//!   `create_encap_ipv4_src`, TTL 64, ID 0, the inner ToS) or, for IPv6
//!   backends, an outer IPv6 header (source `100::x:y` likewise, next
//!   header 4 or 41), Ethernet to `gateway_mac`. An NF cannot grow a packet
//!   (`nf_sdk` rewrites in place), so `l4lb` refuses `ipip` at start-up; the
//!   mode is checked at the packet level against Katran's fixtures.
//!
//! # Conformance with Katran
//!
//! The ring is tested with the vectors of Katran's own unit tests
//! (`tests/katran_ring.rs`): `MaglevHashTest.cpp` (weights [2, 1] on 7
//! slots give 4 : 3 under V1 and 5 : 2 under V2, empty and single-endpoint
//! rings), `CHHelpersTest.cpp` (400 equal backends within 1 slot of each
//! other under both variants, weight 2 of 3 gives a spread of 2 (V1) and
//! 16385 (V2), weights summing past and below the ring) and `VipTest.cpp`
//! (100 backends of weight 10: deleting one changes exactly 1009 of 65537
//! slots under V1 and 1020 under V2; weights 10 → 13 change 17 and 0; one
//! backend 13 → 26 changes 109 and 1013; adding a second backend moves
//! 32768), with the endpoint hashes those tests use.
//!
//! The packet function is tested with Katran's packet fixtures
//! (`tests/katran_fixtures.rs` over `tests/katran/fixtures.toml`: input
//! frame, expected XDP return code, expected output frame), on a load
//! balancer provisioned as Katran's tester provisions its own
//! (`tests/katran/provision.toml`: the same VIPs, backends and server
//! ids), each set run in order as Katran runs it. **50 of 53 pass byte for
//! byte:**
//!
//! - from `KatranTestFixtures.h` (34 of 36): IPIP to IPv4 and IPv6
//!   backends from IPv4 and IPv6 clients, with the ToS / traffic class
//!   copied (1-7), an any-port VIP (4), the table hit (18); ICMP echo
//!   replies v4 and v6 (8, 9), a v4 fragmentation-needed and a v6
//!   packet-too-big routed to the backend of the quoted connection (10,
//!   11); drops of IPv4 with options, IPv4 and IPv6 fragments, a frame
//!   over 1514 bytes (12-14, 33); passes of a packet to no VIP (v4, v6),
//!   ARP, IP-in-IP, IPv6-in-IPv6, IPv4-in-IPv6 (15-17, 21-23; Katran's test
//!   build decapsulates nothing); QUIC Initial and 0-RTT by the ring,
//!   Handshake and Retry by a CIDv1 server id to an IPv6 backend, short
//!   headers with CIDv1 and CIDv2 ids, known, unknown and 0, and without
//!   a connection id (24-32, 34, 35); a UDP VIP (36: Katran flags it for
//!   UDP flow migration, which `l4lb` does not implement, but the
//!   fixture's backend is up, so the flag does not change its answer);
//! - from `KatranTPRTestFixtures.h` (16 of 17, the IPIP outputs): a SYN's
//!   id ignored, ids 1023 to 1026 to IPv4 and IPv6 backends, behind NOPs,
//!   an id of 0, a bad length, an unknown id, 14 NOPs before the option,
//!   an end-of-options before it, the table hit without an option.
//!
//! Left out (listed in the data file with the reason): `KatranTestFixtures`
//! 19 and 20 and `KatranTPRTestFixtures` 14, which need Katran's
//! `F_HASH_DPORT_ONLY` (hash on the destination port only), not
//! implemented here. Not ported at all: the GUE, health-check, decap,
//! source-routing (LPM), stable-routing, flow-migration, ICMP-too-big
//! generation and CIDR-VIP fixture files, features `l4lb` does not have.
//!
//! Where `l4lb` parts from Katran on purpose (none changes a fixture's
//! answer): it answers ICMP echo only for VIP addresses; it routes an ICMP
//! error by table and ring without writing the table; the size limit
//! applies to IPIP only; an IPv6 packet whose backend is IPv4 is dropped in
//! IPIP mode (`family`); and an empty ring drops (Katran keeps the ring it
//! had when the last backend goes).
//!
//! # Configuration
//!
//! TOML, `examples/l4lb.toml` commented: `[lb]` (mode, hash, table
//! capacity, UDP timeout, and for IPIP the gateway MAC and size limit),
//! `[[vip]]` (address, port or 0 for every port, protocol, `quic`, its own
//! hash) and `[[vip.backend]]` (address, weight, MAC, `server_id = N` or a
//! list). `l4lb --check FILE` prints one line `FILE:LINE: what is wrong;
//! how to fix` per bad entry. SIGHUP reads the file again: the rings are
//! rebuilt at once, table entries follow their backend or are dropped with
//! it, counters of what stays are kept; a bad file is refused line by line
//! and the running config kept.
//!
//! ```
//! use l4lb::{Action, Config, Lb};
//!
//! let cfg = Config::parse(
//!     r#"
//! [[vip]]
//! address = "10.10.0.100"
//! port = 80
//! protocol = "tcp"
//! [[vip.backend]]
//! address = "10.10.0.11"
//! mac = "02:00:0a:0a:00:0b"
//! "#,
//!     "lb.toml",
//! )
//! .unwrap();
//! let mut lb = Lb::new(cfg);
//! // An Ethernet / IPv4 / TCP SYN from 192.0.2.1:40000 to the VIP.
//! let mut f = vec![0u8; 54];
//! f[12] = 0x08;
//! f[14] = 0x45;
//! f[17] = 40;
//! f[23] = 6;
//! f[26..30].copy_from_slice(&[192, 0, 2, 1]);
//! f[30..34].copy_from_slice(&[10, 10, 0, 100]);
//! f[34..36].copy_from_slice(&40000u16.to_be_bytes());
//! f[37] = 80;
//! f[46] = 0x50;
//! f[47] = 0x02;
//! assert_eq!(lb.process(&mut f, 0, 0), Action::Forward { backend: 0 });
//! assert_eq!(f[..6], [0x02, 0x00, 0x0a, 0x0a, 0x00, 0x0b]);
//! ```

#![forbid(unsafe_code)]

pub mod config;
pub mod hash;
pub mod lb;
pub mod maglev;
pub mod nf;
pub mod table;

pub use config::{Config, ConfigError, Mode};
pub use lb::{Action, DropReason, EncapHeader, Lb};
