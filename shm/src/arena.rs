//! The arena file: creation by the runtime, attachment by NF processes, the
//! header and its validation, and handing out ring and slot-pool handles.
//!
//! This module owns the file's life cycle (mode, stale-file recovery, removal)
//! and the header. It does not know how rings or slots work inside.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::event::{Answer, Desc};
use crate::layout::channel_rings;
use crate::layout::{
    align_up, ArenaHeader, Layout, PubHeader, RawConfig, Region, DATA_ALIGN, HEADER_SIZE, INSTANCE_LEN, LAYOUT_VERSION,
    MAGIC, MAGIC_OFFSET, PID_OFFSET, PUB_HEADER_SIZE, PUB_RECORDS, STATE_INIT, STATE_OFFSET, STATE_READY,
    VERSION_OFFSET,
};
use crate::publish::PublishArea;
use crate::raw::{opened_for_write, pid_alive, sealed_memfd, Mapping};
use crate::ring::RingView;
use crate::slots::{self, SlotPool};

/// Errors of arena creation and attachment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("arena {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a ubox arena (magic {found:#018x}); pass the arena path the runtime printed, or remove the file by hand")]
    BadMagic { path: PathBuf, found: u64 },
    #[error(
        "arena layout version {found}, this build expects {expected}; rebuild the NF against the runtime's ubox-shm"
    )]
    VersionMismatch { found: u32, expected: u32 },
    #[error("arena {path} is truncated: {len} bytes, at least {needed} needed; restart the runtime to recreate it")]
    Truncated { path: PathBuf, len: u64, needed: u64 },
    #[error("arena {path} is in use by live process {pid}; stop it or pick another instance name")]
    InUse { path: PathBuf, pid: u32 },
    #[error("arena {path} is still being initialised by its creator; retry shortly")]
    NotReady { path: PathBuf },
    #[error("arena {path} is corrupt: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("bad arena configuration: {0}")]
    BadConfig(String),
    #[error("no channel {index}: the arena has {channels} channels")]
    NoSuchChannel { index: u32, channels: u32 },
    #[error("channel {index} is not this process's: the runtime granted it other channels")]
    NotGranted { index: u32 },
    #[error("bad arena grant: {0}")]
    BadGrant(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the runtime asks for when it creates an arena.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArenaConfig {
    /// Instance name stored in the header: 1..=32 bytes of `[A-Za-z0-9_.-]`.
    pub instance: String,
    /// Number of event slots.
    pub slots: u32,
    /// Payload bytes per event slot (e.g. 256).
    pub slot_size: u32,
    /// Number of channels (one per NF slot and worker): a descriptor ring
    /// to the NF and an answer ring back.
    pub channels: u32,
    /// Descriptors per channel, a power of two (the answer ring holds twice
    /// as many).
    pub channel_capacity: u32,
    /// Bytes reserved for packet buffers, rounded up to 2 MiB and 2 MiB
    /// aligned; the runtime registers it with `rte_extmem_register`.
    pub data_bytes: u64,
}

impl ArenaConfig {
    /// A small configuration with the given instance name: 4096 slots of
    /// 256 bytes, 8 channels of 1024 descriptors, no data region.
    pub fn new(instance: impl Into<String>) -> ArenaConfig {
        ArenaConfig {
            instance: instance.into(),
            slots: 4096,
            slot_size: 256,
            channels: 8,
            channel_capacity: 1024,
            data_bytes: 0,
        }
    }

    fn raw(&self) -> RawConfig {
        RawConfig {
            slots: self.slots,
            slot_size: self.slot_size,
            channels: self.channels,
            channel_capacity: self.channel_capacity,
            data_bytes: self.data_bytes,
        }
    }
}

fn check_instance(name: &str) -> Result<[u8; INSTANCE_LEN]> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > INSTANCE_LEN || !name.chars().all(ok_char) || name.starts_with('.') {
        return Err(Error::BadConfig(format!(
            "instance name {name:?} must be 1..={INSTANCE_LEN} characters of [A-Za-z0-9_.-], not starting with '.'"
        )));
    }
    let mut out = [0u8; INSTANCE_LEN];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

/// The default arena location for an instance, see [`default_path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArenaLocation {
    /// Where to create the arena.
    pub path: PathBuf,
    /// True when `/dev/hugepages` is not a mounted hugetlbfs and the path is in
    /// `/dev/shm` (4 KiB pages): the caller should warn that performance
    /// suffers and how to mount hugepages.
    pub fallback: bool,
}

/// `/dev/hugepages/ubox-<instance>.arena` when `/dev/hugepages` is a mounted
/// hugetlbfs (per `/proc/mounts`), else `/dev/shm/ubox-<instance>.arena` with
/// `fallback` set.
pub fn default_path(instance: &str) -> ArenaLocation {
    let file = format!("ubox-{instance}.arena");
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    if hugetlbfs_page_size(&mounts, Path::new("/dev/hugepages/x")).is_some() {
        ArenaLocation { path: Path::new("/dev/hugepages").join(file), fallback: false }
    } else {
        ArenaLocation { path: Path::new("/dev/shm").join(file), fallback: true }
    }
}

/// Page size of the hugetlbfs mount holding `path`, if the longest mount
/// point containing `path` in `mounts` (the text of `/proc/mounts`) is one.
fn hugetlbfs_page_size(mounts: &str, path: &Path) -> Option<u64> {
    let mut best: Option<(usize, &str, &str)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(_dev), Some(mnt), Some(fstype), Some(opts)) = (f.next(), f.next(), f.next(), f.next()) else {
            continue;
        };
        if path.starts_with(mnt) && !matches!(best, Some((len, ..)) if mnt.len() < len) {
            best = Some((mnt.len(), fstype, opts));
        }
    }
    let (_, fstype, opts) = best?;
    if fstype != "hugetlbfs" {
        return None;
    }
    let size = opts.split(',').find_map(|o| o.strip_prefix("pagesize=")).and_then(parse_size).unwrap_or(2 << 20);
    Some(size.max(2 << 20))
}

fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    num.parse::<u64>().ok()?.checked_shl(shift).filter(|v| v.is_power_of_two())
}

/// One worker's link with one NF: descriptors to the NF, answers back, and
/// the area the NF writes the events it publishes into.
#[derive(Debug, Clone, Copy)]
pub struct Channel<'a> {
    /// Produced by the runtime's worker, consumed by the NF.
    pub desc: RingView<'a, Desc>,
    /// Produced by the NF, consumed by the worker; twice the descriptors'
    /// capacity (an NF may publish events besides answering).
    pub answer: RingView<'a, Answer>,
    /// Events the NF publishes, named by `Answer::publish` entries.
    pub publish: PublishArea<'a>,
}

/// What an NF process needs to map an arena, as the runtime hands it over
/// (the descriptors travel over the control socket with `SCM_RIGHTS`):
/// - `file`: the arena file, read-only (header and slot pool);
/// - `data`: the packet region, read-write only for NFs that modify packets;
/// - `channels`: the NF's own channels, read-write, by channel index.
///
/// Nothing else of the arena reaches the NF: other NFs' channels are not in
/// its address space at all.
#[derive(Debug)]
pub struct Grant {
    pub file: File,
    pub data: File,
    pub channels: Vec<(u32, File)>,
}

impl Grant {
    /// The descriptors in the order they travel: file, data, then the
    /// channels in the order given.
    pub fn into_files(self) -> Vec<File> {
        let mut v = vec![self.file, self.data];
        v.extend(self.channels.into_iter().map(|(_, f)| f));
        v
    }

    /// The inverse of [`into_files`](Self::into_files), given the channel
    /// indices in the order they were granted.
    pub fn from_files(files: Vec<File>, channels: &[u32]) -> Result<Grant> {
        if files.len() != channels.len() + 2 {
            return Err(Error::BadGrant(format!(
                "{} descriptors for {} channels (expected {})",
                files.len(),
                channels.len(),
                channels.len() + 2
            )));
        }
        let mut it = files.into_iter();
        let (Some(file), Some(data)) = (it.next(), it.next()) else { unreachable!("length checked") };
        Ok(Grant { file, data, channels: channels.iter().copied().zip(it).collect() })
    }
}

/// A mapped arena. Handles ([`Channel`], [`SlotPool`]) borrow it.
///
/// The creator (the runtime) maps every part read-write and removes the
/// file when the `Arena` drops. An NF process maps what its [`Grant`]
/// gives it: the file read-only, the data region read-only or read-write,
/// and its own channels.
pub struct Arena {
    path: PathBuf,
    map: Mapping,
    header: ArenaHeader,
    layout: Layout,
    creator: bool,
    /// The arena file (read-write for the creator, read-only otherwise).
    file: File,
    /// The packet region's memfd.
    data: File,
    /// Per channel: its current memfd (creator), or whether it is mapped
    /// here (attacher: `Some` for granted ones).
    channels: Mutex<Vec<Option<File>>>,
    granted: Vec<bool>,
    data_writable: bool,
    /// Page size backing the packet region (2 MiB on hugepages).
    data_page: usize,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("path", &self.path)
            .field("instance", &self.instance())
            .field("total_size", &self.header.total_size)
            .field("creator", &self.creator)
            .field("data_writable", &self.data_writable)
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_owned(), source }
}

/// Removes a half-made file if creation fails part way.
struct RemoveOnError<'a>(Option<&'a Path>);
impl Drop for RemoveOnError<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

/// Address space reserved for a layout: everything up to the data region's
/// end, in 2 MiB steps.
fn span(layout: &Layout) -> Option<usize> {
    usize::try_from(align_up(layout.min_size.max(DATA_ALIGN), DATA_ALIGN)?).ok()
}

impl Arena {
    /// Creates the arena at `path` (mode 0600, root's only: NFs get their
    /// parts over the control socket, see [`grant`](Self::grant)) and
    /// initialises every region. An existing file left by a dead process is
    /// replaced; one whose owner is alive gives [`Error::InUse`]; a file
    /// that is not an arena gives [`Error::BadMagic`] and is left alone.
    ///
    /// The file holds the header and the slot pool; the channels and the
    /// packet region are memfds (the packet region on 2 MiB hugepages when
    /// the file is on hugetlbfs), sealed so that no holder can resize them.
    pub fn create(path: impl AsRef<Path>, config: &ArenaConfig) -> Result<Arena> {
        let path = path.as_ref();
        let instance = check_instance(&config.instance)?;
        let layout = Layout::compute(config.raw()).map_err(|e| Error::BadConfig(e.0))?;
        let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
        let abs = std::path::absolute(path).map_err(io_err(path))?;
        let page = hugetlbfs_page_size(&mounts, &abs);
        if page.is_some_and(|p| p != DATA_ALIGN) {
            return Err(Error::BadConfig(format!(
                "{} is on hugetlbfs with {} MiB pages; the arena needs 2 MiB pages (mount hugetlbfs with pagesize=2M, or set runtime.arena)",
                path.display(),
                page.unwrap_or(0) >> 20
            )));
        }
        let huge = page.is_some();
        let file_len = layout.file_len();
        let span = span(&layout).ok_or_else(|| Error::BadConfig("arena size overflows".into()))?;

        let file = match Self::open_new(path) {
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
                Self::clear_stale(path)?;
                Self::open_new(path)?
            }
            other => other?,
        };
        let mut guard = RemoveOnError(Some(path));
        file.set_len(file_len).map_err(io_err(path))?;
        let mut map = Mapping::reserve(span, DATA_ALIGN as usize).map_err(io_err(path))?;
        map.place(&file, 0, file_len as usize, true).map_err(io_err(path))?;
        let data_region = layout.regions.data;
        let data = sealed_memfd("ubox-data", data_region.len, huge).map_err(io_err(path))?;
        if data_region.len > 0 {
            map.place(&data, data_region.offset as usize, data_region.len as usize, true).map_err(io_err(path))?;
        }
        let stride = u64::from(layout.regions.channel_stride);
        let mut channels = Vec::with_capacity(config.channels as usize);
        for i in 0..config.channels {
            let ch = sealed_memfd("ubox-channel", stride, false).map_err(io_err(path))?;
            map.place(&ch, layout.channel_offset(i) as usize, stride as usize, true).map_err(io_err(path))?;
            channels.push(Some(ch));
        }
        let header = ArenaHeader {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            state: STATE_INIT,
            owner_pid: std::process::id(),
            header_size: HEADER_SIZE as u32,
            total_size: file_len,
            instance,
            config: layout.config,
            regions: layout.regions,
            _reserved: [0; 13],
        };
        map.write_header(&header).ok_or_else(|| Error::Truncated { path: path.into(), len: 0, needed: file_len })?;
        let arena = Arena {
            path: path.to_owned(),
            map,
            header,
            layout,
            creator: true,
            file,
            data,
            channels: Mutex::new(channels),
            granted: vec![true; config.channels as usize],
            data_writable: true,
            data_page: if huge { DATA_ALIGN as usize } else { 4096 },
        };
        slots::init(&arena)?;
        for i in 0..config.channels {
            let ch = arena.channel(i)?;
            ch.desc.init();
            ch.answer.init();
        }
        // Release: every region initialisation above happens-before any
        // attacher's Acquire load that observes READY.
        arena.atomic_u32(STATE_OFFSET)?.store(STATE_READY, Ordering::Release);
        guard.0 = None;
        Ok(arena)
    }

    fn open_new(path: &Path) -> Result<File> {
        OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path).map_err(io_err(path))
    }

    /// Decides what to do with an existing file at `path`: remove it if it is
    /// an arena (or a half-written one) whose owner is gone, refuse otherwise.
    fn clear_stale(path: &Path) -> Result<()> {
        let mut prefix = [0u8; PID_OFFSET + 4];
        let mut file = File::open(path).map_err(io_err(path))?;
        let mut got = 0;
        while got < prefix.len() {
            match file.read(&mut prefix[got..]).map_err(io_err(path))? {
                0 => break,
                n => got += n,
            }
        }
        let word = |at: usize| u32::from_le_bytes(prefix[at..at + 4].try_into().unwrap_or_default());
        let magic = u64::from_le_bytes(prefix[MAGIC_OFFSET..MAGIC_OFFSET + 8].try_into().unwrap_or_default());
        // A creator that crashed before writing its header leaves zeros.
        let incomplete = got < prefix.len() || magic == 0;
        if !incomplete {
            if magic != MAGIC {
                return Err(Error::BadMagic { path: path.to_owned(), found: magic });
            }
            let pid = word(PID_OFFSET);
            if pid_alive(pid) {
                return Err(Error::InUse { path: path.to_owned(), pid });
            }
        }
        fs::remove_file(path).map_err(io_err(path))
    }

    /// Creator: what an NF needs to map its part of the arena: the file
    /// and packet region read-only (the region read-write with
    /// `data_writable`, for NFs that modify packets), and `channels`
    /// read-write. Read-only descriptors are fresh opens (`O_RDONLY`) of
    /// the same files, so their holder cannot map them writable.
    pub fn grant(&self, channels: &[u32], data_writable: bool) -> Result<Grant> {
        if !self.creator {
            return Err(Error::BadGrant("only the arena's creator grants".into()));
        }
        let reopen = |f: &File| {
            use std::os::fd::AsRawFd;
            File::open(format!("/proc/self/fd/{}", f.as_raw_fd())).map_err(io_err(&self.path))
        };
        let file = reopen(&self.file)?;
        let data = if data_writable { self.data.try_clone().map_err(io_err(&self.path))? } else { reopen(&self.data)? };
        let fds = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(channels.len());
        for &i in channels {
            let f = fds
                .get(i as usize)
                .and_then(Option::as_ref)
                .ok_or(Error::NoSuchChannel { index: i, channels: self.layout.config.channels })?;
            out.push((i, f.try_clone().map_err(io_err(&self.path))?));
        }
        Ok(Grant { file, data, channels: out })
    }

    /// Creator: gives channels `channels` new, empty memory (fresh memfds
    /// at the same addresses), so that whatever a previous holder left in
    /// them, or still writes there through a mapping it kept, cannot reach
    /// the next NF. Call only while no worker uses these channels; handles
    /// made before must be made again (their indices start over at 0).
    pub fn renew_channels(&self, channels: &[u32]) -> Result<()> {
        if !self.creator {
            return Err(Error::BadGrant("only the arena's creator renews channels".into()));
        }
        let stride = u64::from(self.layout.regions.channel_stride);
        let mut fds = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        for &i in channels {
            if i >= self.layout.config.channels {
                return Err(Error::NoSuchChannel { index: i, channels: self.layout.config.channels });
            }
            let ch = sealed_memfd("ubox-channel", stride, false).map_err(io_err(&self.path))?;
            self.map
                .replace_atomic_part(&ch, self.layout.channel_offset(i) as usize, stride as usize)
                .map_err(io_err(&self.path))?;
            fds[i as usize] = Some(ch);
        }
        Ok(())
    }

    /// Maps the parts of an arena a [`Grant`] gives (an NF process), after
    /// validating the header against this build and the sizes of every
    /// file against the layout. `path` names the arena in messages.
    pub fn attach(grant: Grant, path: impl AsRef<Path>) -> Result<Arena> {
        use std::os::unix::fs::FileExt;
        let path = path.as_ref();
        let Grant { file, data, channels } = grant;
        let len_of = |f: &File| f.metadata().map(|m| m.len()).map_err(io_err(path));
        let len = len_of(&file)?;
        let truncated = |needed: u64| Error::Truncated { path: path.to_owned(), len, needed };
        let mut raw = [0u8; HEADER_SIZE];
        file.read_exact_at(&mut raw, 0).map_err(|_| truncated(HEADER_SIZE as u64))?;
        let word32 = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().unwrap_or_default());
        let magic = u64::from_le_bytes(raw[MAGIC_OFFSET..MAGIC_OFFSET + 8].try_into().unwrap_or_default());
        if magic != MAGIC {
            return Err(Error::BadMagic { path: path.to_owned(), found: magic });
        }
        let version = word32(VERSION_OFFSET);
        if version != LAYOUT_VERSION {
            return Err(Error::VersionMismatch { found: version, expected: LAYOUT_VERSION });
        }
        if word32(STATE_OFFSET) != STATE_READY {
            return Err(Error::NotReady { path: path.to_owned() });
        }
        let header = crate::raw::header_from_bytes(&raw);
        let corrupt = |what: String| Error::Corrupt { path: path.to_owned(), what };
        if header.header_size as usize != HEADER_SIZE {
            return Err(corrupt(format!("header size {} != {HEADER_SIZE}", header.header_size)));
        }
        let layout = Layout::compute(header.config).map_err(|e| corrupt(format!("stored config: {}", e.0)))?;
        if layout.regions != header.regions {
            return Err(corrupt("region table does not match the stored config".into()));
        }
        if len < layout.file_len() {
            return Err(truncated(layout.file_len()));
        }
        let data_region = layout.regions.data;
        if len_of(&data)? < data_region.len {
            return Err(corrupt(format!("packet region shorter than its {} bytes", data_region.len)));
        }
        let stride = u64::from(layout.regions.channel_stride);
        let span = span(&layout).ok_or_else(|| corrupt("arena size overflows".into()))?;
        let mut map = Mapping::reserve(span, DATA_ALIGN as usize).map_err(io_err(path))?;
        map.place(&file, 0, layout.file_len() as usize, false).map_err(io_err(path))?;
        let data_writable = opened_for_write(&data);
        if data_region.len > 0 {
            map.place(&data, data_region.offset as usize, data_region.len as usize, data_writable)
                .map_err(io_err(path))?;
        }
        let n = layout.config.channels;
        let mut granted = vec![false; n as usize];
        let mut kept: Vec<Option<File>> = (0..n).map(|_| None).collect();
        for (i, ch) in channels {
            if i >= n {
                return Err(Error::NoSuchChannel { index: i, channels: n });
            }
            if len_of(&ch)? < stride {
                return Err(corrupt(format!("channel {i} shorter than its {stride} bytes")));
            }
            map.place(&ch, layout.channel_offset(i) as usize, stride as usize, true).map_err(io_err(path))?;
            granted[i as usize] = true;
            kept[i as usize] = Some(ch);
        }
        Ok(Arena {
            path: path.to_owned(),
            map,
            header,
            layout,
            creator: false,
            file,
            data,
            channels: Mutex::new(kept),
            granted,
            data_writable,
            data_page: 4096,
        })
    }

    /// Removes the file now (the mapping stays valid until drop). After this
    /// the `Arena` no longer removes anything on drop.
    pub fn remove(&mut self) -> Result<()> {
        self.creator = false;
        fs::remove_file(&self.path).map_err(io_err(&self.path))
    }

    /// Path of the arena file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True for the process that created the file (and removes it on drop).
    pub fn is_creator(&self) -> bool {
        self.creator
    }

    /// Page size of the memory behind the packet region in the creator
    /// (2 MiB when the arena file is on hugetlbfs, else 4 KiB), for DPDK's
    /// `rte_extmem_register`.
    pub fn data_page_size(&self) -> usize {
        self.data_page
    }

    /// Whether this process may write the packet region (the creator, and
    /// NFs granted it because they modify packets).
    pub fn data_writable(&self) -> bool {
        self.data_writable
    }

    /// Instance name from the header.
    pub fn instance(&self) -> &str {
        let name = &self.header.instance;
        let end = name.iter().position(|&b| b == 0).unwrap_or(INSTANCE_LEN);
        std::str::from_utf8(&name[..end]).unwrap_or("")
    }

    /// Pid of the creator.
    pub fn owner_pid(&self) -> u32 {
        self.header.owner_pid
    }

    /// Size of the arena file in bytes (header and slot pool).
    pub fn total_size(&self) -> u64 {
        self.header.total_size
    }

    /// Bytes of memory the arena occupies: the file, the channels and the
    /// packet region.
    pub fn mapped_size(&self) -> u64 {
        let r = self.layout.regions;
        self.layout.file_len() + r.channels.len + r.data.len
    }

    /// The configuration the arena was built with.
    pub fn config(&self) -> ArenaConfig {
        let c = self.layout.config;
        ArenaConfig {
            instance: self.instance().to_owned(),
            slots: c.slots,
            slot_size: c.slot_size,
            channels: c.channels,
            channel_capacity: c.channel_capacity,
            data_bytes: c.data_bytes,
        }
    }

    /// The packet-buffer region `(offset, len)` from the arena base; 2 MiB
    /// aligned relative to the base (and absolutely on hugetlbfs).
    /// Address of the data region in this process, for the runtime to
    /// register with DPDK (`rte_extmem_register`) as packet-buffer memory.
    /// Valid while this `Arena` lives.
    pub fn data_ptr(&self) -> *mut u8 {
        let r = self.data_region();
        self.map.addr(r.offset as usize).unwrap_or(std::ptr::null_mut())
    }

    /// Offset from the arena base of an address inside the data region (the
    /// runtime turns an mbuf's data pointer into what it puts in an event).
    pub fn data_offset_of(&self, addr: *const u8) -> Option<u64> {
        let r = self.data_region();
        let start = self.data_ptr() as usize;
        let a = addr as usize;
        (a >= start && a < start + r.len as usize).then(|| r.offset + (a - start) as u64)
    }

    /// Packet bytes `[off, off + len)` (offsets from the arena base, as events
    /// carry them), if they lie inside the data region. The holder of the
    /// event that names them may read them; nobody writes them meanwhile (the
    /// runtime parks the packet while an NF holds its event).
    pub fn packet(&self, off: u64, len: u32) -> Option<&[u8]> {
        let r = self.data_region();
        let end = off.checked_add(u64::from(len))?;
        if off < r.offset || end > r.offset + r.len {
            return None;
        }
        self.map.bytes(off as usize, len as usize)
    }

    /// Copies `data` into the data region at `off` (offset from the arena
    /// base), or `None` if it does not fit inside the region. For whoever
    /// owns those bytes by protocol: a test harness playing the runtime, or
    /// an NF that declared it modifies packets and holds the packet's event.
    pub fn write_packet(&self, off: u64, data: &[u8]) -> Option<()> {
        if !self.data_writable {
            return None;
        }
        let r = self.data_region();
        let end = off.checked_add(data.len() as u64)?;
        if off < r.offset || end > r.offset + r.len {
            return None;
        }
        self.map.copy_in(off as usize, data)
    }

    /// Exclusive view of `len` bytes of the data region at arena offset
    /// `off` (a bytestream ring the caller writes), or `None` outside it.
    ///
    /// # Safety
    /// While the slice lives no other `&`/`&mut` to these bytes may be
    /// formed in this process, and by protocol other processes only read
    /// bytes the writer has published (the runtime's worker owns a stream
    /// ring; NFs read ranges below its published end, which it does not
    /// rewrite while they are pinned). An NF granted the region writable
    /// (it declared that it modifies packets) could break that protocol:
    /// the bytes would be wrong, but they are plain bytes the runtime only
    /// copies and parses with bounds checks, never indices or lengths it
    /// trusts.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn data_bytes_mut(&self, off: u64, len: usize) -> Option<&mut [u8]> {
        if !self.data_writable {
            return None;
        }
        let r = self.data_region();
        let end = off.checked_add(len as u64)?;
        if off < r.offset || end > r.offset + r.len {
            return None;
        }
        // SAFETY: in the data region (checked); exclusivity is the caller's
        // obligation stated above.
        unsafe { self.map.bytes_mut(off as usize, len) }
    }

    /// Reads the 8-byte aligned cell at arena offset `off` inside the data
    /// region (Acquire): how stream rings publish how far they are written.
    pub fn load_u64(&self, off: u64) -> Option<u64> {
        self.data_cell(off).map(|c| c.load(Ordering::Acquire))
    }

    /// Writes the cell [`load_u64`](Self::load_u64) reads (Release);
    /// `None` where this process may not write the packet region.
    pub fn store_u64(&self, off: u64, v: u64) -> Option<()> {
        if !self.data_writable {
            return None;
        }
        self.data_cell(off).map(|c| c.store(v, Ordering::Release))
    }

    fn data_cell(&self, off: u64) -> Option<&AtomicU64> {
        let r = self.data_region();
        if off < r.offset || off.checked_add(8)? > r.offset + r.len {
            return None;
        }
        self.map.get::<AtomicU64>(off as usize)
    }

    pub fn data_region(&self) -> Region {
        self.layout.regions.data
    }

    /// Channel `index`: its descriptor ring (runtime to NF), answer ring
    /// (NF to runtime) and publish area. See [`RingView`] for the
    /// producer/consumer rules. In an NF process only its granted channels
    /// exist ([`Error::NotGranted`] for the others).
    pub fn channel(&self, index: u32) -> Result<Channel<'_>> {
        let r = self.layout.regions;
        let channels = self.layout.config.channels;
        if index >= channels {
            return Err(Error::NoSuchChannel { index, channels });
        }
        if !self.granted[index as usize] {
            return Err(Error::NotGranted { index });
        }
        let cap = self.layout.config.channel_capacity;
        let (desc_len, _) = channel_rings(cap).ok_or_else(|| self.corrupt("channel"))?;
        let off = self.layout.channel_offset(index) as usize;
        let desc = RingView::new(&self.map, off, cap).ok_or_else(|| self.corrupt("channel"))?;
        let answer =
            RingView::new(&self.map, off + desc_len as usize, 2 * cap).ok_or_else(|| self.corrupt("channel"))?;
        let pub_off = off + r.pub_offset as usize;
        let head = self.map.get::<PubHeader>(pub_off).ok_or_else(|| self.corrupt("publish area"))?;
        let stride = r.record_stride as usize;
        let words = self
            .map
            .slice::<AtomicU64>(pub_off + PUB_HEADER_SIZE, PUB_RECORDS as usize * stride / 8)
            .ok_or_else(|| self.corrupt("publish area"))?;
        let publish = PublishArea::new(&head.cons.0, words, PUB_RECORDS, stride, self.layout.config.slot_size as usize);
        Ok(Channel { desc, answer, publish })
    }

    /// Handle on the event slot pool. Create one per thread. In an NF
    /// process the pool is read-only: it may read the slots of events it
    /// holds, and allocates or frees nothing.
    pub fn slot_pool(&self) -> Result<SlotPool<'_>> {
        let r = self.layout.regions;
        SlotPool::new(
            &self.map,
            r.slot_pool.offset as usize,
            self.layout.config.slots,
            r.slot_stride as usize,
            self.layout.config.slot_size as usize,
            self.creator,
        )
        .ok_or_else(|| self.corrupt("slot pool"))
    }

    fn atomic_u32(&self, off: usize) -> Result<&AtomicU32> {
        self.map.get::<AtomicU32>(off).ok_or_else(|| self.corrupt("header"))
    }

    fn corrupt(&self, what: &str) -> Error {
        Error::Corrupt { path: self.path.clone(), what: format!("{what} out of the mapping's bounds") }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        if self.creator {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SlotError;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::PermissionsExt;

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("ubox-shm-test-{}-{name}.arena", std::process::id()));
        let _ = fs::remove_file(&p);
        p
    }

    fn small() -> ArenaConfig {
        ArenaConfig { instance: "t".into(), slots: 16, slot_size: 64, channels: 2, channel_capacity: 8, data_bytes: 0 }
    }

    /// What an NF granted `channels` (and the packet region, writable or not) maps.
    fn nf(a: &Arena, channels: &[u32], writable: bool) -> Result<Arena> {
        Arena::attach(a.grant(channels, writable)?, a.path())
    }

    fn patch(path: &Path, at: u64, bytes: &[u8]) {
        let mut f = OpenOptions::new().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(bytes).unwrap();
    }

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn create_attach_round_trip() {
        let p = tmp("roundtrip");
        let cfg = ArenaConfig { data_bytes: 3 << 20, ..small() };
        let a = Arena::create(&p, &cfg).unwrap();
        assert!(a.is_creator());
        let b = nf(&a, &[1], false).unwrap();
        assert!(!b.is_creator());
        assert_eq!(b.config(), cfg);
        assert_eq!(b.instance(), "t");
        assert_eq!(b.owner_pid(), std::process::id());
        assert_eq!(b.total_size(), fs::metadata(&p).unwrap().len());
        assert_eq!(b.data_region(), a.data_region());
        assert_eq!(b.data_region().len, 4 << 20);
        assert_eq!(b.data_region().offset % (2 << 20), 0);
        // Writes through one mapping are visible through the other.
        assert!(a.channel(1).unwrap().answer.producer().push(Answer(42)));
        assert_eq!(b.channel(1).unwrap().answer.consumer().pop(), Some(Answer(42)));
        assert!(b.channel(1).unwrap().desc.producer().push(Desc { cookie: 9, ..Desc::default() }));
        assert_eq!(a.channel(1).unwrap().desc.consumer().pop().map(|d| d.cookie), Some(9));
        assert!(matches!(b.channel(2), Err(Error::NoSuchChannel { index: 2, channels: 2 })));
        drop(b);
        assert!(p.exists(), "attacher must not remove the file");
        drop(a);
        assert!(!p.exists(), "creator removes the file on drop");
    }

    #[test]
    fn an_nf_maps_only_its_own_channels_and_reads_the_pool() {
        let p = tmp("confined");
        let a = Arena::create(&p, &ArenaConfig { data_bytes: 2 << 20, ..small() }).unwrap();
        let pool = a.slot_pool().unwrap();
        let slot = pool.alloc().unwrap();
        let b = nf(&a, &[0], false).unwrap();
        assert!(matches!(b.channel(1), Err(Error::NotGranted { index: 1 })));
        assert!(b.channel(0).is_ok());
        // The pool is there to read, not to allocate from or free into.
        let mut theirs = b.slot_pool().unwrap();
        assert_eq!(theirs.refcount(slot), Ok(1));
        assert!(theirs.payload(slot).is_ok());
        assert_eq!(theirs.alloc(), None);
        assert_eq!(theirs.release(slot), Err(SlotError::ReadOnly));
        assert_eq!(theirs.retain(slot, 1), Err(SlotError::ReadOnly));
        assert_eq!(theirs.payload_mut(slot).err(), Some(SlotError::ReadOnly));
        assert_eq!(pool.refcount(slot), Ok(1));
        // The descriptors it got cannot be mapped for writing, except its
        // channels; and the channel it got cannot be resized under the runtime.
        let g = a.grant(&[0], false).unwrap();
        assert!(!opened_for_write(&g.file) && !opened_for_write(&g.data));
        assert!(opened_for_write(&g.channels[0].1));
        assert!(g.channels[0].1.set_len(0).is_err(), "a channel memfd is sealed against shrinking");
    }

    #[test]
    fn packets_are_writable_only_for_nfs_that_modify_them() {
        let p = tmp("data");
        let a = Arena::create(&p, &ArenaConfig { data_bytes: 2 << 20, ..small() }).unwrap();
        let off = a.data_region().offset;
        let reader = nf(&a, &[0], false).unwrap();
        assert!(!reader.data_writable());
        assert_eq!(reader.write_packet(off, b"no"), None);
        assert_eq!(reader.store_u64(off, 1), None);
        // SAFETY: nothing else views these bytes in this test.
        assert!(unsafe { reader.data_bytes_mut(off, 2) }.is_none());
        let writer = nf(&a, &[1], true).unwrap();
        assert!(writer.data_writable());
        writer.write_packet(off, b"yes").unwrap();
        assert_eq!(a.packet(off, 3), Some(&b"yes"[..]));
        assert_eq!(reader.packet(off, 3), Some(&b"yes"[..]));
    }

    #[test]
    fn renewed_channels_start_empty_and_leave_the_old_holder_behind() {
        let p = tmp("renew");
        let a = Arena::create(&p, &small()).unwrap();
        let old = nf(&a, &[0], false).unwrap();
        let mut prod = old.channel(0).unwrap().answer.producer();
        assert!(prod.push(Answer(1)));
        assert_eq!(a.channel(0).unwrap().answer.len(), 1);
        a.renew_channels(&[0]).unwrap();
        assert!(a.channel(0).unwrap().answer.is_empty(), "fresh memory");
        // The old holder still writes its old memory, which nobody reads now.
        assert!(prod.push(Answer(2)));
        assert!(a.channel(0).unwrap().answer.is_empty());
        let new = nf(&a, &[0], false).unwrap();
        assert!(new.channel(0).unwrap().answer.producer().push(Answer(3)));
        assert_eq!(a.channel(0).unwrap().answer.consumer().pop(), Some(Answer(3)));
        assert!(matches!(a.renew_channels(&[5]), Err(Error::NoSuchChannel { .. })));
        assert!(matches!(new.renew_channels(&[0]), Err(Error::BadGrant(_))));
        assert!(matches!(new.grant(&[0], false), Err(Error::BadGrant(_))));
    }

    #[test]
    fn published_records_travel_in_order_and_free_up() {
        let p = tmp("publish");
        let a = Arena::create(&p, &small()).unwrap();
        let b = nf(&a, &[0], false).unwrap();
        let area = b.channel(0).unwrap().publish;
        assert_eq!(area.record_len(), 64);
        let mut w = area.writer();
        let mut r = a.channel(0).unwrap().publish.reader();
        let mut out = [0u8; 64];
        for i in 0..area.records() {
            assert_eq!(w.write(&[i as u8; 10]), Some(i));
            w.commit();
        }
        assert_eq!(w.write(b"full"), None, "every record waits for the worker");
        assert_eq!(w.write(&[0; 65]), None, "longer than a record");
        assert_eq!(r.take(5, &mut out), None, "out of order is refused");
        assert_eq!(r.take(0, &mut out), Some(64));
        assert_eq!((&out[..10], &out[10..]), (&[0u8; 10][..], &[0u8; 54][..]));
        assert_eq!(w.write(b"again"), Some(area.records()));
        assert_eq!(r.take(1, &mut out), Some(64));
        assert_eq!(out[0], 1);
    }

    #[test]
    fn file_mode_is_0600() {
        let p = tmp("mode");
        let _a = Arena::create(&p, &small()).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn explicit_remove() {
        let p = tmp("remove");
        let mut a = Arena::create(&p, &small()).unwrap();
        let b = nf(&a, &[0], false).unwrap();
        a.remove().unwrap();
        assert!(!p.exists());
        // Mappings stay usable after unlink.
        assert!(a.channel(0).unwrap().answer.producer().push(Answer(7)));
        assert_eq!(b.channel(0).unwrap().answer.consumer().pop(), Some(Answer(7)));
    }

    #[test]
    fn attach_rejects_bad_magic() {
        let p = tmp("magic");
        let a = Arena::create(&p, &small()).unwrap();
        patch(&p, 0, b"NOTARENA");
        let e = nf(&a, &[], false).unwrap_err();
        assert!(matches!(e, Error::BadMagic { found, .. } if found == u64::from_le_bytes(*b"NOTARENA")), "{e}");
    }

    #[test]
    fn attach_rejects_wrong_version() {
        let p = tmp("version");
        let a = Arena::create(&p, &small()).unwrap();
        patch(&p, VERSION_OFFSET as u64, &99u32.to_le_bytes());
        let e = nf(&a, &[], false).unwrap_err();
        assert!(matches!(e, Error::VersionMismatch { found: 99, expected: LAYOUT_VERSION }), "{e}");
    }

    #[test]
    fn attach_rejects_truncated_file() {
        let p = tmp("trunc");
        let a = Arena::create(&p, &small()).unwrap();
        let g = a.grant(&[], false).unwrap();
        // Shorter than the header (the creator's mapping is not touched again).
        OpenOptions::new().write(true).open(&p).unwrap().set_len(100).unwrap();
        assert!(matches!(Arena::attach(g, &p), Err(Error::Truncated { len: 100, .. })));
        // A header but not the slot pool it describes.
        let q = tmp("trunc2");
        let b = Arena::create(&q, &small()).unwrap();
        let g = b.grant(&[], false).unwrap();
        OpenOptions::new().write(true).open(&q).unwrap().set_len(HEADER_SIZE as u64 + 64).unwrap();
        assert!(matches!(Arena::attach(g, &q), Err(Error::Truncated { .. })));
    }

    #[test]
    fn attach_rejects_unready_and_inconsistent() {
        let p = tmp("state");
        let a = Arena::create(&p, &small()).unwrap();
        patch(&p, STATE_OFFSET as u64, &STATE_INIT.to_le_bytes());
        assert!(matches!(nf(&a, &[], false), Err(Error::NotReady { .. })));
        patch(&p, STATE_OFFSET as u64, &STATE_READY.to_le_bytes());
        // Corrupt the stored slot count: regions no longer match the config.
        patch(&p, 64, &17u32.to_le_bytes());
        assert!(matches!(nf(&a, &[], false), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn a_grant_travels_over_a_socket() {
        let p = tmp("socket");
        let a = Arena::create(&p, &small()).unwrap();
        let (x, y) = std::os::unix::net::UnixStream::pair().unwrap();
        let files = a.grant(&[1], false).unwrap().into_files();
        assert_eq!(crate::pass::send_with_files(&x, b"hello\n", &files).unwrap(), 6);
        drop(files);
        let (line, got) = crate::pass::read_line_with_files(&y, 100).unwrap();
        assert_eq!((line.as_slice(), got.len()), (&b"hello"[..], 3));
        let b = Arena::attach(Grant::from_files(got, &[1]).unwrap(), &p).unwrap();
        assert!(a.channel(1).unwrap().desc.producer().push(Desc { cookie: 4, ..Desc::default() }));
        assert_eq!(b.channel(1).unwrap().desc.consumer().pop().map(|d| d.cookie), Some(4));
        assert!(matches!(Grant::from_files(Vec::new(), &[1]), Err(Error::BadGrant(_))));
    }

    #[test]
    fn create_refuses_live_owner() {
        let p = tmp("live");
        let _a = Arena::create(&p, &small()).unwrap();
        let e = Arena::create(&p, &small()).unwrap_err();
        assert!(matches!(e, Error::InUse { pid, .. } if pid == std::process::id()), "{e}");
        assert!(e.to_string().contains(&std::process::id().to_string()));
        assert!(p.exists());
    }

    #[test]
    fn create_replaces_stale_file() {
        let p = tmp("stale");
        let a = Arena::create(&p, &small()).unwrap();
        let image = fs::read(&p).unwrap();
        drop(a);
        // Same image, but owned by a process that no longer exists.
        fs::write(&p, &image).unwrap();
        patch(&p, PID_OFFSET as u64, &dead_pid().to_le_bytes());
        let cfg = ArenaConfig { slots: 32, ..small() };
        let b = Arena::create(&p, &cfg).unwrap();
        assert_eq!(nf(&b, &[], false).unwrap().config(), cfg);
        assert_eq!(b.owner_pid(), std::process::id());
        // A half-written file (creator died before the header) is stale too.
        drop(b);
        fs::write(&p, [0u8; 10]).unwrap();
        let _c = Arena::create(&p, &small()).unwrap();
    }

    #[test]
    fn create_leaves_foreign_files_alone() {
        let p = tmp("foreign");
        fs::write(&p, b"precious user data, not an arena").unwrap();
        assert!(matches!(Arena::create(&p, &small()), Err(Error::BadMagic { .. })));
        assert_eq!(fs::read(&p).unwrap(), b"precious user data, not an arena");
        fs::remove_file(&p).unwrap();
    }

    #[test]
    fn create_rejects_bad_config() {
        let p = tmp("badcfg");
        for cfg in [
            ArenaConfig { channel_capacity: 12, ..small() },
            ArenaConfig { instance: "a/b".into(), ..small() },
            ArenaConfig { instance: String::new(), ..small() },
            ArenaConfig { instance: "x".repeat(33), ..small() },
        ] {
            assert!(matches!(Arena::create(&p, &cfg), Err(Error::BadConfig(_))), "{cfg:?}");
        }
        assert!(!p.exists());
    }

    /// Needs free 2 MiB hugepages, which other tests on the machine may be
    /// using: opt in with `cargo test -p ubox-shm -- --ignored hugetlbfs`.
    #[test]
    #[ignore = "uses real hugepages"]
    fn hugetlbfs_arena_is_page_rounded() {
        let loc = default_path(&format!("test-{}", std::process::id()));
        if loc.fallback {
            return;
        }
        let cfg = ArenaConfig { data_bytes: 1, ..small() };
        let a = Arena::create(&loc.path, &cfg).unwrap();
        assert_eq!(a.total_size(), 2 << 20, "2 MiB of header and slots");
        assert_eq!(a.data_region().len, 2 << 20, "2 MiB of data");
        let b = nf(&a, &[0], false).unwrap();
        assert!(a.channel(0).unwrap().answer.producer().push(Answer(5)));
        assert_eq!(b.channel(0).unwrap().answer.consumer().pop(), Some(Answer(5)));
        drop(b);
        drop(a);
        assert!(!loc.path.exists());
    }

    #[test]
    fn hugetlbfs_detection() {
        let mounts = "tmpfs /dev/shm tmpfs rw 0 0\n\
                      nodev /dev/hugepages hugetlbfs rw,relatime,pagesize=1G 0 0\n\
                      none /dev/hugepages/sub tmpfs rw 0 0\n\
                      none /mnt/huge hugetlbfs rw 0 0\n";
        assert_eq!(hugetlbfs_page_size(mounts, Path::new("/dev/hugepages/ubox-a.arena")), Some(1 << 30));
        assert_eq!(hugetlbfs_page_size(mounts, Path::new("/dev/hugepages/sub/x")), None);
        assert_eq!(hugetlbfs_page_size(mounts, Path::new("/mnt/huge/x")), Some(2 << 20));
        assert_eq!(hugetlbfs_page_size(mounts, Path::new("/dev/shm/x")), None);
        assert_eq!(hugetlbfs_page_size(mounts, Path::new("/dev/hugepagesx/y")), None);
        let loc = default_path("abc");
        assert!(loc.path.ends_with("ubox-abc.arena"));
        assert_eq!(loc.fallback, loc.path.starts_with("/dev/shm"));
    }
}
