//! The login user's passwd entry and groups, looked up in the login process
//! (never in the forked child: NSS takes locks and may talk to daemons).

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Who the child becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// Numeric uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Home directory from the passwd entry.
    pub home: PathBuf,
    /// Supplementary groups (including the primary one).
    pub groups: Vec<libc::gid_t>,
}

/// Looks `name` up with `getpwnam_r` and `getgrouplist`.
pub fn lookup(name: &str) -> Result<Account, String> {
    let cname = CString::new(name).map_err(|_| format!("invalid user name {name:?}"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: an all-zero passwd (null pointers, zero ids) is a valid value
        // for getpwnam_r to overwrite.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `cname` is
        // NUL-terminated, `pwd` and `result` are writable, `buf` has `buf.len()`
        // writable bytes that the strings in `pwd` will point into.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(format!(
                "cannot look up user {name}: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        if result.is_null() || pwd.pw_dir.is_null() {
            return Err(format!("no such user: {name}"));
        }
        // SAFETY: on success `pw_dir` points to a NUL-terminated string in `buf`,
        // which is alive here.
        let home = unsafe { CStr::from_ptr(pwd.pw_dir) };
        let home = PathBuf::from(OsStr::from_bytes(home.to_bytes()));
        let groups = group_list(&cname, pwd.pw_gid);
        return Ok(Account {
            name: name.to_owned(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home,
            groups,
        });
    }
}

fn group_list(name: &CStr, gid: libc::gid_t) -> Vec<libc::gid_t> {
    let mut n: libc::c_int = 32;
    for _ in 0..8 {
        let mut groups = vec![0 as libc::gid_t; n.max(1) as usize];
        let mut count = n;
        // SAFETY: `name` is NUL-terminated; `groups` has room for `count`
        // entries, and getgrouplist writes at most that many.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return groups;
        }
        // Too small: `count` now holds the number needed.
        n = count.max(n.saturating_mul(2));
    }
    vec![gid]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_exists_and_unknown_users_do_not() {
        let _serial = crate::test_serial();
        let root = lookup("root").unwrap();
        assert_eq!(root.uid, 0);
        assert!(root.home.is_absolute());
        assert!(root.groups.contains(&root.gid));
        assert!(lookup("no-such-user-kw").is_err());
        assert!(lookup("a\0b").is_err());
    }
}
