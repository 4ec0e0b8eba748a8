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
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use parking_lot::Mutex;

use crate::error::{Error, Result};

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
    stop: Arc<Stop>,
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
        let stop = Arc::new(Stop::new()?);
        let bell = Arc::clone(&stop);
        let render: Arc<Render> = Arc::new(render);
        let thread = std::thread::Builder::new()
            .name("aim-metrics".into())
            .spawn(move || run(listener, &bell, &*render))
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
        self.stop.request();
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

/// How the server is told to stop: a flag, and a pipe that wakes its `poll(2)`. A wake-up
/// without the flag, or a pipe that breaks, is not a stop: the server logs it at error, makes
/// a new pipe and goes on serving.
#[derive(Debug)]
struct Stop {
    requested: AtomicBool,
    /// `(read end, write end)`, both nonblocking.
    bell: Mutex<(OwnedFd, OwnedFd)>,
    /// How many times the server loop ended without being asked to and was started again.
    recovered: AtomicU64,
}

impl Stop {
    fn new() -> Result<Self> {
        Ok(Stop {
            requested: AtomicBool::new(false),
            bell: Mutex::new(Self::pipe()?),
            recovered: AtomicU64::new(0),
        })
    }

    fn pipe() -> Result<(OwnedFd, OwnedFd)> {
        nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| crate::process::fd_error("cannot create the metrics stop pipe", e))
    }

    fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.ring();
    }

    /// Wakes the server (a full pipe is already ringing).
    fn ring(&self) {
        let _ = nix::unistd::write(&self.bell.lock().1, b"!");
    }

    fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// A descriptor of the current pipe's read end for the server to poll.
    fn listen(&self) -> std::io::Result<OwnedFd> {
        self.bell.lock().0.try_clone()
    }

    fn renew(&self) -> Result<()> {
        let fresh = Self::pipe()?;
        *self.bell.lock() = fresh;
        Ok(())
    }
}

/// Why one run of the server loop ended.
enum Ended {
    /// [`Stop::request`] was called.
    Requested,
    /// Anything else: a broken stop pipe, a failed `poll(2)`, a panic.
    Unexpectedly(String),
}

/// Serves until a requested stop; every other end of the loop is logged at error and the
/// loop starts again on the same listener (after 100 ms, so a persistent fault cannot spin).
fn run(listener: TcpListener, stop: &Stop, render: &Render) {
    loop {
        let ended = match stop.listen() {
            Ok(bell) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serve(&listener, stop, &bell, render)
            }))
            .unwrap_or_else(|_| Ended::Unexpectedly("it panicked".into())),
            Err(e) => Ended::Unexpectedly(format!("cannot read its stop pipe: {e}")),
        };
        let Ended::Unexpectedly(why) = ended else {
            return;
        };
        if stop.requested() {
            return;
        }
        stop.recovered.fetch_add(1, Ordering::SeqCst);
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        log::error!("metrics server at {addr} stopped unexpectedly ({why}); serving again");
        if let Err(e) = stop.renew() {
            log::error!("metrics server at {addr}: {e}");
        }
        // Not a sleep to synchronise: a pause so that a fault that persists is retried at
        // 10 Hz, not in a busy loop. It ends early when a stop is requested.
        let bell = stop.listen().ok();
        let mut fds: Vec<PollFd<'_>> = bell
            .iter()
            .map(|b| PollFd::new(b.as_fd(), PollFlags::POLLIN))
            .collect();
        let _ = poll(&mut fds, PollTimeout::from(100u16));
        if stop.requested() {
            return;
        }
    }
}

/// The server's loop: the stop pipe, the listener and every connection in one `poll(2)`,
/// whose timeout is the nearest connection deadline.
fn serve(listener: &TcpListener, stop: &Stop, bell: &OwnedFd, render: &Render) -> Ended {
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
        let (bell_events, accepting) = {
            let mut fds = Vec::with_capacity(connections.len() + 2);
            fds.push(PollFd::new(bell.as_fd(), PollFlags::POLLIN));
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
                Err(e) => return Ended::Unexpectedly(format!("poll failed: {e}")),
            }
            let events = |fd: &PollFd<'_>| fd.revents().unwrap_or(PollFlags::empty());
            revents.extend(fds[2..].iter().map(|fd| !events(fd).is_empty()));
            (events(&fds[0]), !events(&fds[1]).is_empty())
        };
        if !bell_events.is_empty() {
            if stop.requested() {
                return Ended::Requested;
            }
            if bell_events.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL)
            {
                return Ended::Unexpectedly(format!("its stop pipe broke ({bell_events:?})"));
            }
            // Rung without a stop request: drained, and serving goes on.
            let mut buf = [0u8; 64];
            match nix::unistd::read(bell, &mut buf) {
                Ok(0) => return Ended::Unexpectedly("its stop pipe was closed".into()),
                Ok(_) | Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {
                    log::warn!("metrics server woken without a stop request; serving on");
                }
                Err(e) => return Ended::Unexpectedly(format!("its stop pipe failed: {e}")),
            }
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
            accept_all(listener, &mut connections);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply)
    }

    /// Polls `get` until it answers 200 or `limit` passes (the listener may be coming back).
    fn answers(addr: SocketAddr, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            if matches!(get(addr), Ok(r) if r.starts_with("HTTP/1.1 200 OK")) {
                return true;
            }
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_ring_nobody_asked_for_does_not_stop_the_server() {
        let server = MetricsServer::bind("127.0.0.1:0", || Some("aim_up 1\n".into())).unwrap();
        let addr = server.local_addr();
        assert!(answers(addr, Duration::from_secs(10)));
        for _ in 0..3 {
            server.stop.ring();
            std::thread::sleep(Duration::from_millis(50));
            assert!(answers(addr, Duration::from_secs(10)), "stopped silently");
        }
        server.shutdown();
        assert!(get(addr).is_err(), "still serving after shutdown");
    }

    #[test]
    fn a_broken_stop_pipe_is_logged_and_the_listener_comes_back() {
        let server = MetricsServer::bind("127.0.0.1:0", || Some("aim_up 1\n".into())).unwrap();
        let addr = server.local_addr();
        assert!(answers(addr, Duration::from_secs(10)));
        for round in 1..=3 {
            // Closing the only write end: the server's end reports a hang-up.
            let (_, write) = Stop::pipe().unwrap();
            drop(std::mem::replace(&mut server.stop.bell.lock().1, write));
            let until = Instant::now() + Duration::from_secs(10);
            while server.stop.recovered.load(Ordering::SeqCst) < round {
                assert!(Instant::now() < until, "the broken pipe went unnoticed");
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(answers(addr, Duration::from_secs(10)), "not serving again");
        }
        server.shutdown();
        assert!(get(addr).is_err(), "still serving after shutdown");
    }
}
