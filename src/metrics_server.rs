//! [`MetricsServer`]: a small, blocking `/metrics` endpoint on a std `TcpListener`, so a
//! Prometheus server can scrape a long-running program.
//!
//! One thread of its own multiplexes the listener, a stop doorbell and every connection with
//! `poll(2)`: connections are served concurrently, each with 2 s to send its request and
//! read the answer (8 KiB of head at most); at 1024 open connections the oldest is closed to
//! admit a new one, so slow or idle clients never lock a scraper out. Only `GET /metrics` is
//! answered (`405` for other methods, `404` for other paths, `400` for garbage), and a bad
//! client never takes the server down. It binds loopback addresses only, unless asked with
//! [`MetricsServer::bind_public`].

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
    /// Binds `addr`, which must be a loopback address (`127.0.0.1:9464`, `[::1]:9464`), and
    /// serves `render()`'s text at `/metrics`; `render` returning `None` answers `503`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an address that is not loopback (see
    /// [`MetricsServer::bind_public`]); [`Error::Io`] when the address cannot be bound.
    pub fn bind(
        addr: impl ToSocketAddrs,
        render: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> Result<Self> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| Error::io("cannot resolve the metrics address", e))?
            .collect();
        if let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(Error::config(
                "metrics_addr",
                format!(
                    "{open} is not a loopback address: metrics would be open to the network; \
                     use bind_public (serve_metrics_public, --metrics-public) to mean it"
                ),
            ));
        }
        Self::bind_public(&addrs[..], render)
    }

    /// As [`MetricsServer::bind`], on any address: metrics are open to whoever reaches it.
    ///
    /// # Errors
    /// [`Error::Io`] when the address cannot be bound.
    pub fn bind_public(
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
        if addr.ip().is_loopback() {
            log::info!("serving metrics at http://{addr}/metrics");
        } else {
            log::warn!("serving metrics to the network at http://{addr}/metrics");
        }
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

    /// Stops the server and waits for its thread (it wakes at once).
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

/// Connections served at once; at the cap, the oldest is closed to admit a new one, so slow
/// clients can never lock a scraper out.
const MAX_CONNECTIONS: usize = 1024;

/// One client connection, nonblocking, with its own deadline.
struct Connection {
    stream: TcpStream,
    head: Vec<u8>,
    /// The response, once decided; written as the socket takes it.
    out: Vec<u8>,
    written: usize,
    deadline: Instant,
}

impl Connection {
    fn writing(&self) -> bool {
        !self.out.is_empty()
    }

    /// Reads what has arrived; decides the response once the head is complete. Returns
    /// false when the connection is finished (closed by the client, or an error).
    fn on_readable(&mut self, render: &Render) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    self.head.extend_from_slice(&buf[..n]);
                    if let Some(response) = respond_to(&self.head, render) {
                        self.out = response;
                        return self.on_writable();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Writes what the socket takes; false once everything is written (or on error).
    fn on_writable(&mut self) -> bool {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return false,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        false
    }
}

/// The response to a request head, or `None` while the head is incomplete.
fn respond_to(head: &[u8], render: &Render) -> Option<Vec<u8>> {
    let complete =
        head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n");
    if !complete {
        return (head.len() > MAX_HEAD)
            .then(|| response("431 Request Header Fields Too Large", "", "too large\n"));
    }
    let text = String::from_utf8_lossy(head);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let (method, path, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(path), Some(version)) = (method, path, version) else {
        return Some(response("400 Bad Request", "", "bad request\n"));
    };
    if !version.starts_with("HTTP/") {
        return Some(response("400 Bad Request", "", "bad request\n"));
    }
    if method != "GET" {
        return Some(response(
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            "only GET\n",
        ));
    }
    if path.split('?').next() != Some("/metrics") {
        return Some(response("404 Not Found", "", "try /metrics\n"));
    }
    Some(match render() {
        Some(body) => response(
            "200 OK",
            "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n",
            &body,
        ),
        None => response("503 Service Unavailable", "", "shut down\n"),
    })
}

fn response(status: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The server's loop: the stop doorbell, the listener and every connection in one
/// `poll(2)`, whose timeout is the nearest connection deadline.
fn serve(listener: TcpListener, stop: &Doorbell, render: &Render) {
    let mut connections: Vec<Connection> = Vec::new();
    loop {
        let now = Instant::now();
        // Past its deadline (a slow or silent client): closed.
        connections.retain(|c| c.deadline > now);
        let timeout = connections
            .iter()
            .map(|c| c.deadline)
            .min()
            .map_or(PollTimeout::NONE, |d| crate::process::poll_timeout(d, now));
        let mut revents = Vec::with_capacity(connections.len());
        let (stopping, accepting) = {
            let mut fds = Vec::with_capacity(connections.len() + 2);
            fds.push(PollFd::new(stop.fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
            for c in &connections {
                let want = if c.writing() {
                    PollFlags::POLLOUT
                } else {
                    PollFlags::POLLIN
                };
                fds.push(PollFd::new(c.stream.as_fd(), want));
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("metrics server poll failed: {e}");
                    return;
                }
            }
            let ready = |fd: &PollFd<'_>| !fd.revents().unwrap_or(PollFlags::empty()).is_empty();
            revents.extend(fds[2..].iter().map(ready));
            (ready(&fds[0]), ready(&fds[1]))
        };
        if stopping {
            return;
        }
        let mut i = 0;
        connections.retain_mut(|c| {
            let active = revents.get(i).copied().unwrap_or(false);
            i += 1;
            if !active {
                return true;
            }
            if c.writing() {
                c.on_writable()
            } else {
                c.on_readable(render)
            }
        });
        if accepting {
            accept_all(&listener, &mut connections);
        }
    }
}

fn accept_all(listener: &TcpListener, connections: &mut Vec<Connection>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                if connections.len() >= MAX_CONNECTIONS {
                    // The oldest goes (connections are kept in arrival order).
                    connections.remove(0);
                }
                connections.push(Connection {
                    stream,
                    head: Vec::new(),
                    out: Vec::new(),
                    written: 0,
                    deadline: Instant::now() + IO_TIMEOUT,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("metrics server accept failed: {e}");
                return;
            }
        }
    }
}
