//! The rule that keeps the hot path cheap, as a test: a request's future and a connection's
//! task are allocated and moved whole, so their size is a cost paid on every request and every
//! connection. Rare paths (TLS, HTTP/2, hyper's session, upgrades, buffering a body for
//! retries) are boxed to keep them out of these sizes. A change that grows one past its bound
//! fails here: box the new rare await, or raise the bound on purpose, with the callgrind
//! figures (`benches/load/callgrind.sh`) in the commit.

use std::future::Future;

// The bounds are for the test profile (unoptimised: futures are larger than in a release
// build), set a little above what was measured when they were last changed:
// `cargo test -p proxy-core future_sizes -- --nocapture` prints the sizes.

/// Bytes of [`crate::request::handle`]'s future (measured 3304).
const REQUEST_FUTURE_MAX: usize = 3392;
/// Bytes of a connection's task, [`crate::downstream::serve_conn`]'s future (measured 3432).
const CONNECTION_TASK_MAX: usize = 3520;
/// Bytes of a connection arriving from the previous generation (measured 768: its HTTP/1.1
/// session and its tunnel copy are boxed, one allocation per moved connection, so the chain
/// identity it carries does not grow the task).
const ARRIVING_TASK_MAX: usize = 832;

fn size4<A, B, C, D, F: Future>(_: fn(A, B, C, D) -> F) -> usize {
    std::mem::size_of::<F>()
}

fn size5<A, B, C, D, E, F: Future>(_: fn(A, B, C, D, E) -> F) -> usize {
    std::mem::size_of::<F>()
}

fn size6<A, B, C, D, E, G, F: Future>(_: fn(A, B, C, D, E, G) -> F) -> usize {
    std::mem::size_of::<F>()
}

#[test]
fn request_future_stays_small() {
    let n = size4(crate::request::handle as fn(_, _, _, _) -> _);
    println!("request future: {n} bytes (bound {REQUEST_FUTURE_MAX})");
    assert!(
        n <= REQUEST_FUTURE_MAX,
        "request future is {n} bytes, bound {REQUEST_FUTURE_MAX}"
    );
}

#[test]
fn connection_tasks_stay_small() {
    let n = size6(crate::downstream::serve_conn as fn(_, _, _, _, _, _) -> _);
    println!("connection task: {n} bytes (bound {CONNECTION_TASK_MAX})");
    assert!(
        n <= CONNECTION_TASK_MAX,
        "connection task is {n} bytes, bound {CONNECTION_TASK_MAX}"
    );
    let n = size5(crate::downstream::serve_arriving as fn(_, _, _, _, _) -> _);
    println!("arriving connection task: {n} bytes (bound {ARRIVING_TASK_MAX})");
    assert!(
        n <= ARRIVING_TASK_MAX,
        "arriving connection task is {n} bytes, bound {ARRIVING_TASK_MAX}"
    );
}
