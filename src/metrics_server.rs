//! [`MetricsServer`]: a small, blocking `/metrics` endpoint on a std `TcpListener`, so a
//! Prometheus server can scrape a long-running program.
//!
//! One thread of its own multiplexes the listener and a stop doorbell with `poll(2)`, and
//! serves one connection at a time: requests are bounded (8 KiB of head, 2 s to arrive), only
//! `GET /metrics` is answered (`405` for other methods, `404` for other paths, `400` for
//! garbage), and a bad client never takes the server down.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{Error, Result};
use crate::instance::Doorbell;

const MAX_HEAD: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

type Render = dyn Fn() -> Option<String> + Send + Sync;

/// A running `/metrics` endpoint. Stops when [`MetricsServer::shutdown`] is called or the
/// value is dropped.
///
/// ```
/// use aim::MetricsServer;
/// use std::io::{Read, Write};
/// let server = MetricsServer::bind("127.0.0.1:0", || Some("aim_up 1\n".to_string()))?;
/// let mut stream = std::net::TcpStream::connect(server.local_addr()).unwrap();
/// stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
/// let mut reply = String::new();
/// stream.read_to_string(&mut reply).unwrap();
/// assert!(reply.starts_with("HTTP/1.1 200 OK"));
/// assert!(reply.ends_with("aim_up 1\n"));
/// server.shutdown();
/// # Ok::<(), aim::Error>(())
/// ```
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<Doorbell>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (use a loopback address unless the port is protected) and serves
    /// `render()`'s text at `/metrics`; `render` returning `None` answers `503`.
    ///
    /// # Errors
    /// [`Error::Io`] when the address cannot be bound.
    pub fn bind(
        addr: impl ToSocketAddrs,
        render: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> Result<Self> {
        let listener =
            TcpListener::bind(addr).map_err(|e| Error::io("cannot bind the metrics address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("cannot configure the metrics listener", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the metrics address", e))?;
        let stop = Arc::new(Doorbell::new()?);
        let bell = Arc::clone(&stop);
        let render: Arc<Render> = Arc::new(render);
        let thread = std::thread::Builder::new()
            .name("aim-metrics".into())
            .spawn(move || serve(listener, &bell, &*render))
            .map_err(|e| Error::io("cannot start the metrics thread", e))?;
        log::info!("serving metrics at http://{addr}/metrics");
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for its thread (at most one request's timeout).
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.ring();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("metrics thread panicked");
            }
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn serve(listener: TcpListener, stop: &Doorbell, render: &Render) {
    loop {
        let (mut listening, mut stopping) = (false, false);
        {
            let mut fds = [
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(stop.fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {
                    listening = fds[0].any().unwrap_or(false);
                    stopping = fds[1].any().unwrap_or(false);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log::error!("metrics server poll failed: {e}");
                    return;
                }
            }
        }
        if stopping {
            return;
        }
        if !listening {
            continue;
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = handle(stream, render) {
                    log::debug!("metrics request from {peer} failed: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => log::warn!("metrics server accept failed: {e}"),
        }
    }
}

/// Reads one request head (bounded in size and time) and answers it.
fn handle(mut stream: TcpStream, render: &Render) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                "too large\n",
            );
        }
        if Instant::now() >= deadline {
            break false;
        }
        match stream.read(&mut buf) {
            Ok(0) => break false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let (method, path, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(path), Some(version)) = (method, path, version) else {
        return respond(&mut stream, "400 Bad Request", "", "bad request\n");
    };
    if !complete || !version.starts_with("HTTP/") {
        return respond(&mut stream, "400 Bad Request", "", "bad request\n");
    }
    if method != "GET" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            "only GET\n",
        );
    }
    if path.split('?').next() != Some("/metrics") {
        return respond(&mut stream, "404 Not Found", "", "try /metrics\n");
    }
    match render() {
        Some(body) => respond(
            &mut stream,
            "200 OK",
            "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n",
            &body,
        ),
        None => respond(&mut stream, "503 Service Unavailable", "", "shut down\n"),
    }
}

fn respond(stream: &mut TcpStream, status: &str, headers: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}
