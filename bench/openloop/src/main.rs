//! Fixed-rate (open-loop) HTTP/1.1 GET load generator: the part of wrk2 that bench/run.sh needs for
//! `peer_p99_ratio`. Requests leave on a schedule, not when the previous answer came back, and each
//! latency is measured from the request's scheduled time, so a stalled server shows in the tail
//! instead of silently lowering the rate (coordinated omission).
//!
//! ```text
//! openloop --addr 127.0.0.1:PORT [--addr ...] --path /x --rate 20000 --duration 2 [--conns 16] [--timeout 5]
//! ```
//! Prints one JSON line. Bounded: at most rate x duration requests, and every connection gives up
//! `timeout` seconds after the end of the schedule.
//!
//! With several `--addr`, the one schedule is dealt out in turn (slot k to address k mod N, each
//! with its own `conns` connections): the servers are measured in the same moments, so a stall of
//! the machine reaches all of them alike. The line then has a `targets` array, one entry per
//! address in the order given, with the same fields.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

struct Opts {
    addrs: Vec<String>,
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
        addrs: Vec::new(),
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
            "--addr" => o.addrs.push(v.clone()),
            "--path" => o.path = v.clone(),
            "--rate" => o.rate = num()?,
            "--duration" => o.duration = num()?,
            "--conns" => o.conns = num()? as usize,
            "--timeout" => o.timeout = num()?,
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if o.addrs.is_empty() || o.rate <= 0.0 || o.duration <= 0.0 || o.conns == 0 {
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

fn connect(o: &Opts, addr: &str) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs_f64(o.timeout)))?;
    Ok(s)
}

/// Connection `idx` of address `a` (of N) sends the slots k with k mod N = a and
/// (k div N) mod conns = idx of the global schedule: with one address, idx, idx + conns...
fn run_conn(o: &Opts, a: usize, idx: usize, t0: Instant) -> ConnResult {
    let mut r = ConnResult::default();
    let total = (o.rate * o.duration) as usize;
    let n = o.addrs.len();
    let addr = &o.addrs[a];
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: openloop\r\n\r\n",
        o.path, addr
    );
    let hard_end = t0 + Duration::from_secs_f64(o.duration + o.timeout);
    let mut sock: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(16384);
    let mut prev_done = t0;
    for k in slots_of(a, idx, n, o.conns, total) {
        let sched = t0 + Duration::from_secs_f64(k as f64 / o.rate);
        let now = Instant::now();
        if now > hard_end {
            r.errors += 1;
            continue;
        }
        if sched > now {
            thread::sleep(sched - now);
        }
        if sock.is_none() {
            match connect(o, addr) {
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

/// The slots of the schedule (0..total) that connection `idx` of address `a` sends: k mod n = a
/// and (k div n) mod conns = idx.
fn slots_of(
    a: usize,
    idx: usize,
    n: usize,
    conns: usize,
    total: usize,
) -> impl Iterator<Item = usize> {
    (a + idx * n..total).step_by(conns * n)
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

/// The JSON fields (without braces) of `results`, and how many requests completed.
fn summary(
    o: &Opts,
    rate: f64,
    scheduled: usize,
    elapsed: f64,
    results: &[&ConnResult],
) -> (String, usize) {
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
    let line = format!(
        "\"rate\": {}, \"duration\": {}, \"conns\": {}, \"scheduled\": {}, \"completed\": {}, \"errors\": {}, \"non2xx\": {}, \
         \"achieved_rate\": {:.1}, \"elapsed_s\": {:.3}, \"p50_us\": {}, \"p90_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \"max_us\": {}, \
         \"gen_lag_p99_us\": {}, \"gen_lag_max_us\": {}",
        rate,
        o.duration,
        o.conns,
        scheduled,
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
    (line, ok)
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
    let n = o.addrs.len();
    let results: Vec<ConnResult> = thread::scope(|sc| {
        let hs: Vec<_> = (0..n * o.conns)
            .map(|i| {
                sc.spawn({
                    let o = &o;
                    move || run_conn(o, i % n, i / n, t0)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = t0.elapsed().as_secs_f64();
    let all: Vec<&ConnResult> = results.iter().collect();
    let (line, ok) = summary(&o, o.rate, (o.rate * o.duration) as usize, elapsed, &all);
    if n == 1 {
        println!("{{{line}}}");
    } else {
        let targets: Vec<String> = (0..n)
            .map(|a| {
                let mine: Vec<&ConnResult> = results.iter().skip(a).step_by(n).collect();
                // Slots a, a + n, a + 2n... below the total.
                let total = (o.rate * o.duration) as usize;
                let scheduled = total / n + usize::from(a < total % n);
                let (line, _) = summary(&o, o.rate / n as f64, scheduled, elapsed, &mine);
                format!("{{\"addr\": \"{}\", {line}}}", o.addrs[a])
            })
            .collect();
        println!("{{{line}, \"targets\": [{}]}}", targets.join(", "));
    }
    if ok == 0 {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::slots_of;

    #[test]
    fn every_slot_is_sent_once_by_a_connection_of_its_address() {
        for n in 1..4 {
            for conns in 1..5 {
                for total in 0..40 {
                    let mut seen = vec![0; total];
                    for a in 0..n {
                        for idx in 0..conns {
                            for k in slots_of(a, idx, n, conns, total) {
                                assert_eq!(k % n, a);
                                seen[k] += 1;
                            }
                        }
                    }
                    assert!(
                        seen.iter().all(|&c| c == 1),
                        "n {n} conns {conns} total {total}"
                    );
                }
            }
        }
    }
}
