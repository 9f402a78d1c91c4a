//! The few libpam calls the module needs, each behind a safe method of
//! [`Handle`]. Everything `unsafe` about PAM lives in this file.

use keyward_client::Secret;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::marker::{PhantomData, PhantomPinned};

/// `pam_handle_t`, opaque.
#[repr(C)]
pub struct RawHandle {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// Return codes (`_pam_types.h`).
pub const PAM_SUCCESS: c_int = 0;
/// The module has nothing to say: the stack goes on as if it were absent.
pub const PAM_IGNORE: c_int = 25;

const PAM_USER: c_int = 2;
const PAM_CONV: c_int = 5;
const PAM_AUTHTOK: c_int = 6;
const PAM_OLDAUTHTOK: c_int = 7;

/// `pam_sm_chauthtok` flags (`pam_modules.h`).
pub const PAM_PRELIM_CHECK: c_int = 0x4000;
/// The second pass of `pam_chauthtok`: the token is changed now.
pub const PAM_UPDATE_AUTHTOK: c_int = 0x2000;

/// `pam_sm_setcred` flags (`_pam_types.h`): set up the credentials.
pub const PAM_ESTABLISH_CRED: c_int = 0x0002;
/// Delete them (the end of the session).
pub const PAM_DELETE_CRED: c_int = 0x0004;
/// Set them up afresh (a screen locker; `login` after opening the session).
pub const PAM_REINITIALIZE_CRED: c_int = 0x0008;
/// Extend their lifetime (a screen locker).
pub const PAM_REFRESH_CRED: c_int = 0x0010;

/// syslog priorities used by the module.
pub use libc::{LOG_DEBUG, LOG_ERR, LOG_INFO, LOG_NOTICE, LOG_WARNING};

/// What `auth` leaves in the PAM handle for `open_session`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stash {
    /// The login password.
    Password,
    /// The YubiKey PIN (option `yubikey_pin`).
    Pin,
}

/// A secret kept by `auth`, with the user it was typed for: `PAM_USER`
/// when `auth` kept it. The application may change `PAM_USER` before the
/// session (`sudo -u`, `su`); the secret is then not for the new user.
#[derive(Debug, Clone)]
pub struct Kept {
    /// `PAM_USER` when the secret was kept.
    pub user: String,
    /// The secret (zeroized when dropped).
    pub secret: Secret,
}

impl Kept {
    /// The secret, if it was kept for `user`: the same name, or a name of
    /// the same uid (a module between auth and session may have rewritten
    /// PAM_USER to another spelling of the same account).
    pub fn for_user(self, user: &str) -> Option<Secret> {
        let same = self.user == user
            || matches!(
                (crate::user::lookup(&self.user), crate::user::lookup(user)),
                (Ok(a), Ok(b)) if a.uid == b.uid
            );
        same.then_some(self.secret)
    }
}

impl Stash {
    fn name(self) -> &'static CStr {
        match self {
            Stash::Password => c"pam_keyward_authtok",
            Stash::Pin => c"pam_keyward_pin",
        }
    }
}

/// `PAM_PROMPT_ECHO_OFF` (`_pam_types.h`).
const PAM_PROMPT_ECHO_OFF: c_int = 1;

/// `struct pam_message`.
#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

/// `struct pam_response`.
#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    _resp_retcode: c_int,
}

/// `struct pam_conv`.
#[repr(C)]
struct PamConv {
    conv: Option<
        unsafe extern "C" fn(
            num_msg: c_int,
            msg: *mut *const PamMessage,
            resp: *mut *mut PamResponse,
            appdata_ptr: *mut c_void,
        ) -> c_int,
    >,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_get_item(pamh: *const RawHandle, item_type: c_int, item: *mut *const c_void) -> c_int;
    fn pam_set_data(
        pamh: *mut RawHandle,
        module_data_name: *const c_char,
        data: *mut c_void,
        cleanup: Option<unsafe extern "C" fn(*mut RawHandle, *mut c_void, c_int)>,
    ) -> c_int;
    fn pam_get_data(
        pamh: *const RawHandle,
        module_data_name: *const c_char,
        data: *mut *const c_void,
    ) -> c_int;
    fn pam_getenv(pamh: *mut RawHandle, name: *const c_char) -> *const c_char;
    fn pam_syslog(pamh: *const RawHandle, priority: c_int, fmt: *const c_char, ...);
}

/// A PAM handle for the duration of one `pam_sm_*` call.
pub struct Handle<'a> {
    raw: *mut RawHandle,
    _life: PhantomData<&'a mut RawHandle>,
}

impl Handle<'_> {
    /// Wraps the handle PAM passed to an entry point; `None` if it is null.
    ///
    /// # Safety
    /// `raw` must be null or the handle libpam passed to the running
    /// `pam_sm_*` function, and the `Handle` must not outlive that call.
    pub unsafe fn from_raw(raw: *mut RawHandle) -> Option<Self> {
        (!raw.is_null()).then_some(Self {
            raw,
            _life: PhantomData,
        })
    }

    fn item_bytes(&self, item: c_int) -> Option<&[u8]> {
        let mut ptr: *const c_void = std::ptr::null();
        // SAFETY: `self.raw` is the live handle (see `from_raw`) and `ptr` is a
        // valid out-pointer. For string items libpam stores a NUL-terminated
        // string that stays valid until the item is set again, which cannot
        // happen while we borrow `self`.
        let rc = unsafe { pam_get_item(self.raw, item, &mut ptr) };
        if rc != PAM_SUCCESS || ptr.is_null() {
            return None;
        }
        // SAFETY: as above, `ptr` is a NUL-terminated string owned by libpam.
        Some(unsafe { CStr::from_ptr(ptr.cast::<c_char>()) }.to_bytes())
    }

    /// `PAM_USER`, if set (never prompts, unlike `pam_get_user`).
    pub fn user(&self) -> Option<String> {
        self.item_bytes(PAM_USER)
            .and_then(|b| std::str::from_utf8(b).ok())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    /// `PAM_AUTHTOK`: the password `auth` checked, or the new one in `chauthtok`.
    pub fn authtok(&self) -> Option<Secret> {
        self.item_bytes(PAM_AUTHTOK)
            .filter(|b| !b.is_empty())
            .map(Secret::from_slice)
    }

    /// `PAM_OLDAUTHTOK`: the current password during `chauthtok`.
    pub fn old_authtok(&self) -> Option<Secret> {
        self.item_bytes(PAM_OLDAUTHTOK)
            .filter(|b| !b.is_empty())
            .map(Secret::from_slice)
    }

    /// Keeps `secret`, typed for `user`, in the PAM handle for later steps
    /// of the same transaction; libpam calls our cleanup (which zeroizes it)
    /// at `pam_end` or when it is replaced.
    pub fn stash(&mut self, which: Stash, user: &str, secret: Secret) -> bool {
        let ptr = Box::into_raw(Box::new(Kept {
            user: user.to_owned(),
            secret,
        }));
        // SAFETY: `self.raw` is live; the name is a static C string; `ptr` is
        // a leaked Box<Kept> that libpam hands back to `drop_stash`
        // (exactly once) when it is replaced or at `pam_end`.
        let rc = unsafe {
            pam_set_data(
                self.raw,
                which.name().as_ptr(),
                ptr.cast(),
                Some(drop_stash),
            )
        };
        if rc != PAM_SUCCESS {
            // SAFETY: libpam did not take `ptr`; we still own the Box.
            drop(unsafe { Box::from_raw(ptr) });
            return false;
        }
        true
    }

    /// Drops a stashed secret (libpam runs the zeroizing cleanup).
    pub fn clear_stash(&mut self, which: Stash) {
        // SAFETY: `self.raw` is live; replacing the data with null makes
        // libpam call `drop_stash` for the old value (if any) and store nothing.
        unsafe { pam_set_data(self.raw, which.name().as_ptr(), std::ptr::null_mut(), None) };
    }

    /// Whether a secret is stashed under `which` (nothing is copied).
    pub fn has_stash(&self, which: Stash) -> bool {
        let mut ptr: *const c_void = std::ptr::null();
        // SAFETY: `self.raw` is live and `ptr` a valid out-pointer; the data
        // is not read.
        let rc = unsafe { pam_get_data(self.raw, which.name().as_ptr(), &mut ptr) };
        rc == PAM_SUCCESS && !ptr.is_null()
    }

    /// A secret `auth` stashed, with its user, copied.
    pub fn stashed(&self, which: Stash) -> Option<Kept> {
        let mut ptr: *const c_void = std::ptr::null();
        // SAFETY: `self.raw` is live and `ptr` a valid out-pointer.
        let rc = unsafe { pam_get_data(self.raw, which.name().as_ptr(), &mut ptr) };
        if rc != PAM_SUCCESS || ptr.is_null() {
            return None;
        }
        // SAFETY: only `stash` stores data under these names, and it stores
        // a `Box<Kept>`; it stays alive until pam_end or until it is
        // replaced, neither of which can happen during this call.
        let stashed = unsafe { &*ptr.cast::<Kept>() };
        Some(stashed.clone())
    }

    /// Asks the user for a secret through the application's conversation
    /// function (`PAM_PROMPT_ECHO_OFF`), as `pam_unix` asks for a password.
    /// `None` if there is no conversation, it failed, or the answer is empty.
    /// The application's copy of the answer is wiped before it is freed.
    pub fn ask_secret(&self, prompt: &str) -> Option<Secret> {
        let text = CString::new(prompt).ok()?;
        let mut item: *const c_void = std::ptr::null();
        // SAFETY: `self.raw` is live and `item` a valid out-pointer; the
        // PAM_CONV item is a `struct pam_conv` owned by libpam.
        let rc = unsafe { pam_get_item(self.raw, PAM_CONV, &mut item) };
        if rc != PAM_SUCCESS || item.is_null() {
            return None;
        }
        // SAFETY: see above; we only read it during this call.
        let conv = unsafe { &*item.cast::<PamConv>() };
        let f = conv.conv?;
        let msg = PamMessage {
            msg_style: PAM_PROMPT_ECHO_OFF,
            msg: text.as_ptr(),
        };
        let mut msgs: [*const PamMessage; 1] = [&msg];
        let mut resp: *mut PamResponse = std::ptr::null_mut();
        // SAFETY: one message, valid for the call; `resp` is an out-pointer
        // the application fills with a malloc'ed array of one response.
        let rc = unsafe { f(1, msgs.as_mut_ptr(), &mut resp, conv.appdata_ptr) };
        if resp.is_null() {
            return None;
        }
        // SAFETY: on return the application gave us `resp` (malloc'ed, one
        // element) and its `resp` string (malloc'ed or null); both are ours
        // to free, with libc's `free`, as libpam's own modules do.
        unsafe {
            let answer = (*resp).resp;
            let mut secret = None;
            if !answer.is_null() {
                let bytes = CStr::from_ptr(answer).to_bytes();
                if rc == PAM_SUCCESS && !bytes.is_empty() {
                    secret = Some(Secret::from_slice(bytes));
                }
                libc::explicit_bzero(answer.cast(), bytes.len());
                libc::free(answer.cast());
            }
            libc::free(resp.cast());
            secret
        }
    }

    /// A variable of the PAM environment (what the session will get).
    pub fn env(&self, name: &str) -> Option<String> {
        let name = CString::new(name).ok()?;
        // SAFETY: `self.raw` is live; `name` is NUL-terminated; the result is
        // null or a NUL-terminated string owned by libpam, copied at once.
        let ptr = unsafe { pam_getenv(self.raw, name.as_ptr()) };
        if ptr.is_null() {
            return None;
        }
        // SAFETY: see above.
        let value = unsafe { CStr::from_ptr(ptr) };
        value.to_str().ok().map(str::to_owned)
    }

    /// `pam_syslog`: facility AUTHPRIV, prefixed `pam_keyward(service:type)`.
    pub fn syslog(&self, priority: c_int, message: &str) {
        // Interior NULs cannot be passed to C; drop them.
        let Ok(msg) = CString::new(message.replace('\0', "")) else {
            return;
        };
        // SAFETY: `self.raw` is live; the format is the static "%s" and its one
        // argument a NUL-terminated string, as the format requires.
        unsafe { pam_syslog(self.raw, priority, c"%s".as_ptr(), msg.as_ptr()) };
    }
}

/// The cleanup libpam calls for a stashed secret.
unsafe extern "C" fn drop_stash(_pamh: *mut RawHandle, data: *mut c_void, _status: c_int) {
    if data.is_null() {
        return;
    }
    // Dropping zeroizes; no panic may cross into C.
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: `data` is the Box<Kept> leaked by `stash`;
        // libpam calls this cleanup exactly once for it.
        drop(unsafe { Box::from_raw(data.cast::<Kept>()) });
    });
}
