//! Running a piece of work as the login user, in a forked child, with a
//! deadline.
//!
//! The login process (root) forks. The child drops to the user (groups, gid,
//! uid — in that order — and checks that root cannot be regained), does the
//! work, reports what happened as lines on a pipe, and `_exit`s. The parent
//! reads those lines until the pipe closes or the deadline passes; at the
//! deadline it kills the child (by its pid) and carries on. The parent never
//! talks to the agent itself, and never waits for anyone but its own child.
//!
//! See the crate documentation for why running Rust code in the child of a
//! possibly multithreaded process is acceptable here.

use crate::user::Account;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// One message from the child: a syslog priority and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// `LOG_ERR` … `LOG_DEBUG`.
    pub priority: libc::c_int,
    /// What happened (never a secret).
    pub message: String,
}

/// How the child ended, from the parent's side.
#[derive(Debug)]
pub struct Finished {
    /// What the child reported.
    pub lines: Vec<Line>,
    /// The deadline passed and the child was killed.
    pub timed_out: bool,
    /// The child's exit status, if it was reaped (`None` when the host reaps
    /// children itself or the child could not be reaped in time).
    pub status: Option<i32>,
    /// What the child answered ([`Reporter::answer`]), in order.
    pub answers: Vec<String>,
}

/// Exit codes of the child.
pub mod exit {
    /// The work ran.
    pub const OK: i32 = 0;
    /// Dropping privileges failed; nothing was done.
    pub const NO_DROP: i32 = 90;
    /// The work panicked.
    pub const PANIC: i32 = 91;
}

/// The child's side of the report pipe.
pub struct Reporter {
    fd: OwnedFd,
}

impl Reporter {
    /// Sends one line to the parent (atomically: lines are cut below PIPE_BUF).
    pub fn say(&mut self, priority: libc::c_int, message: &str) {
        let mut text: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if text.len() > 3000 {
            let mut cut = 3000;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        let mut line = Vec::with_capacity(text.len() + 3);
        line.push(b'0' + (priority.clamp(0, 7) as u8));
        line.extend_from_slice(text.as_bytes());
        line.push(b'\n');
        let _ = rustix::io::write(&self.fd, &line);
    }

    /// Sends the parent a short answer to its question (a word such as
    /// `yes`; never a secret), apart from the log lines.
    pub fn answer(&mut self, word: &str) {
        let word: String = word.chars().filter(|c| !c.is_control()).take(64).collect();
        let _ = rustix::io::write(&self.fd, format!("A{word}\n").as_bytes());
    }
}

/// Runs `work` as `account` in a forked child, for at most `timeout`.
///
/// `work` gets a [`Reporter`] and the deadline. It runs only in the child,
/// after privileges are dropped; whatever it captures is the parent's memory,
/// copied by `fork` (the child `_exit`s, so nothing is dropped twice and no
/// handler of the host process runs).
pub fn run_as(
    account: &Account,
    timeout: Duration,
    work: impl FnOnce(&mut Reporter, Instant),
) -> Result<Finished, String> {
    let deadline = Instant::now() + timeout;
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("cannot create a pipe: {e}"))?;
    // SAFETY: fork has no memory-safety preconditions of its own; what the
    // child may do afterwards is restricted as explained in the crate docs:
    // it only runs `child_main` and then `_exit`s, never returning into the
    // host's code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("cannot fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(read);
        // Whatever happens, the child must never return into the host's code
        // (it would go on as a second copy of the login program).
        let run = std::panic::AssertUnwindSafe(|| {
            child_main(account, Reporter { fd: write }, deadline, work)
        });
        let code = match std::panic::catch_unwind(run) {
            Ok(code) => code,
            Err(payload) => {
                std::mem::forget(payload);
                exit::PANIC
            }
        };
        // SAFETY: `_exit` ends the child at once: no atexit handlers, no stdio
        // flushing of buffers that belong to the host process.
        unsafe { libc::_exit(code) };
    }
    drop(write);
    Ok(parent_wait(read, pid, deadline))
}

fn child_main(
    account: &Account,
    mut rep: Reporter,
    deadline: Instant,
    work: impl FnOnce(&mut Reporter, Instant),
) -> i32 {
    // A panic in the child must not print through the host's stderr or
    // unwind into its frames; it is caught below and reported.
    std::panic::set_hook(Box::new(|_| {}));
    reset_process_state();
    if let Err(e) = drop_privileges(account) {
        rep.say(
            libc::LOG_ERR,
            &format!("cannot become user {} ({e}); doing nothing", account.name),
        );
        return exit::NO_DROP;
    }
    let rep_ref = &mut rep;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(rep_ref, deadline))) {
        Ok(()) => exit::OK,
        Err(_) => {
            rep.say(
                libc::LOG_ERR,
                "internal error (panic) in the session helper",
            );
            exit::PANIC
        }
    }
}

/// Signal dispositions, the signal mask, the umask and inherited descriptors
/// come from the host process; make them sane for the work and for an agent
/// started from here.
fn reset_process_state() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: setting a default disposition is always sound; signals that
        // cannot be changed make `signal` fail, which is ignored.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // Writing to a vanished agent must be an error, not a silent death.
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // SAFETY: an empty set is initialised by sigemptyset before use; the old
    // mask pointer may be null.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // Nothing the host opened (its sockets, its terminal …) may leak into an
    // agent started from here: mark every descriptor above stderr
    // close-on-exec (our report pipe already is).
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        )
    };
    if rc != 0 {
        for fd in 3..4096 {
            // SAFETY: F_SETFD on a descriptor that may not exist only fails.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// Becomes `account`: supplementary groups, then gid, then uid; then checks
/// that the change is complete and cannot be undone.
fn drop_privileges(account: &Account) -> Result<(), String> {
    let (uid, gid) = (account.uid, account.gid);
    let os = || std::io::Error::last_os_error();
    // SAFETY: plain syscalls on our own (single-threaded) process.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        // SAFETY: `groups` is a valid slice of gids for the given length.
        if unsafe { libc::setgroups(account.groups.len(), account.groups.as_ptr()) } != 0 {
            return Err(format!("setgroups: {}", os()));
        }
        // SAFETY: plain syscall.
        if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
            return Err(format!("setresgid: {}", os()));
        }
        // SAFETY: plain syscall.
        if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
            return Err(format!("setresuid: {}", os()));
        }
    } else if euid != uid {
        return Err(format!("running as uid {euid}, neither root nor the user"));
    } else {
        // Already the user (a screen locker …): make it complete.
        // SAFETY: plain syscall; allowed because one of our ids is `uid`.
        if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
            return Err(format!("setresuid: {}", os()));
        }
    }
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three valid out-pointers.
    unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    if (r, e, s) != (uid, uid, uid) {
        return Err(format!("uids are {r}/{e}/{s} after dropping"));
    }
    if euid == 0 {
        // SAFETY: three valid out-pointers.
        unsafe { libc::getresgid(&mut r, &mut e, &mut s) };
        if (r, e, s) != (gid, gid, gid) {
            return Err(format!("gids are {r}/{e}/{s} after dropping"));
        }
    }
    // SAFETY: plain syscalls; they must fail for a non-root user.
    if uid != 0 && (unsafe { libc::setuid(0) } == 0 || unsafe { libc::seteuid(0) } == 0) {
        return Err("root could be regained".into());
    }
    // A host with SECBIT_NO_SETUID_FIXUP would keep its capabilities across
    // the uid change: there must be none left.
    if uid != 0 {
        let status = std::fs::read_to_string("/proc/self/status")
            .map_err(|e| format!("cannot check capabilities: {e}"))?;
        for field in ["CapPrm:", "CapEff:", "CapAmb:"] {
            let left = status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .map(|v| u64::from_str_radix(v.trim(), 16).unwrap_or(u64::MAX));
            if left.is_some_and(|caps| caps != 0) {
                return Err(format!("capabilities left after dropping ({field})"));
            }
        }
    }
    // The child holds the password: no core files, no ptrace by the user.
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) only changes a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `no_core` is a valid rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    Ok(())
}

fn parent_wait(read: OwnedFd, pid: libc::pid_t, deadline: Instant) -> Finished {
    let mut buf = Vec::new();
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        let mut fds = [libc::pollfd {
            fd: read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: `fds` is a valid array of one pollfd.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        if rc < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if rc == 0 {
            continue; // the loop head sees the deadline
        }
        let mut chunk = [0u8; 4096];
        match rustix::io::read(&read, &mut chunk) {
            Ok(0) => break, // the child is done
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
            Err(_) => break,
        }
    }
    if timed_out {
        // SAFETY: `pid` is our own child, not yet reaped by us.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let status = reap(
        pid,
        Duration::from_millis(if timed_out { 1000 } else { 2000 }),
    );
    let (lines, answers) = parse_lines(&buf);
    Finished {
        lines,
        timed_out,
        status,
        answers,
    }
}

/// Reaps our child, waiting at most `limit` (a child stuck in the kernel
/// must not hold up the login either).
fn reap(pid: libc::pid_t, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child only, without blocking.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -libc::WTERMSIG(status)
            });
        }
        if rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return None; // ECHILD: the host reaps its children itself
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The child's log lines (a priority digit, then the message) and its
/// answers (`A`, then the word).
fn parse_lines(buf: &[u8]) -> (Vec<Line>, Vec<String>) {
    let (mut lines, mut answers) = (Vec::new(), Vec::new());
    for l in String::from_utf8_lossy(buf).lines() {
        if let Some(word) = l.strip_prefix('A') {
            answers.push(word.to_owned());
            continue;
        }
        let mut chars = l.chars();
        if let Some(p) = chars.next().and_then(|c| c.to_digit(10)) {
            lines.push(Line {
                priority: p as libc::c_int,
                message: chars.as_str().to_owned(),
            });
        }
    }
    (lines, answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let _serial = crate::test_serial();
        let (lines, answers) = parse_lines(b"5unlocked\nAyes\n4the password differs\nnot a line\n");
        assert_eq!(answers, ["yes"]);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].priority, 5);
        assert_eq!(lines[0].message, "unlocked");
        assert_eq!(lines[1].priority, 4);
    }

    fn me() -> Account {
        crate::user::lookup("root").map_or_else(
            |_| Account {
                name: "me".into(),
                uid: rustix::process::getuid().as_raw(),
                gid: rustix::process::getgid().as_raw(),
                home: "/".into(),
                groups: vec![],
            },
            |mut a| {
                a.uid = rustix::process::getuid().as_raw();
                a.gid = rustix::process::getgid().as_raw();
                a
            },
        )
    }

    #[test]
    fn the_child_reports_and_the_deadline_holds() {
        let _serial = crate::test_serial();
        let acc = me();
        let f = run_as(&acc, Duration::from_secs(5), |rep, _| {
            rep.say(libc::LOG_NOTICE, "hello\nworld");
            rep.answer("no\nAyes");
        })
        .unwrap();
        assert!(!f.timed_out);
        assert_eq!(f.answers, ["noAyes"]);
        assert_eq!(f.lines.len(), 1, "{f:?}");
        assert_eq!(f.lines[0].message, "hello world");

        let start = Instant::now();
        // (A generous deadline: the child must get to say something first,
        // even on a loaded machine.)
        let f = run_as(&acc, Duration::from_millis(1500), |rep, _| {
            rep.say(libc::LOG_INFO, "sleeping");
            std::thread::sleep(Duration::from_secs(30));
        })
        .unwrap();
        assert!(f.timed_out);
        assert!(start.elapsed() < Duration::from_secs(6));
        assert_eq!(f.lines[0].message, "sleeping");
        assert_eq!(f.status, Some(-libc::SIGKILL));

        let f = run_as(&acc, Duration::from_secs(5), |_, _| {
            let v: Vec<u8> = Vec::new();
            let _ = v[1];
        })
        .unwrap();
        assert_eq!(f.status, Some(exit::PANIC));
        assert!(f.lines[0].message.contains("panic"));
    }
}
