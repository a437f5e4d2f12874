//! Waiting for a socket with a bound: the built-in HTTP client's connect, which checks the
//! drain deadline between waits, and its look for an early answer while it writes.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// Waits at most `timeout` for `fd` to be writable (a connect that ended, either way):
/// `Ok(true)` when it is, `Ok(false)` when the time ran out.
pub fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) -> std::io::Result<bool> {
    wait_for(fd, libc::POLLOUT, timeout.as_millis().max(1))
}

/// Whether `fd` has something to read now (bytes, the end of the stream, or an error): the
/// answer a server sent before it read the whole request.
pub fn readable_now(fd: BorrowedFd<'_>) -> std::io::Result<bool> {
    wait_for(fd, libc::POLLIN, 0)
}

/// poll(2) on one descriptor for `events`, `ms` milliseconds at most (0: no wait).
fn wait_for(fd: BorrowedFd<'_>, events: libc::c_short, ms: u128) -> std::io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // At most what a c_int holds.
    let ms = libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: `pfd` is a valid pollfd on this stack for the duration of the call, and
        // the count is 1; the descriptor is borrowed, so it stays open while poll runs.
        let rc = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if rc >= 0 {
            return Ok(rc > 0);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_connected_socket_is_writable_and_a_full_one_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(wait_writable(stream.as_fd(), Duration::from_millis(100)).unwrap());
        // Fill the send buffer (the peer never reads): then it is not writable.
        stream.set_nonblocking(true).unwrap();
        let chunk = vec![0u8; 1 << 16];
        while std::io::Write::write(&mut &stream, &chunk).is_ok() {}
        assert!(!wait_writable(stream.as_fd(), Duration::from_millis(20)).unwrap());
    }

    #[test]
    fn readable_now_sees_bytes_without_waiting() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert!(!readable_now(stream.as_fd()).unwrap());
        std::io::Write::write_all(&mut server, b"x").unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while !readable_now(stream.as_fd()).unwrap() {
            assert!(std::time::Instant::now() < end, "the byte never arrived");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
