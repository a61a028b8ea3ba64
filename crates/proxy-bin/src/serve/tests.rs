//! The main loop's decisions, driven through its input channels.

use std::cell::Cell;
use std::ffi::OsString;

use super::draining::{drain_budget, MIN_SHUTDOWN_GRACE};
use super::*;
use crate::cli::{parse, Parsed};

struct Senders {
    signals: mpsc::UnboundedSender<ProcessSignal>,
    quit: mpsc::Sender<QuitRequest>,
    events: mpsc::UnboundedSender<ParentEvent>,
    rollback: mpsc::Sender<RollbackRequest>,
}

fn inputs() -> (Inputs, Senders) {
    let (signals_tx, signals) = mpsc::unbounded_channel();
    let (quit_tx, quit) = mpsc::channel(1);
    let (events_tx, events) = mpsc::unbounded_channel();
    let (rollback_tx, rollback) = mpsc::channel(1);
    (
        Inputs {
            signals,
            quit,
            rollback,
            give_way: None,
            gate: None,
            events,
            cutover: None,
            window: None,
        },
        Senders {
            signals: signals_tx,
            quit: quit_tx,
            events: events_tx,
            rollback: rollback_tx,
        },
    )
}

#[tokio::test]
async fn each_input_stops_the_generation_its_own_way() -> Result<(), Box<dyn std::error::Error>> {
    let never = || panic!("no SIGUSR1 was sent");
    let (mut i, s) = inputs();
    s.signals.send(ProcessSignal::Terminate)?;
    assert_eq!(serve_until_stop(&mut i, &never).await, Stop::Terminate);
    s.signals.send(ProcessSignal::Interrupt)?;
    assert_eq!(serve_until_stop(&mut i, &never).await, Stop::Interrupt);
    s.quit.send(QuitRequest).await?;
    assert_eq!(serve_until_stop(&mut i, &never).await, Stop::Quit);
    let taken = vec![SocketAddr::from(([127, 0, 0, 1], 1))];
    s.events.send(ParentEvent::DrainListeners {
        successor: None,
        taken: taken.clone(),
    })?;
    assert_eq!(serve_until_stop(&mut i, &never).await, Stop::Restart);
    // The main loop keeps what came with the drain request for the rollback window.
    assert!(matches!(&i.cutover, Some((None, t)) if *t == taken));
    s.events.send(ParentEvent::Terminate)?;
    assert_eq!(serve_until_stop(&mut i, &never).await, Stop::Ended);
    // A child asking a serving generation to serve again is refused; it goes on serving.
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    s.events.send(ParentEvent::RollBack {
        reason: "test".to_owned(),
        answer,
    })?;
    let serving = tokio::time::timeout(Duration::from_millis(50), serve_until_stop(&mut i, &never));
    assert!(serving.await.is_err(), "still serving");
    assert!(answered.try_recv().is_ok_and(|r| r.is_err()));
    // `POST /rollback` on this generation: it gives way.
    let (reply, _) = tokio::sync::oneshot::channel();
    s.rollback.send(RollbackRequest { reply }).await?;
    assert_eq!(serve_until_stop(&mut i, &never).await, Stop::GiveWay);
    assert!(i.give_way.take().is_some_and(|g| g.request.is_some()));
    // A failed health gate: it gives way too, once.
    i.gate = Some(Box::pin(async { "health gate: test".to_owned() }));
    assert_eq!(serve_until_stop(&mut i, &never).await, Stop::GiveWay);
    assert!(i
        .give_way
        .take()
        .is_some_and(|g| g.request.is_none() && g.why == "health gate: test"));
    assert!(i.gate.is_none(), "the gate is spent");
    // `baton rollback` (SIGUSR2): it gives way too.
    s.signals.send(ProcessSignal::RollBack)?;
    assert_eq!(serve_until_stop(&mut i, &never).await, Stop::GiveWay);
    assert!(i.give_way.take().is_some_and(|g| g.why.contains("SIGUSR2")));
    Ok(())
}

#[tokio::test]
async fn reopening_logs_and_sighup_keep_serving() -> Result<(), Box<dyn std::error::Error>> {
    let reopened = Cell::new(0);
    let reopen = || reopened.set(reopened.get() + 1);
    let (mut i, s) = inputs();
    s.signals.send(ProcessSignal::ReopenLogs)?;
    s.signals.send(ProcessSignal::Hangup)?;
    s.signals.send(ProcessSignal::ReopenLogs)?;
    s.signals.send(ProcessSignal::Terminate)?;
    assert_eq!(serve_until_stop(&mut i, &reopen).await, Stop::Terminate);
    assert_eq!(reopened.get(), 2);
    // With every input gone nothing can stop the generation later: it stops now.
    drop(s);
    assert_eq!(serve_until_stop(&mut i, &reopen).await, Stop::Terminate);
    Ok(())
}

#[test]
fn a_restart_drains_for_the_parent_shutdown_time_a_shutdown_for_the_drain_time() {
    let args = [
        "baton",
        "--config-yaml",
        "{}",
        "--drain-time-s",
        "2",
        "--parent-shutdown-time-s",
        "30",
    ]
    .map(OsString::from);
    let Parsed::Run(opts) = parse(args) else {
        panic!("expected options");
    };
    assert_eq!(drain_budget(Stop::Restart, &opts), Duration::from_secs(30));
    // A short drain time still leaves requests in flight the minimum grace.
    assert_eq!(drain_budget(Stop::Terminate, &opts), MIN_SHUTDOWN_GRACE);
    let mut long = opts;
    long.drain_time = Duration::from_secs(60);
    assert_eq!(drain_budget(Stop::Quit, &long), Duration::from_secs(60));
}
