//! `ubox-runtime`: the ubox daemon.
//!
//! Owns DPDK (EAL, ports, mbuf pools), runs the poll-mode workers that move
//! frames through the L2/L3 code of `ustack` and the per-worker flow tables,
//! and serves the control socket. Only this crate links DPDK, and only its
//! [`dpdk`] modules contain `unsafe` code (plus one `geteuid` and the signal
//! handler installation, each argued in place).
//!
//! Modules: [`config`] (TOML), [`preflight`] (root, the NF group, hugepages, interfaces),
//! [`dpdk`] (safe wrappers), [`worker`] (the data path), [`counters`]
//! (single-writer counters), [`control`] (Unix control socket),
//! [`http`] (the HTTP server of [`metrics`], the Prometheus endpoint, and
//! [`web`], the live web view), [`signals`].

pub mod capture;
pub mod config;
pub mod control;
pub mod counters;
pub mod dispatch;
pub mod dpdk;
pub mod http;
pub mod metrics;
pub mod monitor;
pub mod nfs;
pub mod preflight;
pub mod signals;
pub mod web;
pub mod worker;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use controller::api::{FlowStats, PmdStats, PortStats, Request, Response, Stats, WorkerStats};
use ustack::flow::{FlowSeed, FlowTable};
use ustack::l3::LocalAddrs;
use ustack::wire::ethernet::EthernetAddress;

use config::Config;
use counters::WorkerCounters;
use dpdk::eal::Eal;
use dpdk::mempool::Mempool;
use dpdk::port::{Port, PortSetup};
use dpdk::ring::MbufRing;
use worker::{Steering, Worker};

/// Bytes one mbuf takes in its pool (struct, headroom, data room, overhead).
const MBUF_FOOTPRINT: u64 = 2560;
/// What EAL and the rest need besides the pool.
const BASE_MEMORY: u64 = 96 << 20;
const MEMPOOL_CACHE: u32 = 256;

/// Options from the command line that override or extend the config.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Run EAL without hugepages (testing only; warns loudly).
    pub no_huge: bool,
    /// Write the final counters as JSON here on exit.
    pub stats_json: Option<PathBuf>,
    /// Print the counters every this often.
    pub stats_interval: Option<Duration>,
    /// Chains to apply before the first packet (`--chains FILE`): the
    /// file's text and its name.
    pub chains: Option<(String, String)>,
}

/// Descriptors of each AF_XDP fill, TX and completion ring the af_xdp PMD
/// makes (`XSK_RING_CONS__DEFAULT_NUM_DESCS`).
const AF_XDP_RING: u32 = 2048;

/// Mbufs of the af_xdp pool, when some port uses af_xdp: per AF_XDP socket
/// (one per worker and port) the PMD keeps its fill ring stocked, and its RX
/// ring (`rx_desc`), TX and completion rings may hold more.
pub fn xdp_mbufs_needed(cfg: &Config) -> Option<u32> {
    let xdp_ports = cfg.ports.iter().filter(|p| p.driver == Some(config::Driver::AfXdp)).count() as u32;
    if xdp_ports == 0 {
        return None;
    }
    let r = &cfg.runtime;
    let w = r.workers as u32;
    let per_socket = 3 * AF_XDP_RING + r.rx_desc as u32;
    let in_flight = w * (r.burst as u32 * (cfg.ports.len() as u32 + 2) + MEMPOOL_CACHE);
    let n = xdp_ports * w * per_socket + in_flight + 4096;
    Some((n + 1).next_power_of_two() - 1)
}

/// Mbufs the pool needs for the configured ports, queues and rings.
pub fn mbufs_needed(cfg: &Config) -> u32 {
    let r = &cfg.runtime;
    let w = r.workers as u32;
    let ports = cfg.ports.len() as u32;
    let queues = ports * w * (r.rx_desc as u32 + r.tx_desc as u32);
    let in_flight = w * (r.burst as u32 * (ports + 2) + MEMPOOL_CACHE);
    let rings = if w > 1 { w * (w - 1) * r.handoff_ring } else { 0 };
    // Packets parked while NFs hold their events (one per event slot).
    let parked = r.event_slots;
    let n = queues + in_flight + rings + parked + 4096;
    (n + 1).next_power_of_two() - 1
}

/// Start everything, forward until SIGINT/SIGTERM, print the counters.
pub fn run(cfg: Config, opts: Options) -> anyhow::Result<Stats> {
    preflight::check_root().map_err(|e| anyhow!(e))?;
    let group = preflight::nf_group(&cfg.runtime.group).map_err(|e| anyhow!(e))?;
    preflight::check_ports(&cfg).map_err(|e| anyhow!(e))?;
    let nmbufs = cfg.runtime.mbufs.unwrap_or_else(|| mbufs_needed(&cfg));
    let no_huge = opts.no_huge || !cfg.runtime.hugepages;
    if no_huge {
        eprintln!(
            "WARNING: ubox-runtime is running WITHOUT hugepages (--no-huge): memory is not pinned and \
             throughput suffers. This is for tests only; operators should run scripts/setup.sh."
        );
    } else {
        let xdp = xdp_mbufs_needed(&cfg).unwrap_or(0) as u64 * Mempool::PACKED_FOOTPRINT;
        let need = BASE_MEMORY + nmbufs as u64 * MBUF_FOOTPRINT + xdp;
        preflight::check_hugepages(need).map_err(|e| anyhow!(e))?;
    }
    let ncpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let cpus = cfg.worker_cpus(ncpus);
    if cpus.contains(&cfg.runtime.main_cpu) || has_duplicates(&cpus) {
        tracing::warn!(
            "worker CPUs {cpus:?} share a CPU with each other or with the main lcore (CPU {}): poll-mode workers will time-slice",
            cfg.runtime.main_cpu
        );
    }

    // Bind the control socket first: a second instance with the same name
    // is refused before EAL touches any port.
    raise_fd_limit();
    let control = control::ControlSocket::bind(&cfg.control_socket(), &group).map_err(|e| anyhow!(e))?;
    let http = http::Endpoints::bind(cfg.metrics.listen, cfg.web.listen).map_err(|e| anyhow!(e))?;
    let arena = create_arena(&cfg, nmbufs, no_huge)?;
    match &group {
        Some(g) => {
            preflight::warn_if_unreachable(control.path(), g, "reaching the control socket");
            tracing::info!(
                "NFs may run as members of group '{}' (gid {}): the control socket is mode 0660 root:{}; \
                 each NF gets its part of the arena over it",
                g.name,
                g.gid,
                g.name
            );
        }
        None => tracing::info!("runtime.group is \"\": the control socket is root's only (mode 0600)"),
    }
    signals::install();
    let eal_args = cfg.eal_args(ncpus, no_huge);
    tracing::info!("EAL arguments: {}", eal_args.join(" "));
    let eal = Eal::init(&eal_args).map_err(|e| {
        anyhow!("DPDK EAL failed to start: {e} (EAL's own messages above say which device or resource)")
    })?;
    let stats = run_with_eal(&eal, &cfg, &opts, nmbufs, control, http, &arena);
    drop(eal);
    drop(arena);
    stats
}

/// `uboxctl chain apply`: parse, type-check against the registry, resolve
/// NF names to slots, and post the new snapshot. All or nothing.
/// `xdp_port` names a port using af_xdp, if any: its packets are outside
/// the arena, where NFs cannot see them, so chains are refused.
fn apply_chains(
    mgr: &mut nfs::NfManager,
    board: &dispatch::ChainBoard,
    text: &str,
    origin: &str,
    xdp_port: Option<&str>,
) -> Response {
    use controller::chain::{ChainSet, Stage};
    let fail = |message: String| Response::Error { message };
    let set = match ChainSet::parse(text, origin) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let compiled = match set.compile(mgr.registry()) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    if let (Some(port), false) = (xdp_port, compiled.is_empty()) {
        return fail(format!(
            "{origin}: chains need packets in the arena, but port '{port}' uses driver af_xdp, whose packets stay in \
             the PMD's own pool: use af_packet for ports whose flows visit NFs"
        ));
    }
    let mut plans = Vec::new();
    for chain in compiled.iter() {
        let mut stages = Vec::new();
        let mut names = Vec::new();
        for stage in &chain.stages {
            let members = match stage {
                Stage::Single(nf) => std::slice::from_ref(nf),
                Stage::Parallel(group) => group.as_slice(),
            };
            if members.len() > dispatch::MAX_GROUP {
                return fail(format!(
                    "{origin}: chain '{}': a parallel group has {} NFs; at most {}",
                    chain.name,
                    members.len(),
                    dispatch::MAX_GROUP
                ));
            }
            let mut slots = Vec::new();
            for nf in members {
                let Some(slot) = mgr.reserve(&nf.name) else {
                    return fail(format!(
                        "{origin}: chain '{}': no NF slot left for '{}' (raise runtime.max_nfs)",
                        chain.name, nf.name
                    ));
                };
                slots.push((slot, nf.policy));
            }
            stages.push(slots);
            names.push(members.iter().map(|n| n.name.clone()).collect());
        }
        plans.push(dispatch::ChainPlan {
            name: chain.name.clone(),
            filter: chain.filter.clone(),
            stages,
            names,
            unmonitored_drop: chain.on_unmonitored == controller::chain::Unmonitored::Drop,
        });
    }
    let version = board.version() + 1;
    let n = plans.len();
    board.publish(dispatch::ChainSnapshot { version, origin: origin.to_string(), chains: plans });
    tracing::info!("chains version {version} applied from {origin}: {n} chain(s)");
    show_chains(board)
}

fn show_chains(board: &dispatch::ChainBoard) -> Response {
    let snap = board.load();
    let chains = snap
        .chains
        .iter()
        .map(|c| {
            let stages: Vec<String> = c
                .stages
                .iter()
                .zip(&c.names)
                .map(|(group, names)| {
                    let members: Vec<String> = group
                        .iter()
                        .zip(names)
                        .map(|((_, p), name)| {
                            let p = if *p == controller::chain::Policy::FailOpen { "fail-open" } else { "fail-closed" };
                            format!("{name} ({p})")
                        })
                        .collect();
                    if members.len() == 1 {
                        members.join("")
                    } else {
                        format!("[{}]", members.join(" | "))
                    }
                })
                .collect();
            format!("{}: {}", c.name, stages.join(" -> "))
        })
        .collect();
    Response::Chains { version: snap.version, origin: snap.origin.clone(), chains }
}

/// The chains in force, for the web view.
fn chains_view(board: &dispatch::ChainBoard) -> web::Chains {
    let snap = board.load();
    let chains = snap
        .chains
        .iter()
        .map(|c| web::Chain {
            name: c.name.clone(),
            filter: c.filter.clone(),
            stages: c
                .stages
                .iter()
                .zip(&c.names)
                .map(|(group, names)| {
                    group
                        .iter()
                        .zip(names)
                        .map(|((_, p), name)| web::Member {
                            nf: name.clone(),
                            policy: if *p == controller::chain::Policy::FailOpen { "fail-open" } else { "fail-closed" },
                        })
                        .collect()
                })
                .collect(),
            on_unmonitored: if c.unmonitored_drop { "drop" } else { "pass" },
        })
        .collect();
    web::Chains { version: snap.version, origin: snap.origin.clone(), chains }
}

/// The arena and the page size its file is backed by.
struct ArenaState {
    arena: Arc<ubox_shm::Arena>,
    page_size: usize,
}

/// Create the instance's arena: event slots, NF rings and the packet-buffer
/// region the mbuf pool is built on. On hugetlbfs unless running without
/// hugepages (then /dev/shm, with the --no-huge warning already given).
/// Bytes of the data region the mbuf pool takes (2 MiB aligned).
fn mbuf_region_bytes(nmbufs: u32) -> u64 {
    (nmbufs as u64 * Mempool::EXT_BUF_SIZE as u64).div_ceil(2 << 20) * (2 << 20)
}

/// Bytes of the data region the monitor's stream rings take.
fn stream_region_bytes(cfg: &Config) -> u64 {
    let m = &cfg.monitor;
    monitor::StreamBufs::bytes(m.stream_buffers, m.stream_buffer_kb * 1024).div_ceil(2 << 20) * (2 << 20)
}

/// Worker `w`'s TCP splicer, if the config has one.
fn worker_splicer(
    cfg: &Config,
    local: &[LocalAddrs],
    w: usize,
    nworkers: usize,
    steering: Steering,
    seed: FlowSeed,
    neighbours: &Arc<dispatch::Neighbours>,
) -> anyhow::Result<Option<dispatch::SpliceSide>> {
    let (Some(sc), Some((c, b)), Some(snat)) = (&cfg.splicer, cfg.splicer_ports(), cfg.splicer_snat()) else {
        return Ok(None);
    };
    if nworkers > 1 && steering == Steering::Rss {
        bail!("the splicer with several workers needs software steering (ports without RSS); set runtime.workers = 1");
    }
    const MS: u64 = 1_000_000;
    let mut sp = ustack::splice::Config::new(sc.vip_addrs(), snat);
    sp.client_side_mac = local[c].mac.0;
    sp.backend_side_mac = local[b].mac.0;
    sp.max_flows = sc.max_flows;
    sp.request_timeout = sc.request_timeout_ms * MS;
    sp.connect_timeout = sc.connect_timeout_ms * MS;
    sp.idle_timeout = sc.idle_timeout_ms * MS;
    sp.linger = sc.linger_ms * MS;
    sp.max_attempts = sc.max_attempts;
    sp.reject = if sc.reject == "rst" { ustack::splice::Reject::Reset } else { ustack::splice::Reject::Http503 };
    let mut splicer = ustack::splice::Splicer::new(sp);
    if nworkers > 1 {
        // Replies from a backend must come back to this worker: SNAT ports
        // whose backend-side flow key hashes here.
        splicer.port_ok = Some(Box::new(move |snat, port, backend, bport| {
            let (key, _) = ustack::flow::FlowKey::from_v4(snat, port, backend, bport, 6);
            FlowSeed::owner(seed.hash(&key), nworkers) == w
        }));
    }
    Ok(Some(dispatch::SpliceSide::new(splicer, c, b, Arc::clone(neighbours))))
}

/// Worker `w`'s monitor: its share of the stream rings and the config.
fn worker_monitor(cfg: &Config, data: ubox_shm::Region, nmbufs: u32, w: usize, nworkers: usize) -> monitor::Monitor {
    let m = &cfg.monitor;
    let ring_len = m.stream_buffer_kb * 1024;
    let per = m.stream_buffers / nworkers as u32;
    let base = data.offset + mbuf_region_bytes(nmbufs) + monitor::StreamBufs::bytes(per * w as u32, ring_len);
    let mcfg = ustack::tcp::MonitorConfig {
        overlap: if m.overlap == "last-wins" {
            ustack::tcp::OverlapPolicy::LastWins
        } else {
            ustack::tcp::OverlapPolicy::FirstWins
        },
        max_ooo_ranges: m.max_holes,
        linger: m.linger_ms * 1_000_000,
        ..Default::default()
    };
    monitor::Monitor::new(mcfg, m.max_flows, monitor::StreamBufs::new(base, per, ring_len))
}

fn create_arena(cfg: &Config, nmbufs: u32, no_huge: bool) -> anyhow::Result<ArenaState> {
    let r = &cfg.runtime;
    let (path, hugetlb) = match (&r.arena, no_huge) {
        (Some(p), _) => (p.clone(), !no_huge),
        (None, true) => (PathBuf::from(format!("/dev/shm/ubox-{}.arena", r.name)), false),
        (None, false) => {
            let loc = ubox_shm::default_path(&r.name);
            if loc.fallback {
                tracing::warn!("no hugetlbfs on /dev/hugepages: arena in {} on 4 KiB pages", loc.path.display());
            }
            (loc.path, !loc.fallback)
        }
    };
    // The data region: the mbufs, then the TCP monitor's stream rings.
    let data = mbuf_region_bytes(nmbufs) + stream_region_bytes(cfg);
    let mut ac = ubox_shm::ArenaConfig::new(r.name.clone());
    ac.slots = r.event_slots;
    ac.slot_size = 192;
    ac.channels = r.max_nfs * r.workers as u32;
    ac.channel_capacity = r.nf_ring_size;
    ac.data_bytes = data;
    let arena = ubox_shm::Arena::create(&path, &ac).map_err(|e| {
        if hugetlb && matches!(&e, ubox_shm::Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOMEM)) {
            anyhow!(
                "not enough free hugepages for the arena {} ({} MiB free): run scripts/setup.sh or reserve more, lower runtime.mbufs, or set runtime.arena",
                path.display(),
                preflight::free_hugepage_bytes() >> 20
            )
        } else {
            anyhow!("cannot create the arena {}: {e} (reserve more hugepages, or set runtime.arena)", path.display())
        }
    })?;
    tracing::info!(
        "arena {} ({} MiB: slots {} MiB, NF channels {} MiB, packets {} MiB)",
        path.display(),
        arena.mapped_size() >> 20,
        arena.total_size() >> 20,
        (arena.mapped_size() - arena.total_size() - arena.data_region().len) >> 20,
        arena.data_region().len >> 20
    );
    let page_size = arena.data_page_size();
    Ok(ArenaState { arena: Arc::new(arena), page_size })
}

/// Lifts the soft limit on open files to the hard one (at most 65536): the
/// control socket holds a descriptor per client, the default soft limit of
/// 1024 would let a thousand idle clients lock NFs out.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(65536);
        if soft < want {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
                tracing::warn!("cannot raise the open-file limit from {soft} to {want}: {e}");
            }
        }
    }
}

fn has_duplicates(v: &[u32]) -> bool {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.windows(2).any(|w| w[0] == w[1])
}

struct PortState {
    name: String,
    device: String,
    driver: String,
    port: Port,
}

fn run_with_eal(
    eal: &Eal,
    cfg: &Config,
    opts: &Options,
    nmbufs: u32,
    control: control::ControlSocket,
    http: Option<http::Endpoints>,
    arena: &ArenaState,
) -> anyhow::Result<Stats> {
    let r = &cfg.runtime;
    let nworkers = r.workers as usize;
    let lcores = eal.worker_lcores();
    if lcores.len() < nworkers {
        return Err(anyhow!("EAL started {} worker lcores, {} configured", lcores.len(), nworkers));
    }
    let socket = dpdk::eal::socket_id();
    // Packet buffers live in the arena's data region, so NF processes read
    // them in place without DPDK.
    let data = arena.arena.data_region();
    let pool = Mempool::new_external(
        "ubox_pkt",
        nmbufs,
        MEMPOOL_CACHE,
        socket,
        arena.arena.data_ptr(),
        mbuf_region_bytes(nmbufs) as usize,
        arena.page_size,
    )
    .map_err(|e| {
        anyhow!(
            "{e} (free hugepages: {} MiB; lower runtime.mbufs or reserve more)",
            preflight::free_hugepage_bytes() >> 20
        )
    })?;
    let pool = Arc::new(pool);
    // af_xdp ports receive into a pool of their own (see Mempool::new_packed).
    let xdp_pool = match xdp_mbufs_needed(cfg) {
        Some(n) => Some(Mempool::new_packed("ubox_xdp", n, MEMPOOL_CACHE, socket).map_err(|e| anyhow!(e))?),
        None => None,
    };
    let xdp_port = cfg.ports.iter().find(|p| p.driver == Some(config::Driver::AfXdp)).map(|p| p.name.as_str());

    // Decide steering from what the ports can do.
    let mut ids = Vec::new();
    let mut infos = Vec::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        let dev = cfg.device_name(i);
        let id = dpdk::port::port_id_by_name(&dev).map_err(|e| anyhow!("port '{}': {e}", p.name))?;
        let info = dpdk::port::port_info(id).map_err(|e| anyhow!("port '{}': {e}", p.name))?;
        if (info.max_rx_queues as usize) < nworkers || (info.max_tx_queues as usize) < nworkers {
            return Err(anyhow!(
                "port '{}' ({}) supports {} RX / {} TX queues but {} workers need one each: lower runtime.workers",
                p.name,
                info.driver,
                info.max_rx_queues,
                info.max_tx_queues,
                nworkers
            ));
        }
        ids.push(id);
        infos.push(info);
    }
    let steering = if nworkers == 1 {
        Steering::Single
    } else if infos.iter().all(|i| i.supports_rss()) {
        Steering::Rss
    } else {
        Steering::Software
    };
    if nworkers > 1 {
        tracing::info!("flow steering: {}", steering.name());
    }

    let mut ports = Vec::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        let setup = PortSetup {
            queues: nworkers as u16,
            rx_desc: r.rx_desc,
            tx_desc: r.tx_desc,
            rss: steering == Steering::Rss,
            pool: match (&xdp_pool, p.driver) {
                (Some(x), Some(config::Driver::AfXdp)) => x,
                _ => &pool,
            },
            socket,
        };
        let port = Port::start(ids[i], &setup).map_err(|e| anyhow!("port '{}': {e}", p.name))?;
        ports.push(PortState {
            name: p.name.clone(),
            device: cfg.device_name(i),
            driver: infos[i].driver.clone(),
            port,
        });
    }

    let mut peer = vec![None; ports.len()];
    for w in &cfg.wires {
        let a = cfg.ports.iter().position(|p| p.name == w.ports[0]).expect("validated");
        let b = cfg.ports.iter().position(|p| p.name == w.ports[1]).expect("validated");
        peer[a] = Some(b);
        peer[b] = Some(a);
    }
    let mut local: Vec<LocalAddrs> = cfg
        .ports
        .iter()
        .zip(&ports)
        .map(|(pc, ps)| LocalAddrs {
            mac: EthernetAddress(ps.port.mac()),
            ipv4: pc.ipv4.clone(),
            ipv6: pc.ipv6.clone(),
        })
        .collect();
    if let (Some(sp), Some((c, b)), Some(snat)) = (&cfg.splicer, cfg.splicer_ports(), cfg.splicer_snat()) {
        // The box answers ARP (and ping) for the VIPs toward the clients
        // and for the SNAT address toward the backends.
        for (a, _) in sp.vip_addrs() {
            if !local[c].ipv4.contains(&a) {
                local[c].ipv4.push(a);
            }
        }
        if !local[b].ipv4.contains(&snat) {
            local[b].ipv4.push(snat);
        }
    }
    let max_id = ids.iter().copied().max().unwrap_or(0) as usize;
    let mut index_of_port = vec![0u8; max_id + 1];
    for (i, &id) in ids.iter().enumerate() {
        index_of_port[id as usize] = i as u8;
    }

    // rings[from][to]
    let mut rings: Vec<Vec<Option<Arc<MbufRing>>>> = vec![vec![None; nworkers]; nworkers];
    if steering == Steering::Software && nworkers > 1 {
        for (from, row) in rings.iter_mut().enumerate() {
            for (to, slot) in row.iter_mut().enumerate() {
                if from != to {
                    let ring = MbufRing::new(&format!("ubox_ho_{from}_{to}"), r.handoff_ring, socket)
                        .map_err(|e| anyhow!(e))?;
                    *slot = Some(Arc::new(ring));
                }
            }
        }
    }

    let idle_ns = cfg.flow_table.idle_timeout_ms * 1_000_000;
    let ns_per_tick_q32 = ((1_000_000_000u128 << 32) / dpdk::eal::tsc_hz().max(1) as u128) as u64;
    // One seed for every worker's table: software steering relies on all
    // workers computing the same hash for a flow.
    let seed = FlowSeed::random();
    let neighbours = Arc::new(dispatch::Neighbours::default());
    let nf_table = Arc::new(nfs::NfTable::new(r.max_nfs, nworkers as u32));
    if let Some(sp) = &cfg.splicer {
        let _ = nf_table.policy_name.set(sp.policy.clone());
    }
    let chain_board = Arc::new(dispatch::ChainBoard::default());
    let capture_board = Arc::new(capture::CaptureBoard::default());
    let mut captures = capture::CaptureControl::new(Arc::clone(&capture_board), ns_per_tick_q32);
    let ncpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mut nf_manager =
        nfs::NfManager::new(Arc::clone(&nf_table), Arc::clone(&arena.arena), cfg.nf_cpus(ncpus), r.nf_wakeup);
    if let Some((text, origin)) = &opts.chains {
        // Before the workers start, so every flow gets these chains; their
        // NFs are expected to register (meanwhile each stage's policy holds).
        if let Response::Error { message } = apply_chains(&mut nf_manager, &chain_board, text, origin, xdp_port) {
            bail!("{message}");
        }
    }
    let counters: Vec<Arc<WorkerCounters>> =
        (0..nworkers).map(|_| Arc::new(WorkerCounters::new(ports.len()))).collect();
    let started = Instant::now();
    for (w, &lcore) in lcores.iter().enumerate().take(nworkers) {
        let (rx, tx): (Vec<_>, Vec<_>) = ports.iter().map(|p| dpdk::port::queue_pair(&p.port, w as u16)).unzip();
        let worker = Worker {
            id: w,
            nworkers,
            steering,
            burst: r.burst as usize,
            rx,
            tx,
            peer: peer.clone(),
            local: local.clone(),
            index_of_port: index_of_port.clone(),
            table: FlowTable::with_seed(cfg.flow_table.capacity, idle_ns, seed).with_embryonic(
                cfg.flow_table.embryonic_capacity.unwrap_or(cfg.flow_table.capacity / 2),
                cfg.flow_table.embryonic_timeout_ms * 1_000_000,
            ),
            handoff_out: rings[w].clone(),
            handoff_in: (0..nworkers).filter(|&f| f != w).filter_map(|f| rings[f][w].clone()).collect(),
            counters: Arc::clone(&counters[w]),
            ns_per_tick_q32,
            arena: Arc::clone(&arena.arena),
            nf_table: Arc::clone(&nf_table),
            chains: Arc::clone(&chain_board),
            nf_backpressure: r.nf_backpressure,
            nf_wake: r.nf_wakeup == controller::api::NfWakeup::Futex,
            monitor: Some(worker_monitor(cfg, data, nmbufs, w, nworkers)),
            mbufs: Arc::clone(&pool),
            splice: worker_splicer(cfg, &local, w, nworkers, steering, seed, &neighbours)?,
            capture: Arc::clone(&capture_board),
        };
        eal.launch(lcore, move || worker.run(&signals::RUNNING)).map_err(|e| anyhow!(e))?;
    }
    let capacity = cfg.flow_table.capacity as u64;
    let collect = |ports: &[PortState]| -> Stats {
        let mut st = collect_stats(
            &r.name,
            started,
            steering,
            ports,
            &counters,
            &lcores,
            capacity,
            cfg.monitor.stream_buffer_kb * 1024,
        );
        st.pools = controller::api::PoolStats {
            mbufs_total: nmbufs as u64,
            mbufs_free: pool.available() as u64,
            event_slots_total: r.event_slots as u64,
            event_slots_free: arena.arena.slot_pool().map_or(0, |p| p.free_count() as u64),
        };
        st
    };

    let sock_path = cfg.control_socket();
    let mut addrs: Vec<Ipv4Addr> = cfg.ports.iter().flat_map(|p| p.ipv4.iter().copied()).collect();
    addrs.sort();
    println!(
        "ubox-runtime '{}' up: {} worker(s), {} port(s) [{}], own addresses {:?}, control socket {}",
        r.name,
        nworkers,
        ports.len(),
        ports.iter().map(|p| format!("{}={}", p.name, p.device)).collect::<Vec<_>>().join(", "),
        addrs,
        sock_path.display()
    );
    // On the main lcore, so its thread shares the main lcore's CPU.
    let http = match http {
        Some(ep) => {
            let h = ep.start(http::ANSWER_TIMEOUT).map_err(|e| anyhow!(e))?;
            for &(addr, routes) in h.addrs() {
                if routes.metrics {
                    tracing::info!("metrics: Prometheus text format at http://{addr}/metrics");
                }
                if routes.web {
                    tracing::info!("web view: http://{addr}/ (read-only; its JSON at /api/view)");
                }
                if !addr.ip().is_loopback() {
                    let key = if routes.metrics { "metrics.listen" } else { "web.listen" };
                    tracing::warn!(
                        "{key} {addr} is not a loopback address: whoever reaches it reads every counter (no authentication)"
                    );
                }
            }
            Some(h)
        }
        None => None,
    };
    let pid = std::process::id();
    let mut last_print = Instant::now();
    while signals::running() {
        // Waits for requests up to 20 ms: the pace of the NF checks below.
        control.poll(Duration::from_millis(20), &mut |req, stream| match req {
            Request::Stats => {
                let mut st = collect(&ports);
                st.nfs = nf_manager.stats(&arena.arena);
                st.control = control.stats();
                st.capture = captures.stats();
                Response::Stats(st).into()
            }
            Request::Ping => Response::Pong { instance: r.name.clone(), pid }.into(),
            Request::Register { manifest, join } => nf_manager.register(manifest, stream, join),
            Request::NfDrain { name, instance, timeout_ms } => {
                nf_manager.drain(&name, instance, timeout_ms.unwrap_or(controller::api::DEFAULT_DRAIN_MS)).into()
            }
            Request::NfRelease { name, timeout_ms } => {
                nf_manager.arm_release(&name, timeout_ms.unwrap_or(controller::api::DEFAULT_DRAIN_MS)).into()
            }
            Request::NfReload { name } => nf_manager.reload(&name).into(),
            Request::NfList => Response::Nfs { nfs: nf_manager.list() }.into(),
            Request::ChainApply { text, origin } => {
                apply_chains(&mut nf_manager, &chain_board, &text, &origin, xdp_port).into()
            }
            Request::ChainShow => show_chains(&chain_board).into(),
            Request::CaptureStart { target, count, max_bytes, snaplen, timeout_ms } => {
                captures.start(target, count, max_bytes, snaplen, timeout_ms, &chain_board, &nf_manager).into()
            }
            Request::CaptureRead { id, max } => captures.read(id, max, false, &nf_manager).into(),
            Request::CaptureStop { id } => captures.read(id, 0, true, &nf_manager).into(),
        });
        captures.poll();
        if let Some(h) = &http {
            // Scrapes and the web view get what `uboxctl stats` and `chain
            // show` get, read here, between polls.
            h.answer(|| {
                let mut stats = collect(&ports);
                stats.nfs = nf_manager.stats(&arena.arena);
                stats.control = control.stats();
                stats.capture = captures.stats();
                http::Snapshot { stats, chains: chains_view(&chain_board) }
            });
        }
        nf_manager.poll(Duration::from_millis(r.nf_timeout_ms));
        let periodic = opts.stats_interval.is_some_and(|i| last_print.elapsed() >= i);
        if signals::take_dump_request() || periodic {
            last_print = Instant::now();
            let mut st = collect(&ports);
            st.nfs = nf_manager.stats(&arena.arena);
            st.control = control.stats();
            print!("{}", st.render());
        }
    }
    println!("ubox-runtime '{}': stopping", r.name);
    drop(http);
    for &l in lcores.iter().take(nworkers) {
        let rc = eal.wait(l);
        if rc != 0 {
            tracing::warn!("worker on lcore {l} exited with {rc}");
        }
    }
    let control_stats = control.stats();
    drop(control);
    let mut stats = collect(&ports);
    stats.control = control_stats;
    print!("{}", stats.render());
    if let Some(path) = &opts.stats_json {
        let json = serde_json::to_string_pretty(&stats).expect("stats serialise");
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    drop(rings);
    drop(ports);
    drop(xdp_pool);
    drop(pool);
    Ok(stats)
}

fn ticks_to_ns(ticks: u64) -> u64 {
    (ticks as u128 * 1_000_000_000 / dpdk::eal::tsc_hz().max(1) as u128) as u64
}

#[allow(clippy::too_many_arguments)]
fn collect_stats(
    name: &str,
    started: Instant,
    steering: Steering,
    ports: &[PortState],
    counters: &[Arc<WorkerCounters>],
    lcores: &[u32],
    capacity: u64,
    ring_bytes: u32,
) -> Stats {
    let ports = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let hw = p.port.stats();
            let sum = |f: &dyn Fn(&counters::PortCounters) -> u64| counters.iter().map(|c| f(&c.ports[i])).sum();
            PortStats {
                name: p.name.clone(),
                device: p.device.clone(),
                driver: p.driver.clone(),
                rx_packets: sum(&|c| c.rx_packets.get()),
                rx_bytes: sum(&|c| c.rx_bytes.get()),
                tx_packets: sum(&|c| c.tx_packets.get()),
                tx_bytes: sum(&|c| c.tx_bytes.get()),
                tx_dropped: sum(&|c| c.tx_dropped.get()),
                pmd: PmdStats {
                    ipackets: hw.ipackets,
                    opackets: hw.opackets,
                    ibytes: hw.ibytes,
                    obytes: hw.obytes,
                    imissed: hw.imissed,
                    ierrors: hw.ierrors,
                    oerrors: hw.oerrors,
                    rx_nombuf: hw.rx_nombuf,
                },
            }
        })
        .collect();
    let workers = counters
        .iter()
        .enumerate()
        .map(|(w, c)| WorkerStats {
            id: w as u32,
            lcore: lcores.get(w).copied().unwrap_or(0),
            rx_packets: c.rx_packets.get(),
            forwarded: c.forwarded.get(),
            replies: c.replies.get(),
            consumed: c.consumed.get(),
            handoff_out: c.handoff_out.get(),
            handoff_in: c.handoff_in.get(),
            dropped: c.dropped_total(),
            drops: c.drops(),
            flows: FlowStats {
                active: c.flows_active.get(),
                capacity,
                started: c.flows_started.get(),
                ended_idle: c.flows_ended_idle.get(),
                evicted: c.flows_evicted.get(),
                ended_shutdown: c.flows_ended_shutdown.get(),
                ended_closed: c.flows_ended_closed.get(),
                embryonic: c.flows_embryonic.get(),
                evicted_embryonic: c.flows_evicted_embryonic.get(),
            },
            nf_answers: c.nf_answers.get(),
            nf_reclaimed: c.nf_reclaimed.get(),
            rx_paused: c.rx_paused.get(),
            monitor: controller::api::MonitorStats {
                active: c.mon_active.get(),
                flows: c.mon_flows.get(),
                full: c.mon_full.get(),
                evicted: c.mon_evicted.get(),
                no_buffer: c.mon_no_buffer.get(),
                unmonitored_passed: c.mon_unmonitored_passed.get(),
                rsts: c.mon_rsts.get(),
                restarts: c.mon_restarts.get(),
                rings_retired: c.mon_retired.get(),
                reasm_stopped: c.mon_stopped.get(),
                data_events: c.mon_data_events.get(),
                data_deferred: c.mon_deferred.get(),
                rx_held: c.mon_rx_held.get(),
                data_unannounced: c.mon_unannounced.get(),
                segments: monitor::tally_from_array(std::array::from_fn(|i| c.mon_tally[i].get())),
                state_bytes_per_flow: monitor::Monitor::flow_bytes() as u64,
                state_bytes_per_side: monitor::Monitor::side_bytes() as u64,
                ring_bytes: u64::from(ring_bytes),
            },
            splicer: controller::api::SplicerStats {
                active: c.splice_active.get(),
                held: c.splice_held.get(),
                counts: ustack::splice::Counters::default()
                    .fields()
                    .iter()
                    .zip(&c.splice)
                    .filter(|(_, v)| v.get() > 0)
                    .map(|((k, _), v)| (k.to_string(), v.get()))
                    .collect(),
            },
            nf_rtt_ns_total: ticks_to_ns(c.nf_rtt_ticks.get()),
            events_skipped: c.skips(),
            event_bursts: c.event_bursts.get(),
            events_pushed: c.events_pushed.get(),
            nf_wakeups: c.nf_wakeups.get(),
            busy_ns: ticks_to_ns(c.busy_ticks.get()),
            answer_ns: ticks_to_ns(c.answer_ticks.get()),
            nf_rtt_histogram: controller::api::RttHistogram::from_counts(c.nf_rtt_buckets.iter().map(|b| b.get())),
        })
        .collect();
    Stats {
        instance: name.to_string(),
        uptime_ms: started.elapsed().as_millis() as u64,
        steering: steering.name().to_string(),
        ports,
        workers,
        pools: Default::default(),
        nfs: Vec::new(),
        control: Default::default(),
        capture: Default::default(),
    }
}
