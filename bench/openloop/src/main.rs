//! Fixed-rate (open-loop) HTTP/1.1 GET load generator: the part of wrk2 that bench/run.sh needs for
//! `peer_p99_ratio`. Requests leave on a schedule, not when the previous answer came back, and each
//! latency is measured from the request's scheduled time, so a stalled server shows in the tail
//! instead of silently lowering the rate (coordinated omission).
//!
//! ```text
//! openloop --addr 127.0.0.1:PORT --path /x --rate 20000 --duration 2 [--conns 16] [--timeout 5]
//! ```
//! Prints one JSON line. Bounded: at most rate x duration requests, and every connection gives up
//! `timeout` seconds after the end of the schedule.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

struct Opts {
    addr: String,
    path: String,
    rate: f64,
    duration: f64,
    conns: usize,
    timeout: f64,
}

/// What one connection measured, in microseconds.
#[derive(Default)]
struct ConnResult {
    /// response complete - scheduled send time
    latencies: Vec<u32>,
    /// send time - max(scheduled time, previous response): the generator's own lateness
    gen_lag: Vec<u32>,
    errors: u64,
    non2xx: u64,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        addr: String::new(),
        path: "/".into(),
        rate: 0.0,
        duration: 0.0,
        conns: 16,
        timeout: 5.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        let num = || v.parse::<f64>().map_err(|e| format!("{a} {v}: {e}"));
        match a.as_str() {
            "--addr" => o.addr = v.clone(),
            "--path" => o.path = v.clone(),
            "--rate" => o.rate = num()?,
            "--duration" => o.duration = num()?,
            "--conns" => o.conns = num()? as usize,
            "--timeout" => o.timeout = num()?,
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if o.addr.is_empty() || o.rate <= 0.0 || o.duration <= 0.0 || o.conns == 0 {
        return Err("usage: openloop --addr HOST:PORT --path /x --rate R --duration S [--conns C] [--timeout S]".into());
    }
    Ok(o)
}

/// Reads one response (status line, headers, Content-Length body) off `s`; returns its status.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let total = end + 4 + len;
            while buf.len() < total {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(status);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn connect(o: &Opts) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(&o.addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs_f64(o.timeout)))?;
    Ok(s)
}

/// Connection `idx` sends requests idx, idx + conns, idx + 2 conns... of the global schedule.
fn run_conn(o: &Opts, idx: usize, t0: Instant) -> ConnResult {
    let mut r = ConnResult::default();
    let total = (o.rate * o.duration) as usize;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: openloop\r\n\r\n",
        o.path, o.addr
    );
    let hard_end = t0 + Duration::from_secs_f64(o.duration + o.timeout);
    let mut sock: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(16384);
    let mut prev_done = t0;
    let mut k = idx;
    while k < total {
        let sched = t0 + Duration::from_secs_f64(k as f64 / o.rate);
        k += o.conns;
        let now = Instant::now();
        if now > hard_end {
            r.errors += 1;
            continue;
        }
        if sched > now {
            thread::sleep(sched - now);
        }
        if sock.is_none() {
            match connect(o) {
                Ok(s) => sock = Some(s),
                Err(_) => {
                    r.errors += 1;
                    continue;
                }
            }
        }
        let Some(s) = sock.as_mut() else { continue };
        let sent = Instant::now();
        let ready = if sched > prev_done { sched } else { prev_done };
        r.gen_lag
            .push(micros(sent.saturating_duration_since(ready)));
        let res = s
            .write_all(req.as_bytes())
            .and_then(|()| read_response(s, &mut buf));
        let done = Instant::now();
        prev_done = done;
        match res {
            Ok(status) => {
                r.latencies.push(micros(done - sched));
                if !(200..400).contains(&status) {
                    r.non2xx += 1;
                }
            }
            Err(_) => {
                r.errors += 1;
                sock = None;
                buf.clear();
            }
        }
    }
    r
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("openloop: {e}");
            return ExitCode::from(2);
        }
    };
    // Start slightly in the future so that every thread is ready before the first slot.
    let t0 = Instant::now() + Duration::from_millis(50);
    let results: Vec<ConnResult> = thread::scope(|sc| {
        let hs: Vec<_> = (0..o.conns)
            .map(|i| {
                sc.spawn({
                    let o = &o;
                    move || run_conn(o, i, t0)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = t0.elapsed().as_secs_f64();
    let mut lat: Vec<u32> = results
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    let mut lag: Vec<u32> = results
        .iter()
        .flat_map(|r| r.gen_lag.iter().copied())
        .collect();
    lat.sort_unstable();
    lag.sort_unstable();
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let non2xx: u64 = results.iter().map(|r| r.non2xx).sum();
    let ok = lat.len();
    println!(
        "{{\"rate\": {}, \"duration\": {}, \"conns\": {}, \"scheduled\": {}, \"completed\": {}, \"errors\": {}, \"non2xx\": {}, \
         \"achieved_rate\": {:.1}, \"elapsed_s\": {:.3}, \"p50_us\": {}, \"p90_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \"max_us\": {}, \
         \"gen_lag_p99_us\": {}, \"gen_lag_max_us\": {}}}",
        o.rate,
        o.duration,
        o.conns,
        (o.rate * o.duration) as usize,
        ok,
        errors,
        non2xx,
        ok as f64 / o.duration,
        elapsed,
        pct(&lat, 50.0),
        pct(&lat, 90.0),
        pct(&lat, 99.0),
        pct(&lat, 99.9),
        lat.last().copied().unwrap_or(0),
        pct(&lag, 99.0),
        lag.last().copied().unwrap_or(0)
    );
    if ok == 0 {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
