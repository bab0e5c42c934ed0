//! Ethernet ports: configure, start, RX/TX bursts, statistics, stop.

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;

use super::errno_message;
use super::mbuf::Mbuf;
use super::mempool::Mempool;

// RSS hash types (RTE_BIT64 macros in rte_ethdev.h, which bindgen skips).
const RSS_IPV4: u64 = 1 << 2;
const RSS_FRAG_IPV4: u64 = 1 << 3;
const RSS_NONFRAG_IPV4_TCP: u64 = 1 << 4;
const RSS_NONFRAG_IPV4_UDP: u64 = 1 << 5;
const RSS_NONFRAG_IPV4_OTHER: u64 = 1 << 7;
const RSS_IPV6: u64 = 1 << 8;
const RSS_FRAG_IPV6: u64 = 1 << 9;
const RSS_NONFRAG_IPV6_TCP: u64 = 1 << 10;
const RSS_NONFRAG_IPV6_UDP: u64 = 1 << 11;
const RSS_NONFRAG_IPV6_OTHER: u64 = 1 << 13;
const RSS_WANTED: u64 = RSS_IPV4
    | RSS_FRAG_IPV4
    | RSS_NONFRAG_IPV4_TCP
    | RSS_NONFRAG_IPV4_UDP
    | RSS_NONFRAG_IPV4_OTHER
    | RSS_IPV6
    | RSS_FRAG_IPV6
    | RSS_NONFRAG_IPV6_TCP
    | RSS_NONFRAG_IPV6_UDP
    | RSS_NONFRAG_IPV6_OTHER;

/// Toeplitz key made of one repeated 16-bit pattern: hashing (a, b) and
/// (b, a) gives the same value, so both directions of a flow land on the
/// same queue (Woo and Park, "Scalable TCP Session Monitoring with
/// Symmetric Receive-side Scaling").
static SYMMETRIC_RSS_KEY: [u8; 52] = {
    let mut k = [0u8; 52];
    let mut i = 0;
    while i < 52 {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

/// What the device says it can do.
#[derive(Clone, Debug)]
pub struct PortInfo {
    pub driver: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub rss_offloads: u64,
    pub rss_key_len: u8,
}

impl PortInfo {
    /// True when the port can spread flows over queues with symmetric RSS.
    pub fn supports_rss(&self) -> bool {
        self.rss_offloads & (RSS_IPV4 | RSS_NONFRAG_IPV4_TCP) != 0
    }
}

/// Look up a probed device (vdev or PCI) by its EAL name.
pub fn port_id_by_name(name: &str) -> Result<u16, String> {
    let cname = CString::new(name).map_err(|_| "port name holds NUL".to_string())?;
    let mut id = 0u16;
    // SAFETY: valid name and out-pointer.
    let ret = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
    if ret != 0 {
        return Err(format!("device {name} was not probed by EAL: {}", errno_message(ret)));
    }
    Ok(id)
}

/// Query a port's capabilities.
pub fn port_info(id: u16) -> Result<PortInfo, String> {
    let mut info = MaybeUninit::<dpdk_sys::rte_eth_dev_info>::zeroed();
    // SAFETY: `info` is a valid out-pointer; DPDK fills it on success.
    let ret = unsafe { dpdk_sys::rte_eth_dev_info_get(id, info.as_mut_ptr()) };
    if ret != 0 {
        return Err(format!("port {id}: cannot read device info: {}", errno_message(ret)));
    }
    // SAFETY: initialised by the successful call above (and zeroed before).
    let info = unsafe { info.assume_init() };
    let driver = if info.driver_name.is_null() {
        String::from("?")
    } else {
        // SAFETY: DPDK's driver name is a static NUL-terminated string.
        unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned()
    };
    Ok(PortInfo {
        driver,
        max_rx_queues: info.max_rx_queues,
        max_tx_queues: info.max_tx_queues,
        rss_offloads: info.flow_type_rss_offloads,
        rss_key_len: info.hash_key_size,
    })
}

/// How to set a port up.
pub struct PortSetup<'a> {
    pub queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub rss: bool,
    pub pool: &'a Mempool,
    pub socket: i32,
}

/// Hardware/PMD counters of a port.
#[derive(Clone, Copy, Debug, Default)]
pub struct EthStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// A started port. Stopped and closed on drop.
pub struct Port {
    id: u16,
    mac: [u8; 6],
}

impl Port {
    pub fn start(id: u16, setup: &PortSetup<'_>) -> Result<Port, String> {
        let info = port_info(id)?;
        // SAFETY: rte_eth_conf is a plain C struct for which all-zero is the
        // documented default configuration.
        let mut conf: dpdk_sys::rte_eth_conf = unsafe { std::mem::zeroed() };
        if setup.rss {
            conf.rxmode.mq_mode = dpdk_sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_key = SYMMETRIC_RSS_KEY.as_ptr() as *mut u8;
            let key_len = if info.rss_key_len > 0 { info.rss_key_len } else { 40 };
            conf.rx_adv_conf.rss_conf.rss_key_len = key_len.min(SYMMETRIC_RSS_KEY.len() as u8);
            conf.rx_adv_conf.rss_conf.rss_hf = RSS_WANTED & info.rss_offloads;
        }
        let q = setup.queues;
        // SAFETY: `conf` is valid for the call; DPDK copies what it needs
        // (the RSS key is static).
        let ret = unsafe { dpdk_sys::rte_eth_dev_configure(id, q, q, &conf) };
        if ret != 0 {
            return Err(format!("port {id}: configure with {q} queues failed: {}", errno_message(ret)));
        }
        let (mut rxd, mut txd) = (setup.rx_desc, setup.tx_desc);
        // SAFETY: valid out-pointers to two u16.
        let ret = unsafe { dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rxd, &mut txd) };
        if ret != 0 {
            return Err(format!("port {id}: descriptor counts refused: {}", errno_message(ret)));
        }
        for qi in 0..q {
            // SAFETY: the port is configured with `q` queues; the pool
            // outlives the port (the runtime drops ports first); NULL
            // rx_conf/tx_conf select the driver's defaults.
            let ret = unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    id,
                    qi,
                    rxd,
                    setup.socket as u32,
                    std::ptr::null(),
                    setup.pool.as_ptr(),
                )
            };
            if ret != 0 {
                return Err(format!("port {id}: RX queue {qi} setup failed: {}", errno_message(ret)));
            }
            // SAFETY: as above.
            let ret = unsafe { dpdk_sys::rte_eth_tx_queue_setup(id, qi, txd, setup.socket as u32, std::ptr::null()) };
            if ret != 0 {
                return Err(format!("port {id}: TX queue {qi} setup failed: {}", errno_message(ret)));
            }
        }
        // SAFETY: the port is configured with all its queues.
        let ret = unsafe { dpdk_sys::rte_eth_dev_start(id) };
        if ret != 0 {
            return Err(format!("port {id}: start failed: {}", errno_message(ret)));
        }
        // Promiscuous mode lets a wire port see frames for the peer's MAC;
        // some PMDs (af_packet, pcap) are promiscuous anyway and refuse.
        // SAFETY: a started port.
        unsafe {
            dpdk_sys::rte_eth_promiscuous_enable(id);
        }
        let mut addr = dpdk_sys::rte_ether_addr::default();
        // SAFETY: valid out-pointer.
        let ret = unsafe { dpdk_sys::rte_eth_macaddr_get(id, &mut addr) };
        if ret != 0 {
            tracing::warn!("port {id}: cannot read MAC address: {}", errno_message(ret));
        }
        Ok(Port { id, mac: addr.addr_bytes })
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// PMD counters (`rte_eth_stats_get`).
    pub fn stats(&self) -> EthStats {
        let mut s = MaybeUninit::<dpdk_sys::rte_eth_stats>::zeroed();
        // SAFETY: valid out-pointer; zeroed first so a failed call reads 0.
        let s = unsafe {
            dpdk_sys::rte_eth_stats_get(self.id, s.as_mut_ptr());
            s.assume_init()
        };
        EthStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: a started port; workers have stopped polling it.
        unsafe {
            dpdk_sys::rte_eth_dev_stop(self.id);
            dpdk_sys::rte_eth_dev_close(self.id);
        }
    }
}

/// RX side of one queue of one port, owned by one worker.
pub struct RxQueue {
    port: u16,
    queue: u16,
}

/// TX side of one queue of one port, owned by one worker.
pub struct TxQueue {
    port: u16,
    queue: u16,
}

/// Queue handles for worker `queue` on `port`. The caller must give each
/// (port, queue) pair to one worker only: DPDK queues are not thread-safe.
pub fn queue_pair(port: &Port, queue: u16) -> (RxQueue, TxQueue) {
    (RxQueue { port: port.id, queue }, TxQueue { port: port.id, queue })
}

impl RxQueue {
    /// Receive up to `max` packets, appended to `out` (which must be empty
    /// and have room for `max`); returns the count.
    #[inline(always)]
    pub fn recv(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        debug_assert!(out.is_empty());
        let max = max.min(out.capacity());
        // SAFETY: `Mbuf` is repr(transparent) over a non-null rte_mbuf
        // pointer and the Vec has room for `max` of them; rx_burst writes `n`
        // valid mbuf pointers whose ownership passes to us, after which the
        // first `n` elements are initialised. This RxQueue is the only user
        // of (port, queue) (see `queue_pair`).
        unsafe {
            let n = dpdk_sys::rte_eth_rx_burst(
                self.port,
                self.queue,
                out.as_mut_ptr() as *mut *mut dpdk_sys::rte_mbuf,
                max as u16,
            ) as usize;
            out.set_len(n);
            n
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl TxQueue {
    /// Send the packets in `pkts`, leaving it empty; the ones the queue did
    /// not take are freed. Returns (sent, dropped, bytes of the dropped).
    #[inline(always)]
    pub fn send(&mut self, pkts: &mut Vec<Mbuf>) -> (usize, usize, usize) {
        let n = pkts.len();
        if n == 0 {
            return (0, 0, 0);
        }
        // SAFETY: `Mbuf` is repr(transparent) over a non-null rte_mbuf
        // pointer, so the Vec's buffer is an array of n mbuf pointers. The
        // TX queue is used by this worker only. The first `sent` mbufs now
        // belong to the driver, so we must not drop them: set_len(0) first,
        // then drop (free) the rest ourselves, exactly once.
        unsafe {
            let sent = dpdk_sys::rte_eth_tx_burst(
                self.port,
                self.queue,
                pkts.as_mut_ptr() as *mut *mut dpdk_sys::rte_mbuf,
                n as u16,
            ) as usize;
            let base = pkts.as_mut_ptr();
            pkts.set_len(0);
            let mut dropped_bytes = 0;
            for i in sent..n {
                dropped_bytes += (*base.add(i)).len();
                std::ptr::drop_in_place(base.add(i));
            }
            (sent, n - sent, dropped_bytes)
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}
