#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The clients against a fake agent (a `UnixListener` in the test): long
//! listings sent in parts, and answers that arrive after the client gave up
//! on them. Also the codec of long listings on its own.

use keyward_client::client::{MAX_LIST_BYTES, MAX_LIST_ITEMS};
use keyward_client::frame::{FrameBuf, FrameError, MAX_FRAME};
use keyward_client::message::MAX_NAME;
use keyward_client::{
    AsyncClient, Client, ClientError, ItemInfo, PROTOCOL_VERSION, Request, Response, Secret,
};
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

// ---------------------------------------------------------------- helpers

/// `n` items whose names are exactly `MAX_NAME` (256) bytes long.
fn long_items(n: usize) -> Vec<ItemInfo> {
    (0..n)
        .map(|i| {
            let prefix = format!("{i:06}/");
            let name = format!("{prefix}{}", "n".repeat(MAX_NAME - prefix.len()));
            assert_eq!(name.len(), MAX_NAME);
            ItemInfo {
                name,
                created: i as u64,
                modified: u64::MAX - i as u64,
            }
        })
        .collect()
}

/// Splits encoded bytes into frame payloads, as a client reads them: each
/// within `MAX_FRAME` (`FrameBuf` refuses anything larger).
fn frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut fb = FrameBuf::new();
    let mut src = bytes;
    let mut out = Vec::new();
    loop {
        match fb.read_frame(&mut src) {
            Ok(p) => {
                assert!(p.len() <= MAX_FRAME);
                out.push(p.to_vec());
            }
            Err(FrameError::Closed) => return out,
            Err(e) => panic!("not a clean sequence of frames: {e}"),
        }
    }
}

/// Decodes a sequence of frames that must be `ItemsPart`… `Items`.
fn join_listing(bytes: &[u8]) -> (Vec<ItemInfo>, usize) {
    let payloads = frames(bytes);
    let n = payloads.len();
    let mut all = Vec::new();
    for (k, p) in payloads.iter().enumerate() {
        match Response::decode(p).unwrap() {
            Response::ItemsPart(v) if k + 1 < n => {
                assert!(!v.is_empty(), "an empty part");
                all.extend(v);
            }
            Response::Items(v) if k + 1 == n => all.extend(v),
            other => panic!("frame {k} of {n} is {other:?}"),
        }
    }
    (all, n)
}

/// A fake agent: answers `Hello`, then hands every other request to
/// `handler` with the connection to write its answer to. One thread per
/// connection; `connections` counts them.
struct FakeAgent {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    connections: Arc<AtomicUsize>,
}

type Handler = dyn Fn(Request, &mut UnixStream) -> std::io::Result<()> + Send + Sync;

impl FakeAgent {
    fn start(
        handler: impl Fn(Request, &mut UnixStream) -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let handler: Arc<Handler> = Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                std::thread::spawn(move || serve(stream, &*handler));
            }
        });
        Self {
            _dir: dir,
            socket,
            connections,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve(mut stream: UnixStream, handler: &Handler) {
    let mut buf = FrameBuf::new();
    loop {
        let Ok(payload) = buf.read_frame(&mut &stream) else {
            return;
        };
        let req = Request::decode(payload).unwrap();
        let sent = match req {
            Request::Hello { .. } => stream.write_all(
                &Response::HelloOk {
                    protocol: PROTOCOL_VERSION,
                    agent_version: "fake".into(),
                    pid: std::process::id(),
                }
                .encode()
                .0,
            ),
            req => handler(req, &mut stream),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Answers `Get(name)` with the value `value of NAME`, after `slow` for
/// the item `aws/key`.
fn slow_for_aws(slow: Duration) -> impl Fn(Request, &mut UnixStream) -> std::io::Result<()> {
    move |req, s| {
        let Request::Get { name } = req else {
            return s.write_all(&Response::Ok.encode().0);
        };
        if name == "aws/key" {
            std::thread::sleep(slow);
        }
        s.write_all(
            &Response::Value(Secret::from(format!("value of {name}")))
                .encode()
                .0,
        )
    }
}

// ---------------------------------------------------------------- codec

#[test]
fn ten_thousand_long_names_round_trip_in_frames_within_the_cap() {
    let items = long_items(10_000);
    let (bytes, secret) = Response::Items(items.clone()).encode();
    assert!(!secret);
    let (back, n) = join_listing(&bytes);
    assert!(n > 1, "10,000 names of 256 bytes do not fit in one frame");
    // 2.76 MB of items in 64 KiB frames: no frame is much emptier than it must be.
    assert!(n <= bytes.len() / (MAX_FRAME - 300) + 1, "{n} frames");
    assert_eq!(back, items);
}

#[test]
fn a_listing_that_fits_is_one_frame_as_before_and_one_more_item_splits_it() {
    // tag + count, then 4 + 256 + 8 + 8 bytes per item.
    let per_frame = (MAX_FRAME - 5) / (4 + MAX_NAME + 16);
    let items = long_items(per_frame);
    let (bytes, _) = Response::Items(items.clone()).encode();
    let payloads = frames(&bytes);
    assert_eq!(payloads.len(), 1);
    assert!(payloads[0].len() <= MAX_FRAME && payloads[0].len() > MAX_FRAME - 300);
    assert_eq!(
        Response::decode(&payloads[0]).unwrap(),
        Response::Items(items)
    );

    let items = long_items(per_frame + 1);
    let (bytes, _) = Response::Items(items.clone()).encode();
    let (back, n) = join_listing(&bytes);
    assert_eq!(n, 2);
    assert_eq!(back, items);

    // Empty and small listings: one `Items` frame.
    for n in [0, 1, 5] {
        let (bytes, _) = Response::Items(long_items(n)).encode();
        assert_eq!(frames(&bytes).len(), 1);
        assert_eq!(bytes[4], 0x84);
    }
}

#[test]
fn a_long_part_is_parts_only() {
    let items = long_items(1000);
    let (bytes, _) = Response::ItemsPart(items.clone()).encode();
    let mut all = Vec::new();
    for p in frames(&bytes) {
        let Response::ItemsPart(v) = Response::decode(&p).unwrap() else {
            panic!("not a part");
        };
        all.extend(v);
    }
    assert_eq!(all, items);
}

// ---------------------------------------------------------------- long listings

fn lists(items: Vec<ItemInfo>) -> impl Fn(Request, &mut UnixStream) -> std::io::Result<()> {
    move |req, s| {
        assert_eq!(req, Request::List);
        s.write_all(&Response::Items(items.clone()).encode().0)
    }
}

#[test]
fn the_blocking_client_joins_a_listing_sent_in_parts() {
    let items = long_items(10_000);
    let agent = FakeAgent::start(lists(items.clone()));
    let mut c = Client::connect(&agent.socket).unwrap();
    assert_eq!(c.list().unwrap(), items);
    // The connection is in step afterwards: the next answer is the next one.
    assert_eq!(c.call(&Request::List).unwrap(), Response::Items(items));
    assert_eq!(agent.connections(), 1);
}

#[tokio::test]
async fn the_async_client_joins_a_listing_sent_in_parts() {
    let items = long_items(10_000);
    let agent = FakeAgent::start(lists(items.clone()));
    let mut c = AsyncClient::connect(&agent.socket).await.unwrap();
    assert_eq!(c.list().await.unwrap(), items);
    assert_eq!(c.list().await.unwrap(), items);
    assert_eq!(agent.connections(), 1);
}

#[test]
fn an_endless_listing_is_refused_at_the_limit() {
    let agent = FakeAgent::start(|_, s| {
        let part = Response::ItemsPart(long_items(200)).encode().0;
        loop {
            s.write_all(&part)?;
        }
    });
    let mut c = Client::connect(&agent.socket).unwrap();
    let err = c.list().unwrap_err();
    assert!(matches!(err, ClientError::ListingTooLong), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&MAX_LIST_ITEMS.to_string()), "{text}");
    assert!(
        text.contains(&format!("{} MiB", MAX_LIST_BYTES >> 20)),
        "{text}"
    );
}

#[test]
fn parts_must_end_with_items() {
    let agent = FakeAgent::start(|_, s| {
        s.write_all(&Response::ItemsPart(long_items(3)).encode().0)?;
        s.write_all(&Response::Ok.encode().0)
    });
    let mut c = Client::connect(&agent.socket).unwrap();
    let err = c.list().unwrap_err();
    assert!(matches!(err, ClientError::Unexpected(_)), "{err:?}");
}

// ---------------------------------------------------------------- late answers

#[test]
fn after_a_timeout_the_blocking_client_never_returns_the_late_answer() {
    let agent = FakeAgent::start(slow_for_aws(Duration::from_millis(500)));
    let mut c = Client::connect(&agent.socket).unwrap();
    c.set_timeout(Duration::from_millis(250)).unwrap();
    let err = c.get("aws/key").unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err:?}");
    // Let the late answer arrive: it now waits on the old connection.
    std::thread::sleep(Duration::from_millis(600));
    let v = c.get("github/token").unwrap();
    assert_eq!(v.expose_str(), Some("value of github/token"));
    assert_eq!(agent.connections(), 2, "the client connected again");
    // In step from then on, on the new connection.
    assert_eq!(c.get("x").unwrap().expose_str(), Some("value of x"));
    assert_eq!(agent.connections(), 2);
}

#[test]
fn a_poisoned_client_that_cannot_connect_again_says_so() {
    let agent = FakeAgent::start(slow_for_aws(Duration::from_millis(500)));
    let mut c = Client::connect(&agent.socket).unwrap();
    c.set_timeout(Duration::from_millis(200)).unwrap();
    assert!(matches!(c.get("aws/key"), Err(ClientError::Timeout(_))));
    std::fs::remove_file(&agent.socket).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let err = c.get("github/token").unwrap_err();
    assert!(matches!(err, ClientError::NotRunning { .. }), "{err:?}");
    assert!(
        err.to_string().contains("no keyward agent is running"),
        "{err}"
    );
}

#[tokio::test]
async fn after_a_timeout_the_async_client_never_returns_the_late_answer() {
    let agent = FakeAgent::start(slow_for_aws(Duration::from_millis(500)));
    let mut c = AsyncClient::connect(&agent.socket).await.unwrap();
    c.set_timeout(Duration::from_millis(250));
    let err = c.get("aws/key").await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let v = c.get("github/token").await.unwrap();
    assert_eq!(v.expose_str(), Some("value of github/token"));
    assert_eq!(agent.connections(), 2);
}

#[tokio::test]
async fn a_dropped_async_call_never_hands_its_answer_to_the_next() {
    let agent = FakeAgent::start(slow_for_aws(Duration::from_millis(300)));
    let mut c = AsyncClient::connect(&agent.socket).await.unwrap();
    // The caller gives up on the call: its future is dropped mid-request.
    let abandoned = tokio::time::timeout(Duration::from_millis(100), c.get("aws/key")).await;
    assert!(abandoned.is_err());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let v = c.get("github/token").await.unwrap();
    assert_eq!(v.expose_str(), Some("value of github/token"));
    assert_eq!(agent.connections(), 2);
}

// ---------------------------------------------------------------- idle close

/// An agent that closes the first connection after `Hello` without reading
/// anything more — at once (as its idle timeout does while the user types a
/// password), or `after` a while, by which time the client's request waits
/// unread in the socket — and serves the next connection. Says on the
/// returned channel when it has closed.
fn closes_the_first_connection(
    after: Duration,
) -> (
    tempfile::TempDir,
    PathBuf,
    Arc<AtomicUsize>,
    std::sync::mpsc::Receiver<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let (closed, on_close) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let closed = closed.clone();
            std::thread::spawn(move || {
                if n == 0 {
                    let mut buf = FrameBuf::new();
                    let mut s = stream;
                    let _ = buf.read_frame(&mut &s);
                    let hello = Response::HelloOk {
                        protocol: PROTOCOL_VERSION,
                        agent_version: "fake".into(),
                        pid: std::process::id(),
                    };
                    let _ = s.write_all(&hello.encode().0);
                    std::thread::sleep(after);
                    drop(s);
                    let _ = closed.send(());
                } else {
                    serve(stream, &slow_for_aws(Duration::ZERO));
                }
            });
        }
    });
    (dir, socket, connections, on_close)
}

/// Closed before the request is sent: sending fails (EPIPE).
#[test]
fn a_connection_the_agent_closed_while_idle_is_replaced_once() {
    let (_dir, socket, connections, closed) = closes_the_first_connection(Duration::ZERO);
    let mut c = Client::connect(&socket).unwrap();
    closed.recv().unwrap();
    let v = c.get("github/token").unwrap();
    assert_eq!(v.expose_str(), Some("value of github/token"));
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

/// Closed with the request unread: the read of the answer fails
/// (ECONNRESET). (Were the close to come before the send after all, it is
/// the case above; either way the request is sent once more.)
#[test]
fn a_request_the_agent_closed_on_unread_is_sent_again() {
    let (_dir, socket, connections, _closed) =
        closes_the_first_connection(Duration::from_millis(300));
    let mut c = Client::connect(&socket).unwrap();
    let v = c.get("github/token").unwrap();
    assert_eq!(v.expose_str(), Some("value of github/token"));
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_async_client_replaces_a_connection_the_agent_closed_while_idle() {
    for after in [Duration::ZERO, Duration::from_millis(300)] {
        let (_dir, socket, connections, closed) = closes_the_first_connection(after);
        let mut c = AsyncClient::connect(&socket).await.unwrap();
        if after.is_zero() {
            tokio::task::spawn_blocking(move || closed.recv().unwrap())
                .await
                .unwrap();
        }
        let v = c.get("github/token").await.unwrap();
        assert_eq!(v.expose_str(), Some("value of github/token"));
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }
}
