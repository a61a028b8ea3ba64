//! Deterministic tests on paused time with fixed seeds: no test sleeps to wait for something,
//! they advance the paused clock or wait on phases.

use std::time::Duration;

use tokio::time::Instant;

use super::*;

const WINDOW: Duration = Duration::from_secs(100);
const SEED: u64 = 0x5eed;

fn gradual() -> (Signal, Watch) {
    new(Config::new(Strategy::Gradual, WINDOW).with_seed(SEED))
}

/// How many of `n` fresh connections answer `drain_close` true right now.
fn fresh_yes(watch: &Watch, n: usize) -> usize {
    (0..n)
        .filter(|_| watch.connection(Direction::Unspecified).drain_close())
        .count()
}

#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Signal>();
    send_sync::<Control>();
    send_sync::<Watch>();
    send_sync::<Conn>();
    send_sync::<Release>();
}

// --- the pure rules ---

#[test]
fn gradual_rule_is_linear_in_elapsed() {
    let w = Duration::from_secs(10);
    assert!(!shared::gradual(Duration::ZERO, w, 0.0));
    assert!(shared::gradual(Duration::from_secs(5), w, 0.49));
    assert!(!shared::gradual(Duration::from_secs(5), w, 0.5));
    assert!(shared::gradual(w, w, 0.999));
    assert!(shared::gradual(Duration::ZERO, Duration::ZERO, 0.999));
}

#[tokio::test(start_paused = true)]
async fn spread_places_a_moment_between_from_and_deadline() {
    let from = Instant::now();
    let deadline = from + Duration::from_secs(10);
    assert_eq!(shared::spread(from, deadline, 0.0), from);
    assert_eq!(
        shared::spread(from, deadline, 0.25),
        from + Duration::from_millis(2500)
    );
    assert_eq!(shared::spread(deadline, from, 0.5), deadline);
}

// --- gradual ---

#[tokio::test(start_paused = true)]
async fn not_draining_never_asks() {
    let (signal, watch) = gradual();
    assert_eq!(fresh_yes(&watch, 1000), 0);
    assert_eq!(signal.control().counts().asked_to_close, 0);
    assert_eq!(signal.control().phase(), Phase::Serving);
}

#[tokio::test(start_paused = true)]
async fn gradual_probability_at_0_50_100_percent() {
    const N: usize = 10_000;
    let (signal, watch) = gradual();
    let control = signal.control();
    assert!(control.start_drain(Scope::All));

    assert_eq!(fresh_yes(&watch, N), 0, "at 0% nobody is asked");

    tokio::time::advance(WINDOW / 2).await;
    let half = fresh_yes(&watch, N);
    // Binomial(10000, 0.5): standard deviation 50; 5 sigma either side.
    assert!((4750..=5250).contains(&half), "at 50%: {half} of {N}");

    tokio::time::advance(WINDOW / 4).await;
    let three_quarters = fresh_yes(&watch, N);
    assert!(
        (7250..=7750).contains(&three_quarters),
        "at 75%: {three_quarters} of {N}"
    );

    tokio::time::advance(WINDOW / 4).await;
    assert_eq!(fresh_yes(&watch, N), N, "at 100% everybody is asked");
}

#[tokio::test(start_paused = true)]
async fn drain_close_is_sticky_and_counted_once() {
    let (signal, watch) = gradual();
    let control = signal.control();
    let conn = watch.connection(Direction::Unspecified);
    control.start_drain(Scope::All);
    tokio::time::advance(WINDOW / 2).await;
    // Fresh draws at 50%: within 64 calls one says yes (failure chance 2^-64).
    let first_yes = (0..64).find(|_| conn.drain_close());
    assert!(first_yes.is_some());
    assert!(conn.is_asked());
    assert!((0..100).all(|_| conn.drain_close()));
    assert!(conn.clone().drain_close(), "clones share the answer");
    assert_eq!(control.counts().asked_to_close, 1);
}

#[tokio::test(start_paused = true)]
async fn close_moments_are_spread_uniformly_over_the_window() {
    const N: usize = 1000;
    const BUCKETS: usize = 10;
    let (signal, watch) = gradual();
    let control = signal.control();
    let mut tasks = Vec::with_capacity(N);
    for _ in 0..N {
        let mut conn = watch.connection(Direction::Unspecified);
        tasks.push(tokio::spawn(async move {
            conn.close_requested().await;
            Instant::now()
        }));
    }
    let started = Instant::now();
    control.start_drain(Scope::All);
    let mut buckets = [0usize; BUCKETS];
    for t in tasks {
        let at = t.await.expect("task");
        let elapsed = at - started;
        assert!(elapsed <= WINDOW, "asked after the window: {elapsed:?}");
        let i = (elapsed.as_secs_f64() / WINDOW.as_secs_f64() * BUCKETS as f64) as usize;
        buckets[i.min(BUCKETS - 1)] += 1;
    }
    // 100 expected per bucket, standard deviation ~9.5; 5 sigma either side.
    for (i, n) in buckets.iter().enumerate() {
        assert!((52..=148).contains(n), "bucket {i}: {n} ({buckets:?})");
    }
    assert_eq!(control.counts().asked_to_close, N as u64);
    assert_eq!(control.counts().open, 0);
}

#[tokio::test(start_paused = true)]
async fn close_requested_wakes_when_another_clone_is_asked() {
    let (signal, watch) = gradual();
    let control = signal.control();
    let conn = watch.connection(Direction::Unspecified);
    let mut driver = conn.clone();
    control.start_drain(Scope::All);
    let close_by = conn.close_by().expect("draining");
    let waiting = tokio::spawn(async move {
        driver.close_requested().await;
        Instant::now()
    });
    tokio::task::yield_now().await;
    control.set_health_check_failed(true);
    assert!(conn.drain_close());
    let woke = waiting.await.expect("task");
    assert!(woke <= close_by);
    assert_eq!(woke, control.drain_window(Scope::All).expect("started").0);
}

#[tokio::test(start_paused = true)]
async fn connection_opened_during_drain_closes_within_what_is_left() {
    let (signal, watch) = gradual();
    let control = signal.control();
    control.start_drain(Scope::All);
    tokio::time::advance(WINDOW * 3 / 4).await;
    let opened = Instant::now();
    let conn = watch.connection(Direction::Unspecified);
    let end = conn.drain_deadline().expect("draining");
    let at = conn.close_by().expect("draining");
    assert!(opened <= at && at <= end, "{opened:?} <= {at:?} <= {end:?}");
    tokio::time::advance(WINDOW).await;
    let late = watch.connection(Direction::Unspecified);
    assert_eq!(late.close_by(), Some(Instant::now()));
    assert!(late.drain_close());
}

// --- immediate and zero drain time ---

async fn everyone_asked_at_once(config: Config) {
    let (signal, watch) = new(config);
    let control = signal.control();
    let conns: Vec<Conn> = (0..100)
        .map(|_| watch.connection(Direction::Unspecified))
        .collect();
    assert!(conns.iter().all(|c| !c.drain_close()));
    let started = Instant::now();
    control.start_drain(Scope::All);
    for mut c in conns.iter().cloned() {
        c.close_requested().await;
        assert_eq!(Instant::now(), started);
    }
    assert!(conns.iter().all(Conn::drain_close));
    assert_eq!(control.counts().asked_to_close, 100);
}

#[tokio::test(start_paused = true)]
async fn immediate_asks_everyone_at_once() {
    everyone_asked_at_once(Config::new(Strategy::Immediate, WINDOW).with_seed(SEED)).await;
}

#[tokio::test(start_paused = true)]
async fn zero_drain_time_behaves_as_immediate() {
    everyone_asked_at_once(Config::new(Strategy::Gradual, Duration::ZERO).with_seed(SEED)).await;
}

// --- tokens, release, deadline ---

#[tokio::test(start_paused = true)]
async fn released_completes_only_when_every_token_is_released() {
    let (signal, watch) = gradual();
    let conn = watch.connection(Direction::Unspecified);
    let conn2 = conn.clone();
    let token = watch.token();
    let control = signal.control();
    assert_eq!(
        control.counts(),
        Counts {
            open: 1,
            asked_to_close: 0,
            remaining: 3
        }
    );
    let waiter = tokio::spawn(async move {
        signal.released().await;
        signal
    });
    let mut steps = vec![];
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
    settle().await;
    steps.push(waiter.is_finished());
    drop(watch);
    settle().await;
    steps.push(waiter.is_finished());
    drop(conn);
    settle().await;
    steps.push(waiter.is_finished());
    drop(conn2);
    settle().await;
    steps.push(waiter.is_finished());
    assert_eq!(control.counts().open, 0);
    token.release();
    let signal = waiter.await.expect("task");
    assert_eq!(steps, [false, false, false, false]);
    assert_eq!(signal.control().counts().remaining, 0);
}

#[tokio::test(start_paused = true)]
async fn wait_released_is_bounded_by_the_deadline() {
    let (signal, watch) = gradual();
    let _conn = watch.connection(Direction::Unspecified);
    drop(watch);
    let control = signal.control();
    control.start_drain(Scope::All);
    let deadline = Instant::now() + WINDOW + Duration::from_secs(5);
    let outcome = signal.wait_released(deadline).await;
    assert_eq!(outcome, Outcome::TimedOut { remaining: 1 });
    assert_eq!(Instant::now(), deadline);
    assert_eq!(control.phase(), Phase::Abandoned { remaining: 1 });
}

#[tokio::test(start_paused = true)]
async fn compat_drain_waits_for_every_watch() {
    let (signal, watch) = channel();
    let mut w2 = watch.clone();
    let task = tokio::spawn(async move {
        w2.signaled().await;
        // A connection that takes three (paused) seconds to finish after the signal.
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(w2);
    });
    drop(watch);
    let mut phases = signal.control().subscribe();
    let start = Instant::now();
    signal.drain().await;
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert!(phases.borrow_and_update().is_drained());
    task.await.expect("task");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_signal_signals_every_watch() {
    let (signal, mut watch) = gradual();
    assert!(!watch.is_draining());
    drop(signal);
    watch.signaled().await;
    assert!(watch.is_draining());
    assert!(!watch.is_accepting(Direction::Unspecified));
}

// --- phases ---

#[tokio::test(start_paused = true)]
async fn phases_are_broadcast() {
    let (signal, watch) = gradual();
    let control = signal.control();
    let mut phases = control.subscribe();
    assert_eq!(*phases.borrow_and_update(), Phase::Serving);
    let mut conn = watch.connection(Direction::Inbound);
    drop(watch);

    let t0 = Instant::now();
    control.start_drain(Scope::InboundOnly);
    let p = *phases.wait_for(Phase::is_draining).await.expect("phase");
    assert_eq!(
        p,
        Phase::Draining {
            scope: Scope::InboundOnly,
            started: t0,
            deadline: t0 + WINDOW
        }
    );

    tokio::time::advance(Duration::from_secs(1)).await;
    control.start_drain(Scope::All);
    let p = *phases
        .wait_for(|p| {
            matches!(
                p,
                Phase::Draining {
                    scope: Scope::All,
                    ..
                }
            )
        })
        .await
        .expect("phase");
    assert!(matches!(p, Phase::Draining { started, .. } if started == t0 + Duration::from_secs(1)));

    let task = tokio::spawn(async move {
        conn.close_requested().await;
        drop(conn);
    });
    let p = *phases.wait_for(Phase::is_drained).await.expect("phase");
    assert_eq!(p, Phase::Drained);
    assert!(Instant::now() <= t0 + WINDOW);
    task.await.expect("task");
    drop(signal);
}

#[tokio::test(start_paused = true)]
async fn drain_with_nothing_open_is_drained_at_once() {
    let (signal, watch) = gradual();
    drop(watch);
    let control = signal.control();
    control.start_drain(Scope::All);
    assert_eq!(control.phase(), Phase::Drained);
    assert_eq!(
        signal.wait_released(Instant::now()).await,
        Outcome::Released
    );
}

// --- health check ---

#[tokio::test(start_paused = true)]
async fn failed_health_check_makes_drain_close_true() {
    let (signal, watch) = gradual();
    let control = signal.control();
    let conn = watch.connection(Direction::Unspecified);
    assert!(!conn.drain_close());
    control.set_health_check_failed(true);
    assert!(watch.health_check_failed() && conn.health_check_failed());
    assert!(conn.drain_close());
    assert_eq!(fresh_yes(&watch, 100), 100);
    assert!(watch.is_accepting(Direction::Unspecified));
    assert_eq!(control.phase(), Phase::Serving);

    control.set_health_check_failed(false);
    assert!(!control.health_check_failed());
    assert_eq!(fresh_yes(&watch, 100), 0);
    assert!(conn.drain_close(), "a connection already asked stays asked");
}

/// `close_requested` skips its waits while nothing woke them; a change that is not a drain
/// (listeners stopping, a health check toggling) wakes them without ending the wait, and the
/// drain that follows must still be seen.
#[tokio::test(start_paused = true)]
async fn close_requested_sees_a_drain_after_changes_that_are_not_one() {
    let (signal, watch) = gradual();
    let control = signal.control();
    let mut conn = watch.connection(Direction::Unspecified);
    let waiting = tokio::spawn(async move {
        conn.close_requested().await;
        Instant::now()
    });
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    control.stop_accepting(Scope::InboundOnly);
    tokio::task::yield_now().await;
    control.set_health_check_failed(true);
    tokio::task::yield_now().await;
    control.set_health_check_failed(false);
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished(), "completed before any drain");
    control.start_drain(Scope::All);
    let (_, end) = control.drain_window(Scope::All).expect("started");
    let woke = tokio::time::timeout(WINDOW * 2, waiting)
        .await
        .expect("the drain was not seen")
        .expect("task");
    assert!(woke <= end);
}

#[tokio::test(start_paused = true)]
async fn failed_health_check_alone_does_not_complete_close_requested() {
    let (signal, watch) = gradual();
    let control = signal.control();
    let mut conn = watch.connection(Direction::Unspecified);
    control.set_health_check_failed(true);
    let waited = tokio::time::timeout(WINDOW, conn.close_requested()).await;
    assert!(waited.is_err());
    assert!(!conn.is_asked());
}

// --- listeners and scopes ---

#[tokio::test(start_paused = true)]
async fn drain_listeners_without_graceful_stops_at_once_and_asks_nobody() {
    let (signal, mut watch) = gradual();
    let control = signal.control();
    let conn = watch.connection(Direction::Unspecified);
    let t0 = Instant::now();
    control.drain_listeners(Scope::All, false);
    watch.accept_stopped(Direction::Unspecified).await;
    assert_eq!(Instant::now(), t0);
    assert!(!conn.drain_close());
    assert_eq!(control.phase(), Phase::Serving);
}

#[tokio::test(start_paused = true)]
async fn graceful_drain_listeners_stops_accepting_at_the_end_of_the_window() {
    let (signal, mut watch) = gradual();
    let control = signal.control();
    let t0 = Instant::now();
    control.drain_listeners(Scope::All, true);
    assert!(control.is_draining());
    assert!(watch.is_accepting(Direction::Outbound));
    watch.accept_stopped(Direction::Outbound).await;
    assert_eq!(Instant::now(), t0 + WINDOW);
    assert!(!watch.is_accepting(Direction::Outbound));
}

#[tokio::test(start_paused = true)]
async fn inbound_only_leaves_other_listeners_and_connections_alone() {
    let (signal, mut watch) = new(Config::immediate().with_seed(SEED));
    let control = signal.control();
    let inbound = watch.connection(Direction::Inbound);
    let mut outbound = watch.connection(Direction::Outbound);
    control.drain_listeners(Scope::InboundOnly, true);
    assert!(inbound.drain_close());
    assert!(!outbound.drain_close());
    assert!(!watch.is_accepting(Direction::Inbound));
    assert!(watch.is_accepting(Direction::Outbound));
    assert!(watch.is_accepting(Direction::Unspecified));
    let stopped = tokio::time::timeout(WINDOW, watch.accept_stopped(Direction::Outbound)).await;
    assert!(stopped.is_err());

    // Widening to everything reaches the rest.
    let mut w2 = watch.clone();
    let waiting = tokio::spawn(async move {
        outbound.close_requested().await;
        w2.accept_stopped(Direction::Unspecified).await;
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    control.drain_listeners(Scope::All, false);
    control.start_drain(Scope::All);
    waiting.await.expect("task");
}
