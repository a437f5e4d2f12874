//! No panic crosses into varnishd. One guard per kind of place, because what a panic may do
//! depends on where it happens:
//! - a VCL task or `vcl_init`/`vcl_fini` ([`guard_task`]): the task fails with
//!   `<function>: internal error (panic): <message>` (in `vcl_init`: the load fails);
//! - a temperature event ([`guard_event`]): LOAD and WARM are refused with the message in
//!   the CLI answer (`ctx->msg`); COLD and DISCARD only log it, since Varnish asserts when
//!   those fail. Never `VRT_fail`: outside a task it panics the child;
//! - a director, PRIV or libcurl callback ([`guard_callback`]): logged, a default returned.
//!
//! Debug builds carry a test-only trigger ([`test_panic`]) so VTCs can prove each guard;
//! release builds do not contain it.

use std::any::Any;
use std::ffi::{c_int, c_uint};
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};

use varnish::ffi::{self, vrt_ctx, VslTag};

use crate::ctx::{check_ctx, fail, log_raw};
use crate::dl::vsb_append;

/// The VCL temperature events, as Varnish numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Load,
    Warm,
    Cold,
    Discard,
    /// A number this build does not know (taken as an integer: an unknown value of the C
    /// enum would be undefined behaviour).
    Other,
}

impl Event {
    pub fn from_raw(e: c_uint) -> Self {
        match e {
            e if e == ffi::VclEvent::Load as c_uint => Event::Load,
            e if e == ffi::VclEvent::Warm as c_uint => Event::Warm,
            e if e == ffi::VclEvent::Cold as c_uint => Event::Cold,
            e if e == ffi::VclEvent::Discard as c_uint => Event::Discard,
            _ => Event::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Event::Load => "load",
            Event::Warm => "warm",
            Event::Cold => "cold",
            Event::Discard => "discard",
            Event::Other => "other",
        }
    }

    /// Whether Varnish lets the module refuse this event (LOAD and WARM; it asserts when
    /// COLD or DISCARD fail).
    pub fn may_fail(self) -> bool {
        matches!(self, Event::Load | Event::Warm)
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub fn panic_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs `f`, turning a panic into the text of its payload.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_text(&*payload).to_owned())
}

/// `<function>: <what>`: how every failed task and VCL error line of the modules starts.
pub fn task_message(function: &str, what: impl Display) -> String {
    format!("{function}: {what}")
}

/// What a task fails with when `function` panicked.
pub fn panic_message(function: &str, payload: &str) -> String {
    task_message(function, format_args!("internal error (panic): {payload}"))
}

/// What a temperature event of `module` reports when it panicked.
pub fn event_panic_message(module: &str, event: Event, payload: &str) -> String {
    format!(
        "{module}: internal error (panic) in the {} event: {payload}",
        event.name()
    )
}

/// The module of a VCL function name: `peer` for `peer.set()`.
pub fn module_of(function: &str) -> &str {
    function.split('.').next().unwrap_or(function)
}

/// What an event's outcome becomes.
#[derive(Debug, PartialEq, Eq)]
pub enum EventVerdict {
    Done,
    /// Refuse the event (return non-zero) with this message in the CLI answer.
    Refuse(String),
    /// Log the message; the event succeeds (Varnish would assert otherwise).
    Log(String),
}

/// Maps an event's result (an error message, from an error or a panic) to what the module
/// may do with it: `has_msg` is whether Varnish gave a message buffer (`ctx->msg`).
pub fn event_verdict(event: Event, result: Result<(), String>, has_msg: bool) -> EventVerdict {
    match result {
        Ok(()) => EventVerdict::Done,
        Err(msg) if event.may_fail() && has_msg => EventVerdict::Refuse(msg),
        Err(msg) => EventVerdict::Log(msg),
    }
}

/// The body of a VCL function (a task, `vcl_init` or `vcl_fini`), run with its checked
/// context: a bad context returns `default`; a panic fails the task with a
/// `<function>: internal error (panic): ...` message and returns `default`.
///
/// # Safety
/// `ctx` is NULL or the context Varnish passed to the VCL function, valid for the call.
pub unsafe fn guard_task<T>(
    ctx: *const vrt_ctx,
    function: &str,
    default: T,
    f: impl FnOnce(&vrt_ctx) -> T,
) -> T {
    // SAFETY: per the caller.
    let Some(ctx) = (unsafe { check_ctx(ctx) }) else {
        return default;
    };
    catch(|| {
        // Debug builds only: in release builds the trigger is empty, and the module name
        // alone cost ~50 instructions per call.
        #[cfg(debug_assertions)]
        test_panic(module_of(function), function);
        f(ctx)
    })
    .unwrap_or_else(|payload| {
        fail(ctx, &panic_message(function, &payload));
        default
    })
}

/// The whole body of `module`'s `$Event` function: checks the context, names the event and
/// runs `f`. An error or a panic in LOAD or WARM refuses the event with the message in the
/// CLI answer; in COLD and DISCARD it is only logged. A bad context is ignored (0).
///
/// # Safety
/// `ctx` is NULL or the context Varnish passed to the event function, valid for the call.
pub unsafe fn guard_event<E: Display>(
    ctx: *const vrt_ctx,
    module: &str,
    event: c_uint,
    f: impl FnOnce(&vrt_ctx, Event) -> Result<(), E>,
) -> c_int {
    // SAFETY: per the caller.
    let Some(ctx) = (unsafe { check_ctx(ctx) }) else {
        return 0;
    };
    let event = Event::from_raw(event);
    let result = catch(|| {
        test_panic(module, event.name());
        f(ctx, event).map_err(|e| e.to_string())
    })
    .unwrap_or_else(|payload| Err(event_panic_message(module, event, &payload)));
    match event_verdict(event, result, !ctx.msg.is_null()) {
        EventVerdict::Done => 0,
        EventVerdict::Refuse(msg) => {
            // SAFETY: ctx.msg is the event's message buffer (Varnish gives one for LOAD and
            // WARM; `event_verdict` refuses only when it is not NULL), used by the CLI thread
            // that runs this event.
            if !unsafe { vsb_append(ctx.msg, &msg) } {
                log_raw(VslTag::Error, &msg);
            }
            1
        }
        EventVerdict::Log(msg) => {
            log_raw(VslTag::Error, &msg);
            0
        }
    }
}

/// For director callbacks, PRIV destructors and libcurl callbacks, where there is no task
/// to fail: a panic is logged (`<what>: internal error (panic): ...`) and `default` returned.
pub fn guard_callback<T>(what: &str, default: T, f: impl FnOnce() -> T) -> T {
    catch(f).unwrap_or_else(|payload| {
        log_raw(VslTag::Error, &panic_message(what, &payload));
        default
    })
}

/// The environment variable that names the point where `module` panics on purpose.
#[cfg(debug_assertions)]
pub fn test_panic_var(module: &str) -> String {
    format!("VMOD_{}_TEST_PANIC", module.to_ascii_uppercase())
}

/// A panic on purpose where the environment variable `VMOD_<MODULE>_TEST_PANIC` names
/// `point` (a VCL function such as `peer.peer()`, an event name such as `warm`, or what a
/// module passes itself, e.g. an object name), to prove the guards. varnishd inherits the
/// variable from varnishtest's `setenv`. Debug builds only: release builds do not contain it.
#[cfg(debug_assertions)]
pub fn test_panic(module: &str, point: &str) {
    if std::env::var(test_panic_var(module)).is_ok_and(|v| v == point) {
        panic!("test-only panic trigger at {point}");
    }
}

/// Release builds: no trigger.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn test_panic(_module: &str, _point: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_payload_text_reads_literals_and_formatted_messages() {
        assert_eq!(catch(|| panic!("literal")), Err::<(), _>("literal".into()));
        let n = 3;
        assert_eq!(catch(|| panic!("got {n}")), Err::<(), _>("got 3".into()));
        let other = catch(|| std::panic::panic_any(42_u32));
        assert_eq!(other, Err::<(), _>("(no message)".into()));
        assert_eq!(catch(|| 7), Ok(7));
    }

    #[test]
    fn messages_start_with_the_vcl_function() {
        assert_eq!(
            task_message("peer.set()", "host/port: empty"),
            "peer.set(): host/port: empty"
        );
        assert_eq!(
            panic_message("saintmode.saintmode()", "boom"),
            "saintmode.saintmode(): internal error (panic): boom"
        );
        assert_eq!(
            event_panic_message("peer", Event::Cold, "boom"),
            "peer: internal error (panic) in the cold event: boom"
        );
        assert_eq!(module_of("peer.queue_req()"), "peer");
        assert_eq!(module_of("noperiod"), "noperiod");
    }

    #[test]
    fn events_map_from_varnish_numbers() {
        let raw = |e: ffi::VclEvent| e as c_uint;
        assert_eq!(Event::from_raw(raw(ffi::VclEvent::Load)), Event::Load);
        assert_eq!(Event::from_raw(raw(ffi::VclEvent::Warm)), Event::Warm);
        assert_eq!(Event::from_raw(raw(ffi::VclEvent::Cold)), Event::Cold);
        assert_eq!(Event::from_raw(raw(ffi::VclEvent::Discard)), Event::Discard);
        assert_eq!(Event::from_raw(1000), Event::Other);
        assert_eq!(Event::Warm.name(), "warm");
    }

    #[test]
    fn only_load_and_warm_may_be_refused_and_only_with_a_message_buffer() {
        let err = || Err("no".to_string());
        assert_eq!(event_verdict(Event::Warm, Ok(()), true), EventVerdict::Done);
        assert_eq!(
            event_verdict(Event::Warm, err(), true),
            EventVerdict::Refuse("no".into())
        );
        assert_eq!(
            event_verdict(Event::Load, err(), true),
            EventVerdict::Refuse("no".into())
        );
        assert_eq!(
            event_verdict(Event::Warm, err(), false),
            EventVerdict::Log("no".into())
        );
        for e in [Event::Cold, Event::Discard, Event::Other] {
            assert_eq!(
                event_verdict(e, err(), true),
                EventVerdict::Log("no".into())
            );
        }
    }

    #[test]
    fn the_test_trigger_fires_only_at_the_named_point() {
        assert_eq!(test_panic_var("peer"), "VMOD_PEER_TEST_PANIC");
        std::env::set_var(test_panic_var("rttest"), "rttest.f()");
        assert_eq!(catch(|| test_panic("rttest", "rttest.g()")), Ok(()));
        assert_eq!(
            catch(|| test_panic("rttest", "rttest.f()")),
            Err("test-only panic trigger at rttest.f()".into())
        );
    }
}
