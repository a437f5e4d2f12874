//! The sender threads' scheduling priority: below Varnish's worker threads, so that a core
//! shared by both serves the clients first and the copies with what is left.

/// How many nice levels a sender thread sits below the thread that starts it. At +10 the
/// kernel gives it about a tenth of the CPU weight of a worker thread when both want the
/// same core; it is never starved (that would be SCHED_IDLE), so a saturated varnishd still
/// sends its copies, later.
pub const SENDER_NICE: i32 = 10;

/// The calling thread's nice value (Linux keeps one per thread).
pub fn this_thread_nice() -> std::io::Result<i32> {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    let who = libc::id_t::try_from(tid).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // getpriority returns -1 both for nice -1 and for an error: errno tells them apart.
    // SAFETY: __errno_location returns this thread's errno, always valid.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: a plain system call on this thread's own id.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, who) };
    let err = std::io::Error::last_os_error();
    if nice == -1 && err.raw_os_error() != Some(0) {
        return Err(err);
    }
    Ok(nice)
}

/// Lowers the calling thread's priority by [`SENDER_NICE`] (at most to 19). Raising one's
/// own nice value needs no privilege.
pub fn lower_this_thread() -> std::io::Result<()> {
    let nice = (this_thread_nice()? + SENDER_NICE).min(19);
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    let who = libc::id_t::try_from(tid).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: a plain system call on this thread's own id: only its nice value changes.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lowered_thread_is_ten_nice_levels_below_its_parent_and_alone() {
        let parent = this_thread_nice().unwrap();
        let child = std::thread::spawn(|| {
            lower_this_thread().unwrap();
            this_thread_nice().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(child, (parent + SENDER_NICE).min(19));
        // Only that thread: the parent keeps its own.
        assert_eq!(this_thread_nice().unwrap(), parent);
    }
}
