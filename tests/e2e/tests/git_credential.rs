#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Issue 21, git's credentials: real git with `credential.helper = keyward`
//! (git runs `git-credential-keyward`, from the build directory put first on
//! PATH) against a local HTTP server that asks for basic auth: Python's
//! `http.server` on 127.0.0.1 serving a bare repository through git's "dumb
//! HTTP" protocol. Every git runs with a private HOME and global config, in
//! a session of its own (no terminal: neither git nor keyward can prompt),
//! with `GIT_TERMINAL_PROMPT=0`, and within a time bound.

use keyward_e2e::{Home, Run, Terminal, agent_bin, bin_dir, require};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PW: &str = "master password";
const USER: &str = "alice";
const PASS: &str = "kw-git-pass-7b1f2c";

/// The longest any git command may take here: a helper that waited for
/// someone would show up as this test failing, not hanging.
const GIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A basic-auth HTTP server (the expected `user:password` comes in
/// `KW_AUTH`, not in its arguments) serving the directory `argv[1]`;
/// prints its port, then one line per request to standard error.
const SERVER: &str = r#"
import base64, http.server, os, sys
root = sys.argv[1]
expected = "Basic " + base64.b64encode(os.environ["KW_AUTH"].encode()).decode()

class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=root, **kwargs)

    def authorized(self):
        if self.headers.get("Authorization") == expected:
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="keyward test"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_GET(self):
        if self.authorized():
            super().do_GET()

    def do_HEAD(self):
        if self.authorized():
            super().do_HEAD()

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn available() -> bool {
    require("git", runs("git"))
        && require("python3", runs("python3"))
        && require("setsid (util-linux)", runs("setsid"))
}

/// git with no configuration but what a test gives it.
fn plain_git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The HTTP server with a bare repository `repo.git` (one commit, a file
/// `hello.txt`), stopped by its pid when dropped.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(auth: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keyward-git-")
            .tempdir()
            .unwrap();
        let work = dir.path().join("work");
        let root = dir.path().join("www");
        std::fs::create_dir_all(&root).unwrap();
        plain_git(dir.path(), &["init", "-q", "-b", "main", "work"]);
        std::fs::write(work.join("hello.txt"), "hello from keyward's test\n").unwrap();
        plain_git(&work, &["add", "hello.txt"]);
        plain_git(
            &work,
            &[
                "-c",
                "user.name=keyward test",
                "-c",
                "user.email=test@example.invalid",
                "commit",
                "-qm",
                "first",
            ],
        );
        plain_git(
            dir.path(),
            &["clone", "-q", "--bare", "work", "www/repo.git"],
        );
        plain_git(&root.join("repo.git"), &["update-server-info"]);
        let log = dir.path().join("server.log");
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SERVER)
            .arg(&root)
            .env("KW_AUTH", auth)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "the test server did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        Self {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/repo.git", self.port)
    }

    /// The host as git sends it, and the item name it gives.
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn item(&self) -> String {
        format!("git/http/{}", self.host())
    }

    fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// git for one test: its own HOME and global config with
/// `credential.helper = keyward`, and the build directory first on PATH.
struct Git<'a> {
    home: &'a Home,
    dir: tempfile::TempDir,
}

impl<'a> Git<'a> {
    fn new(home: &'a Home) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keyward-git-home-")
            .tempdir()
            .unwrap();
        std::fs::write(
            dir.path().join(".gitconfig"),
            "[credential]\n\thelper = keyward\n",
        )
        .unwrap();
        assert!(
            bin_dir().join("git-credential-keyward").is_file(),
            "git-credential-keyward was not built"
        );
        Self { home, dir }
    }

    /// Runs `git args…` with `stdin` and `env`, in a session of its own,
    /// killed (and the test failed) after [`GIT_TIMEOUT`].
    fn run(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
        let out = self.dir.path().join("stdout");
        let err = self.dir.path().join("stderr");
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = Command::new("setsid")
            .arg("-w")
            .arg("git")
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env("GIT_CONFIG_GLOBAL", self.dir.path().join(".gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GIT_ASKPASS")
            .env_remove("SSH_ASKPASS")
            .env("LC_ALL", "C")
            .env("PATH", path)
            .env("KEYWARD_HOME", self.home.path())
            .env("KEYWARD_AGENT", agent_bin())
            .env("KEYWARD_PINENTRY", "none")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > GIT_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "git {args:?} did not finish within {GIT_TIMEOUT:?}\n--- stderr\n{}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let r = Run {
            cmd: format!("git {}", args.join(" ")),
            code: status.code().unwrap_or(-1),
            stdout: std::fs::read_to_string(&out).unwrap(),
            stderr: std::fs::read_to_string(&err).unwrap(),
        };
        assert!(
            !r.stderr.contains(PASS),
            "a password reached standard error\n{r}"
        );
        r
    }

    /// `git clone URL DEST` (DEST under git's HOME).
    fn clone(&self, url: &str, dest: &str, env: &[(&str, &str)]) -> Run {
        self.run(&["clone", "-q", url, dest], "", env)
    }

    fn cloned(&self, dest: &str) -> bool {
        self.dir.path().join(dest).join("hello.txt").is_file()
    }
}

/// A home with an account and the server's credential stored through the
/// helper's own `store`.
fn home_with(server: &Server, password: &str) -> Home {
    let home = Home::new();
    home.init(PW);
    let request = format!(
        "protocol=http\nhost={}\nusername={USER}\npassword={password}\n\n",
        server.host()
    );
    home.run_with(&["credential", "store"], Some(request.as_bytes()), None)
        .expect_code(0);
    home
}

/// No file under `dir` (the vault, the state and runtime directories, the
/// agent's log) holds the password in clear.
fn assert_nowhere_in_clear(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            assert_nowhere_in_clear(&path);
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(PASS.len()).any(|w| w == PASS.as_bytes()),
                "{} holds the password in clear",
                path.display()
            );
        }
    }
}

#[test]
fn git_finds_a_stored_credential_and_clones_with_it() {
    if !available() {
        return;
    }
    let server = Server::start(&format!("{USER}:{PASS}"));
    let home = home_with(&server, PASS);
    let stored = home.ok(&["get", &server.item()]);
    assert_eq!(
        stored.stdout,
        format!("username={USER}\npassword={PASS}\n"),
        "the item holds git's own lines"
    );
    let git = Git::new(&home);

    // `git credential fill` asks the helper; with a path (as git sends
    // with credential.useHttpPath) the host's item still answers.
    let fill = git
        .run(
            &["credential", "fill"],
            &format!("protocol=http\nhost={}\npath=repo.git\n\n", server.host()),
            &[],
        )
        .expect_code(0);
    assert!(
        fill.stdout.contains(&format!("username={USER}\n"))
            && fill.stdout.contains(&format!("password={PASS}\n")),
        "{fill}"
    );

    // The clone: a 401, the helper's credential, then the repository.
    let r = git.clone(&server.url(), "clone", &[]);
    assert_eq!(r.code, 0, "{r}\n--- server\n{}", server.requests());
    assert!(git.cloned("clone"), "{r}");
    assert!(server.requests().contains(" 401 "), "{}", server.requests());

    // A credential for the repository's path is preferred to the host's.
    let request = format!(
        "protocol=http\nhost={}\npath=repo.git\nusername=bob\npassword=other\n\n",
        server.host()
    );
    home.run_with(&["credential", "store"], Some(request.as_bytes()), None)
        .expect_code(0);
    let path_item = format!("{}/repo.git", server.item());
    assert!(
        home.ok(&["get", &path_item])
            .stdout
            .contains("username=bob")
    );
    let get = |path: &str| {
        let request = format!("protocol=http\nhost={}\n{path}\n", server.host());
        home.run_with(&["credential", "get"], Some(request.as_bytes()), None)
            .expect_code(0)
            .stdout
    };
    assert!(get("path=repo.git").contains("username=bob"));
    assert!(get("path=other.git").contains(&format!("username={USER}")));
    assert!(get("").contains(&format!("username={USER}")));
    // A request for another user, or another protocol, gets nothing.
    assert_eq!(get("username=carol"), "");
    let https = format!("protocol=https\nhost={}\n", server.host());
    let r = home
        .run_with(&["credential", "get"], Some(https.as_bytes()), None)
        .expect_code(0);
    assert_eq!(r.stdout, "", "{r}");

    drop(git);
    assert_nowhere_in_clear(home.path());
}

#[test]
fn a_refused_credential_is_erased_and_one_git_approves_is_stored() {
    if !available() {
        return;
    }
    let server = Server::start(&format!("{USER}:{PASS}"));
    let home = home_with(&server, "wrong-password");
    let git = Git::new(&home);

    // The stored password is wrong: git fails, and calls `erase`.
    let r = git.clone(&server.url(), "first", &[]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("Authentication failed"), "{r}");
    assert!(!git.cloned("first"));
    home.run(&["get", &server.item()]).expect_code(7);

    // The user types the right one (through GIT_ASKPASS here: there is no
    // terminal); git uses it, then approves it, and keyward stores it.
    let askpass = git.dir.path().join("askpass");
    std::fs::write(
        &askpass,
        "#!/bin/sh\ncase \"$1\" in Username*) echo \"$KW_USER\" ;; *) echo \"$KW_PASS\" ;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    let askpass = askpass.to_str().unwrap();
    let env = [
        ("GIT_ASKPASS", askpass),
        ("KW_USER", USER),
        ("KW_PASS", PASS),
    ];
    let r = git.clone(&server.url(), "second", &env);
    assert_eq!(r.code, 0, "{r}\n--- server\n{}", server.requests());
    assert!(git.cloned("second"));
    assert_eq!(
        home.ok(&["get", &server.item()]).stdout,
        format!("username={USER}\npassword={PASS}\n")
    );
    // Next time no one is asked.
    let r = git.clone(&server.url(), "third", &[]);
    assert_eq!(r.code, 0, "{r}");

    // `git credential approve`, as git does after a prompt: with
    // credential.useHttpPath the repository's own item.
    let r = git
        .run(
            &["-c", "credential.useHttpPath=true", "credential", "approve"],
            &format!(
                "url=http://{}/other.git\nusername=bob\npassword=secret-2\n\n",
                server.host()
            ),
            &[],
        )
        .expect_code(0);
    assert_eq!(
        home.ok(&["get", &format!("{}/other.git", server.item())])
            .stdout,
        "username=bob\npassword=secret-2\n",
        "{r}"
    );
    // Plain http to another machine is refused, and says why; https is kept.
    let r = git
        .run(
            &["credential", "approve"],
            "url=http://git.example.com/r.git\nusername=bob\npassword=secret-3\n\n",
            &[],
        )
        .expect_code(0);
    assert!(r.stderr.contains("plain http"), "{r}");
    home.run(&["get", "git/http/git.example.com"])
        .expect_code(7);
    git.run(
        &["credential", "approve"],
        "url=https://git.example.com/r.git\nusername=bob\npassword=secret-3\n\n",
        &[],
    )
    .expect_code(0);
    home.ok(&["get", "git/https/git.example.com"]);

    // `git credential reject` erases only the credential it names.
    git.run(
        &["credential", "reject"],
        "url=https://git.example.com\nusername=bob\npassword=not-the-stored-one\n\n",
        &[],
    )
    .expect_code(0);
    home.ok(&["get", "git/https/git.example.com"]);
    git.run(
        &["credential", "reject"],
        "url=https://git.example.com\nusername=bob\npassword=secret-3\n\n",
        &[],
    )
    .expect_code(0);
    home.run(&["get", "git/https/git.example.com"])
        .expect_code(7);

    drop(git);
    assert_nowhere_in_clear(home.path());
}

#[test]
fn a_locked_agent_gives_git_nothing_at_once_and_asks_on_a_terminal() {
    if !available() {
        return;
    }
    let server = Server::start(&format!("{USER}:{PASS}"));
    let home = home_with(&server, PASS);
    home.ok(&["lock"]);
    let git = Git::new(&home);

    // No terminal: the helper answers nothing at once, with a note; git
    // (which may not prompt either) fails cleanly.
    let start = Instant::now();
    let r = git.clone(&server.url(), "clone", &[]);
    assert_ne!(r.code, 0, "{r}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    assert!(r.stderr.contains("the agent is locked"), "{r}");
    assert!(
        r.stderr.contains("terminal prompts disabled") || r.stderr.contains("Authentication"),
        "{r}"
    );
    assert!(!git.cloned("clone"));
    assert_eq!(home.status()["state"], "locked");
    // git's `store` and `erase` never ask either: they say what they could not do.
    let request = format!("protocol=http\nhost={}\n\n", server.host());
    let r = home.run_with(&["credential", "erase"], Some(request.as_bytes()), None);
    assert_eq!(r.code, 4, "{r}");
    assert!(r.stderr.contains("could not erase"), "{r}");

    // On a terminal (git run by a person), `get` asks for the Master
    // Password and then answers.
    let mut t = Terminal::spawn(&home, &["credential", "get"]);
    t.type_line("protocol=http");
    t.type_line(&format!("host={}", server.host()));
    t.type_line("");
    t.expect("The keyward agent is locked.");
    t.expect("Master Password: ");
    t.type_line(PW);
    t.expect(&format!("username={USER}"));
    let (code, rest) = t.wait();
    assert_eq!(code, 0, "{rest}");
    assert_eq!(home.status()["state"], "unlocked");
    let r = git.clone(&server.url(), "clone", &[]);
    assert_eq!(r.code, 0, "{r}");
}
