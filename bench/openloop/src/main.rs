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
//! With several `--addr`, the schedule is cut into blocks of `--block` seconds (default 0.25),
//! each sent to one address alone at the full rate, the addresses taking turns (in order, then
//! in reverse, the order rotated every two rounds); every address has its own `conns`
//! connections. Each address's percentiles pool its blocks: the servers are measured one at a
//! time but in finely interleaved moments, so a stall of the machine falls on any of them
//! alike. The line then has a `targets` array, one entry per address in the order given, with
//! the same fields.

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
    block: f64,
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
        block: 0.25,
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
            "--block" => o.block = num()?,
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if o.addrs.is_empty() || o.rate <= 0.0 || o.duration <= 0.0 || o.conns == 0 || o.block <= 0.0 {
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

/// One connection of address `a` sends `slots` (indices into the global schedule).
fn run_conn(o: &Opts, a: usize, slots: &[usize], t0: Instant) -> ConnResult {
    let mut r = ConnResult::default();
    let addr = &o.addrs[a];
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: openloop\r\n\r\n",
        o.path, addr
    );
    let hard_end = t0 + Duration::from_secs_f64(o.duration + o.timeout);
    let mut sock: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(16384);
    let mut prev_done = t0;
    for &k in slots {
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

/// The address (of `n`) that slot `k` of the schedule goes to: blocks of `block` seconds
/// take turns, in order then in reverse, the order rotated by one every two rounds.
fn address_of(k: usize, rate: f64, block: f64, n: usize) -> usize {
    let j = (k as f64 / rate / block) as usize;
    let (round, p) = (j / n, j % n);
    if round % 2 == 0 {
        (p + round / 2) % n
    } else {
        (n - 1 - p + round / 2) % n
    }
}

/// For each address, for each of its `conns` connections, the slots it sends: an address's
/// slots go to its connections in turn.
fn deal(total: usize, rate: f64, block: f64, n: usize, conns: usize) -> Vec<Vec<Vec<usize>>> {
    let mut out = vec![vec![Vec::new(); conns]; n];
    let mut seen = vec![0usize; n];
    for k in 0..total {
        let a = if n == 1 {
            0
        } else {
            address_of(k, rate, block, n)
        };
        out[a][seen[a] % conns].push(k);
        seen[a] += 1;
    }
    out
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
    let n = o.addrs.len();
    let total = (o.rate * o.duration) as usize;
    let slots = deal(total, o.rate, o.block, n, o.conns);
    // Start slightly in the future so that every thread is ready before the first slot.
    let t0 = Instant::now() + Duration::from_millis(50);
    // Per address, its connections' results.
    let results: Vec<Vec<ConnResult>> = thread::scope(|sc| {
        let hs: Vec<Vec<_>> = slots
            .iter()
            .enumerate()
            .map(|(a, conns)| {
                conns
                    .iter()
                    .map(|mine| {
                        let o = &o;
                        sc.spawn(move || run_conn(o, a, mine, t0))
                    })
                    .collect()
            })
            .collect();
        hs.into_iter()
            .map(|hs| {
                hs.into_iter()
                    .map(|h| h.join().unwrap_or_default())
                    .collect()
            })
            .collect()
    });
    let elapsed = t0.elapsed().as_secs_f64();
    let all: Vec<&ConnResult> = results.iter().flatten().collect();
    let (line, ok) = summary(&o, o.rate, total, elapsed, &all);
    if n == 1 {
        println!("{{{line}}}");
    } else {
        let targets: Vec<String> = (0..n)
            .map(|a| {
                let mine: Vec<&ConnResult> = results[a].iter().collect();
                let scheduled = slots[a].iter().map(Vec::len).sum();
                let (line, _) = summary(&o, o.rate, scheduled, elapsed, &mine);
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
    use super::{address_of, deal};

    #[test]
    fn every_slot_is_sent_once_by_one_connection() {
        for n in 1..4 {
            for conns in 1..4 {
                for total in [0, 1, 7, 100] {
                    let dealt = deal(total, 10.0, 0.5, n, conns);
                    let mut seen = vec![0; total];
                    for per_addr in &dealt {
                        assert_eq!(per_addr.len(), conns);
                        for slots in per_addr {
                            for &k in slots {
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

    #[test]
    fn blocks_take_turns_and_every_address_gets_as_many() {
        // 10 slots a second, blocks of 0.5 s: 5 slots per block.
        let order: Vec<usize> = (0..12).map(|j| address_of(j * 5, 10.0, 0.5, 3)).collect();
        assert_eq!(order, [0, 1, 2, 2, 1, 0, 1, 2, 0, 0, 2, 1]);
        for a in 0..3 {
            assert_eq!(order.iter().filter(|&&x| x == a).count(), 4);
        }
        // Slots within a block stay with its address.
        assert!((0..5).all(|k| address_of(k, 10.0, 0.5, 3) == 0));
        assert_eq!(address_of(5, 10.0, 0.5, 3), 1);
    }
}
