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

/// Free 2 MiB/1 GiB hugepages that a new mapping can still get, in bytes:
/// `free_hugepages` minus `resv_hugepages`. A page that a live mapping has
/// reserved but not yet touched counts as free in the kernel's figure, yet
/// nobody else can have it (after `nr_hugepages` is lowered under a process
/// that still maps its arena, free can read non-zero with nothing to give).
pub fn free_hugepage_bytes() -> u64 {
    let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/hugepages") else { return 0 };
    let read = |d: &Path, f: &str| -> u64 {
        std::fs::read_to_string(d.join(f)).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    let mut total = 0;
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // "hugepages-2048kB"
        let Some(kb) = name.strip_prefix("hugepages-").and_then(|s| s.strip_suffix("kB")) else { continue };
        let Ok(kb) = kb.parse::<u64>() else { continue };
        let d = e.path();
        let free = read(&d, "free_hugepages").saturating_sub(read(&d, "resv_hugepages"));
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

/// The group NFs may run as (`runtime.group`), resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NfGroup {
    pub name: String,
    pub gid: u32,
}

/// Resolves `runtime.group`: `None` for `""` (root only); an error naming
/// the group and how to create it when it does not exist.
pub fn nf_group(name: &str) -> Result<Option<NfGroup>, String> {
    if name.is_empty() {
        return Ok(None);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(Some(NfGroup { name: name.to_string(), gid: g.gid.as_raw() })),
        Ok(None) => Err(format!(
            "group '{name}' (runtime.group) does not exist: run scripts/setup.sh (it creates group 'ubox'), or: groupadd --system {name}; \
             or set runtime.group = \"\" to keep the control socket root's only"
        )),
        Err(e) => Err(format!("cannot look up group '{name}' (runtime.group): {e}")),
    }
}

/// The first directory on the way to `path` (its ancestors, `/` first)
/// that members of group `gid` who are not its owner cannot search, with
/// its mode: they could not reach `path` through it. ACLs are not looked at.
pub fn closed_dir(path: &Path, gid: u32) -> Option<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut dirs: Vec<&Path> = path.ancestors().skip(1).filter(|d| !d.as_os_str().is_empty()).collect();
    dirs.reverse();
    for d in dirs {
        let Ok(m) = std::fs::metadata(d) else { continue };
        let mode = m.mode() & 0o7777;
        let open = mode & 0o001 != 0 || (m.gid() == gid && mode & 0o010 != 0);
        if !open {
            return Some((d.to_path_buf(), mode));
        }
    }
    None
}

/// Warns when group members cannot reach `path` (`what`: "the control
/// socket", "the arena") because a directory on the way is closed to them.
pub fn warn_if_unreachable(path: &Path, group: &NfGroup, what: &str) {
    if let Some((dir, mode)) = closed_dir(path, group.gid) {
        tracing::warn!(
            "directory {} (mode {mode:04o}) keeps group '{}' from {what} {}: NFs not run as root will be refused; \
             chmod o+x {} (or chgrp {} and chmod g+x it)",
            dir.display(),
            group.name,
            path.display(),
            dir.display(),
            group.name
        );
    }
}

/// Combined channels of `iface` as `ethtool -l` reports them now, which is
/// what the af_xdp PMD counts as the interface's queues (it takes a device
/// without combined channels, such as a veth, as one queue). `None` when
/// ethtool cannot say (then EAL's probe is left to decide).
fn combined_channels(iface: &str) -> Option<usize> {
    let out = std::process::Command::new("ethtool").arg("-l").arg(iface).output().ok()?;
    parse_combined_channels(&String::from_utf8_lossy(&out.stdout))
}

/// The "Combined:" line under "Current hardware settings:" of `ethtool -l`
/// (`n/a` or 0 counts as one queue, as the PMD does).
fn parse_combined_channels(out: &str) -> Option<usize> {
    let current = out.split("Current hardware settings:").nth(1)?;
    let v = current.lines().find_map(|l| l.trim().strip_prefix("Combined:"))?.trim();
    Some(v.parse::<usize>().ok().filter(|&n| n > 0).unwrap_or(1))
}

/// An af_xdp port binds one AF_XDP socket per worker, to queues
/// `first..first + workers` of its interface: the interface must have them.
fn xdp_queues(port: &str, iface: &str, have: usize, first: usize, workers: u16) -> Result<(), String> {
    let need = first + workers as usize;
    if have < need {
        return Err(format!(
            "port '{port}': driver af_xdp binds one queue per worker, queues {first}..{need} of '{iface}', but it has {have} \
             (the PMD counts combined channels, `ethtool -l {iface}`; a veth has none, which counts as one) for runtime.workers = {workers}: \
             lower runtime.workers, or give the interface more (ethtool -L {iface} combined {need})"
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
                if let Some(have) = combined_channels(iface) {
                    let first = crate::config::xdp_start_queue(p.args.as_deref());
                    xdp_queues(&p.name, iface, have, first, cfg.runtime.workers)?;
                }
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
    fn nf_group_errors_name_the_group_and_the_fix() {
        assert_eq!(super::nf_group(""), Ok(None));
        let root = super::nf_group("root").unwrap().unwrap();
        assert_eq!(root.gid, 0);
        let e = super::nf_group("ubox-no-such-group").unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("group 'ubox-no-such-group' (runtime.group) does not exist"), "{e}");
        assert!(e.contains("scripts/setup.sh") && e.contains("groupadd --system ubox-no-such-group"), "{e}");
    }

    #[test]
    fn a_closed_directory_on_the_way_is_found() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("ubox-preflight-{}", std::process::id()));
        let inner = base.join("a/b");
        std::fs::create_dir_all(&inner).unwrap();
        let set =
            |p: &std::path::Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        set(&base, 0o755);
        set(&base.join("a"), 0o755);
        set(&inner, 0o755);
        let sock = inner.join("x.sock");
        assert_eq!(super::closed_dir(&sock, 12345), None);
        set(&base.join("a"), 0o750);
        // Not its group: closed. (Its group is ours, so then it is open.)
        assert_eq!(super::closed_dir(&sock, u32::MAX - 1), Some((base.join("a"), 0o750)));
        use std::os::unix::fs::MetadataExt;
        let gid = std::fs::metadata(base.join("a")).unwrap().gid();
        assert_eq!(super::closed_dir(&sock, gid), None);
        set(&base.join("a"), 0o755);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn af_xdp_needs_a_queue_per_worker() {
        assert!(super::xdp_queues("client", "ubx-c", 2, 0, 2).is_ok());
        let e = super::xdp_queues("client", "ubx-c", 1, 0, 2).unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.starts_with("port 'client': driver af_xdp") && e.contains("ethtool -L ubx-c combined 2"), "{e}");
        let e = super::xdp_queues("client", "eth1", 4, 3, 2).unwrap_err();
        assert!(e.contains("queues 3..5 of 'eth1', but it has 4"), "{e}");
    }

    #[test]
    fn combined_channels_from_ethtool() {
        let veth =
            "Channel parameters for ubx-c:\nPre-set maximums:\nRX:\t\t2\nTX:\t\t2\nOther:\t\tn/a\nCombined:\tn/a\n\
                    Current hardware settings:\nRX:\t\t1\nTX:\t\t1\nOther:\t\tn/a\nCombined:\tn/a\n";
        assert_eq!(super::parse_combined_channels(veth), Some(1));
        let nic = "Pre-set maximums:\nCombined:\t8\nCurrent hardware settings:\nRX:\t\tn/a\nCombined:\t4\n";
        assert_eq!(super::parse_combined_channels(nic), Some(4));
        assert_eq!(super::parse_combined_channels("netlink error: Operation not supported"), None);
    }
}
