//! Key constraints and destination restrictions (`ssh-add -h`), enforced as
//! OpenSSH's ssh-agent enforces them (`PROTOCOL.agent`, ssh-agent.c 9.x):
//! `ssh` binds each connection to the host keys of the hops it went through
//! (`session-bind@openssh.com`, signed by the host), and a restricted key is
//! listed, used or forwarded only along the hops its constraints allow.

use super::keys;
use super::wire::{Malformed, Reader, constraint, glob};

/// Most destination constraints on one key (OpenSSH: 1024).
const MAX_CONSTRAINTS: usize = 1024;
/// Most host keys in one hop.
const MAX_HOP_KEYS: usize = 1024;
/// Most session bindings on one connection (OpenSSH: 128).
pub const MAX_BINDINGS: usize = 128;

/// One end of a destination constraint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hop {
    /// A user pattern (`to` only).
    pub user: Option<String>,
    /// The host's name; `None` in `from` = the origin (this machine).
    pub hostname: Option<String>,
    /// Host key blobs, and whether each is a certificate authority.
    pub keys: Vec<(Vec<u8>, bool)>,
}

/// `from > to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    /// Where the connection comes from.
    pub from: Hop,
    /// Where it may go.
    pub to: Hop,
}

/// The constraints an `ADD_ID_CONSTRAINED` carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraints {
    /// Seconds the key lives (0: no limit).
    pub lifetime: u32,
    /// Ask before each use.
    pub confirm: bool,
    /// The security-key provider.
    pub sk_provider: Option<String>,
    /// Destination restrictions (empty: none).
    pub dest: Vec<Dest>,
    /// The restrict-destination extension's bytes as received (kept with
    /// the key in the vault).
    pub dest_raw: Vec<u8>,
}

fn text(r: &mut Reader<'_>) -> Result<String, Malformed> {
    r.text().map(str::to_owned)
}

fn parse_hop(b: &[u8]) -> Result<Hop, Malformed> {
    let mut r = Reader(b);
    let user = text(&mut r)?;
    let hostname = text(&mut r)?;
    if !r.string()?.is_empty() {
        return Err(Malformed); // hop extensions: none defined
    }
    let mut keys = Vec::new();
    while !r.is_empty() {
        if keys.len() == MAX_HOP_KEYS {
            return Err(Malformed);
        }
        let blob = r.string()?;
        keys::parse_public(blob).map_err(|_| Malformed)?;
        let is_ca = r.u8()? != 0;
        keys.push((blob.to_vec(), is_ca));
    }
    Ok(Hop {
        user: (!user.is_empty()).then_some(user),
        hostname: (!hostname.is_empty()).then_some(hostname),
        keys,
    })
}

/// Parses the contents of a `restrict-destination-v00@openssh.com` constraint.
pub fn parse_dest(b: &[u8]) -> Result<Vec<Dest>, Malformed> {
    let mut outer = Reader(b);
    let mut v = Vec::new();
    while !outer.is_empty() {
        if v.len() == MAX_CONSTRAINTS {
            return Err(Malformed);
        }
        let mut c = Reader(outer.string()?);
        let from = parse_hop(c.string()?)?;
        let to = parse_hop(c.string()?)?;
        if !c.string()?.is_empty() || !c.is_empty() {
            return Err(Malformed);
        }
        // As ssh-agent checks them.
        if from.hostname.is_none() != from.keys.is_empty() || from.user.is_some() {
            return Err(Malformed);
        }
        if to.hostname.is_none() || to.keys.is_empty() {
            return Err(Malformed);
        }
        v.push(Dest { from, to });
    }
    Ok(v)
}

/// A restriction no connection meets: from nowhere (a host with no key)
/// to nowhere. Given to a key whose kept restrictions cannot be read.
pub fn unreachable() -> Dest {
    Dest {
        from: Hop {
            user: None,
            hostname: Some(String::new()),
            keys: Vec::new(),
        },
        to: Hop {
            user: None,
            hostname: Some(String::new()),
            keys: Vec::new(),
        },
    }
}

/// Parses the constraints after an added key's comment.
pub fn parse_constraints(b: &[u8]) -> Result<Constraints, Malformed> {
    let mut r = Reader(b);
    let mut c = Constraints::default();
    let mut seen_life = false;
    while !r.is_empty() {
        match r.u8()? {
            constraint::LIFETIME if !seen_life => {
                seen_life = true;
                c.lifetime = r.u32()?;
            }
            constraint::CONFIRM if !c.confirm => c.confirm = true,
            constraint::EXTENSION => match r.text()? {
                "sk-provider@openssh.com" if c.sk_provider.is_none() => {
                    c.sk_provider = Some(text(&mut r)?);
                }
                "restrict-destination-v00@openssh.com" if c.dest_raw.is_empty() => {
                    let raw = r.string()?;
                    c.dest = parse_dest(raw)?;
                    c.dest_raw = raw.to_vec();
                }
                _ => return Err(Malformed),
            },
            // Max-signatures (XMSS only) and anything unknown: refused, as
            // ssh-agent refuses what it cannot enforce.
            _ => return Err(Malformed),
        }
    }
    Ok(c)
}

/// The constraints kept with a key in the vault: the provider and the
/// destinations (a lifetime makes a key session-only; confirmation is the
/// key's approval setting).
pub fn stored_form(c: &Constraints) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ext = |name: &[u8], value: &[u8]| {
        out.push(constraint::EXTENSION);
        for s in [name, value] {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s);
        }
    };
    if let Some(p) = &c.sk_provider {
        ext(b"sk-provider@openssh.com", p.as_bytes());
    }
    if !c.dest_raw.is_empty() {
        ext(b"restrict-destination-v00@openssh.com", &c.dest_raw);
    }
    out
}

/// A host key `ssh` bound the connection to.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The host key blob.
    pub hostkey: Vec<u8>,
    /// The session id it signed.
    pub sid: Vec<u8>,
    /// Whether the connection was forwarded onward from that host.
    pub forwarded: bool,
}

/// `session-bind@openssh.com`: checks the host's signature over the
/// session id and records the binding. `false` refuses (as ssh-agent does).
pub fn bind(bindings: &mut Vec<Binding>, body: &[u8]) -> bool {
    let parsed = (|| {
        let mut r = Reader(body);
        let key = r.string()?;
        let sid = r.string()?;
        let sig = r.string()?;
        let fwd = r.u8()? != 0;
        if !r.is_empty() {
            return Err(Malformed);
        }
        Ok((key, sid, sig, fwd))
    })();
    let Ok((key, sid, sig, forwarded)) = parsed else {
        return false;
    };
    if !verify(key, sid, sig) {
        tracing::warn!("session-bind: the host key's signature does not verify");
        return false;
    }
    for b in bindings.iter() {
        if !b.forwarded {
            // A connection bound for authentication is not bound again.
            return false;
        }
        if b.sid == sid {
            return b.hostkey == key;
        }
    }
    if bindings.len() >= MAX_BINDINGS {
        return false;
    }
    bindings.push(Binding {
        hostkey: key.to_vec(),
        sid: sid.to_vec(),
        forwarded,
    });
    true
}

/// Verifies an SSH signature blob by `key` (a certificate: by its key).
fn verify(key: &[u8], data: &[u8], sig: &[u8]) -> bool {
    use ssh_encoding::Decode as _;
    let Ok((k, cert)) = keys::parse_public(key) else {
        return false;
    };
    // A certificate must be signed by its CA (ssh-agent checks this on parse).
    if cert.is_some_and(|c| !c.signed_by_ca(key)) {
        return false;
    }
    let Ok(sig) = ssh_key::Signature::decode(&mut &sig[..]) else {
        return false;
    };
    signature::Verifier::verify(&k, data, &sig).is_ok()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether host key `key` matches `hop` (a plain key listed there, or a
/// host certificate for the hop's name signed by a CA listed there).
fn match_hop(key: &[u8], hop: &Hop) -> bool {
    let cert = match keys::parse_public(key) {
        Ok((_, c)) => c,
        Err(_) => return false,
    };
    hop.keys.iter().any(|(k, is_ca)| match &cert {
        None => !is_ca && k == key,
        Some(c) => {
            *is_ca
                && c.signature_key == *k
                && hop
                    .hostname
                    .as_deref()
                    .is_some_and(|host| host_cert_ok(c, key, host))
        }
    })
}

/// `sshkey_cert_check_host`: a host certificate, valid now, naming `host`
/// (principals may be patterns), signed by its CA with an allowed algorithm.
fn host_cert_ok(c: &super::cert::Cert, blob: &[u8], host: &str) -> bool {
    c.cert_type == super::cert::HOST
        && c.valid_at(unix_now())
        && c.signature_algorithm() != "ssh-rsa" // SHA-1 CA signatures are not allowed
        && c.signed_by_ca(blob)
        && c.principals.iter().any(|p| glob(host, p))
}

fn permitted_by(from: Option<&[u8]>, to: Option<&[u8]>, dest: &[Dest], user: Option<&str>) -> bool {
    dest.iter().any(|d| {
        let from_ok = match from {
            None => d.from.hostname.is_none() && d.from.keys.is_empty(),
            Some(k) => match_hop(k, &d.from),
        };
        let to_ok = to.is_none_or(|k| match_hop(k, &d.to));
        let user_ok = match (&d.to.user, user) {
            (Some(pattern), Some(u)) => glob(u, pattern),
            _ => true,
        };
        from_ok && to_ok && user_ok
    })
}

/// `identity_permitted`: may a key with destination constraints `dest` be
/// listed (`user` = None) or used to sign for `user` on a connection bound
/// to `bindings`?
pub fn permitted(dest: &[Dest], bindings: &[Binding], user: Option<&str>) -> bool {
    if dest.is_empty() || bindings.is_empty() {
        return true; // unrestricted, or local use
    }
    let mut from: Option<&[u8]> = None;
    let last = bindings.len() - 1;
    for (i, b) in bindings.iter().enumerate() {
        let test_user = if i == last {
            if b.forwarded && user.is_some() {
                return false; // signing on a forwarding hop
            }
            user
        } else {
            if !b.forwarded {
                return false; // forwarding through a signing bind
            }
            None
        };
        if !permitted_by(from, Some(&b.hostkey), dest, test_user) {
            return false;
        }
        from = Some(&b.hostkey);
    }
    // A key usable *at* the last host but not *beyond* it is not shown there.
    let b = &bindings[last];
    !(b.forwarded && user.is_none() && !permitted_by(Some(&b.hostkey), None, dest, None))
}

/// What a signature request for a restricted key must be: a public-key
/// user authentication for this key (user name, session id, and the host
/// key for `publickey-hostbound-v00@openssh.com`).
pub struct Userauth<'a> {
    /// The server user.
    pub user: &'a str,
    /// The session id.
    pub sid: &'a [u8],
    /// The host key, if hostbound.
    pub hostkey: Option<&'a [u8]>,
}

/// Parses `data` as a userauth request signed by `key` (`parse_userauth_request`).
pub fn parse_userauth<'a>(data: &'a [u8], key: &[u8]) -> Option<Userauth<'a>> {
    let mut r = Reader(data);
    let sid = r.string().ok()?;
    if sid.is_empty() || r.u8().ok()? != 50 {
        return None;
    }
    let user = r.text().ok()?;
    let service = r.text().ok()?;
    let method = r.text().ok()?;
    let sig_follows = r.u8().ok()?;
    let pkalg = r.text().ok()?;
    let mkey = r.string().ok()?;
    if sig_follows != 1 || service != "ssh-connection" || mkey != key {
        return None;
    }
    if base_type(pkalg) != base_type(&keys::type_name(key)) {
        return None;
    }
    let hostkey = match method {
        "publickey-hostbound-v00@openssh.com" => Some(r.string().ok()?),
        "publickey" => None,
        _ => return None,
    };
    if !r.is_empty() {
        return None;
    }
    Some(Userauth { user, sid, hostkey })
}

/// A signature algorithm's key type (`rsa-sha2-512` → `ssh-rsa`).
fn base_type(alg: &str) -> &str {
    match alg {
        "rsa-sha2-256" | "rsa-sha2-512" => "ssh-rsa",
        "rsa-sha2-256-cert-v01@openssh.com" | "rsa-sha2-512-cert-v01@openssh.com" => {
            "ssh-rsa-cert-v01@openssh.com"
        }
        other => other,
    }
}

/// The checks on a signature by a restricted key (`process_sign_request2`).
pub fn sign_allowed(dest: &[Dest], bindings: &[Binding], key: &[u8], data: &[u8]) -> bool {
    if dest.is_empty() {
        return true;
    }
    let Some(last) = bindings.last() else {
        tracing::info!("refused a destination-restricted key on a connection not bound to a host");
        return false;
    };
    let Some(ua) = parse_userauth(data, key) else {
        tracing::info!("refused a destination-restricted key for something other than a login");
        return false;
    };
    if !permitted(dest, bindings, Some(ua.user)) {
        return false;
    }
    if ua.sid != last.sid.as_slice() {
        return false;
    }
    if bindings.len() > 1 && ua.hostkey.is_none() {
        return false;
    }
    ua.hostkey.is_none_or(|h| h == last.hostkey.as_slice())
}
