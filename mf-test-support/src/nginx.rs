//! A real nginx serving a directory on a free loopback port, one per test; killed on drop.
//!
//! nginx runs in the foreground without a master process, with every path (pid, logs, temp dirs) in a
//! private prefix. The access log records each request's method, URI, status, body bytes sent and Range
//! header, so tests can check what the client asked for. If nginx is missing or does not start, the test
//! fails with nginx's error log: it is never skipped.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nginx; killed (and its prefix removed) on drop.
pub struct Nginx {
    child: Child,
    prefix: tempfile::TempDir,
    /// The loopback port it listens on.
    pub port: u16,
}

/// One line of the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The request method (`GET`, `HEAD`).
    pub method: String,
    /// The request path (nginx's `$uri`: decoded, without the query).
    pub uri: String,
    /// The response status.
    pub status: u16,
    /// Body bytes sent (nginx's `$body_bytes_sent`).
    pub body_bytes: u64,
    /// The Range header, or "-" when absent.
    pub range: String,
    /// The Cache-Control header, or "-" when absent.
    pub cache_control: String,
}

fn nginx_bin() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("nginx is not installed: the update tests need a real HTTP server (scripts/test installs the Debian package nginx)")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a loopback port").local_addr().unwrap().port()
}

impl Nginx {
    /// Starts nginx serving `root` (an absolute path).
    pub fn serve(root: &Path) -> Nginx {
        let root = root.canonicalize().expect("the served directory exists");
        let mut last_error = String::new();
        // The free port may be taken between probing and binding: try a few.
        for _ in 0..5 {
            let prefix = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let p = prefix.path();
            std::fs::create_dir_all(p.join("tmp")).unwrap();
            let config = format!(
                r#"daemon off;
master_process off;
worker_processes 1;
error_log {p}/error.log info;
pid {p}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    types {{ application/json json; }}
    log_format mf '$request_method $uri $status $body_bytes_sent "$http_range" "$http_cache_control"';
    access_log {p}/access.log mf;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"#,
                p = p.display(),
                root = root.display()
            );
            std::fs::write(p.join("nginx.conf"), config).unwrap();
            let child = Command::new(nginx_bin())
                .arg("-p")
                .arg(p)
                .arg("-c")
                .arg(p.join("nginx.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("nginx starts");
            let mut server = Nginx { child, prefix, port };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(why) => last_error = why,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(format!("nginx exited ({status}): {stderr}\nerror log:\n{}", self.error_log()));
            }
            if Instant::now() > deadline {
                return Err(format!("nginx did not listen within 10 s; error log:\n{}", self.error_log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// nginx's error log so far, for a failing test's message (empty when there is none).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("error.log")).unwrap_or_default()
    }

    /// Every request served so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        let text = std::fs::read_to_string(self.prefix.path().join("access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let (head, quoted) = line.split_once(" \"")?;
                let (range, cache_control) = quoted.trim_end_matches('"').split_once("\" \"")?;
                let mut fields = head.split(' ');
                Some(Request {
                    method: fields.next()?.to_owned(),
                    uri: fields.next()?.to_owned(),
                    status: fields.next()?.parse().ok()?,
                    body_bytes: fields.next()?.parse().ok()?,
                    range: range.to_owned(),
                    cache_control: cache_control.to_owned(),
                })
            })
            .collect()
    }

    /// Forgets the requests logged so far (the next [`Nginx::requests`] starts empty).
    pub fn clear_log(&self) {
        let _ = std::fs::write(self.prefix.path().join("access.log"), b"");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
