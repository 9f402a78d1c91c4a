//! Process hardening and locked memory: the only `unsafe` in keyward's agent.
//!
//! - [`harden_process`]: not dumpable (no core files, no same-uid ptrace), core
//!   size limit 0, umask 0077.
//! - [`LockedBox`]: a value in its own anonymous mapping, mlocked (never
//!   swapped), excluded from core dumps, and zeroized before it is unmapped.
//!   Long-lived key material lives only in these.
#![allow(unsafe_code)]

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use zeroize::Zeroize;

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The effective gid of this process.
pub fn egid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// What [`harden_process`] managed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardeningReport {
    /// PR_SET_DUMPABLE 0 took effect.
    pub not_dumpable: bool,
    /// RLIMIT_CORE is 0.
    pub no_core: bool,
    /// RLIMIT_MEMLOCK in bytes (`u64::MAX` = unlimited).
    pub memlock_limit: u64,
}

/// Makes the process non-dumpable, disables core files and sets umask 0077.
/// Call it first thing in `main`, before any secret exists.
pub fn harden_process() -> HardeningReport {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) only changes a flag of this process.
    let not_dumpable = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } == 0;
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `zero` is a valid rlimit that outlives the call.
    let no_core = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } == 0;
    // SAFETY: umask only changes this process's file mode mask.
    unsafe { libc::umask(0o077) };
    HardeningReport {
        not_dumpable,
        no_core,
        memlock_limit: memlock_limit(),
    }
}

/// For an agent started in the background (by the CLI or the PAM module):
/// starts a new session, leaving the caller's controlling terminal and
/// process group, and closes every descriptor it inherited besides stdin,
/// stdout and stderr (a `--password-fd` of the command that started it,
/// say: the agent lives on long after). Call it first thing in `main`,
/// before the agent opens anything. setsid fails if the agent leads a
/// process group already (its starter must not make it one).
pub fn new_session() -> std::io::Result<()> {
    // Sockets passed by systemd (LISTEN_FDS, for this pid) stay.
    let first = 3 + activated_fd_count();
    // SAFETY: close_range only closes descriptors of this process; nothing
    // in this process has opened any beyond those it was given yet.
    let closed = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
    if closed != 0 {
        // Kernels before 5.9: one by one.
        let open: Vec<u32> = std::fs::read_dir("/proc/self/fd")?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd >= first)
            .collect();
        for fd in open {
            // SAFETY: as above (the directory's own descriptor is closed
            // already and fails harmlessly).
            unsafe { libc::close(fd as i32) };
        }
    }
    // SAFETY: setsid only changes this process's session and group.
    if unsafe { libc::setsid() } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `CLOCK_BOOTTIME`: time since boot, suspended time included. (From
/// libc: rustix's own vDSO lookup crashes under valgrind, which
/// agent/link/make-idle-order.sh runs the agent in.)
pub fn boot_clock() -> std::time::Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill; CLOCK_BOOTTIME
    // exists on every Linux this runs on (≥ 2.6.39), so it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) };
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// How many sockets systemd passed to this process (`LISTEN_FDS` when
/// `LISTEN_PID` is ours), without taking them.
fn activated_fd_count() -> u32 {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    if !ours {
        return 0;
    }
    std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0)
        .min(1024)
}

/// Raises the soft limit on open files to the hard limit, so that the
/// connection cap, not the fd limit, decides how many clients are served.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is valid and writable; setrlimit only reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The listening sockets passed by the service manager (socket
/// activation: `LISTEN_FDS`), in the order the unit lists them; empty when
/// the agent was not socket-activated. Each socket in a directory of ours
/// is narrowed to 0600.
pub fn take_activated_listeners() -> std::io::Result<Vec<std::os::unix::net::UnixListener>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut out = Vec::new();
    for fd in sd_notify::listen_fds()? {
        // SAFETY: the service manager passed this descriptor to this process
        // (LISTEN_PID matched) for us to own; nothing else in the process has
        // taken it, and listen_fds() yields each descriptor once.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let listener = std::os::unix::net::UnixListener::from(owned);
        let addr = listener.local_addr()?;
        if let Some(path) = addr.as_pathname() {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.uid() == euid()) {
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            }
        }
        out.push(listener);
    }
    Ok(out)
}

/// Gives memory freed by the allocator back to the system (after a lock:
/// the item index and the decrypted names of a large vault).
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Whether the process is currently dumpable (for tests and `status`).
pub fn is_dumpable() -> bool {
    // SAFETY: prctl(PR_GET_DUMPABLE) only reads a flag.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 }
}

/// RLIMIT_MEMLOCK's soft limit in bytes.
pub fn memlock_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        lim.rlim_cur
    }
}

static MLOCK_FAILED: AtomicBool = AtomicBool::new(false);

/// Whether some [`LockedBox`] could not be mlocked (RLIMIT_MEMLOCK too small).
pub fn mlock_failed() -> bool {
    MLOCK_FAILED.load(Ordering::Relaxed)
}

/// Failure to map memory for a [`LockedBox`].
#[derive(Debug, thiserror::Error)]
#[error("cannot allocate locked memory: {0}")]
pub struct LockedAllocError(std::io::Error);

/// A `T` in its own mlocked, non-dumpable anonymous mapping, zeroized on drop.
///
/// `T` must keep its secrets inline (arrays, not `Vec`/`Box`), or they would
/// live outside the locked pages.
pub struct LockedBox<T: Zeroize + Default> {
    ptr: NonNull<T>,
    map_len: usize,
    locked: bool,
}

// SAFETY: LockedBox owns its T exclusively, like Box<T>.
unsafe impl<T: Zeroize + Default + Send> Send for LockedBox<T> {}
// SAFETY: shared access only hands out &T, like Box<T>.
unsafe impl<T: Zeroize + Default + Sync> Sync for LockedBox<T> {}

/// A fresh anonymous private read-write mapping of `len` bytes.
fn map_anonymous(len: usize) -> std::io::Result<*mut libc::c_void> {
    // SAFETY: an anonymous private mapping with no address hint; the result
    // is checked against MAP_FAILED.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(addr)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

impl<T: Zeroize + Default> LockedBox<T> {
    /// A new `T::default()` in locked memory. If mlock fails (RLIMIT_MEMLOCK
    /// too small) the value is still allocated, excluded from core dumps and
    /// zeroized on drop; [`mlock_failed`] then reports it so the agent can warn.
    pub fn new() -> Result<Self, LockedAllocError> {
        let page = page_size();
        let size = std::mem::size_of::<T>().max(1);
        let map_len = size.div_ceil(page) * page;
        assert!(std::mem::align_of::<T>() <= page);
        let addr = map_anonymous(map_len).map_err(LockedAllocError)?;
        // SAFETY: [addr, addr + map_len) is the mapping we just created.
        unsafe {
            libc::madvise(addr, map_len, libc::MADV_DONTDUMP);
        }
        // SAFETY: as above; mlock only pins our own pages.
        let locked = unsafe { libc::mlock(addr, map_len) } == 0;
        if !locked {
            MLOCK_FAILED.store(true, Ordering::Relaxed);
        }
        let ptr = addr.cast::<T>();
        // SAFETY: the mapping is page-aligned (≥ align_of T), large enough for
        // a T, writable, and not yet initialised.
        unsafe { ptr.write(T::default()) };
        Ok(Self {
            // SAFETY: mmap never returns null on success.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            map_len,
            locked,
        })
    }

    /// Whether the pages are actually mlocked.
    pub fn is_locked(&self) -> bool {
        self.locked
    }
}

impl<T: Zeroize + Default> Deref for LockedBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: ptr points to an initialised T that we own.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: Zeroize + Default> DerefMut for LockedBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: ptr points to an initialised T that we own exclusively.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: Zeroize + Default> Drop for LockedBox<T> {
    fn drop(&mut self) {
        let addr = self.ptr.as_ptr();
        // SAFETY: the T is initialised and owned; after drop_in_place we only
        // zero raw bytes and unmap.
        unsafe {
            (*addr).zeroize();
            std::ptr::drop_in_place(addr);
            std::ptr::write_bytes(addr.cast::<u8>(), 0, self.map_len);
            if self.locked {
                libc::munlock(addr.cast(), self.map_len);
            }
            libc::munmap(addr.cast(), self.map_len);
        }
    }
}

/// Argon2 working memory: its own anonymous mapping, aligned to 2 MiB and
/// marked for transparent huge pages (64 MiB in 32 pages instead of 16,384:
/// fewer page faults and far fewer TLB misses on Argon2's random accesses),
/// zero-filled by the kernel (no memset up front), wiped and unmapped on drop
/// so the memory goes straight back to the system.
///
/// Locked in memory (`mlock`) where `RLIMIT_MEMLOCK` allows it, so that
/// Argon2's state (which, with the password, is enough to finish the
/// derivation) never goes to swap. The usual unprivileged limit (8 MiB on
/// Debian 12) is below the default 64 MiB: then the memory is used
/// unlocked, as before; it is excluded from core dumps either way and
/// wiped as soon as the derivation ends (docs/SECURITY.md §13).
pub struct ArgonMemory {
    base: *mut libc::c_void,
    map_len: usize,
    blocks: NonNull<argon2::Block>,
    count: usize,
    locked: bool,
}

// SAFETY: ArgonMemory owns its mapping exclusively.
unsafe impl Send for ArgonMemory {}

const HUGE_PAGE: usize = 2 * 1024 * 1024;

impl ArgonMemory {
    /// Maps `count` zeroed blocks.
    pub fn new(count: usize) -> std::io::Result<Self> {
        let bytes = count
            .checked_mul(std::mem::size_of::<argon2::Block>())
            .filter(|&b| b > 0)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let map_len = bytes
            .checked_add(HUGE_PAGE)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
        let base = map_anonymous(map_len)?;
        let offset = (HUGE_PAGE - (base as usize % HUGE_PAGE)) % HUGE_PAGE;
        // SAFETY: offset < HUGE_PAGE, so [base + offset, base + offset + bytes)
        // lies inside the mapping of bytes + HUGE_PAGE.
        let start = unsafe { base.cast::<u8>().add(offset) };
        // SAFETY: a range inside our mapping; MADV_HUGEPAGE and MADV_DONTDUMP
        // are hints with no effect on memory safety.
        unsafe {
            libc::madvise(start.cast(), bytes, libc::MADV_HUGEPAGE);
            libc::madvise(base, map_len, libc::MADV_DONTDUMP);
        }
        // SAFETY: a range inside our mapping. mlock faults the pages in
        // (huge pages, after the hint above) and fails cleanly (ENOMEM,
        // EPERM) past RLIMIT_MEMLOCK, leaving the mapping as it was.
        let locked = unsafe { libc::mlock(start.cast(), bytes) } == 0;
        if !locked {
            tracing::debug!(
                bytes,
                "Argon2id memory not locked (RLIMIT_MEMLOCK): it could be swapped out while in use"
            );
        }
        Ok(Self {
            base,
            map_len,
            locked,
            // SAFETY: start is inside a successful mapping, hence non-null; it
            // is 2 MiB-aligned or page-aligned, more than Block's 64 bytes.
            blocks: unsafe { NonNull::new_unchecked(start.cast()) },
            count,
        })
    }

    /// Whether the blocks are locked in memory.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// The blocks (all zero until written).
    pub fn blocks(&mut self) -> &mut [argon2::Block] {
        // SAFETY: the mapping holds `count` blocks, zero-filled by the kernel,
        // and an all-zero Block is valid (it is Block::default()); we own it
        // exclusively for the lifetime of &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_ptr(), self.count) }
    }
}

impl Drop for ArgonMemory {
    fn drop(&mut self) {
        // SAFETY: we wipe the blocks we own, then unmap the whole mapping,
        // which nothing references any more. The memset is not elided: the
        // pointer escapes to munmap, an opaque call.
        unsafe {
            std::ptr::write_bytes(self.blocks.as_ptr(), 0, self.count);
            // munmap unlocks what mlock locked.
            libc::munmap(self.base, self.map_len);
        }
    }
}

/// How far below the caller's stack pointer `f` writes, in bytes: the stack
/// is painted with a pattern, `f` runs, and the deepest byte that no longer
/// holds the pattern is found. For the tests that check
/// [`crate::secret::SCRUB_BYTES`] covers what a cryptographic operation
/// leaves on the stack. `None` if `f` went deeper than can be measured.
#[cfg(all(test, target_arch = "x86_64"))]
#[inline(never)]
pub(crate) fn stack_depth_of(f: impl FnOnce()) -> Option<usize> {
    const PAINT: usize = 256 * 1024;
    // Paint's frame reaches a little deeper than PAINT below ours; scan
    // only what it surely covers.
    const SCAN: usize = PAINT - 4096;
    const PATTERN: u8 = 0xA5;

    #[inline(never)]
    fn paint() {
        let mut area = [PATTERN; PAINT];
        std::hint::black_box(&mut area);
    }

    #[inline(never)]
    fn deepest_write() -> Option<usize> {
        let sp: usize;
        // SAFETY: reads the stack pointer register; touches no memory.
        unsafe {
            std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags));
        }
        for depth in (0..SCAN).rev() {
            let byte: u8;
            // SAFETY: `sp - depth` lies within this thread's stack (paint
            // wrote there moments ago, so it is mapped); a byte load through
            // asm reads it without creating a Rust reference to it.
            unsafe {
                std::arch::asm!(
                    "mov {b}, byte ptr [{a}]",
                    a = in(reg) sp - depth,
                    b = out(reg_byte) byte,
                    options(nostack, readonly, preserves_flags)
                );
            }
            if byte != PATTERN {
                return (depth < SCAN - 1).then_some(depth);
            }
        }
        Some(0)
    }

    paint();
    f();
    deepest_write()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Zeroize)]
    struct Keys {
        a: [u8; 32],
        b: [[u8; 32]; 32],
        c: [[u8; 32]; 32],
        d: [[u8; 32]; 32],
        e: [[u8; 32]; 32],
        f: [[u8; 32]; 29],
    }

    #[test]
    fn locked_box_holds_and_wipes() {
        let mut k = LockedBox::<Keys>::new().unwrap();
        k.a = [7; 32];
        k.f[28][31] = 1;
        assert_eq!(k.a[0], 7);
        assert_eq!(k.map_len % page_size(), 0);
        assert!(k.map_len >= 5032);
        drop(k);
    }

    /// Whether this process may lock `bytes` more (root, or a soft
    /// RLIMIT_MEMLOCK with room to spare).
    fn may_lock(bytes: u64) -> bool {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we own.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0;
        euid() == 0 || (ok && lim.rlim_cur >= bytes * 4)
    }

    /// Issue 19, item 7: Argon2id's working memory is locked where the
    /// limit allows, and left unlocked (the derivation still runs) where
    /// it does not.
    #[test]
    fn argon_memory_is_locked_where_the_limit_allows() {
        let blocks = 1024; // 1 MiB
        let mut m = ArgonMemory::new(blocks).unwrap();
        if may_lock(1 << 20) {
            assert!(m.is_locked(), "1 MiB within the limit was not locked");
        }
        m.blocks()[blocks - 1].as_mut()[0] = 7;
        drop(m);
        // Past any limit an unprivileged process has: still usable.
        if euid() != 0 {
            let mut big = ArgonMemory::new(1 << 20).unwrap(); // 1 GiB, lazily mapped
            if !may_lock(1 << 30) {
                assert!(!big.is_locked());
            }
            big.blocks()[0].as_mut()[0] = 1;
        }
    }

    #[test]
    fn euid_matches_metadata_of_a_new_file() {
        use std::os::unix::fs::MetadataExt;
        let f = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(f.as_file().metadata().unwrap().uid(), euid());
    }
}
