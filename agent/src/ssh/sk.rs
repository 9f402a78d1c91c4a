//! Security-key (FIDO) signatures through OpenSSH's `ssh-sk-helper`, as
//! ssh-agent makes them: the helper loads the provider library (a real
//! authenticator's `internal` one, or the regression suite's `sk-dummy.so`)
//! in a process of its own, so no provider code runs inside the agent.
//!
//! Helper protocol (OpenSSH 9.x, `ssh-sk-client.c`, version 5):
//! request `u32 len | u8 version | u32 type=1 (sign) | u8 log_stderr |
//! u32 log_level | string key | string provider | string data | string alg |
//! u32 compat | string pin`; reply `u32 len | u8 version | u32 type` then a
//! `string signature` (type 1) or a `u32 error` (type 0).

use super::wire::Reader;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

const VERSION: u8 = 5;
const SIGN: u32 = 1;
const ERROR: u32 = 0;
/// OpenSSH's `SSH_ERR_KEY_WRONG_PASSPHRASE`, sent negated.
const WRONG_PIN: u32 = 43;

/// The helper to run: `$SSH_SK_HELPER`, else OpenSSH's.
fn helper_path() -> String {
    std::env::var("SSH_SK_HELPER")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/usr/lib/openssh/ssh-sk-helper".into())
}

/// Why a security key did not sign.
#[derive(Debug, thiserror::Error)]
pub enum SkError {
    /// The helper needs the authenticator's PIN.
    #[error("the security key needs its PIN")]
    NeedPin,
    /// Anything else.
    #[error("the security key did not sign: {0}")]
    Failed(String),
}

fn put(v: &mut Vec<u8>, s: &[u8]) {
    v.extend_from_slice(&(s.len() as u32).to_be_bytes());
    v.extend_from_slice(s);
}

/// Signs `data` with the security key `private` (its plain agent form)
/// through `provider`; `pin` if the authenticator asked for one. Waits at
/// most `timeout` (a touch).
pub fn sign(
    private: &[u8],
    provider: &str,
    data: &[u8],
    pin: Option<&str>,
    timeout: Duration,
) -> Result<Vec<u8>, SkError> {
    let fail = |e: std::io::Error| SkError::Failed(e.to_string());
    let (ours, theirs) = UnixStream::pair().map_err(fail)?;
    let theirs_out = theirs.try_clone().map_err(fail)?;
    let mut child = Command::new(helper_path())
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs_out)))
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| SkError::Failed(format!("cannot run {}: {e}", helper_path())))?;
    let mut body = Vec::with_capacity(private.len() + data.len() + 128);
    body.extend_from_slice(&SIGN.to_be_bytes());
    body.push(0); // log to stderr: no
    body.extend_from_slice(&0u32.to_be_bytes()); // log level: quiet
    put(&mut body, private);
    put(&mut body, provider.as_bytes());
    put(&mut body, data);
    put(&mut body, b"");
    body.extend_from_slice(&0u32.to_be_bytes());
    put(&mut body, pin.unwrap_or("").as_bytes());
    let mut frame = Vec::with_capacity(body.len() + 5);
    frame.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
    frame.push(VERSION);
    frame.extend_from_slice(&body);
    zeroize::Zeroize::zeroize(&mut body);
    let mut ours = ours;
    let out = (|| {
        ours.set_read_timeout(Some(timeout))?;
        ours.set_write_timeout(Some(timeout))?;
        ours.write_all(&frame)?;
        let mut len = [0u8; 4];
        ours.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > super::wire::MAX_MESSAGE {
            return Err(std::io::Error::other("reply too long"));
        }
        let mut reply = vec![0u8; len];
        ours.read_exact(&mut reply)?;
        Ok(reply)
    })();
    zeroize::Zeroize::zeroize(&mut frame);
    let _ = child.kill();
    let _ = child.wait();
    let reply = out.map_err(fail)?;
    let mut r = Reader(&reply);
    let bad = |_| SkError::Failed("malformed reply from ssh-sk-helper".into());
    if r.u8().map_err(bad)? != VERSION {
        return Err(SkError::Failed(
            "ssh-sk-helper speaks another version".into(),
        ));
    }
    match r.u32().map_err(bad)? {
        SIGN => Ok(r.string().map_err(bad)?.to_vec()),
        ERROR => match r.u32().map_err(bad)? {
            WRONG_PIN => Err(SkError::NeedPin),
            e => Err(SkError::Failed(format!("error -{e}"))),
        },
        t => Err(SkError::Failed(format!("unexpected reply type {t}"))),
    }
}
