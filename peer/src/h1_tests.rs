//! Tests of the built-in HTTP/1.1 client against scripted loopback servers, and of its
//! requests against libcurl's for the same prepared request.

use super::*;
use crate::sender::TransportFactory;
use crate::snapshot::{Parts, Template};
use crate::transport::tests::{request, request_len};
use crate::transport::CurlFactory;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One scripted exchange: the raw answer, and whether the server closes the connection
/// after writing it.
struct Step(&'static [u8], bool);

/// A server that reads a request and writes the next step's answer, accepting a new
/// connection after each close. Returns the port, the count of connections accepted, and
/// the requests it read.
fn server(steps: Vec<Step>) -> (u16, Arc<AtomicUsize>, std::thread::JoinHandle<Vec<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut conn: Option<std::net::TcpStream> = None;
        let mut pending = Vec::new();
        for Step(answer, close) in steps {
            let c = conn.get_or_insert_with(|| {
                count.fetch_add(1, Ordering::SeqCst);
                pending.clear();
                listener.accept().unwrap().0
            });
            let mut buf = [0u8; 4096];
            let len = loop {
                if let Some(len) = request_len(&pending) {
                    break len;
                }
                let n = c.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    // The client closed it before a request: it comes on a new connection.
                    assert!(pending.is_empty(), "connection closed in a request");
                    count.fetch_add(1, Ordering::SeqCst);
                    *c = listener.accept().unwrap().0;
                    continue;
                }
                pending.extend_from_slice(&buf[..n]);
            };
            seen.push(pending.drain(..len).collect());
            c.write_all(answer).unwrap();
            if close {
                conn = None;
            }
        }
        seen
    });
    (port, accepted, handle)
}

fn purge(dest: &Destination) -> Prepared {
    request(b"PURGE", b"/p", dest)
}

fn at(port: u16) -> (Destination, SocketAddr) {
    let dest = Destination::parse("127.0.0.1", i64::from(port)).unwrap();
    let addr = direct_address(&dest, &Settings::default()).unwrap();
    (dest, addr)
}

fn send(client: &mut H1Client, port: u16, req: Option<Prepared>) -> Result<Answer, Outcome> {
    let (dest, addr) = at(port);
    let req = req.unwrap_or_else(|| purge(&dest));
    client.send(addr, &dest, &req, &Settings::default(), &Control::default())
}

fn status(code: u16, reusable: bool) -> Result<Answer, Outcome> {
    Ok(Answer {
        status: code,
        retry_after: None,
        reusable,
    })
}

/// Sends a PURGE per step of a scripted server on one client, checks each answer against
/// `(status, reusable)`, and returns how many connections the server accepted.
fn script(steps: Vec<Step>, expect: &[(u16, bool)]) -> usize {
    let (port, accepted, server) = server(steps);
    let mut client = H1Client::default();
    for &(code, reusable) in expect {
        assert_eq!(send(&mut client, port, None), status(code, reusable));
    }
    server.join().unwrap();
    accepted.load(Ordering::SeqCst)
}

#[test]
fn only_plain_http_to_an_address_without_proxy_is_sent_directly() {
    let s = Settings::default();
    let ip = Destination::parse("10.1.2.3", 8080).unwrap();
    assert_eq!(
        direct_address(&ip, &s),
        Some("10.1.2.3:8080".parse().unwrap())
    );
    let v6 = Destination::parse("::1", 81).unwrap();
    assert_eq!(direct_address(&v6, &s), Some("[::1]:81".parse().unwrap()));
    let name = Destination::parse("cache.example", 80).unwrap();
    assert_eq!(direct_address(&name, &s), None);
    let found = name.at("10.0.0.9".parse().unwrap());
    assert_eq!(
        direct_address(&found, &s),
        Some("10.0.0.9:80".parse().unwrap())
    );
    let tls = Destination::parse("https://10.1.2.3/", 0).unwrap();
    assert_eq!(direct_address(&tls, &s), None);
    let proxied = crate::config::settings_from(
        "x",
        &crate::config::PeerArgs {
            proxy: "http://127.0.0.1:3128".into(),
            ..crate::config::PeerArgs::default()
        },
    )
    .unwrap();
    assert_eq!(direct_address(&ip, &proxied), None);
}

#[test]
fn the_target_is_what_follows_the_authority() {
    assert_eq!(target(b"http://h:81/a/b?c=d"), b"/a/b?c=d");
    assert_eq!(target(b"http://[::1]:81/x"), b"/x");
    assert_eq!(target(b"http://h:81"), b"/");
}

/// The same prepared requests through libcurl and through this client reach the server as
/// the same bytes.
#[test]
fn requests_are_byte_for_byte_what_libcurl_sends() {
    let template = Template {
        copy_headers: true,
        marker: "me".into(),
        fixed: vec![(b"X-Api".to_vec(), b"k".to_vec())],
        ..Template::default()
    };
    let parts = |method: &[u8], body: Option<&[u8]>, headers: &[(&[u8], &[u8])], http10| Parts {
        method: method.to_vec(),
        url: b"/a/../b?q=1".to_vec(),
        http10,
        body: body.map(|b| Arc::new(b.to_vec())),
        headers: headers.iter().copied().collect(),
        ..Parts::default()
    };
    let host: &[(&[u8], &[u8])] = &[(b"Host", b"www.example.com"), (b"X-Dup", b"1")];
    // HTTP/2 clients' headers reach VCL in lower case.
    let lower: &[(&[u8], &[u8])] = &[(b"host", b"lower.example"), (b"x-h2", b"1")];
    let odd: &[(&[u8], &[u8])] = &[
        (b"X-Empty", b""),
        (b"X-Blank", b"  "),
        (b"X-Bin", &[b'c', b'a', b'f', 0xe9]),
        (b"X-Dup", b"2"),
        (b"Accept", b"text/plain"),
        (b"Content-Type", b"application/json"),
    ];
    let requests = [
        parts(b"PURGE", None, host, false),
        parts(b"POST", Some(b"body!"), odd, false),
        parts(b"POST", None, &[], false),
        parts(b"PUT", None, host, false),
        parts(b"BAN", None, odd, true),
        parts(b"HEAD", Some(b"never"), host, false),
        parts(b"GET", Some(b"a get body"), &[], false),
        parts(b"PURGE", None, lower, false),
    ];
    let n = requests.len();
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let wire = |curl: bool, url: bool| {
        // A kept-alive server: both clients reuse their connection (the HTTP/1.0 request
        // ends it, on either side).
        let (port, _, server) = server((0..n).map(|_| Step(ok, false)).collect());
        let dest = if url {
            Destination::parse(&format!("http://127.0.0.1:{port}/base/"), 0).unwrap()
        } else {
            Destination::parse("127.0.0.1", i64::from(port)).unwrap()
        };
        let addr = direct_address(&dest, &Settings::default()).unwrap();
        let mut via_curl = CurlFactory.create();
        let mut client = H1Client::default();
        let control = Arc::new(Control::default());
        for p in &requests {
            let prepared = template.render(&p.clone().into(), &dest);
            if curl {
                let outcome = via_curl.send(&dest, &prepared, &Settings::default(), &control);
                assert_eq!(outcome, Outcome::Status(200));
            } else {
                let answer = client.send(addr, &dest, &prepared, &Settings::default(), &control);
                assert_eq!(answer, status(200, true));
            }
        }
        drop((via_curl, client));
        let seen = server.join().unwrap();
        seen.into_iter()
            .map(|r| String::from_utf8_lossy(&r).replace(&port.to_string(), "PORT"))
            .collect::<Vec<_>>()
    };
    for url in [false, true] {
        let (by_curl, by_h1) = (wire(true, url), wire(false, url));
        assert_eq!(by_curl.len(), n);
        for (c, h) in by_curl.iter().zip(&by_h1) {
            assert_eq!(c, h);
        }
        assert_eq!(by_curl.len(), by_h1.len());
    }
}

#[test]
fn the_host_line_leaves_out_port_80_and_keeps_a_discovered_name() {
    let mut out = Vec::new();
    let dest = Destination::parse("10.0.0.1", 80).unwrap();
    write_request(&mut out, &dest, &purge(&dest));
    assert!(out.starts_with(b"PURGE /p HTTP/1.1\r\nHost: 10.0.0.1\r\n"));
    let dest = Destination::parse("cache.example", 8080)
        .unwrap()
        .at("10.0.0.2".parse().unwrap());
    write_request(&mut out, &dest, &purge(&dest));
    assert!(out.starts_with(b"PURGE /p HTTP/1.1\r\nHost: cache.example:8080\r\n"));
    let dest = Destination::parse("::1", 8080).unwrap();
    write_request(&mut out, &dest, &purge(&dest));
    assert!(out.starts_with(b"PURGE /p HTTP/1.1\r\nHost: [::1]:8080\r\n"));
}

#[test]
fn every_framing_is_read_and_the_connection_kept_when_it_can_be() {
    let (port, accepted, server) = server(vec![
        Step(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false),
        Step(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n",
            false,
        ),
        Step(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", false),
        Step(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", false),
        Step(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\n", false),
        Step(
            b"HTTP/1.1 503 Busy\r\nretry-after:  7 \r\nContent-Length: 0\r\n\r\n",
            false,
        ),
        Step(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", true),
        Step(b"HTTP/1.0 404 Not Found\r\n\r\nuntil the end", true),
        Step(b"HTTP/1.1 200 OK\r\n\r\nuntil the end too", true),
    ]);
    let mut client = H1Client::default();
    assert_eq!(send(&mut client, port, None), status(200, true));
    assert_eq!(send(&mut client, port, None), status(201, true));
    assert_eq!(send(&mut client, port, None), status(204, true));
    assert_eq!(send(&mut client, port, None), status(304, true));
    assert_eq!(send(&mut client, port, None), status(200, true));
    assert_eq!(
        send(&mut client, port, None),
        Ok(Answer {
            status: 503,
            retry_after: Some(b"7".to_vec()),
            reusable: true
        })
    );
    assert_eq!(send(&mut client, port, None), status(200, false));
    assert_eq!(send(&mut client, port, None), status(404, false));
    assert_eq!(send(&mut client, port, None), status(200, false));
    server.join().unwrap();
    // One connection for the first seven, then one per closing answer.
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[test]
fn a_head_answer_has_no_body_even_with_a_length() {
    let (port, accepted, server) = server(vec![
        Step(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", false),
        Step(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
    ]);
    let (dest, _) = at(port);
    let head = request(b"HEAD", b"/h", &dest);
    let mut client = H1Client::default();
    assert_eq!(send(&mut client, port, Some(head)), status(200, true));
    assert_eq!(send(&mut client, port, None), status(200, true));
    server.join().unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn a_kept_connection_the_server_closed_is_replaced() {
    // The server closes after its answer without saying so: the next request goes on a new
    // connection, whether the close is seen before it leaves (the liveness check) or after
    // (the one retry).
    let steps = vec![
        Step(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
        Step(b"HTTP/1.1 202 OK\r\nContent-Length: 0\r\n\r\n", true),
    ];
    assert_eq!(script(steps, &[(200, true), (202, true)]), 2);
}

#[test]
fn bad_answers_are_network_failures_and_lose_the_connection() {
    for answer in [
        &b"HTTP/2 200\r\n\r\n"[..],
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"",
    ] {
        let (port, _, server) = server(vec![Step(answer, true)]);
        let mut client = H1Client::default();
        let got = send(&mut client, port, None);
        assert!(
            matches!(got, Err(Outcome::Failed(Failure::Network(_)))),
            "{:?}: {got:?}",
            String::from_utf8_lossy(answer)
        );
        assert!(client.conn.is_none());
        server.join().unwrap();
    }
}

#[test]
fn bytes_after_an_answer_are_not_read_as_the_next_one() {
    let steps = vec![
        // (The server closes too: the client must not have kept it anyway.)
        Step(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 500 X\r\n\r\n",
            true,
        ),
        Step(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
    ];
    assert_eq!(script(steps, &[(200, false), (200, true)]), 2);
}

/// A server that accepts one connection, reads once from it (the request), then hands it
/// to `then`.
fn after_one_read(
    then: impl FnOnce(TcpStream) + Send + 'static,
) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = c.read(&mut buf).unwrap();
        then(c);
    });
    (port, server)
}

#[test]
fn huge_answer_heads_are_refused() {
    let (port, server) = after_one_read(|mut c| {
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\n");
        let line = [b'x'; 1000];
        for _ in 0..200 {
            if c.write_all(&line).is_err() {
                break;
            }
        }
    });
    let mut client = H1Client::default();
    let got = send(&mut client, port, None);
    assert!(
        matches!(&got, Err(Outcome::Failed(Failure::Network(m))) if m.contains("Too large")),
        "{got:?}"
    );
    drop(client);
    server.join().unwrap();
}

#[test]
fn refused_connections_and_silent_servers_fail_within_their_timeouts() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut client = H1Client::default();
    let got = send(&mut client, port, None);
    assert!(
        matches!(&got, Err(Outcome::Failed(Failure::Network(m))) if m.starts_with("Failed to connect to 127.0.0.1 port")),
        "{got:?}"
    );

    // Accepted, never answered: the attempt's timeout ends it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (dest, addr) = at(port);
    let settings = Settings {
        timeout: Duration::from_millis(250),
        ..Settings::default()
    };
    let started = Instant::now();
    let got = client.send(addr, &dest, &purge(&dest), &settings, &Control::default());
    assert!(
        matches!(&got, Err(Outcome::Failed(Failure::Network(m))) if m.contains("timed out")),
        "{got:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    drop(listener);
}

#[test]
fn the_drain_deadline_abandons_a_transfer_in_progress() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (dest, addr) = at(port);
    let control = Arc::new(Control::default());
    let stopper = Arc::clone(&control);
    let stop = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        stopper.set_deadline(Instant::now());
    });
    let mut client = H1Client::default();
    let settings = Settings {
        timeout: Duration::from_secs(3600),
        ..Settings::default()
    };
    let got = client.send(addr, &dest, &purge(&dest), &settings, &control);
    assert_eq!(got, Err(Outcome::Failed(Failure::Shutdown)));
    stop.join().unwrap();
    drop(listener);
}

#[test]
fn the_url_is_sent_as_queued_with_an_empty_query_kept() {
    // libcurl before 8.2x drops a trailing "?": to a cache "/a?" and "/a" are two objects,
    // and the copy must purge the one the client named.
    let dest = Destination::parse("10.0.0.1", 8080).unwrap();
    let req = request(b"PURGE", b"/a?", &dest);
    let mut out = Vec::new();
    write_request(&mut out, &dest, &req);
    assert!(
        out.starts_with(b"PURGE /a? HTTP/1.1\r\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn codings_with_chunked_last_are_chunked_and_lengths_read_as_libcurl_reads_them() {
    let steps = vec![
        Step(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            false,
        ),
        Step(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", false),
        // Both framings: chunked is read, and the connection is not used again.
        Step(
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            false,
        ),
        Step(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
    ];
    assert_eq!(
        script(
            steps,
            &[(200, true), (200, true), (200, false), (200, true)]
        ),
        2
    );
}

#[test]
fn a_byte_arriving_after_an_answer_makes_the_next_request_use_a_new_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (written, stray) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let (mut first, _) = listener.accept().unwrap();
        let _ = first.read(&mut buf).unwrap();
        first
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        // A late stray answer on the kept connection (a HEAD's body, a 408 before a close).
        std::thread::sleep(Duration::from_millis(20));
        first.write_all(b"HTTP/1.1 204 Stray\r\n\r\n").unwrap();
        written.send(()).unwrap();
        let (mut second, _) = listener.accept().unwrap();
        let _ = second.read(&mut buf).unwrap();
        second
            .write_all(b"HTTP/1.1 202 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        drop(first);
    });
    let mut client = H1Client::default();
    assert_eq!(send(&mut client, port, None), status(200, true));
    stray.recv().unwrap();
    assert!(becomes_unusable(client.conn.as_ref().unwrap()));
    assert_eq!(send(&mut client, port, None), status(202, true));
    server.join().unwrap();
}

#[test]
fn a_server_trickling_bytes_is_cut_at_the_timeout() {
    let (port, server) = after_one_read(|mut c| {
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
        // A byte every 20 ms, for at most 30 s: the client goes long before.
        for _ in 0..1500 {
            if c.write_all(b"x").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let (dest, addr) = at(port);
    let settings = Settings {
        timeout: Duration::from_millis(300),
        ..Settings::default()
    };
    // Without the cut, the client would read on until the server gives up after 30 s and
    // fail with "transfer closed", not with a timeout.
    let got = H1Client::default().send(addr, &dest, &purge(&dest), &settings, &Control::default());
    assert!(
        matches!(&got, Err(Outcome::Failed(Failure::Network(m))) if m.contains("timed out")),
        "{got:?}"
    );
    server.join().unwrap();
}

#[test]
fn a_kept_connection_closed_as_the_request_goes_is_retried_once_on_a_new_one() {
    // The connection looks alive when the request leaves; the server then closes it without
    // an answer (an idle timeout racing the request): sent again, once, on a new connection.
    let (port, accepted, first) = server(vec![
        Step(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false),
        Step(b"", true),
        Step(b"HTTP/1.1 202 OK\r\nContent-Length: 0\r\n\r\n", true),
    ]);
    let mut client = H1Client::default();
    assert_eq!(send(&mut client, port, None), status(200, true));
    assert!(client.conn.as_ref().unwrap().usable());
    assert_eq!(send(&mut client, port, None), status(202, true));
    assert_eq!(first.join().unwrap().len(), 3);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // On a new connection, the same is a failure: nothing to retry.
    let (port, _, second) = server(vec![Step(b"", true)]);
    let got = send(&mut H1Client::default(), port, None);
    assert!(
        matches!(&got, Err(Outcome::Failed(Failure::Network(m))) if m.contains("Empty reply")),
        "{got:?}"
    );
    second.join().unwrap();
}

#[test]
fn lengths_and_codings_read_as_libcurl_reads_them() {
    let steps = vec![
        Step(b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", false),
        Step(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        // Past i64::MAX: ignored, the body ends with the connection.
        Step(
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nbody",
            true,
        ),
    ];
    assert_eq!(script(steps, &[(200, true), (200, true), (200, false)]), 1);
}

#[test]
fn an_ipv6_host_is_written_as_libcurl_writes_it() {
    let mut out = Vec::new();
    for (given, sent) in [
        ("0:0:0:0:0:0:0:1", "[::1]"),
        ("2001:DB8::1", "[2001:DB8::1]"),
        ("::1", "[::1]"),
    ] {
        let dest = Destination::parse(given, 8080).unwrap();
        write_request(&mut out, &dest, &purge(&dest));
        let expected = format!("PURGE /p HTTP/1.1\r\nHost: {sent}:8080\r\n");
        assert!(
            out.starts_with(expected.as_bytes()),
            "{given}: {}",
            String::from_utf8_lossy(&out)
        );
    }
}

#[test]
fn a_connection_idle_too_long_or_closed_is_not_used() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server_side, _) = listener.accept().unwrap();
    let mut conn = Conn {
        stream,
        addr: listener.local_addr().unwrap(),
        answered: 1,
        idle_since: Instant::now(),
    };
    assert!(conn.usable());
    conn.idle_since = Instant::now() - MAX_IDLE - Duration::from_secs(1);
    assert!(!conn.usable());
    conn.idle_since = Instant::now();
    drop(server_side);
    assert!(becomes_unusable(&conn));
}

/// Whether `conn` is seen unusable within 5 s (what the peer did reaches the socket at once
/// on loopback, but a loaded machine may delay it).
fn becomes_unusable(conn: &Conn) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while conn.usable() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Answers made of pieces of real answers and random bytes, 300 of them (a fixed seed):
/// every one ends as an answer or a failure, without a panic and without waiting out its
/// timeout.
#[test]
fn garbled_answers_never_panic_nor_hang() {
    const PIECES: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.0 204 X\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: 99999999999999999999999\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Connection: close\r\n",
        b"Retry-After: 1\r\n",
        b"\r\n",
        b"\n",
        b"3\r\nabc\r\n",
        b"ffffffffffffffff\r\n",
        b"0\r\n\r\n",
        b"abc",
        b":",
    ];
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // xorshift64: deterministic, no dependency.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let answers: Vec<Vec<u8>> = (0..300)
        .map(|_| {
            let mut a = Vec::new();
            for _ in 0..(next() % 8) {
                let r = next();
                if r % 4 == 0 {
                    a.extend((0..r % 16).map(|i| (next() >> (i % 8)) as u8));
                } else {
                    a.extend_from_slice(PIECES[(r as usize / 4) % PIECES.len()]);
                }
            }
            a
        })
        .collect();
    let to_send = answers.clone();
    let server = std::thread::spawn(move || {
        for answer in to_send {
            let (mut c, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(&answer);
            // Closed after each: an answer framed by the close ends here.
        }
    });
    let (dest, addr) = at(port);
    let settings = Settings {
        timeout: Duration::from_millis(500),
        ..Settings::default()
    };
    for answer in &answers {
        // A new client each time: one connection per answer, as the server expects.
        let got =
            H1Client::default().send(addr, &dest, &purge(&dest), &settings, &Control::default());
        // The server closes after each answer: nothing is left to wait for, so an attempt
        // that reached its timeout waited on something that never comes.
        assert!(
            !matches!(&got, Err(Outcome::Failed(Failure::Network(m))) if m.contains("timed out")),
            "{:?}: {got:?}",
            String::from_utf8_lossy(answer)
        );
    }
    server.join().unwrap();
}

#[test]
fn an_answer_sent_before_the_whole_body_was_read_is_the_outcome() {
    // A destination that refuses a large body after its head (413) and stops reading: the
    // client sees the answer while its write is blocked, instead of timing out and retrying.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0);
            head.extend_from_slice(&buf[..n]);
        }
        c.write_all(b"HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        // Keeps the connection open, unread, until the client is done.
        let _ = finished.recv_timeout(Duration::from_secs(30));
    });
    let (dest, addr) = at(port);
    let big = Template::default().render(
        &Parts {
            method: b"POST".to_vec(),
            url: b"/api".to_vec(),
            body: Some(Arc::new(vec![b'x'; 32 << 20])),
            ..Parts::default()
        }
        .into(),
        &dest,
    );
    let settings = Settings {
        timeout: Duration::from_secs(20),
        ..Settings::default()
    };
    // Without the look for an early answer, the blocked write ends at the 20 s timeout.
    let got = H1Client::default().send(addr, &dest, &big, &settings, &Control::default());
    assert_eq!(got, status(413, false));
    done.send(()).unwrap();
    server.join().unwrap();
}
