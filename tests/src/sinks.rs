//! Sinks for alerts, started by a test on 127.0.0.1: a minimal SMTP server speaking real SMTP
//! over TCP (EHLO, MAIL FROM, RCPT TO, DATA, QUIT; no TLS, no auth) and a minimal HTTP server
//! that answers 200 to every POST. Each hands what it received to the test over a channel.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A free port on 127.0.0.1, with nothing listening on it (for a sink started later).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

/// A mail as the SMTP sink received it.
#[derive(Clone, Debug)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body, as sent (dot-unstuffed).
    pub data: String,
}

impl Mail {
    /// A header's value (the first of that name), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut()
                && line.starts_with([' ', '\t'])
            {
                v.push_str(line.trim_start());
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_string());
            }
        }
        value
    }

    /// The body, with quoted-printable soft breaks and escapes undone.
    pub fn body(&self) -> String {
        let body = self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let quoted = self
            .header("Content-Transfer-Encoding")
            .is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"));
        if !quoted {
            return body.replace("\r\n", "\n");
        }
        let joined = body.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'='
                && i + 2 < bytes.len()
                && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).replace("\r\n", "\n")
    }
}

/// A POST as the HTTP sink received it.
#[derive(Clone, Debug)]
pub struct Post {
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Post {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a sink received, in order.
pub struct Received<T> {
    rx: mpsc::Receiver<T>,
}

impl<T> Received<T> {
    /// The next one, waiting up to `limit`; panics naming `what` if none comes.
    pub fn next(&self, what: &str, limit: Duration) -> T {
        self.rx
            .recv_timeout(limit)
            .unwrap_or_else(|e| panic!("no {what} within {limit:?}: {e}"))
    }

    /// The next one if it comes within `limit`.
    pub fn within(&self, limit: Duration) -> Option<T> {
        self.rx.recv_timeout(limit).ok()
    }

    /// Everything that comes until `limit` has passed since the call.
    pub fn until(&self, limit: Duration) -> Vec<T> {
        let end = Instant::now() + limit;
        let mut all = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(item) => all.push(item),
                Err(_) => break,
            }
        }
        all
    }
}

/// Starts the SMTP sink on `port` (0: any); returns its port and what it receives.
pub fn smtp(port: u16) -> (u16, Received<Mail>) {
    serve(port, "the SMTP sink", smtp_session)
}

/// Listens on 127.0.0.1:`port` (0: any) and serves each connection on a thread of its own
/// with `session`, which sends what it received; returns the port and the receiving end.
fn serve<T: Send + 'static>(
    port: u16,
    what: &str,
    session: fn(TcpStream, &mpsc::Sender<T>) -> std::io::Result<()>,
) -> (u16, Received<T>) {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind {what}: {e}"));
    let port = listener.local_addr().expect("its address").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = session(stream, &tx);
            });
        }
    });
    (port, Received { rx })
}

fn smtp_session(stream: TcpStream, tx: &mpsc::Sender<Mail>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = stream.try_clone()?;
    let mut lines = BufReader::new(stream);
    out.write_all(b"220 sink ESMTP\r\n")?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let verb = command.split([' ', ':']).next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => out.write_all(b"250-sink\r\n250 8BITMIME\r\n")?,
            "MAIL" => {
                from = address(&command);
                to.clear();
                out.write_all(b"250 ok\r\n")?;
            }
            "RCPT" => {
                to.push(address(&command));
                out.write_all(b"250 ok\r\n")?;
            }
            "DATA" => {
                out.write_all(b"354 go on\r\n")?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                    data.push_str(unstuffed);
                }
                let _ = tx.send(Mail {
                    from: from.clone(),
                    to: to.clone(),
                    data,
                });
                out.write_all(b"250 queued\r\n")?;
            }
            "RSET" | "NOOP" => out.write_all(b"250 ok\r\n")?,
            "QUIT" => {
                out.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => out.write_all(b"502 not here\r\n")?,
        }
    }
}

/// The address of `MAIL FROM:<a>` or `RCPT TO:<a>`.
fn address(command: &str) -> String {
    let start = command.find('<').map_or(0, |i| i + 1);
    let end = command.rfind('>').unwrap_or(command.len());
    command[start..end.max(start)].to_string()
}

/// Starts the HTTP sink on `port` (0: any); returns its port and the POSTs it receives (their
/// bodies JSON).
pub fn http(port: u16) -> (u16, Received<Post>) {
    serve(port, "the HTTP sink", http_request)
}

fn http_request(stream: TcpStream, tx: &mpsc::Sender<Post>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((n, v)) = line.trim_end().split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|e| serde_json::Value::String(format!("not JSON ({e}): {}", String::from_utf8_lossy(&body))));
    out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    out.flush()?;
    let _ = tx.send(Post { path, headers, body });
    Ok(())
}
