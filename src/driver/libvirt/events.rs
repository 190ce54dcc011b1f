//! libvirt's event implementation, chosen once per process before the first connection.
//!
//! libvirt's client needs one for keepalive: the timer that pings a silent host and closes
//! its connection after `count` unanswered intervals (`virKeepAliveTimer`) is an event
//! timer, and the connection's socket is an event handle. Two implementations:
//!
//! - [`EventLoop::Default`]: libvirt's own (GLib), run on a thread. It polls the sockets
//!   too, so an idle connection reads keepalive answers and domain events as they come
//!   (`watch`, `apply`'s connections that wait on a prompt, the agent, the tests' twins).
//!   The price: every call from another thread takes the socket from the loop and gives
//!   it back (`virNetSocketUpdateIOCallback`), waking the loop's thread twice or more a
//!   call (≈ 3 ms of CPU over the 200 reads of a no-op plan, docs/bench.md).
//! - [`EventLoop::TimersOnly`], fabrik's own (`register_timers_only`): timers run on a
//!   thread of their own; socket handles are accepted (ids, removal, their free callbacks)
//!   but never polled. A call's thread reads and writes its socket itself in libvirt's
//!   client I/O loop (`virNetClientIOEventLoop`), keepalive answers that came meanwhile
//!   included, and keepalive's timer still fires while a call waits: a ping goes out
//!   through that call's loop, and a host silent for the limit has its connection closed
//!   (`virNetClientCloseInternal` wakes the waiting call, which fails). What it cannot do
//!   is read while no call is in flight: a connection left idle for longer than the
//!   silence limit would be closed as dead, its pings' answers unread. So it is only for
//!   commands whose connections are used in one burst and closed: `fabrik plan`, whose
//!   every host's connection is closed as soon as that host's reads are done
//!   (`driver::observe::read_libvirt` takes the driver). When libvirt removes a socket's
//!   handle (it is closing the connection) the socket is shut down, which wakes every
//!   call still waiting on it (`remove_handle`).
//!
//! The contract (libvirt's `vireventglib.c`, `virkeepalive.c`): ids start at 1 (keepalive
//! takes a timer id of 0 as "none"); a timer of `n` ms fires every `n` ms from when it was
//! added or last updated, 0 on every iteration, -1 never; add, update and remove may be
//! called from inside a callback; free callbacks run later, never inside remove and never
//! with this module's lock held (libvirt's socket free callback takes the socket's lock,
//! which the remover holds).

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use virt::sys;

/// Which event implementation the process registers with libvirt (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventLoop {
    Default,
    TimersOnly,
}

const UNCHOSEN: u8 = 0;
const DEFAULT: u8 = 1;
const TIMERS_ONLY: u8 = 2;

/// The choice, fixed by [`choose`] or by the first connection.
static CHOICE: AtomicU8 = AtomicU8::new(UNCHOSEN);

/// Chooses the process's event implementation; only the first choice counts (libvirt
/// takes one per process), and a connection opened before any choice fixes
/// [`EventLoop::Default`]. Returns the implementation in force.
pub fn choose(wanted: EventLoop) -> EventLoop {
    let code = match wanted {
        EventLoop::Default => DEFAULT,
        EventLoop::TimersOnly => TIMERS_ONLY,
    };
    let _ = CHOICE.compare_exchange(UNCHOSEN, code, Ordering::SeqCst, Ordering::SeqCst);
    chosen()
}

/// The implementation in force (or to be registered at the first connection).
pub fn chosen() -> EventLoop {
    match CHOICE.load(Ordering::SeqCst) {
        TIMERS_ONLY => EventLoop::TimersOnly,
        _ => EventLoop::Default,
    }
}

/// Registers the chosen implementation with libvirt and starts its thread; once per
/// process, before the first connection (`init_libvirt`).
pub(super) fn register() {
    match choose(EventLoop::Default) {
        EventLoop::Default => {
            if virt::event::event_register_default_impl().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("libvirt-events".into())
                    .spawn(|| while virt::event::event_run_default_impl().is_ok() {});
            }
        }
        EventLoop::TimersOnly => register_timers_only(),
    }
}

/// Registers fabrik's timers-only implementation and starts its timer thread.
fn register_timers_only() {
    // Without its thread, timers would never fire: keep libvirt's default then.
    if std::thread::Builder::new().name("libvirt-timers".into()).spawn(run_timers).is_err() {
        CHOICE.store(DEFAULT, Ordering::SeqCst);
        if virt::event::event_register_default_impl().is_ok() {
            let _ = std::thread::Builder::new()
                .name("libvirt-events".into())
                .spawn(|| while virt::event::event_run_default_impl().is_ok() {});
        }
        return;
    }
    // SAFETY: the functions follow libvirt's contract for an event implementation (module
    // doc); they stay valid for the life of the process.
    unsafe {
        sys::virEventRegisterImpl(
            Some(add_handle),
            Some(update_handle),
            Some(remove_handle),
            Some(add_timeout),
            Some(update_timeout),
            Some(remove_timeout),
        );
    }
}

/// A callback's opaque pointer and free function, as libvirt gave them.
#[derive(Clone, Copy)]
struct Opaque(*mut c_void);

// SAFETY: libvirt's opaque pointers are its own reference-counted objects, made to be
// handed to the event thread (libvirt's default loop runs them on another thread too).
unsafe impl Send for Opaque {}

struct Timer {
    id: c_int,
    /// Milliseconds between firings; negative: disabled.
    interval: c_int,
    /// When it fires next (`None`: disabled).
    due: Option<Instant>,
    cb: sys::virEventTimeoutCallback,
    opaque: Opaque,
    ff: sys::virFreeCallback,
}

struct Handle {
    id: c_int,
    /// The connection's socket, shut down when the handle is removed.
    fd: c_int,
    opaque: Opaque,
    ff: sys::virFreeCallback,
}

struct State {
    next_id: c_int,
    timers: Vec<Timer>,
    handles: Vec<Handle>,
    /// Free callbacks of removed timers and handles, run by the timer thread.
    frees: Vec<(unsafe extern "C" fn(*mut c_void), Opaque)>,
}

static STATE: Mutex<State> =
    Mutex::new(State { next_id: 1, timers: Vec::new(), handles: Vec::new(), frees: Vec::new() });
/// Wakes the timer thread: a timer added or changed, something to free.
static WAKE: Condvar = Condvar::new();

fn state() -> MutexGuard<'static, State> {
    // Callbacks run without the lock, so nothing can poison it mid-change that matters.
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

fn due_after(interval: c_int, from: Instant) -> Option<Instant> {
    u64::try_from(interval).ok().map(|ms| from + Duration::from_millis(ms))
}

impl State {
    fn new_id(&mut self) -> c_int {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }
}

/// The timer thread: runs the due timer (the earliest, one at a time, so that a timer
/// removed by another's callback never fires after its removal) and the pending free
/// callbacks, each without the lock; sleeps until the next timer is due or it is woken.
fn run_timers() {
    let mut st = state();
    loop {
        if !st.frees.is_empty() {
            let frees = std::mem::take(&mut st.frees);
            drop(st);
            for (ff, opaque) in frees {
                // SAFETY: libvirt's free callback with its own opaque, called once.
                unsafe { ff(opaque.0) };
            }
            st = state();
            continue;
        }
        let now = Instant::now();
        let next = st.timers.iter_mut().filter(|t| t.due.is_some()).min_by_key(|t| t.due);
        match next {
            Some(t) if t.due.is_some_and(|due| due <= now) => {
                // Re-armed before it runs: the callback's own update wins.
                t.due = due_after(t.interval, now);
                let (id, cb, opaque) = (t.id, t.cb, t.opaque);
                drop(st);
                if let Some(cb) = cb {
                    // SAFETY: libvirt's callback with its own opaque; the opaque is freed
                    // only by this thread, after the callback returns.
                    unsafe { cb(id, opaque.0) };
                }
                st = state();
            }
            Some(t) => {
                let wait = t.due.map_or(Duration::ZERO, |due| due - now);
                st = WAKE.wait_timeout(st, wait).unwrap_or_else(|p| p.into_inner()).0;
            }
            None => st = WAKE.wait(st).unwrap_or_else(|p| p.into_inner()),
        }
    }
}

unsafe extern "C" fn add_timeout(
    interval: c_int,
    cb: sys::virEventTimeoutCallback,
    opaque: *mut c_void,
    ff: sys::virFreeCallback,
) -> c_int {
    let mut st = state();
    let id = st.new_id();
    let due = due_after(interval, Instant::now());
    st.timers.push(Timer { id, interval, due, cb, opaque: Opaque(opaque), ff });
    WAKE.notify_one();
    id
}

/// Called on every message a connection receives (keepalive counts it as a sign of life
/// and pushes its timer back): the timer thread is woken only when the timer is due
/// sooner than it was, else it wakes at the old time and sleeps on.
unsafe extern "C" fn update_timeout(timer: c_int, interval: c_int) {
    let mut st = state();
    if let Some(t) = st.timers.iter_mut().find(|t| t.id == timer) {
        let due = due_after(interval, Instant::now());
        let sooner = due.is_some_and(|due| t.due.is_none_or(|old| due < old));
        (t.interval, t.due) = (interval, due);
        if sooner {
            WAKE.notify_one();
        }
    }
}

unsafe extern "C" fn remove_timeout(timer: c_int) -> c_int {
    let mut st = state();
    let Some(at) = st.timers.iter().position(|t| t.id == timer) else { return -1 };
    let t = st.timers.remove(at);
    if let Some(ff) = t.ff {
        st.frees.push((ff, t.opaque));
    }
    WAKE.notify_one();
    0
}

unsafe extern "C" fn add_handle(
    fd: c_int,
    _events: c_int,
    _cb: sys::virEventHandleCallback,
    opaque: *mut c_void,
    ff: sys::virFreeCallback,
) -> c_int {
    let mut st = state();
    let id = st.new_id();
    st.handles.push(Handle { id, fd, opaque: Opaque(opaque), ff });
    id
}

/// Never polled: the events a handle waits for do not matter.
unsafe extern "C" fn update_handle(_watch: c_int, _events: c_int) {}

/// libvirt's client removes its socket's handle only when it closes the connection
/// (`virNetClientMarkClose`: keepalive gave up, an error, a close; or when the client is
/// freed), so the socket is shut down here too. That wakes every thread that waits on it:
/// with several calls in flight on a dying connection, libvirt 9.0 passes the I/O to the
/// next waiting thread, which would otherwise wait in its poll with no timeout for an
/// answer that never comes (a host frozen while 8 reads were in flight hung `fabrik plan`
/// for good, with libvirt's own loop too). The socket is still open here: the handle holds
/// a reference on it until its free callback, which runs later.
fn shut_down(fd: c_int) {
    use std::os::fd::FromRawFd;
    // shutdown(2) is the same call for every socket family; the stream type only lends
    // the call, and ManuallyDrop keeps it from closing libvirt's descriptor. On a pipe
    // (not a socket) it fails, harmlessly.
    let socket = std::mem::ManuallyDrop::new(unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) });
    let _ = socket.shutdown(std::net::Shutdown::Both);
}

unsafe extern "C" fn remove_handle(watch: c_int) -> c_int {
    let mut st = state();
    let Some(at) = st.handles.iter().position(|h| h.id == watch) else { return -1 };
    let h = st.handles.remove(at);
    if h.fd >= 0 {
        shut_down(h.fd);
    }
    if let Some(ff) = h.ff {
        st.frees.push((ff, h.opaque));
        WAKE.notify_one();
    }
    0
}

#[cfg(test)]
mod tests {
    //! The timer thread's contract, on its own functions (not registered with libvirt:
    //! the process's implementation is chosen once, and unit tests share one process).

    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    static STARTED: std::sync::Once = std::sync::Once::new();

    fn start() {
        STARTED.call_once(|| {
            std::thread::spawn(run_timers);
        });
    }

    struct Probe {
        fired: AtomicUsize,
        tx: Mutex<mpsc::Sender<&'static str>>,
        /// Whether the callback removes its own timer at its second firing.
        remove_self_at: usize,
    }

    unsafe extern "C" fn fire(timer: c_int, opaque: *mut c_void) {
        let probe = unsafe { &*(opaque as *const Probe) };
        let n = probe.fired.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = probe.tx.lock().unwrap().send("fired");
        if n == probe.remove_self_at {
            // Removing from inside the callback: no deadlock, the free comes later.
            assert_eq!(unsafe { remove_timeout(timer) }, 0);
        }
    }

    unsafe extern "C" fn free(opaque: *mut c_void) {
        // The lock is not held: taking it here would deadlock otherwise.
        drop(state());
        let probe = unsafe { Box::from_raw(opaque as *mut Probe) };
        let _ = probe.tx.lock().unwrap().send("freed");
    }

    fn probe(remove_self_at: usize) -> (*mut c_void, mpsc::Receiver<&'static str>) {
        let (tx, rx) = mpsc::channel();
        let p = Box::new(Probe { fired: AtomicUsize::new(0), tx: Mutex::new(tx), remove_self_at });
        (Box::into_raw(p) as *mut c_void, rx)
    }

    const LONG: Duration = Duration::from_secs(10);

    #[test]
    fn a_timer_repeats_until_it_removes_itself_then_is_freed_once() {
        start();
        let (opaque, rx) = probe(2);
        let id = unsafe { add_timeout(5, Some(fire), opaque, Some(free)) };
        assert!(id >= 1, "ids start at 1: {id}");
        assert_eq!(rx.recv_timeout(LONG), Ok("fired"));
        assert_eq!(rx.recv_timeout(LONG), Ok("fired"));
        assert_eq!(rx.recv_timeout(LONG), Ok("freed"));
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "nothing after the free");
        assert_eq!(unsafe { remove_timeout(id) }, -1, "already removed");
    }

    #[test]
    fn a_disabled_timer_fires_once_enabled_and_a_removed_one_never() {
        start();
        let (opaque, rx) = probe(1);
        let id = unsafe { add_timeout(-1, Some(fire), opaque, Some(free)) };
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "disabled: nothing fires");
        unsafe { update_timeout(id, 0) };
        assert_eq!(rx.recv_timeout(LONG), Ok("fired"));
        assert_eq!(rx.recv_timeout(LONG), Ok("freed"));

        let (opaque, rx) = probe(usize::MAX);
        let id = unsafe { add_timeout(60_000, Some(fire), opaque, Some(free)) };
        assert_eq!(unsafe { remove_timeout(id) }, 0);
        assert_eq!(rx.recv_timeout(LONG), Ok("freed"), "freed later, never fired");
    }

    #[test]
    fn handles_get_ids_and_are_freed_after_removal() {
        start();
        let (opaque, rx) = probe(usize::MAX);
        let id = unsafe { add_handle(-1, 1, None, opaque, Some(free)) };
        assert!(id >= 1);
        unsafe { update_handle(id, 0) };
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "a handle is never polled");
        assert_eq!(unsafe { remove_handle(id) }, 0);
        assert_eq!(rx.recv_timeout(LONG), Ok("freed"));
        assert_eq!(unsafe { remove_handle(id) }, -1);
    }
}
