//! A fault-injecting TCP proxy between a client and a server, in plain std Rust.
//!
//! Each connection carries one HTTP request: the proxy adds `Connection: close` to the request so the
//! client never reuses a connection, which makes "the Nth connection" mean "the Nth request". A policy
//! chooses, per connection (by index from 0 and request path), what happens to the response: passed
//! through, cut after N body bytes, stalled after N body bytes (nothing more is forwarded, the connection
//! stays open), one body byte corrupted, throttled, the request's Range header dropped, junk appended to a body
//! of unannounced length, or an error status answered by the proxy itself.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What happens to one connection's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward the response untouched.
    Pass,
    /// Close the connection after this many bytes of the response body.
    Cut {
        /// Body bytes forwarded before the cut.
        after: u64,
    },
    /// Stop forwarding after this many body bytes and keep the connection open (a stalled server).
    Stall {
        /// Body bytes forwarded before the stall.
        after: u64,
    },
    /// Flip the bits of the body byte at this offset.
    Corrupt {
        /// Offset of the flipped byte in the body.
        at: u64,
    },
    /// Forward at most this many bytes per second.
    Throttle {
        /// The rate limit.
        bytes_per_sec: u64,
    },
    /// Remove the request's Range header, as a server that ignores ranges would (it answers 200).
    IgnoreRange,
    /// Drop the response's Content-Length and send this many extra bytes after the body (the body then
    /// ends when the connection closes).
    Append {
        /// How many extra bytes follow the body.
        bytes: usize,
    },
    /// Answer with this HTTP status and no body, without asking the server.
    Status {
        /// The HTTP status sent.
        code: u16,
    },
}

type Policy = dyn Fn(usize, &str) -> Fault + Send + Sync;

struct Shared {
    upstream: u16,
    policy: Box<Policy>,
    stop: AtomicBool,
    connections: AtomicUsize,
    body_bytes: AtomicU64,
    paths: Mutex<Vec<String>>,
}

/// A running proxy on a free loopback port; stopped on drop.
pub struct FaultProxy {
    shared: Arc<Shared>,
    /// The loopback port it listens on.
    pub port: u16,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `127.0.0.1:upstream`; `policy(connection index,
    /// request path)` picks each connection's fault.
    pub fn start(upstream: u16, policy: impl Fn(usize, &str) -> Fault + Send + Sync + 'static) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy port");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream,
            policy: Box::new(policy),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            body_bytes: AtomicU64::new(0),
            paths: Mutex::new(Vec::new()),
        });
        let accept_shared = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accept_shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let index = accept_shared.connections.fetch_add(1, Ordering::SeqCst);
                let shared = accept_shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(&shared, client, index);
                });
            }
        });
        FaultProxy { shared, port }
    }

    /// `http://127.0.0.1:PORT`: the base URL a client under test fetches through.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Response body bytes forwarded to clients so far.
    pub fn body_bytes(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::SeqCst)
    }

    /// The request paths seen, in order.
    pub fn paths(&self) -> Vec<String> {
        self.shared.paths.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads the request head (up to the blank line) from `client`.
fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
        if head.len() > 64 << 10 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
    Ok(head)
}

fn serve(shared: &Shared, mut client: TcpStream, index: usize) -> std::io::Result<()> {
    let head = read_head(&mut client)?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let path = text.split(' ').nth(1).unwrap_or("").to_owned();
    shared.paths.lock().unwrap().push(path.clone());
    let fault = (shared.policy)(index, &path);
    // Rewrite the request: drop any Connection header, ask for close.
    let mut request = String::new();
    for line in text.trim_end_matches("\r\n\r\n").split("\r\n") {
        let lower = line.to_ascii_lowercase();
        let dropped = lower.starts_with("connection:") || (fault == Fault::IgnoreRange && lower.starts_with("range:"));
        if !dropped {
            request.push_str(line);
            request.push_str("\r\n");
        }
    }
    request.push_str("Connection: close\r\n\r\n");
    if let Fault::Status { code } = fault {
        let response = format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        client.write_all(response.as_bytes())?;
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    let mut server = TcpStream::connect(("127.0.0.1", shared.upstream))?;
    server.write_all(request.as_bytes())?;

    let client_closed = Arc::new(AtomicBool::new(false));
    {
        // Watch the client: when it goes away, a stalled connection can end.
        let mut client_reader = client.try_clone()?;
        let closed = client_closed.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while matches!(client_reader.read(&mut buf), Ok(n) if n > 0) {}
            closed.store(true, Ordering::SeqCst);
        });
    }

    let mut in_body = false;
    let mut head_tail: Vec<u8> = Vec::new();
    let mut body_sent = 0u64;
    let mut buf = vec![0u8; 16 << 10];
    let started = Instant::now();
    let mut sent_total = 0u64;
    loop {
        let chunk_cap = match fault {
            Fault::Throttle { bytes_per_sec } => (bytes_per_sec as usize / 20).clamp(1, buf.len()),
            _ => buf.len(),
        };
        let n = server.read(&mut buf[..chunk_cap])?;
        if n == 0 {
            if let Fault::Append { bytes } = fault {
                let _ = client.write_all(&vec![0x5a; bytes]);
            }
            break;
        }
        let mut data = buf[..n].to_vec();
        // Split off the response head, forwarded untouched (but for Append's Content-Length).
        let mut out = Vec::new();
        if !in_body {
            head_tail.extend_from_slice(&data);
            match head_tail.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(end) => {
                    let head = String::from_utf8_lossy(&head_tail[..end + 4]).into_owned();
                    for line in head.split_inclusive("\r\n") {
                        let length_line = line.to_ascii_lowercase().starts_with("content-length:");
                        if !(length_line && matches!(fault, Fault::Append { .. })) {
                            out.extend_from_slice(line.as_bytes());
                        }
                    }
                    data = head_tail[end + 4..].to_vec();
                    in_body = true;
                }
                None => continue,
            }
        }
        // Apply the fault to this body chunk.
        let take = match fault {
            Fault::Cut { after } | Fault::Stall { after } => (after.saturating_sub(body_sent) as usize).min(data.len()),
            _ => data.len(),
        };
        if let Fault::Corrupt { at } = fault {
            if at >= body_sent && at < body_sent + data.len() as u64 {
                data[(at - body_sent) as usize] ^= 0xff;
            }
        }
        out.extend_from_slice(&data[..take]);
        client.write_all(&out)?;
        body_sent += take as u64;
        sent_total += out.len() as u64;
        shared.body_bytes.fetch_add(take as u64, Ordering::SeqCst);
        if let Fault::Cut { after } | Fault::Stall { after } = fault {
            if body_sent >= after {
                if matches!(fault, Fault::Stall { .. }) {
                    // Hold the connection open, sending nothing, until the client gives up.
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while !client_closed.load(Ordering::SeqCst)
                        && !shared.stop.load(Ordering::SeqCst)
                        && Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
        if let Fault::Throttle { bytes_per_sec } = fault {
            let due = Duration::from_secs_f64(sent_total as f64 / bytes_per_sec.max(1) as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}
