//! `keyward credential get|store|erase`: git's credential helper.
//!
//! git runs `git-credential-keyward OPERATION` for `credential.helper =
//! keyward` (that small program runs `keyward credential OPERATION`) and
//! speaks the protocol of git-credential(1) and gitcredentials(7): the
//! request is `key=value` lines on standard input, up to a blank line or
//! the end of input; `get` answers with `key=value` lines on standard
//! output; `store` and `erase` answer nothing. Unknown keys are ignored,
//! as are unknown operations.
//!
//! **Names.** One item per credential: `git/PROTOCOL/HOST`, the protocol
//! and host (with its port) in lower case, or `git/PROTOCOL/HOST/PATH`
//! when git sends a path (it does with `credential.useHttpPath`). `get`
//! and `erase` look for the path's item first, then the host's, so a
//! credential stored for a host serves every repository on it, and one
//! stored for a repository takes precedence. The protocol is part of the
//! name: a credential stored for `https` is never given to an `http` URL
//! of the same host.
//!
//! **Value.** The lines git itself reads from a helper, so that an item is
//! easy to write with `keyward set`:
//!
//! ```text
//! username=alice
//! password=ghp_example
//! ```
//!
//! and `password_expiry_utc=…` and `oauth_refresh_token=…` when git gave
//! them. `get` prints the item re-encoded (never other lines it may hold),
//! so an item edited by hand cannot inject other attributes into git.
//!
//! **Matching** (as git's own `credential-store` does): a request that
//! names a username only gets, and only erases, an item of that username;
//! `erase` removes the item only when it holds the password git rejected,
//! so a credential changed since git read it is kept. `store` updates the
//! item `get` would have found for that username (and writes nothing when
//! it is unchanged: git stores after every successful use), else writes the
//! most specific name. One name holds one credential: storing another
//! username for the same name replaces it.
//!
//! **Plain http.** `store` refuses credentials for `http` URLs (git sends
//! them unencrypted) except for this machine (`localhost`, 127.0.0.0/8,
//! `::1`), unless `--allow-http`.
//!
//! **A locked agent.** `get` asks for the Master Password on the terminal
//! (unless `--no-prompt`), as `keyward get` does; without a terminal it
//! answers nothing at once, with a note on standard error, and git asks
//! the user (or fails with `GIT_TERMINAL_PROMPT=0`). `store` and `erase`
//! never ask: they fail with that note.
//!
//! The password is written to standard output, by `get`, and nowhere else;
//! errors name items and hosts, never values.

use crate::cli::unlocked;
use crate::output::{CliError, exit};
use keyward_client::message::{MAX_NAME, MAX_VALUE};
use keyward_client::{Client, ClientError, ErrorCode, Secret};
use std::ffi::OsString;
use std::io::{Read, Write};
use zeroize::Zeroizing;

/// The description of `keyward credential --help` and its man page.
pub const ABOUT: &str = "\
Be git's credential helper: git runs `keyward credential get|store|erase` (through \
git-credential-keyward, installed beside keyward) once `git config --global credential.helper \
keyward` is set. The request is git's key=value lines on standard input (git-credential(1)).

get prints the username= and password= lines of the matching item, or nothing (exit 0) when \
there is none, and git asks you instead. When the agent is locked it asks for the Master \
Password on the terminal (not with --no-prompt); without a terminal it answers nothing at once, \
with a note on standard error, so git never waits. store saves a credential git used \
successfully (an unchanged one is not written again); erase removes the one git found wrong, \
only if it still holds the rejected password. Neither asks for the Master Password.

Items are named git/PROTOCOL/HOST (with the port, in lower case), or git/PROTOCOL/HOST/PATH when \
git sends a path (credential.useHttpPath); get looks for the path's item first, then the host's. \
An item holds the lines username=NAME and password=SECRET (and password_expiry_utc=, \
oauth_refresh_token= when git gives them): keyward set can write one. One item holds one \
username. store refuses plain http except for this machine (localhost, 127.0.0.0/8, ::1) \
unless --allow-http. The password is printed on standard output by get, and nowhere else.";

/// `keyward credential --help` examples.
pub const EXAMPLES: &str = "\
Examples:
  git config --global credential.helper keyward       # git asks keyward, then you
  git config --global credential.useHttpPath true     # one credential per repository
  keyward set git/https/example.com                   # by hand: username=me, password=… lines
  printf 'protocol=https\\nhost=example.com\\n' | keyward credential get";

/// `keyward credential get --help` examples.
pub const GET_EXAMPLES: &str = "\
Examples:
  keyward credential get < request                    # lines protocol=https, host=example.com
  git credential fill <<< url=https://example.com     # the same, through git";

/// `keyward credential store --help` examples.
pub const STORE_EXAMPLES: &str = "\
Examples:
  keyward credential store < request                  # protocol=, host=, username=, password= lines
  keyward credential --allow-http store < request     # also for a plain-http server elsewhere";

/// `keyward credential erase --help` examples.
pub const ERASE_EXAMPLES: &str = "\
Examples:
  printf 'protocol=https\\nhost=example.com\\n' | keyward credential erase
  keyward rm git/https/example.com                    # the same, by name";

/// `keyward credential`'s arguments.
#[derive(clap::Args, Debug)]
pub struct CredentialArgs {
    /// Also store credentials for plain-http servers other than this machine
    /// (git sends them unencrypted; refused without this).
    #[arg(long)]
    pub allow_http: bool,
    #[command(subcommand)]
    pub action: Action,
}

/// The operations git asks of a helper.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Print the stored username and password for git's request (nothing when none matches).
    #[command(after_help = GET_EXAMPLES)]
    Get,
    /// Store the credential of git's request (git calls it after the credential worked).
    #[command(after_help = STORE_EXAMPLES)]
    Store,
    /// Remove the stored credential git's request names (git calls it after it was refused).
    #[command(after_help = ERASE_EXAMPLES)]
    Erase,
    /// Any other operation, ignored as the protocol asks (for git's future ones).
    #[command(external_subcommand)]
    Other(#[allow(dead_code)] Vec<OsString>),
}

/// The most git sends for one request (a long OAuth refresh token fits).
const MAX_INPUT: usize = 64 * 1024;

/// The prefix of every item this helper reads or writes.
const PREFIX: &str = "git";

/// A stored credential: what an item holds, and what `get` prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Stored {
    username: Option<String>,
    password: Secret,
    expiry: Option<String>,
    refresh_token: Option<Secret>,
}

impl Stored {
    /// The item's value, which is also `get`'s answer: `key=value` lines.
    fn encode(&self) -> Secret {
        let lines: [(&str, Option<&[u8]>); 4] = [
            ("username", self.username.as_deref().map(str::as_bytes)),
            ("password", Some(self.password.expose())),
            (
                "password_expiry_utc",
                self.expiry.as_deref().map(str::as_bytes),
            ),
            (
                "oauth_refresh_token",
                self.refresh_token.as_ref().map(Secret::expose),
            ),
        ];
        // Sized once: a growing buffer would leave copies of the password.
        let size = lines
            .iter()
            .filter_map(|(k, v)| v.map(|v| k.len() + v.len() + 2))
            .sum();
        let mut out = Vec::with_capacity(size);
        for (key, value) in lines {
            if let Some(value) = value {
                out.extend_from_slice(key.as_bytes());
                out.push(b'=');
                out.extend_from_slice(value);
                out.push(b'\n');
            }
        }
        Secret::new(out)
    }

    /// Reads an item's value; `None` when it holds no `password=` line.
    /// Lines it does not know are ignored.
    fn decode(value: &Secret) -> Option<Self> {
        let mut username = None;
        let mut password = None;
        let mut expiry = None;
        let mut refresh_token = None;
        for (key, v) in lines(value.expose()) {
            match key {
                b"username" => username = Some(String::from_utf8(v.to_vec()).ok()?),
                b"password" => password = Some(Secret::from_slice(v)),
                b"password_expiry_utc" => expiry = Some(String::from_utf8(v.to_vec()).ok()?),
                b"oauth_refresh_token" => refresh_token = Some(Secret::from_slice(v)),
                _ => {}
            }
        }
        Some(Self {
            username,
            password: password?,
            expiry,
            refresh_token,
        })
    }
}

/// The `key=value` lines of `data` up to its first empty line; a line
/// without `=` is returned with an empty key (an error for requests).
fn lines(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    data.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
        .map(|l| match l.iter().position(|&b| b == b'=') {
            Some(i) => (&l[..i], &l[i + 1..]),
            None => (&b""[..], l),
        })
}

/// What git says about the credential it wants, has used, or found wrong.
#[derive(Default)]
pub struct Request {
    protocol: String,
    host: String,
    path: Option<String>,
    username: Option<String>,
    password: Option<Secret>,
    expiry: Option<String>,
    refresh_token: Option<Secret>,
}

fn invalid(message: impl Into<String>) -> CliError {
    CliError::with(exit::INVALID, message)
}

/// A request's value that must be text (never a secret: safe to name).
fn text(key: &str, value: &[u8]) -> Result<String, CliError> {
    String::from_utf8(value.to_vec())
        .map_err(|_| invalid(format!("git's request: {key} is not UTF-8 text")))
}

/// `%XX` escapes decoded, as git decodes the parts of a URL.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

impl Request {
    /// Parses git's request (the lines up to a blank line or the end).
    pub fn parse(data: &[u8]) -> Result<Self, CliError> {
        let mut r = Self::default();
        for (key, value) in lines(data) {
            if value.contains(&0) {
                return Err(invalid("git's request holds a NUL byte"));
            }
            match key {
                b"" => return Err(invalid("git's request has a line without '=' (key=value)")),
                b"protocol" => r.protocol = text("protocol", value)?.to_ascii_lowercase(),
                b"host" => r.host = text("host", value)?.to_ascii_lowercase(),
                b"path" => r.path = Some(text("path", value)?).filter(|p| !p.is_empty()),
                b"username" => r.username = Some(text("username", value)?),
                b"password" => r.password = Some(Secret::from_slice(value)),
                b"password_expiry_utc" => r.expiry = Some(text("password_expiry_utc", value)?),
                b"oauth_refresh_token" => r.refresh_token = Some(Secret::from_slice(value)),
                b"url" => r.read_url(&text("url", value)?)?,
                _ => {}
            }
        }
        Ok(r)
    }

    /// `url=`: as if its parts had been given (git-credential(1)).
    fn read_url(&mut self, url: &str) -> Result<(), CliError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("git's request: url= is not a URL (PROTOCOL://HOST/PATH)"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let decoded = |what: &str, s: &str| text(what, &Zeroizing::new(percent_decode(s)));
        self.protocol = scheme.to_ascii_lowercase();
        self.host = decoded("host", host)?.to_ascii_lowercase();
        if !path.is_empty() {
            self.path = Some(decoded("path", path)?);
        }
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            self.username = Some(decoded("username", user)?);
            if let Some(p) = password {
                self.password = Some(Secret::new(percent_decode(p)));
            }
        }
        Ok(())
    }

    /// The item names for this request, the most specific first: the
    /// path's (when git sent one), then the host's. Names the agent would
    /// refuse (too long, control characters) are left out.
    pub fn names(&self) -> Vec<String> {
        if self.protocol.is_empty()
            || self.protocol.contains('/')
            || self.host.contains('/')
            || (self.host.is_empty() && self.path.is_none())
        {
            return Vec::new();
        }
        let host = format!("{PREFIX}/{}/{}", self.protocol, self.host);
        let mut names = Vec::new();
        if let Some(path) = &self.path {
            names.push(format!("{host}/{path}"));
        }
        names.push(host);
        names.retain(|n| n.len() <= MAX_NAME && !n.chars().any(char::is_control));
        names
    }

    /// `PROTOCOL://HOST/PATH`, for messages.
    fn url(&self) -> String {
        let path = self.path.as_deref().unwrap_or("");
        format!("{}://{}/{path}", self.protocol, self.host)
    }

    /// The credential to store, if the request holds one.
    fn credential(&self) -> Option<Stored> {
        Some(Stored {
            username: Some(self.username.clone()?),
            password: self.password.clone()?,
            expiry: self.expiry.clone(),
            refresh_token: self.refresh_token.clone(),
        })
    }
}

/// Whether `host` (as git sends it: with a port, IPv6 in brackets) is this machine.
fn is_loopback(host: &str) -> bool {
    use std::net::IpAddr;
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if host.parse::<IpAddr>().is_ok() {
        host
    } else {
        host.rsplit_once(':').map_or(host, |(h, _port)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An item found for a request.
struct Found {
    name: String,
    credential: Stored,
}

/// The first of `names` that exists, holds a credential, and is for
/// `username` when one is given.
fn find(
    c: &mut Client,
    names: &[String],
    username: Option<&str>,
) -> Result<Option<Found>, ClientError> {
    for name in names {
        let value = match c.get(name) {
            Ok(v) => v,
            Err(ClientError::Agent(e)) if e.code == ErrorCode::NotFound => continue,
            Err(e) => return Err(e),
        };
        let Some(credential) = Stored::decode(&value) else {
            eprintln!(
                "keyward: {name} holds no git credential (the lines username=… and password=…): skipped"
            );
            continue;
        };
        if username.is_none_or(|u| credential.username.as_deref() == Some(u)) {
            return Ok(Some(Found {
                name: name.clone(),
                credential,
            }));
        }
    }
    Ok(None)
}

/// Reads git's request from `input`: up to a blank line or the end, at
/// most [`MAX_INPUT`] bytes, into one buffer wiped afterwards.
fn read_request(input: &mut impl Read) -> Result<Request, CliError> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_INPUT + 1]);
    let mut len = 0;
    let blank = |b: &[u8]| {
        b.starts_with(b"\n")
            || b.starts_with(b"\r\n")
            || b.windows(2).any(|w| w == b"\n\n")
            || b.windows(3).any(|w| w == b"\n\r\n")
    };
    while len < buf.len() && !blank(&buf[..len]) {
        match input.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(CliError::msg(format!(
                    "cannot read git's request from standard input: {e}"
                )));
            }
        }
    }
    if len > MAX_INPUT {
        return Err(invalid(format!(
            "git's request is larger than {MAX_INPUT} bytes"
        )));
    }
    Request::parse(&buf[..len])
}

/// `keyward credential …`: reads git's request on standard input and runs
/// the operation. Only `get` unlocks the agent on demand (on a terminal,
/// without `--no-prompt`), as `keyward get` does.
pub fn run(args: CredentialArgs, autostart: bool, no_prompt: bool) -> Result<(), CliError> {
    if let Action::Other(_) = args.action {
        return Ok(());
    }
    let req = read_request(&mut std::io::stdin().lock())?;
    let names = req.names();
    match args.action {
        Action::Get => {
            let Some(first) = names.first() else {
                return Ok(());
            };
            let found = match unlocked(autostart, no_prompt, |c| {
                find(c, &names, req.username.as_deref())
            }) {
                Ok(found) => found,
                Err(e) if e.code == exit::LOCKED => {
                    eprintln!(
                        "keyward: the agent is locked, so it gives git no credential for {first} \
                         (run `keyward unlock` to let it answer)"
                    );
                    return Ok(());
                }
                Err(e) if e.code == exit::NO_ACCOUNT => return Ok(()),
                Err(e) => return Err(e),
            };
            if let Some(found) = found {
                let answer = found.credential.encode();
                let mut out = std::io::stdout().lock();
                out.write_all(answer.expose())
                    .and_then(|()| out.flush())
                    .map_err(|e| CliError::msg(format!("cannot answer git: {e}")))?;
            }
            Ok(())
        }
        Action::Store => {
            let (Some(target), Some(new)) = (names.first(), req.credential()) else {
                return Err(invalid(
                    "git's request needs protocol=, host=, username= and password= to store a credential",
                ));
            };
            if req.protocol == "http" && !args.allow_http && !is_loopback(&req.host) {
                return Err(invalid(format!(
                    "not storing the credential for {}: plain http sends it unencrypted; use \
                     https, or store it anyway with `git config credential.helper 'keyward --allow-http'`",
                    req.url()
                )));
            }
            let value = new.encode();
            let fields = [&new.username, &new.expiry];
            if value.len() > MAX_VALUE
                || fields
                    .iter()
                    .any(|f| f.as_deref().is_some_and(|f| f.contains('\n')))
            {
                return Err(invalid(format!(
                    "the credential for {} does not fit in an item (at most {MAX_VALUE} bytes, no newlines)",
                    req.url()
                )));
            }
            let r = unlocked(autostart, true, |c| {
                match find(c, &names, new.username.as_deref())? {
                    Some(found) if found.credential == new => {}
                    Some(found) => c.set(&found.name, value.clone())?,
                    None => c.set(target, value.clone())?,
                }
                Ok(())
            });
            locked_note(r, &format!("store git's credential for {}", req.url()))
        }
        Action::Erase => {
            if names.is_empty() {
                return Ok(());
            }
            let r = unlocked(autostart, true, |c| {
                if let Some(found) = find(c, &names, req.username.as_deref())?
                    && req
                        .password
                        .as_ref()
                        .is_none_or(|p| *p == found.credential.password)
                {
                    match c.remove(&found.name) {
                        Err(ClientError::Agent(e)) if e.code == ErrorCode::NotFound => {}
                        other => other?,
                    }
                }
                Ok(())
            });
            locked_note(r, &format!("erase git's credential for {}", req.url()))
        }
        Action::Other(_) => Ok(()),
    }
}

/// A store or erase that found the agent locked says what it could not do.
fn locked_note(r: Result<(), CliError>, what: &str) -> Result<(), CliError> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.code == exit::LOCKED => Err(CliError::with(
            exit::LOCKED,
            format!("the agent is locked, so keyward could not {what}: run `keyward unlock`"),
        )),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_ends_at_the_blank_line_and_ignores_unknown_keys() {
        let r = Request::parse(
            b"capability[]=authtype\nprotocol=HTTPS\nhost=Example.com:8443\npath=org/repo.git\n\
              username=me\nwwwauth[]=Basic realm=\"x\"\n\nhost=evil.example\n",
        )
        .unwrap();
        assert_eq!(r.protocol, "https");
        assert_eq!(r.host, "example.com:8443");
        assert_eq!(r.path.as_deref(), Some("org/repo.git"));
        assert_eq!(r.username.as_deref(), Some("me"));
        assert_eq!(
            r.names(),
            [
                "git/https/example.com:8443/org/repo.git",
                "git/https/example.com:8443"
            ]
        );
        // Without a path (no credential.useHttpPath): the host's item only.
        let r = Request::parse(b"protocol=https\nhost=example.com").unwrap();
        assert_eq!(r.names(), ["git/https/example.com"]);
        // Nothing to name: no answer, no item.
        assert!(
            Request::parse(b"host=example.com\n")
                .unwrap()
                .names()
                .is_empty()
        );
        assert!(
            Request::parse(b"protocol=a/b\nhost=x\n")
                .unwrap()
                .names()
                .is_empty()
        );
        let long = format!("protocol=https\nhost=h\npath={}\n", "p".repeat(300));
        assert_eq!(
            Request::parse(long.as_bytes()).unwrap().names(),
            ["git/https/h"]
        );
        assert!(Request::parse(b"protocol=https\nnonsense\n").is_err());
    }

    #[test]
    fn a_url_is_read_as_its_parts() {
        let r =
            Request::parse(b"url=https://me%40corp:p%3Ass@Git.Example.com/a%20b/c.git\n").unwrap();
        assert_eq!(r.protocol, "https");
        assert_eq!(r.host, "git.example.com");
        assert_eq!(r.path.as_deref(), Some("a b/c.git"));
        assert_eq!(r.username.as_deref(), Some("me@corp"));
        assert_eq!(r.password.unwrap().expose(), b"p:ss");
        let r = Request::parse(b"url=http://127.0.0.1:8080\n").unwrap();
        assert_eq!(r.names(), ["git/http/127.0.0.1:8080"]);
    }

    #[test]
    fn an_item_holds_the_lines_get_prints() {
        let r = Request::parse(
            b"protocol=https\nhost=h\nusername=me\npassword=a=b c\npassword_expiry_utc=1700000000\n",
        )
        .unwrap();
        let c = r.credential().unwrap();
        let v = c.encode();
        assert_eq!(
            v.expose(),
            b"username=me\npassword=a=b c\npassword_expiry_utc=1700000000\n"
        );
        assert!(Stored::decode(&v).unwrap() == c);
        // Written by hand, with a note and without a trailing newline.
        let hand = Stored::decode(&Secret::from("note=work\nusername=me\npassword=x")).unwrap();
        assert_eq!(hand.encode().expose(), b"username=me\npassword=x\n");
        // A value that is not a credential.
        assert!(Stored::decode(&Secret::from("ghp_token")).is_none());
        // Nothing to store without a username and a password.
        assert!(
            Request::parse(b"protocol=https\nhost=h\nusername=me\n")
                .unwrap()
                .credential()
                .is_none()
        );
    }

    #[test]
    fn only_this_machine_counts_as_loopback() {
        for host in [
            "127.0.0.1:8080",
            "127.1.2.3",
            "localhost",
            "LOCALHOST:80",
            "[::1]:8080",
            "::1",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "example.com",
            "10.0.0.1:80",
            "localhost.example.com",
            "[::2]:1",
            "0.0.0.0",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn the_request_is_read_up_to_the_blank_line_only() {
        // A writer that would block after the blank line: reading stops there.
        struct Then<'a>(&'a [u8]);
        impl Read for Then<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                assert!(!self.0.is_empty(), "read past the blank line");
                let n = self.0.len().min(buf.len()).min(7);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let r = read_request(&mut Then(b"protocol=https\nhost=example.com\n\n")).unwrap();
        assert_eq!(r.host, "example.com");
        let big = vec![b'a'; MAX_INPUT + 10];
        assert!(read_request(&mut &big[..]).is_err());
    }
}
