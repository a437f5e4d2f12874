//! A small HTTP/1.1 client for the common case: plain `http://` to an IP address (a cache
//! given by its address, or an address discovered in DNS), no proxy. One keep-alive
//! connection per sender thread; the request is written from one buffer in one system call;
//! the answer is read and framed (`Content-Length`, chunked, or until the connection closes;
//! 1xx answers skipped; no body after HEAD, 204 or 304). Everything else (https, a host name
//! to resolve, a proxy) goes through libcurl ([`crate::transport`]).
//!
//! On the wire it sends what libcurl sends for the same [`Prepared`] request: the request
//! line, `Host` (the request's own, or `host[:port]`), the header lines in order (`Name:`
//! alone removes a header libcurl would add and is not sent; `Name;` is sent as `Name:`),
//! then `Content-Length` when there is a body and no such line.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::dest::Destination;
use crate::policy::{Failure, Outcome};
use crate::snapshot::Prepared;
use crate::worker::{Control, ABORT_CHECK};

/// The largest answer head (status line and headers) accepted, as libcurl's.
const MAX_HEAD: usize = 100 * 1024;

/// Bytes read at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Where this client sends `dest`'s requests, when it is the one to send them: plain
/// HTTP, no proxy, and an address known without a lookup.
pub fn direct_address(dest: &Destination, settings: &Settings) -> Option<SocketAddr> {
    if dest.https || settings.proxy.is_some() {
        return None;
    }
    let ip = match dest.address {
        Some(ip) => ip,
        None => dest.bare_host().parse::<IpAddr>().ok()?,
    };
    Some(SocketAddr::new(ip, dest.port))
}

/// The request-target of a full URL built by [`Destination::url_for`]: from the first `/`
/// after the authority.
fn target(url: &[u8]) -> &[u8] {
    let after_scheme = url
        .windows(3)
        .position(|w| w == b"://")
        .map_or(0, |i| i + 3);
    match url[after_scheme..].iter().position(|&b| b == b'/') {
        Some(i) => &url[after_scheme + i..],
        None => b"/",
    }
}

/// The name of a header line and its separator, as libcurl reads it: before the first `:`,
/// or, in a line without one, before the first `;`.
fn split_name(line: &[u8]) -> Option<(&[u8], u8, &[u8])> {
    let i = line
        .iter()
        .position(|&b| b == b':')
        .or_else(|| line.iter().position(|&b| b == b';'))?;
    Some((&line[..i], line[i], &line[i + 1..]))
}

fn is_blank(value: &[u8]) -> bool {
    value.iter().all(|b| matches!(b, b' ' | b'\t'))
}

/// Writes the request for `req` to `out`, as libcurl would send it to `dest`.
pub fn write_request(out: &mut Vec<u8>, dest: &Destination, req: &Prepared) {
    out.clear();
    out.extend_from_slice(&req.method);
    out.push(b' ');
    out.extend_from_slice(target(&req.url));
    out.extend_from_slice(if req.http10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    // libcurl: the request's own `Host` line goes first, as given ("Host:" alone: none);
    // without one, `Host: host` with the port unless it is 80.
    let own_host = req.header_lines.iter().find_map(|line| {
        split_name(line).filter(|(name, _, _)| name.eq_ignore_ascii_case(b"host"))
    });
    match own_host {
        Some((_, b':', [])) => {}
        Some((_, _, value)) => {
            // libcurl writes "Host:" and what follows the request's separator.
            out.extend_from_slice(b"Host:");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        None => {
            out.extend_from_slice(b"Host: ");
            // An IPv6 literal as libcurl writes it: its canonical text when that is
            // shorter (`[0:0::1]` is `[::1]`), else as given.
            let bare = dest.bare_host();
            match bare.parse::<std::net::Ipv6Addr>().map(|v6| v6.to_string()) {
                Ok(short) if short.len() < bare.len() => {
                    out.extend_from_slice(format!("[{short}]").as_bytes());
                }
                _ => out.extend_from_slice(dest.host.as_bytes()),
            }
            if dest.port != 80 {
                out.extend_from_slice(format!(":{}", dest.port).as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    let mut own_length = false;
    for line in &req.header_lines {
        let Some((name, sep, value)) = split_name(line) else {
            continue;
        };
        if name.eq_ignore_ascii_case(b"host") {
            continue;
        }
        // Any such line, even one that is not sent, stands for libcurl's own.
        own_length |= name.eq_ignore_ascii_case(b"content-length");
        match sep {
            // "Name:" with nothing after it removes a header libcurl adds: not sent.
            b':' if is_blank(value) => continue,
            b':' => out.extend_from_slice(line),
            // "Name;" sends the header with an empty value.
            _ if value.is_empty() => {
                out.extend_from_slice(name);
                out.push(b':');
            }
            _ => continue,
        }
        out.extend_from_slice(b"\r\n");
    }
    let body = body_of(req);
    if let Some(body) = body {
        if !own_length {
            out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
}

/// The body sent with `req`: none with HEAD.
fn body_of(req: &Prepared) -> Option<&[u8]> {
    if req.method.eq_ignore_ascii_case(b"HEAD") {
        return None;
    }
    req.body.as_deref().map(Vec::as_slice)
}

/// What an answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Vec<u8>>,
    /// The connection may carry the next request.
    pub reusable: bool,
}

/// Why an exchange ended without an answer.
#[derive(Debug)]
enum Fail {
    /// Nothing of the answer arrived before the connection ended: a kept-alive connection
    /// the server had closed (worth one retry on a new connection).
    Closed(String),
    /// The drain deadline passed.
    Aborted,
    Other(String),
}

impl Fail {
    fn into_outcome(self) -> Outcome {
        match self {
            Fail::Aborted => Outcome::Failed(Failure::Shutdown),
            Fail::Closed(m) | Fail::Other(m) => Outcome::Failed(Failure::Network(m)),
        }
    }
}

/// A kept connection idle for longer is not used again (libcurl's limit: servers and NATs
/// drop idle connections, often silently).
const MAX_IDLE: Duration = Duration::from_secs(118);

/// A request buffer that grew past this (a large body) is not kept for the next one.
const KEEP_BUFFER: usize = 64 * 1024;

/// One connection.
struct Conn {
    stream: TcpStream,
    addr: SocketAddr,
    /// Answers read on it: a reused connection may have been closed by the server.
    answered: u64,
    /// When the last answer ended.
    idle_since: Instant,
}

impl Conn {
    /// Whether a kept connection can carry the next request, as libcurl checks one: not idle
    /// too long, not closed or reset by the destination, and nothing unread on it (a late
    /// byte would be taken for the next answer).
    fn usable(&self) -> bool {
        if self.idle_since.elapsed() > MAX_IDLE {
            return false;
        }
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
        loop {
            let peek = socket2::SockRef::from(&self.stream)
                .recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT);
            match peek {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
                // Closed (0) or bytes nobody asked for.
                Ok(_) => return false,
            }
        }
    }
}

/// The client of one sender thread.
#[derive(Default)]
pub struct H1Client {
    conn: Option<Conn>,
    request: Vec<u8>,
    buf: Vec<u8>,
}

/// Reads from the stream until the attempt's deadline, checking the drain deadline.
struct Io<'a> {
    stream: &'a mut TcpStream,
    buf: &'a mut Vec<u8>,
    /// Start of the unread bytes in `buf`.
    pos: usize,
    started: Instant,
    deadline: Instant,
    control: &'a Control,
    /// Bytes of this answer received so far.
    received: usize,
}

impl Io<'_> {
    /// Waits out one interval of a blocked read or write: the drain deadline and the
    /// attempt's timeout end it.
    fn blocked(&mut self, what: &str) -> Result<(), Fail> {
        let now = self.in_time(what)?;
        // Near the deadline, wake at it rather than at the next check.
        let left = self.deadline - now;
        if left < ABORT_CHECK {
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .and_then(|()| {
                    self.stream
                        .set_write_timeout(Some(left.max(Duration::from_millis(1))))
                })
                .map_err(|e| Fail::Other(format!("socket: {e}")))?;
        }
        Ok(())
    }

    /// Checks the drain deadline and the attempt's timeout: also after every read or write
    /// that moved bytes, so that a peer trickling bytes cannot hold the thread past them.
    fn in_time(&self, what: &str) -> Result<Instant, Fail> {
        if self.control.aborted() {
            return Err(Fail::Aborted);
        }
        let now = Instant::now();
        if now >= self.deadline {
            return Err(Fail::Other(format!(
                "Operation timed out after {} milliseconds {what} ({} bytes received)",
                now.duration_since(self.started).as_millis(),
                self.received
            )));
        }
        Ok(now)
    }

    /// Writes the request; `false` when the destination answered before taking all of it
    /// (a 413 or 401 to a large body, with the rest unread): its answer is read, as libcurl
    /// does, and the connection is not used again.
    fn write_all(&mut self, mut data: &[u8]) -> Result<bool, Fail> {
        use std::os::fd::AsFd;
        let answered_early =
            |stream: &TcpStream| crate::ffi::readable_now(stream.as_fd()).unwrap_or(false);
        while !data.is_empty() {
            match self.stream.write(data) {
                Ok(0) => return Err(Fail::Closed("Send failure: connection closed".into())),
                Ok(n) => {
                    data = &data[n..];
                    if !data.is_empty() {
                        self.in_time("sending the request")?;
                    }
                }
                Err(e) if is_timeout(&e) => {
                    if answered_early(self.stream) {
                        return Ok(false);
                    }
                    self.blocked("sending the request")?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Reset after an early answer: that answer may still be there to read.
                Err(_) if answered_early(self.stream) => return Ok(false),
                Err(e) => return Err(Fail::Closed(format!("Send failure: {e}"))),
            }
        }
        Ok(true)
    }

    /// Reads more into `buf`; `false` at the end of the stream.
    fn fill(&mut self) -> Result<bool, Fail> {
        // Consumed bytes are dropped first, so that a long body does not grow the buffer.
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        // Checked before each read, not after: the read that completes an answer is never
        // thrown away for a deadline that passed while it ran.
        self.in_time("reading the answer")?;
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        loop {
            match self.stream.read(&mut self.buf[len..]) {
                Ok(n) => {
                    self.buf.truncate(len + n);
                    self.received += n;
                    return Ok(n > 0);
                }
                Err(e) if is_timeout(&e) => {
                    if let Err(f) = self.blocked("waiting for the answer") {
                        self.buf.truncate(len);
                        return Err(f);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(len);
                    let m = format!("Recv failure: {e}");
                    return Err(if self.received == 0 {
                        Fail::Closed(m)
                    } else {
                        Fail::Other(m)
                    });
                }
            }
        }
    }

    /// The next line (without its CR LF or LF), at most `max` bytes.
    fn line(&mut self, max: usize) -> Result<Vec<u8>, Fail> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let mut line = &self.buf[self.pos..self.pos + i];
                if let [rest @ .., b'\r'] = line {
                    line = rest;
                }
                let line = line.to_vec();
                self.pos += i + 1;
                return Ok(line);
            }
            if self.buf.len() - self.pos > max {
                return Err(Fail::Other("Too large response headers".into()));
            }
            if !self.fill()? {
                return Err(self.ended());
            }
        }
    }

    /// Skips `n` bytes of body.
    fn skip(&mut self, mut n: u64) -> Result<(), Fail> {
        loop {
            let have = (self.buf.len() - self.pos) as u64;
            let take = have.min(n);
            // `take` <= `have`, a usize.
            self.pos += usize::try_from(take).unwrap_or(0);
            n -= take;
            if n == 0 {
                return Ok(());
            }
            if !self.fill()? {
                return Err(Fail::Other(format!(
                    "transfer closed with {n} bytes remaining to read"
                )));
            }
        }
    }

    /// Reads until the server closes the connection.
    fn skip_to_end(&mut self) -> Result<(), Fail> {
        self.pos = self.buf.len();
        while self.fill()? {
            self.pos = self.buf.len();
        }
        Ok(())
    }

    fn ended(&self) -> Fail {
        if self.received == 0 {
            Fail::Closed("Empty reply from server".into())
        } else {
            Fail::Other("connection closed in the middle of the answer".into())
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// How an answer's body is framed.
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The head of one answer: status, framing, what the connection can do next.
struct Head {
    status: u16,
    framing: Framing,
    retry_after: Option<Vec<u8>>,
    keep_alive: bool,
}

fn parse_status(line: &[u8]) -> Result<(u16, bool), Fail> {
    let bad = || {
        Fail::Other(format!(
            "Unsupported response: {}",
            String::from_utf8_lossy(line)
        ))
    };
    let rest = line.strip_prefix(b"HTTP/1.").ok_or_else(bad)?;
    let http11 = match rest.first() {
        Some(b'1') => true,
        Some(b'0') => false,
        _ => return Err(bad()),
    };
    let code = rest.get(2..5).ok_or_else(bad)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) || rest.get(5).is_some_and(|&b| b != b' ') {
        return Err(bad());
    }
    Ok((status, http11))
}

/// Reads one answer head; `head_request`: the request was HEAD (no body follows).
fn read_head(io: &mut Io<'_>, head_request: bool) -> Result<Head, Fail> {
    let (status, http11) = parse_status(&io.line(MAX_HEAD)?)?;
    let mut length: Option<u64> = None;
    // Whether the last transfer coding seen is chunked, and whether there was any.
    let (mut chunked_last, mut coded) = (false, false);
    let mut huge_length = false;
    let mut retry_after = None;
    let mut keep_alive = http11;
    let mut size = 0;
    loop {
        let line = io.line(MAX_HEAD)?;
        size += line.len() + 2;
        if size > MAX_HEAD {
            return Err(Fail::Other("Too large response headers".into()));
        }
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            // As libcurl reads it: an optional `+` and the leading digits ("5, 5" is 5);
            // past i64::MAX it ignores the header (the body then ends with the connection).
            let value = value.strip_prefix(b"+").unwrap_or(value);
            let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 {
                return Err(Fail::Other("Invalid Content-Length in the answer".into()));
            }
            let Some(n) = std::str::from_utf8(&value[..digits])
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(|v| u64::try_from(v).ok())
            else {
                huge_length = true;
                continue;
            };
            if length.is_some_and(|l| l != n) {
                return Err(Fail::Other(
                    "Conflicting Content-Length in the answer".into(),
                ));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                // `identity` is no coding (RFC 2616 had it; libcurl ignores it too).
                if !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity") {
                    coded = true;
                    chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                }
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"retry-after") {
            retry_after = Some(value.to_vec());
        }
    }
    // RFC 9112 6.1: an answer with both, or a coded HTTP/1.0 answer, may be a smuggling
    // attempt or a broken proxy: read, then not reused.
    if coded && (length.is_some() || !http11) || huge_length {
        keep_alive = false;
    }
    let framing = if head_request || status < 200 || status == 204 || status == 304 {
        Framing::None
    } else if chunked_last {
        // RFC 9112 6.3: chunked last decides ("gzip, chunked" too), over a Content-Length.
        Framing::Chunked
    } else if coded {
        Framing::UntilClose
    } else if let (Some(n), false) = (length, huge_length) {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Head {
        status,
        framing,
        retry_after,
        keep_alive,
    })
}

fn skip_chunked(io: &mut Io<'_>) -> Result<(), Fail> {
    loop {
        let line = io.line(MAX_HEAD)?;
        let digits = line
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let size = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.is_empty() && d.len() <= 15)
            .and_then(|d| u64::from_str_radix(d, 16).ok())
            .ok_or_else(|| Fail::Other("Bad chunk size in the answer".into()))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !io.line(MAX_HEAD)?.is_empty() {}
            return Ok(());
        }
        io.skip(size)?;
        if !io.line(MAX_HEAD)?.is_empty() {
            return Err(Fail::Other("Bad chunk end in the answer".into()));
        }
    }
}

/// Reads one whole answer (after any 1xx) and its body.
fn read_answer(io: &mut Io<'_>, head_request: bool) -> Result<Answer, Fail> {
    let head = loop {
        let head = read_head(io, head_request)?;
        // 101 would switch protocols: never asked for, taken as the answer.
        if head.status >= 200 || head.status == 101 {
            break head;
        }
    };
    let reusable = match head.framing {
        Framing::None => head.keep_alive,
        Framing::Length(n) => {
            io.skip(n)?;
            head.keep_alive
        }
        Framing::Chunked => {
            skip_chunked(io)?;
            head.keep_alive
        }
        Framing::UntilClose => {
            io.skip_to_end()?;
            false
        }
    };
    Ok(Answer {
        status: head.status,
        retry_after: head.retry_after,
        // Bytes past the answer: not something to read the next answer after.
        reusable: reusable && io.pos == io.buf.len() && head.status != 101,
    })
}

/// How long a blocked read or write waits before the deadlines are checked: a timeout
/// under [`ABORT_CHECK`] is not overshot.
fn socket_wait(settings: &Settings) -> Duration {
    settings
        .timeout
        .min(ABORT_CHECK)
        .max(Duration::from_millis(1))
}

/// Connects within `connect_timeout` (and the attempt's deadline), checking the drain
/// deadline every [`ABORT_CHECK`] as a transfer in progress does.
fn connect(
    addr: SocketAddr,
    settings: &Settings,
    deadline: Instant,
    control: &Control,
) -> Result<TcpStream, Fail> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::AsFd;

    let started = Instant::now();
    let until = deadline.min(started + settings.connect_timeout);
    let fail = |what: String| {
        Fail::Other(format!(
            "Failed to connect to {} port {} after {} ms: {what}",
            addr.ip(),
            addr.port(),
            started.elapsed().as_millis()
        ))
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| fail(e.to_string()))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => loop {
            if control.aborted() {
                return Err(Fail::Aborted);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(fail("Connection timed out".into()));
            }
            if crate::ffi::wait_writable(socket.as_fd(), left.min(ABORT_CHECK))
                .map_err(|e| fail(e.to_string()))?
            {
                match socket.take_error() {
                    Ok(None) => break,
                    Ok(Some(e)) | Err(e) => return Err(fail(e.to_string())),
                }
            }
        },
        Err(e) => return Err(fail(e.to_string())),
    }
    socket
        .set_nonblocking(false)
        .map_err(|e| fail(e.to_string()))?;
    let stream: TcpStream = socket.into();
    let wait = socket_wait(settings);
    stream
        .set_nodelay(true)
        .and_then(|()| stream.set_read_timeout(Some(wait)))
        .and_then(|()| stream.set_write_timeout(Some(wait)))
        .map_err(|e| fail(e.to_string()))?;
    Ok(stream)
}

impl H1Client {
    /// Sends `req` to `addr` (see [`direct_address`]) and reads the answer.
    pub fn send(
        &mut self,
        addr: SocketAddr,
        dest: &Destination,
        req: &Prepared,
        settings: &Settings,
        control: &Control,
    ) -> Result<Answer, Outcome> {
        let started = Instant::now();
        let deadline = started + settings.timeout;
        write_request(&mut self.request, dest, req);
        let head_request = req.method.eq_ignore_ascii_case(b"HEAD");
        // Another address, or a kept connection that cannot be used (closed, data pending,
        // idle too long): a new one, without using up the retry below.
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.addr != addr || !c.usable())
        {
            self.conn = None;
        }
        // A kept-alive connection the server closed meanwhile fails before any answer:
        // once, the request goes again on a new connection (as libcurl does).
        let mut retried = false;
        loop {
            let reused = self.conn.as_ref().is_some_and(|c| c.answered > 0);
            let mut conn = match self.conn.take() {
                Some(conn) => conn,
                None => Conn {
                    stream: connect(addr, settings, deadline, control)
                        .map_err(Fail::into_outcome)?,
                    addr,
                    answered: 0,
                    idle_since: started,
                },
            };
            self.buf.clear();
            let mut io = Io {
                stream: &mut conn.stream,
                buf: &mut self.buf,
                pos: 0,
                started,
                deadline,
                control,
                received: 0,
            };
            let result = io.write_all(&self.request).and_then(|whole| {
                let mut answer = read_answer(&mut io, head_request)?;
                answer.reusable &= whole;
                Ok(answer)
            });
            match result {
                Ok(answer) => {
                    if answer.reusable && !req.http10 {
                        conn.answered += 1;
                        conn.idle_since = Instant::now();
                        // The socket timeouts may have been shortened near the deadline.
                        let wait = socket_wait(settings);
                        if conn.stream.set_read_timeout(Some(wait)).is_ok()
                            && conn.stream.set_write_timeout(Some(wait)).is_ok()
                        {
                            self.conn = Some(conn);
                        }
                    } else {
                        let _ = conn.stream.shutdown(Shutdown::Both);
                    }
                    self.shrink();
                    return Ok(answer);
                }
                Err(Fail::Closed(_)) if reused && !retried => {
                    retried = true;
                }
                Err(f) => {
                    self.shrink();
                    return Err(f.into_outcome());
                }
            }
        }
    }

    /// Buffers that grew for a large request or answer are not kept for the next one.
    fn shrink(&mut self) {
        if self.request.capacity() > KEEP_BUFFER {
            self.request = Vec::new();
        }
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
    }
}

#[cfg(test)]
#[path = "h1_tests.rs"]
mod tests;
