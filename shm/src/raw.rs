//! The module with the `unsafe` (with one line in `pass`, taking
//! ownership of received descriptors): it turns `(arena base, offset)` into typed
//! references after bounds and alignment checks, and wraps the system calls
//! that Rust cannot check (`mmap`, `kill` and `futex`).
//!
//! Everything above this module is safe code working with `&AtomicU32`,
//! `&RingHeader`, `&[u8]` and friends. This module owns no layout knowledge;
//! it must not grow any.

use std::fs::File;
use std::io;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::layout::{ArenaHeader, PoolHeader, PubHeader, RingHeader, SlotHeader, HEADER_SIZE};

/// Types that may be viewed in place in the shared mapping through `&T`.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, contain no pointers or references, be
/// valid for every bit pattern (a peer process may write anything), and be
/// made only of atomics and padding/reserved integers that are never written
/// through `&T`, so that concurrent access from other processes is a race on
/// atomics only.
pub(crate) unsafe trait InArena: Sized {}

// SAFETY: atomics of plain integers are valid for any bit pattern and are
// designed for shared mutation through `&`.
unsafe impl InArena for AtomicU32 {}
// SAFETY: as above.
unsafe impl InArena for AtomicU64 {}
// SAFETY: repr(C), three padded lines of AtomicU32/AtomicU64 plus a reserved
// u32 that no code writes through `&` (padding is never read).
unsafe impl InArena for RingHeader {}
// SAFETY: repr(C), padded AtomicU64 / AtomicU32 / AtomicU64 only.
unsafe impl InArena for PoolHeader {}
// SAFETY: repr(C), three AtomicU32 plus a reserved u32 no code writes through `&`.
unsafe impl InArena for SlotHeader {}
// SAFETY: repr(C), one padded AtomicU32.
unsafe impl InArena for PubHeader {}

/// The arena's range of addresses: reserved in one piece, then filled with
/// shared mappings of the files that back its parts ([`place`](Self::place)),
/// each read-only or read-write. What is never placed stays inaccessible
/// (`PROT_NONE`): an NF process has no mapping of other NFs' channels.
///
/// The base pointer comes from our own anonymous reservation, so every
/// access derives from one pointer; placing a file over part of it with
/// `MAP_FIXED` changes what backs those addresses, never whether they are
/// mapped. Callers only view placed parts (the arena checks which).
pub(crate) struct Mapping {
    base: NonNull<u8>,
    len: usize,
    /// The whole reservation, alignment slack included (for `munmap`).
    raw: *mut libc::c_void,
    raw_len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; every access through
// `&Mapping` goes through atomics (`InArena`) or through `bytes`/`bytes_mut`,
// whose callers follow the single-writer contract documented on them. Nothing
// is tied to the creating thread.
unsafe impl Send for Mapping {}
// SAFETY: see `Send`; shared access is either atomic or covered by the
// `bytes_mut` contract.
unsafe impl Sync for Mapping {}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping").field("base", &self.base).field("len", &self.len).finish()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `raw`/`raw_len` is exactly the reservation made in
        // `reserve`; no reference into it outlives `self` (they borrow it).
        unsafe { libc::munmap(self.raw, self.raw_len) };
    }
}

impl Mapping {
    /// Reserves `len` bytes of address space aligned to `align` (a power of
    /// two), backed by nothing and inaccessible until parts are placed.
    pub(crate) fn reserve(len: usize, align: usize) -> io::Result<Mapping> {
        debug_assert!(align.is_power_of_two());
        let raw_len = len
            .checked_add(align)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "arena too large to map"))?;
        // SAFETY: an anonymous, private, PROT_NONE mapping at an address of
        // the kernel's choice touches no existing memory; the result is
        // checked for MAP_FAILED below.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                raw_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let aligned = (raw as usize).next_multiple_of(align);
        let base = NonNull::new(aligned as *mut u8)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "mmap returned a null mapping"))?;
        Ok(Mapping { base, len, raw, raw_len })
    }

    /// Maps `len` bytes of `file` (from its offset 0) at arena offset `off`,
    /// shared, read-write or read-only. `off` and `len` must be multiples
    /// of the file's page size, and the file at least `len` long (else the
    /// kernel refuses, or accesses past its end fault: callers check sizes).
    ///
    /// `&mut self`: nothing in this process views the arena yet.
    pub(crate) fn place(&mut self, file: &File, off: usize, len: usize, writable: bool) -> io::Result<()> {
        self.map_fixed(file, off, len, writable)
    }

    /// [`place`](Self::place) over a part that may be viewed right now, for
    /// parts viewed only through atomics (channels): the addresses stay
    /// mapped throughout, and for those views new contents are the same as
    /// a peer's stores.
    pub(crate) fn replace_atomic_part(&self, file: &File, off: usize, len: usize) -> io::Result<()> {
        self.map_fixed(file, off, len, true)
    }

    fn map_fixed(&self, file: &File, off: usize, len: usize, writable: bool) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let inside = off.checked_add(len).is_some_and(|end| end <= self.len);
        if !inside || len == 0 || off % 4096 != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "arena part outside the reservation"));
        }
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        let at = self.base.as_ptr().wrapping_add(off).cast::<libc::c_void>();
        // SAFETY: `[at, at + len)` lies inside our own reservation (checked),
        // so MAP_FIXED replaces only pages this value owns, never another
        // object's memory. Views of the range stay valid: the pages stay
        // mapped, only what backs them changes (see the callers' contracts).
        let got = unsafe { libc::mmap(at, len, prot, libc::MAP_SHARED | libc::MAP_FIXED, file.as_raw_fd(), 0) };
        if got == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Address of byte `off` of the mapping (for handing a region to DPDK),
    /// or `None` past the end. Computing the address is safe; using it is
    /// the caller's business.
    pub(crate) fn addr(&self, off: usize) -> Option<*mut u8> {
        (off <= self.len).then(|| self.base.as_ptr().wrapping_add(off))
    }

    /// Address of `off` if `[off, off + size)` lies in the mapping and the
    /// address is aligned to `align`.
    fn checked(&self, off: usize, size: usize, align: usize) -> Option<*mut u8> {
        let end = off.checked_add(size)?;
        if end > self.len {
            return None;
        }
        // `wrapping_add` cannot leave the allocation: `off <= len` was checked.
        let p = self.base.as_ptr().wrapping_add(off);
        if (p as usize) & (align - 1) != 0 {
            return None;
        }
        Some(p)
    }

    /// A reference to the `T` at `off`, or `None` if out of bounds or misaligned.
    pub(crate) fn get<T: InArena>(&self, off: usize) -> Option<&T> {
        let p = self.checked(off, size_of::<T>(), align_of::<T>())?;
        // SAFETY: `p` is in bounds and aligned (checked), the mapping lives as
        // long as `&self`, and `T: InArena` is valid for any bytes and only
        // mutated atomically, so a shared reference is sound even while other
        // processes write it.
        Some(unsafe { &*p.cast::<T>() })
    }

    /// A slice of `n` values of `T` starting at `off`.
    pub(crate) fn slice<T: InArena>(&self, off: usize, n: usize) -> Option<&[T]> {
        let size = size_of::<T>().checked_mul(n)?;
        let p = self.checked(off, size, align_of::<T>())?;
        // SAFETY: as in `get`, for `n` consecutive values, all in bounds.
        Some(unsafe { std::slice::from_raw_parts(p.cast::<T>(), n) })
    }

    /// Shared view of `len` raw bytes at `off`.
    ///
    /// The bytes may be written by the single holder of the slot they belong
    /// to; callers only hand this out to holders of a reference, per the slot
    /// pool's contract.
    pub(crate) fn bytes(&self, off: usize, len: usize) -> Option<&[u8]> {
        let p = self.checked(off, len, 1)?;
        // SAFETY: in bounds (checked); bytes are valid for any value; the
        // single-writer protocol (see `bytes_mut`) guarantees nobody writes them
        // while a reader holds a reference to the slot.
        Some(unsafe { std::slice::from_raw_parts(p, len) })
    }

    /// Exclusive view of `len` raw bytes at `off`.
    ///
    /// # Safety
    /// For the lifetime of the returned slice no other reference to these bytes
    /// may exist or be created, in this process or (by protocol) in another:
    /// the caller must hold the only reference to the slot that owns them.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn bytes_mut(&self, off: usize, len: usize) -> Option<&mut [u8]> {
        let p = self.checked(off, len, 1)?;
        // SAFETY: in bounds (checked), the base has write provenance, and
        // exclusivity is the caller's obligation stated above.
        Some(unsafe { std::slice::from_raw_parts_mut(p, len) })
    }

    /// Copies `data` into the mapping at `off` with raw writes (no `&mut`
    /// is ever formed), or `None` if out of bounds.
    pub(crate) fn copy_in(&self, off: usize, data: &[u8]) -> Option<()> {
        let p = self.checked(off, data.len(), 1)?;
        // SAFETY: `[p, p + len)` lies in the mapping (checked) and the base has
        // write provenance. `data` cannot overlap the destination unless the
        // caller passes arena bytes back in, which `copy` (memmove) handles.
        // Callers write only bytes they own by protocol (a packet buffer no
        // event currently names), so no reader observes a torn write.
        unsafe { std::ptr::copy(data.as_ptr(), p, data.len()) };
        Some(())
    }

    /// Writes the header. Only the creator calls this, before publishing
    /// `READY`; `&mut self` rules out any other reference in this process.
    pub(crate) fn write_header(&mut self, header: &ArenaHeader) -> Option<()> {
        let p = self.checked(0, HEADER_SIZE, align_of::<ArenaHeader>())?;
        // SAFETY: in bounds and aligned (checked); `&mut self` means no
        // reference into the mapping exists in this process; no other process
        // reads past the atomic `state` check before we publish READY.
        unsafe { p.cast::<ArenaHeader>().write(*header) };
        Some(())
    }
}

/// The header in the first [`HEADER_SIZE`] bytes of the arena file, as read
/// from the file (an NF validates it before mapping anything).
pub(crate) fn header_from_bytes(raw: &[u8; HEADER_SIZE]) -> ArenaHeader {
    // SAFETY: `raw` holds HEADER_SIZE = size_of::<ArenaHeader>() bytes
    // (const-asserted in layout); `ArenaHeader` is made of integers and
    // integer arrays, valid for every bit pattern; the unaligned read copies
    // them out of the byte array.
    unsafe { raw.as_ptr().cast::<ArenaHeader>().read_unaligned() }
}

/// A new memfd of `len` bytes (on 2 MiB hugepages with `huge`), mode 0600
/// and sealed against shrinking and growing: whoever else gets a
/// descriptor of it cannot reopen it with more rights (unless root), nor
/// truncate it under the runtime's mapping, which would make the runtime's
/// next access to it fault.
pub(crate) fn sealed_memfd(name: &str, len: u64, huge: bool) -> io::Result<File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let cname = std::ffi::CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    if huge {
        flags |= libc::MFD_HUGETLB | libc::MFD_HUGE_2MB;
    }
    // SAFETY: `cname` is a valid NUL-terminated string; the call creates a
    // new descriptor or fails with -1.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    // A memfd starts out mode 0777: anyone holding a read-only descriptor
    // could reopen it read-write through /proc/self/fd. Its creator's only.
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.set_len(len)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS takes an int argument and only changes the
    // file's seal set; `file` is a live descriptor.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Whether `file` was opened for writing (`O_RDWR` or `O_WRONLY`).
pub(crate) fn opened_for_write(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: F_GETFL reads the descriptor's flags; no memory is passed.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    flags >= 0 && flags & libc::O_ACCMODE != libc::O_RDONLY
}

/// Whether a process with this pid exists (`kill(pid, 0)` succeeds or fails
/// with `EPERM`). Pid 0 and pids that do not fit `pid_t` are never alive:
/// `kill(0, _)` and negative pids address process groups.
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 performs only the existence and permission check and
    // delivers nothing; `pid` is a positive single-process id.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Blocks while `*word == expected`, for at most `timeout`, on a futex
/// keyed by the word's place in the shared file (not by address: the
/// mapping sits at another address in each process). Returns at once if
/// the word differs; spurious wake-ups are possible, callers re-check.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: std::time::Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: FUTEX_WAIT (shared, no FUTEX_PRIVATE_FLAG) only reads the
    // aligned u32 at `word`, which lives as long as the borrow; `ts` is a
    // valid timespec on our stack; the other arguments are unused by this
    // operation. The kernel validates everything and at worst returns an
    // error (EAGAIN, EINTR, ETIMEDOUT), which callers treat as a wake-up.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every process blocked in [`futex_wait`] on `word`.
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE (shared) reads nothing and writes nothing of ours;
    // it only looks the word's futex key up. `word` is a live, aligned u32.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX, std::ptr::null::<u8>(), 0usize, 0u32);
    }
}
