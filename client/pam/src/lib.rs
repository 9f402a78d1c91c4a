//! `pam_keyward.so`: unlocks the user's keyward agent at login.
//!
//! | PAM step | what the module does | returns |
//! |---|---|---|
//! | `auth` | keeps a copy of the password the stack just checked (`PAM_AUTHTOK`) in the PAM handle (`pam_set_data`, zeroized by the cleanup), together with the user it was checked for (`PAM_USER`); with `yubikey_pin`, asks a keyward user for the YubiKey PIN (conversation, echo off) and keeps it the same way | `PAM_IGNORE` |
//! | `setcred` | with `PAM_REFRESH_CRED`, `PAM_REINITIALIZE_CRED` or `PAM_DELETE_CRED`: wipes what `auth` kept (no session will use it); with `PAM_ESTABLISH_CRED` nothing | `PAM_IGNORE` |
//! | `open_session` | if `PAM_USER` still names the user `auth` kept the password for, as the user: starts the agent if none runs (`auto_start`), checks that the socket and the agent belong to the user, unlocks with the password; then drops the kept copy | `PAM_SUCCESS` |
//! | `close_session` | as the user: locks the agent when the user's last login session ends (`lock_on_close`; the agent asks logind), or whenever a session ends (`lock_on_close=always`) | `PAM_SUCCESS` |
//! | `chauthtok` | on `PAM_UPDATE_AUTHTOK`, as the user: if the old login password (`PAM_OLDAUTHTOK`, else the one `auth` kept, if kept for the same user) was the Master Password, changes the Master Password to the new one | `PAM_IGNORE` |
//!
//! # Whose password
//!
//! A secret is used only for the user it was typed for. The application may
//! change `PAM_USER` between `pam_authenticate` and `pam_open_session`:
//! `sudo -i -u alice` run by bob checks bob's password, then opens a
//! session for alice. `auth` therefore keeps the user name with the
//! password (and the PIN), and `open_session` and `chauthtok` use them only
//! while `PAM_USER` still names that user (or another name of its uid);
//! otherwise they log it (info) and leave the agent alone. `open_session`
//! never falls back to `PAM_AUTHTOK`
//! itself: without this module's `auth` nothing says whose password it is.
//!
//! keyward never decides a login: `auth` and `chauthtok` return `PAM_IGNORE`
//! (the rest of the stack decides), the session hooks `PAM_SUCCESS`, whatever
//! happened — a wrong Master Password, no agent, a hung agent, a panic. Each
//! step is bounded by `timeout=` (10 s by default). What happened goes to
//! syslog (facility AUTHPRIV, through `pam_syslog`); never the password.
//! Options: see [`options`], the man page `pam_keyward(8)` and
//! `packaging/pam/README.md`.
//!
//! # Never as root
//!
//! The module runs inside the login process, as root. It never talks to the
//! agent from there: it forks, and the child drops to the user (supplementary
//! groups, gid, uid, then checks that root cannot be regained, and makes
//! itself non-dumpable) before it looks at the socket. Nothing under the
//! user's home or runtime directory is looked at as root either (a link
//! there could lead into a directory only root can read, or onto a hung
//! mount): the child looks, within `timeout=`. The password is sent
//! only to a socket file owned by the user (not root), in a directory of the
//! user's that nobody else can write, with a listener whose `SO_PEERCRED`
//! uid is the user's; then [`keyward_client::Client::connect_as`] checks
//! the same again. The password reaches the child by `fork` (a copy of the
//! parent's memory); both copies are zeroized when dropped, and the parent
//! drops its kept copy at the end of `open_session`.
//!
//! # Forking inside a possibly multithreaded process
//!
//! After `fork` in a multithreaded process only the forking thread exists in
//! the child, and any lock another thread held at that moment stays locked
//! forever. POSIX therefore allows only async-signal-safe calls until `exec`.
//! The child here runs ordinary Rust code (the blocking keyward client), as
//! other PAM modules that fork helpers do (pam_systemd's helpers, kanidm).
//! Why that is acceptable, and what keeps it so:
//!
//! - The allocator is glibc's `malloc`, which takes all its arena locks
//!   around `fork` (its own atfork handlers) and resets them in the child:
//!   allocating in the child is safe with glibc.
//! - Everything that takes locks of libc or of the host is done in the
//!   parent, before `fork`: the passwd and group look-ups (NSS), `pam_getenv`
//!   (`Paths` is computed in the parent), syslog. The child logs nothing
//!   itself: it writes its report to a pipe and the parent logs it.
//! - This library is a `cdylib` with its own copy of Rust's std: the only
//!   std locks the child can meet (stderr, the environment lock, the panic
//!   hook) are taken only by this module's own code, which never writes to
//!   stderr or changes the environment while another thread could fork.
//! - The child uses no threads, no stdio of the host, no `std::env`; it
//!   resets signal dispositions and the signal mask, marks every inherited
//!   descriptor close-on-exec, and ends with `_exit` (no atexit handlers of
//!   the host, no double drops). A panic is caught and reported.
//! - The agent is started from the child with `exec` and a clean
//!   environment (`HOME`, `USER`, `LOGNAME`, `PATH`, and the `XDG_*` /
//!   `KEYWARD_HOME` the session will have); it detaches into its own session.
//! - If all this still went wrong (a deadlock), the parent's deadline kills
//!   the child: the login goes on.
//!
//! The parent waits only for its own child (`waitpid(pid)`), never for any
//! other process, and copes with hosts that reap children themselves.
//!
//! A more conservative design would `exec` a small helper binary right after
//! `fork` and pass the password on a pipe; the cost is another program to
//! install and find. The structure here (the work as a closure run by
//! [`child::run_as`]) makes that change local if it is ever needed.
#![allow(unsafe_code)]

pub mod child;
pub mod options;
pub mod pam;
pub mod user;
pub mod work;

use keyward_client::Paths;
use options::{LockOnClose, Options};
use pam::{
    Handle, LOG_DEBUG, LOG_INFO, LOG_NOTICE, LOG_WARNING, PAM_DELETE_CRED, PAM_IGNORE,
    PAM_REFRESH_CRED, PAM_REINITIALIZE_CRED, PAM_SUCCESS, PAM_UPDATE_AUTHTOK, RawHandle, Stash,
};
use std::collections::HashMap;
use std::ffi::{CStr, OsString, c_char, c_int};
use std::io::Write;
use std::path::PathBuf;
use work::{Job, Target};

/// Where messages go: syslog always, standard error too with `debug`.
struct Log<'h, 'a> {
    h: &'h Handle<'a>,
    debug: bool,
}

impl Log<'_, '_> {
    fn say(&self, priority: c_int, message: &str) {
        if priority >= LOG_DEBUG && !self.debug {
            return;
        }
        self.h.syslog(priority, message);
        if self.debug {
            // Never `eprintln!`: it panics when stderr is gone.
            let _ = writeln!(std::io::stderr(), "pam_keyward: {message}");
        }
    }
}

/// `pam_sm_authenticate`: keeps the password for `open_session`.
///
/// # Safety
/// Called by libpam with its handle and the module arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_authenticate(
    pamh: *mut RawHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: forwarded from libpam unchanged.
    unsafe { entry(pamh, flags, argc, argv, PAM_IGNORE, authenticate) }
}

/// `pam_sm_setcred`: drops what `auth` kept once no session can use it.
///
/// # Safety
/// Called by libpam with its handle and the module arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_setcred(
    pamh: *mut RawHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: forwarded from libpam unchanged.
    unsafe { entry(pamh, flags, argc, argv, PAM_IGNORE, setcred) }
}

/// `pam_sm_open_session`: unlocks the agent.
///
/// # Safety
/// Called by libpam with its handle and the module arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_open_session(
    pamh: *mut RawHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: forwarded from libpam unchanged.
    unsafe { entry(pamh, flags, argc, argv, PAM_SUCCESS, open_session) }
}

/// `pam_sm_close_session`: locks the agent with `lock_on_close`.
///
/// # Safety
/// Called by libpam with its handle and the module arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_close_session(
    pamh: *mut RawHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: forwarded from libpam unchanged.
    unsafe { entry(pamh, flags, argc, argv, PAM_SUCCESS, close_session) }
}

/// `pam_sm_chauthtok`: follows a login password change.
///
/// # Safety
/// Called by libpam with its handle and the module arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_chauthtok(
    pamh: *mut RawHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: forwarded from libpam unchanged.
    unsafe { entry(pamh, flags, argc, argv, PAM_IGNORE, chauthtok) }
}

type Hook = fn(&mut Handle<'_>, &Options, c_int) -> c_int;

/// Every entry point: parse the arguments, run the hook, and turn a panic
/// into `fallback` (a panic must never cross into C, and never fail a login).
///
/// # Safety
/// `pamh`, `argc` and `argv` are what libpam passed to the entry point.
unsafe fn entry(
    pamh: *mut RawHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
    fallback: c_int,
    hook: Hook,
) -> c_int {
    let run = std::panic::AssertUnwindSafe(|| {
        // SAFETY: `pamh` is libpam's live handle for this call (or null).
        let Some(mut h) = (unsafe { Handle::from_raw(pamh) }) else {
            return fallback;
        };
        // SAFETY: libpam passes `argc` valid C strings in `argv`.
        let (args, bad) = unsafe { arguments(argc, argv) };
        let mut opts = Options::parse(args.iter().map(String::as_str));
        if bad > 0 {
            opts.warnings
                .push(format!("{bad} option(s) that are not UTF-8 ignored"));
        }
        hook(&mut h, &opts, flags)
    });
    match std::panic::catch_unwind(run) {
        Ok(code) => code,
        Err(payload) => {
            // Dropping a panic payload can panic again; leak it instead.
            std::mem::forget(payload);
            fallback
        }
    }
}

/// The module arguments as strings, and how many were not UTF-8.
///
/// # Safety
/// `argv` must hold `argc` pointers to NUL-terminated strings (or be null
/// when `argc` is 0).
unsafe fn arguments(argc: c_int, argv: *const *const c_char) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    if argv.is_null() || argc <= 0 {
        return (out, 0);
    }
    for i in 0..argc as usize {
        // SAFETY: `i < argc`, and libpam's argv has `argc` entries.
        let p = unsafe { *argv.add(i) };
        if p.is_null() {
            continue;
        }
        // SAFETY: each entry is a NUL-terminated string owned by libpam.
        match unsafe { CStr::from_ptr(p) }.to_str() {
            Ok(s) => out.push(s.to_owned()),
            Err(_) => bad += 1,
        }
    }
    (out, bad)
}

fn log_warnings(log: &Log<'_, '_>, opts: &Options) {
    for w in &opts.warnings {
        log.say(LOG_WARNING, w);
    }
}

fn authenticate(h: &mut Handle<'_>, opts: &Options, _flags: c_int) -> c_int {
    let debug = opts.debug;
    // The password belongs to the user it was checked for: keep the name
    // with it (see "Whose password").
    let user = h.user();
    let kept = match (&user, h.authtok()) {
        (Some(user), Some(pw)) => Some(h.stash(Stash::Password, user, pw)),
        _ => None,
    };
    let log = Log { h, debug };
    log_warnings(&log, opts);
    match (&user, kept) {
        (Some(user), Some(true)) => log.say(
            LOG_DEBUG,
            &format!("kept the login password of {user} for open_session"),
        ),
        (_, Some(false)) => log.say(
            LOG_WARNING,
            "cannot keep the login password (pam_set_data failed)",
        ),
        (None, _) => log.say(
            LOG_DEBUG,
            "no user name (PAM_USER is unset): no password kept",
        ),
        (Some(_), None) => log.say(
            LOG_DEBUG,
            "no password to keep (PAM_AUTHTOK is unset: list pam_keyward after the module \
             that asks for the password)",
        ),
    }
    if let (Some(user), Some(true), true) = (&user, kept, opts.yubikey_pin) {
        ask_pin(h, opts, user);
    }
    PAM_IGNORE
}

/// `yubikey_pin`: asks a keyward user (one with a keyward data directory)
/// for the YubiKey PIN, and keeps it for `open_session` like the password
/// (with `user`, the user the password was kept for).
fn ask_pin(h: &mut Handle<'_>, opts: &Options, user: &str) {
    let Ok(account) = user::lookup(user) else {
        return;
    };
    if account.uid == 0 {
        return;
    }
    let Ok(t) = target(h, opts, &account) else {
        return;
    };
    let log = Log {
        h,
        debug: opts.debug,
    };
    match uses_keyward(&log, opts, &account, t) {
        Some(true) => {}
        Some(false) => {
            log.say(
                LOG_DEBUG,
                &format!("{user} does not use keyward: no YubiKey PIN asked"),
            );
            return;
        }
        None => return,
    }
    let pin = h.ask_secret("YubiKey PIN for keyward (Enter to skip): ");
    let kept = pin.is_some_and(|pin| h.stash(Stash::Pin, user, pin));
    let log = Log {
        h,
        debug: opts.debug,
    };
    log.say(
        LOG_DEBUG,
        if kept {
            "kept the YubiKey PIN for open_session"
        } else {
            "no YubiKey PIN given"
        },
    );
}

/// Whether `account` uses keyward (has a keyward data directory), looked at
/// by a child running as the user, within `timeout=`: the data directory
/// is under the user's home, where a link may lead into a directory only
/// root can read (root's answer would tell the user what is there) or onto
/// a hung network mount. `None` when that could not be told (logged).
fn uses_keyward(
    log: &Log<'_, '_>,
    opts: &Options,
    account: &user::Account,
    t: Target,
) -> Option<bool> {
    let f = match child::run_as(account, opts.timeout, move |rep, _| {
        rep.answer(if work::uses_keyward(&t) { "yes" } else { "no" });
    }) {
        Ok(f) => f,
        Err(e) => {
            log.say(LOG_WARNING, &format!("{}: {e}", account.name));
            return None;
        }
    };
    for line in &f.lines {
        log.say(line.priority, &line.message);
    }
    if f.timed_out {
        log.say(
            LOG_WARNING,
            &format!(
                "could not tell within {} s whether {} uses keyward (the home directory did not \
                 answer); no YubiKey PIN asked, the login goes on",
                opts.timeout.as_secs(),
                account.name
            ),
        );
        return None;
    }
    f.answers.first().map(|a| a == "yes")
}

fn open_session(h: &mut Handle<'_>, opts: &Options, _flags: c_int) -> c_int {
    // Only what this module's `auth` kept, never `PAM_AUTHTOK` itself:
    // here nothing says whose password that is (see "Whose password").
    let password = h.stashed(Stash::Password);
    let pin = h.stashed(Stash::Pin);
    // The login process may live as long as the session: do not keep the
    // secrets there any longer than needed.
    h.clear_stash(Stash::Password);
    h.clear_stash(Stash::Pin);
    let log = Log {
        h,
        debug: opts.debug,
    };
    log_warnings(&log, opts);
    let Some(user) = h.user() else {
        log.say(LOG_DEBUG, "no user name (PAM_USER is unset)");
        return PAM_SUCCESS;
    };
    let Some(kept) = password else {
        log.say(
            LOG_INFO,
            &format!(
                "no login password kept for {user} (a login without password, or pam_keyward \
                 is not on the auth line?); the keyward agent is left as it is"
            ),
        );
        return PAM_SUCCESS;
    };
    let authenticated = kept.user.clone();
    let Some(password) = kept.for_user(&user) else {
        log.say(LOG_INFO, &user_changed(&authenticated, &user));
        return PAM_SUCCESS;
    };
    let pin = pin.and_then(|p| p.for_user(&user));
    run_job(&log, opts, &user, Job::Unlock { password, pin });
    PAM_SUCCESS
}

/// The message when `PAM_USER` no longer names the user whose password
/// `auth` kept (no secret in it).
fn user_changed(authenticated: &str, user: &str) -> String {
    format!(
        "the user changed since authentication ({authenticated} authenticated, the session is \
         for {user}): {authenticated}'s password is not used for {user}; the keyward agent of \
         {user} is left as it is"
    )
}

/// `setcred` with `PAM_REFRESH_CRED` or `PAM_REINITIALIZE_CRED` (a screen
/// locker that re-authenticates the user of an open session; `login` after
/// its session is open) or `PAM_DELETE_CRED` (the end): no session will be
/// opened with what `auth` kept, so it is wiped now rather than at
/// `pam_end`. `PAM_ESTABLISH_CRED` keeps it: applications call it before
/// or after `open_session`.
fn setcred(h: &mut Handle<'_>, opts: &Options, flags: c_int) -> c_int {
    if !setcred_ends_the_keeping(flags) {
        return PAM_IGNORE;
    }
    let kept = h.has_stash(Stash::Password) || h.has_stash(Stash::Pin);
    h.clear_stash(Stash::Password);
    h.clear_stash(Stash::Pin);
    if kept {
        let log = Log {
            h,
            debug: opts.debug,
        };
        log.say(
            LOG_DEBUG,
            "setcred without a session to come: wiped the kept login password",
        );
    }
    PAM_IGNORE
}

/// Whether `pam_setcred(flags)` means no session will use the kept secrets.
fn setcred_ends_the_keeping(flags: c_int) -> bool {
    flags & (PAM_REFRESH_CRED | PAM_REINITIALIZE_CRED | PAM_DELETE_CRED) != 0
}

fn close_session(h: &mut Handle<'_>, opts: &Options, _flags: c_int) -> c_int {
    let log = Log {
        h,
        debug: opts.debug,
    };
    log_warnings(&log, opts);
    let job = match opts.lock_on_close {
        LockOnClose::Off => return PAM_SUCCESS,
        // pam_systemd (earlier in the stack) names the logind session.
        LockOnClose::LastSession => Job::SessionEnd {
            session: h.env("XDG_SESSION_ID").filter(|s| !s.is_empty()),
        },
        LockOnClose::Always => Job::Lock,
    };
    if let Some(user) = h.user() {
        run_job(&log, opts, &user, job);
    }
    PAM_SUCCESS
}

fn chauthtok(h: &mut Handle<'_>, opts: &Options, flags: c_int) -> c_int {
    if flags & PAM_UPDATE_AUTHTOK == 0 {
        return PAM_IGNORE; // the preliminary pass: nothing to check
    }
    let log = Log {
        h,
        debug: opts.debug,
    };
    log_warnings(&log, opts);
    let Some(user) = h.user() else {
        return PAM_IGNORE;
    };
    let Some(new) = h.authtok() else {
        log.say(
            LOG_INFO,
            &format!(
                "no new password for {user} (PAM_AUTHTOK is unset: list pam_keyward after the \
                 module that changes the password)"
            ),
        );
        return PAM_IGNORE;
    };
    // The old password as the password module asked for it, else the one
    // `auth` checked in this same transaction, if it was checked for this
    // same user.
    let old = match (h.old_authtok(), h.stashed(Stash::Password)) {
        (Some(old), _) => old,
        (None, Some(kept)) => {
            let authenticated = kept.user.clone();
            match kept.for_user(&user) {
                Some(old) => old,
                None => {
                    log.say(LOG_INFO, &user_changed(&authenticated, &user));
                    return PAM_IGNORE;
                }
            }
        }
        (None, None) => {
            log.say(
                LOG_NOTICE,
                &format!(
                    "the old password of {user} is unknown (changed by root?); the keyward \
                     Master Password is unchanged"
                ),
            );
            return PAM_IGNORE;
        }
    };
    if old == new {
        return PAM_IGNORE;
    }
    run_job(&log, opts, &user, Job::ChangePassword { old, new });
    PAM_IGNORE
}

/// Runs `job` as `user` in a child with the deadline, and logs the outcome.
fn run_job(log: &Log<'_, '_>, opts: &Options, user: &str, job: Job) {
    let account = match user::lookup(user) {
        Ok(a) => a,
        Err(e) => {
            log.say(LOG_WARNING, &e);
            return;
        }
    };
    if account.uid == 0 {
        log.say(LOG_DEBUG, "not for root");
        return;
    }
    let euid = rustix::process::geteuid().as_raw();
    if euid != 0 && euid != account.uid {
        log.say(
            LOG_INFO,
            &format!("running as uid {euid}: cannot act for {user}; doing nothing"),
        );
        return;
    }
    let target = match target(log.h, opts, &account) {
        Ok(t) => t,
        Err(e) => {
            log.say(LOG_WARNING, &format!("{user}: {e}"));
            return;
        }
    };
    let result = child::run_as(&account, opts.timeout, move |rep, deadline| {
        work::run(target, job, rep, deadline);
    });
    match result {
        Ok(f) => {
            for line in &f.lines {
                log.say(line.priority, &line.message);
            }
            if f.timed_out {
                log.say(
                    LOG_WARNING,
                    &format!(
                        "the keyward agent of {user} did not answer within {} s; gave up, the \
                         login goes on",
                        opts.timeout.as_secs()
                    ),
                );
            } else if let Some(code) = f.status.filter(|&c| c != child::exit::OK) {
                log.say(
                    LOG_DEBUG,
                    &format!("the session helper ended with status {code}"),
                );
            }
        }
        Err(e) => log.say(LOG_WARNING, &format!("{user}: {e}")),
    }
}

/// The user's paths and the agent's environment, as the session will see
/// them: `HOME` from the passwd entry; `KEYWARD_HOME`, `XDG_*` and `TMPDIR`
/// from the PAM environment; `XDG_RUNTIME_DIR`, when unset there, is
/// `/run/user/UID` if that directory exists and belongs to the user (looked
/// at by the child, as the user: [`work::Target::settle`]). Nothing is
/// looked at here.
fn target(h: &Handle<'_>, opts: &Options, acc: &user::Account) -> Result<Target, String> {
    target_from(|name| h.env(name), opts, acc)
}

/// [`target`] with the PAM environment given as `pam_env`. The paths are
/// computed from exactly the variables the agent it starts gets, so both
/// agree on the socket (the agent computes its paths from its environment,
/// as `keyward` does in the session). Nothing comes from this process's own
/// environment (the login program's: not the session's, and under a set-uid
/// program the caller's).
fn target_from(
    pam_env: impl Fn(&str) -> Option<String>,
    opts: &Options,
    acc: &user::Account,
) -> Result<Target, String> {
    const FROM_PAM: &[&str] = &[
        "KEYWARD_HOME",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_STATE_HOME",
        "XDG_RUNTIME_DIR",
        // Without a runtime directory the socket lives under `$TMPDIR`
        // (see `Paths`); pam_tmpdir, for one, sets it here.
        "TMPDIR",
    ];
    let mut vars: HashMap<&str, OsString> = HashMap::new();
    vars.insert("HOME", acc.home.clone().into_os_string());
    for &name in FROM_PAM {
        if let Some(v) = pam_env(name).filter(|v| !v.is_empty()) {
            vars.insert(name, v.into());
        }
    }
    // Whether /run/user/UID is the user's is looked at in the child, as the
    // user (`Target::settle`): nothing of the user's is looked at as root.
    let run_user = (!vars.contains_key("XDG_RUNTIME_DIR"))
        .then(|| PathBuf::from(format!("/run/user/{}", acc.uid)));
    let paths = Paths::from_vars(|k| vars.get(k).cloned(), acc.uid).map_err(|e| e.to_string())?;
    let mut agent_env: Vec<(String, OsString)> = vec![
        ("USER".into(), acc.name.clone().into()),
        ("LOGNAME".into(), acc.name.clone().into()),
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
    ];
    agent_env.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    Ok(Target {
        user: acc.name.clone(),
        uid: acc.uid,
        paths,
        agent: opts.agent_program(),
        agent_env,
        auto_start: opts.auto_start,
        run_user,
    })
}

/// Unit tests of this crate run one at a time: one of them forks, and a
/// child forked while another test thread holds a lock (stderr, the panic
/// hook) could hang. (In a real login the module runs alone.)
#[cfg(test)]
pub(crate) fn test_serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::c_void;

    #[repr(C)]
    struct Conv {
        conv: unsafe extern "C" fn(
            c_int,
            *const *const c_void,
            *mut *mut c_void,
            *mut c_void,
        ) -> c_int,
        appdata: *mut c_void,
    }

    unsafe extern "C" fn no_conv(
        _n: c_int,
        _msg: *const *const c_void,
        _resp: *mut *mut c_void,
        _data: *mut c_void,
    ) -> c_int {
        19 // PAM_CONV_ERR
    }

    #[link(name = "pam")]
    unsafe extern "C" {
        fn pam_start(
            service: *const c_char,
            user: *const c_char,
            conv: *const Conv,
            pamh: *mut *mut RawHandle,
        ) -> c_int;
        fn pam_end(pamh: *mut RawHandle, status: c_int) -> c_int;
    }

    /// A real libpam handle (service "other" rules do not matter: no stack runs).
    struct RealHandle(*mut RawHandle);

    impl RealHandle {
        fn new() -> Self {
            let conv = Box::leak(Box::new(Conv {
                conv: no_conv,
                appdata: std::ptr::null_mut(),
            }));
            let mut h = std::ptr::null_mut();
            // SAFETY: valid C strings, a conv struct that lives forever, an out-pointer.
            let rc = unsafe {
                pam_start(
                    c"keyward-unit-test".as_ptr(),
                    c"nobody".as_ptr(),
                    conv,
                    &mut h,
                )
            };
            assert_eq!(rc, PAM_SUCCESS);
            Self(h)
        }
    }

    impl Drop for RealHandle {
        fn drop(&mut self) {
            // SAFETY: the handle from pam_start, ended once.
            unsafe { pam_end(self.0, PAM_SUCCESS) };
        }
    }

    fn panics(_: &mut Handle<'_>, _: &Options, _: c_int) -> c_int {
        let v: Vec<c_int> = Vec::new();
        v[3]
    }

    #[test]
    fn a_panic_becomes_the_step_s_neutral_code() {
        let _serial = crate::test_serial();
        let h = RealHandle::new();
        for fallback in [PAM_SUCCESS, PAM_IGNORE] {
            // SAFETY: a live handle, no arguments.
            let rc = unsafe { entry(h.0, 0, 0, std::ptr::null(), fallback, panics) };
            assert_eq!(rc, fallback);
        }
        // A null handle does not reach the hook either.
        // SAFETY: null is allowed.
        let rc = unsafe {
            entry(
                std::ptr::null_mut(),
                0,
                0,
                std::ptr::null(),
                PAM_IGNORE,
                panics,
            )
        };
        assert_eq!(rc, PAM_IGNORE);
    }

    #[test]
    fn entry_points_never_decide() {
        let _serial = crate::test_serial();
        let h = RealHandle::new();
        let args = [
            c"debug".as_ptr(),
            c"bogus_option".as_ptr(),
            c"timeout=1".as_ptr(),
        ];
        let (argc, argv) = (args.len() as c_int, args.as_ptr());
        // No password anywhere: nothing to keep, nothing to unlock.
        // SAFETY: a live handle and valid arguments, as libpam would pass them.
        unsafe {
            assert_eq!(pam_sm_authenticate(h.0, 0, argc, argv), PAM_IGNORE);
            assert_eq!(pam_sm_setcred(h.0, 0, argc, argv), PAM_IGNORE);
            assert_eq!(pam_sm_open_session(h.0, 0, argc, argv), PAM_SUCCESS);
            assert_eq!(pam_sm_close_session(h.0, 0, argc, argv), PAM_SUCCESS);
            assert_eq!(
                pam_sm_chauthtok(h.0, pam::PAM_PRELIM_CHECK, argc, argv),
                PAM_IGNORE
            );
            assert_eq!(
                pam_sm_chauthtok(h.0, PAM_UPDATE_AUTHTOK, argc, argv),
                PAM_IGNORE
            );
        }
    }

    #[test]
    fn a_kept_secret_is_only_for_the_user_it_was_typed_for() {
        // (`pam_set_data` works only inside a module call: the stash itself
        // is exercised through the real stack in tests/e2e/tests/pam.rs.)
        let kept = pam::Kept {
            user: "bob".into(),
            secret: keyward_client::Secret::from("pw"),
        };
        assert!(!format!("{kept:?}").contains("pw\""));
        assert!(kept.clone().for_user("alice").is_none());
        assert!(kept.clone().for_user("bob2").is_none());
        assert_eq!(kept.for_user("bob").unwrap().expose(), b"pw");
        // The message names the users, nothing else.
        let m = user_changed("bob", "alice");
        assert!(m.contains("changed since authentication") && m.contains("bob"));
    }

    /// What the agent computes from the environment it is given.
    fn agent_paths(t: &Target) -> Paths {
        let env: HashMap<String, OsString> = t.agent_env.iter().cloned().collect();
        Paths::from_vars(|k| env.get(k).cloned(), t.uid).unwrap()
    }

    #[test]
    fn the_module_and_the_agent_it_starts_agree_on_the_socket() {
        let acc = user::Account {
            name: "kwtest".into(),
            // No /run/user/UID for it: the socket is under TMPDIR.
            uid: 3_999_999_917,
            gid: 3_999_999_917,
            home: PathBuf::from("/home/kwtest"),
            groups: vec![],
        };
        let opts = Options::default();
        // TMPDIR in the PAM environment (pam_tmpdir): both use it.
        let t = target_from(
            |k| (k == "TMPDIR").then(|| "/tmp/user/3999999917".to_owned()),
            &opts,
            &acc,
        )
        .unwrap();
        assert_eq!(
            t.paths.socket(),
            PathBuf::from("/tmp/user/3999999917/keyward-3999999917/agent.sock")
        );
        assert_eq!(agent_paths(&t), t.paths);
        // None there: /tmp for both, whatever this process's TMPDIR is.
        let t = target_from(|_| None, &opts, &acc).unwrap();
        assert_eq!(
            t.paths.socket(),
            PathBuf::from("/tmp/keyward-3999999917/agent.sock")
        );
        assert!(t.agent_env.iter().all(|(k, _)| k != "TMPDIR"));
        assert_eq!(agent_paths(&t), t.paths);
        // /run/user/UID is only a candidate: the child looks at it, as the user.
        assert_eq!(
            t.run_user.as_deref(),
            Some(std::path::Path::new("/run/user/3999999917"))
        );
        // A runtime directory wins over TMPDIR, for both.
        let t = target_from(
            |k| match k {
                "TMPDIR" => Some("/var/tmp".into()),
                "XDG_RUNTIME_DIR" => Some("/run/user/3999999917".into()),
                _ => None,
            },
            &opts,
            &acc,
        )
        .unwrap();
        assert_eq!(
            t.paths.socket(),
            PathBuf::from("/run/user/3999999917/keyward/agent.sock")
        );
        assert_eq!(agent_paths(&t), t.paths);
        assert_eq!(t.run_user, None);
    }

    #[test]
    fn only_setcred_without_a_session_to_come_wipes_the_kept_password() {
        use pam::PAM_ESTABLISH_CRED;
        const PAM_SILENT: c_int = 0x8000;
        // login, su, sshd, gdm: ESTABLISH before or after open_session.
        assert!(!setcred_ends_the_keeping(PAM_ESTABLISH_CRED));
        assert!(!setcred_ends_the_keeping(PAM_ESTABLISH_CRED | PAM_SILENT));
        // Screen lockers, the end of a session.
        for f in [PAM_REFRESH_CRED, PAM_REINITIALIZE_CRED, PAM_DELETE_CRED] {
            assert!(setcred_ends_the_keeping(f));
            assert!(setcred_ends_the_keeping(f | PAM_SILENT));
        }
    }
}
