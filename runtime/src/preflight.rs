//! Checks made before EAL starts, so the common mistakes get one clear line
//! with the fix instead of pages of EAL log.

use std::path::Path;

use crate::config::{Config, Driver};

/// The process must be root: DPDK needs hugepages and raw packet sockets.
pub fn check_root() -> Result<(), String> {
    if nix_geteuid() != 0 {
        return Err("must run as root (DPDK needs hugepages and raw packet sockets): run it with sudo".into());
    }
    Ok(())
}

fn nix_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Free 2 MiB/1 GiB hugepages, in bytes.
pub fn free_hugepage_bytes() -> u64 {
    let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/hugepages") else { return 0 };
    let mut total = 0;
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // "hugepages-2048kB"
        let Some(kb) = name.strip_prefix("hugepages-").and_then(|s| s.strip_suffix("kB")) else { continue };
        let Ok(kb) = kb.parse::<u64>() else { continue };
        let free = std::fs::read_to_string(e.path().join("free_hugepages"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        total += free * kb * 1024;
    }
    total
}

fn hugetlbfs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts")
        .map(|m| m.lines().any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs")))
        .unwrap_or(false)
}

/// Hugepages must be reserved and mounted unless running with --no-huge.
pub fn check_hugepages(need_bytes: u64) -> Result<(), String> {
    let fix = "run scripts/setup.sh, or: echo 1024 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages && mount -t hugetlbfs nodev /dev/hugepages (tests may pass --no-huge)";
    if !hugetlbfs_mounted() {
        return Err(format!("no hugetlbfs mounted: {fix}"));
    }
    let free = free_hugepage_bytes();
    if free == 0 {
        return Err(format!("no free hugepages: {fix}"));
    }
    if free < need_bytes {
        return Err(format!(
            "not enough free hugepages: {} MiB free, about {} MiB needed: reserve more ({fix}) or lower runtime.mbufs",
            free >> 20,
            need_bytes >> 20
        ));
    }
    Ok(())
}

/// RX queues of the interface whose sysfs directory is `dir`.
fn rx_queues(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("queues"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count())
        .unwrap_or(0)
}

/// An af_xdp port binds one AF_XDP socket per worker, to queues
/// `0..workers` of its interface: the interface must have that many.
fn xdp_queues(port: &str, iface: &str, have: usize, workers: u16) -> Result<(), String> {
    if have < workers as usize {
        return Err(format!(
            "port '{port}': driver af_xdp binds one queue per worker but '{iface}' has {have} RX queue(s) for runtime.workers = {workers}: \
             lower runtime.workers, or give the interface more queues (ethtool -L {iface} combined {workers}; a veth: ethtool -L {iface} rx {workers} tx {workers})"
        ));
    }
    Ok(())
}

/// Every interface and file a port names must exist.
pub fn check_ports(cfg: &Config) -> Result<(), String> {
    for p in &cfg.ports {
        if let (Some(Driver::AfPacket | Driver::AfXdp), Some(iface)) = (p.driver, &p.iface) {
            let dir = Path::new("/sys/class/net").join(iface);
            if !dir.exists() {
                return Err(format!(
                    "port '{}': interface '{iface}' not found: check `ip link` (scripts/testbed.sh up creates the testbed's interfaces)",
                    p.name
                ));
            }
            if p.driver == Some(Driver::AfXdp) {
                xdp_queues(&p.name, iface, rx_queues(&dir), cfg.runtime.workers)?;
            }
        }
        if let Some(args) = &p.args {
            for kv in args.split(',') {
                if let Some(file) = kv.strip_prefix("rx_pcap=") {
                    if !Path::new(file).exists() {
                        return Err(format!("port '{}': capture file '{file}' not found", p.name));
                    }
                }
            }
        }
        if let Some(pci) = &p.pci {
            if !Path::new("/sys/bus/pci/devices").join(pci).exists() {
                return Err(format!("port '{}': PCI device {pci} not found: check `lspci -D`", p.name));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn af_xdp_needs_a_queue_per_worker() {
        assert!(super::xdp_queues("client", "ubx-c", 2, 2).is_ok());
        let e = super::xdp_queues("client", "ubx-c", 1, 2).unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.starts_with("port 'client': driver af_xdp") && e.contains("ethtool -L ubx-c rx 2 tx 2"), "{e}");
    }
}
