//! Tests of the shared region, several with real child processes: the test binary re-executes
//! itself (`helper_process_entry`, which does nothing unless `BATON_SHM_HELPER` is set), each
//! child bounded in time and killed by pid from a drop guard. Every test uses its own base id
//! and checks that nothing is left in /dev/shm.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::*;
use crate::layout::{self as lay, Words as _};

const HELPER_ENV: &str = "BATON_SHM_HELPER";

/// A base id no other test (or test run) uses: derived from the pid and a counter.
fn unique_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Strides of 8 leave room for the dynamic base id test's neighbours.
    3_000_000_000 + (std::process::id() % 100_000) * 8192 + NEXT.fetch_add(1, Ordering::Relaxed) * 8
}

fn opts(base_id: u32, epoch: u32, mode: OpenMode) -> RegionOptions {
    RegionOptions {
        backing: Backing::for_base_id(base_id),
        base_id,
        epoch,
        mode,
        max_stats: 64,
        max_obj_name_len: 16,
        lock_timeout: Duration::from_millis(100),
        attach_timeout: Duration::from_secs(2),
    }
}

fn shm_path(base_id: u32) -> String {
    Backing::for_base_id(base_id).display()
}

fn value(snap: &Snapshot, name: &str) -> Option<Value> {
    snap.stats
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// Unlinks a test's region on drop, so a failing test leaves nothing in /dev/shm.
struct ShmGuard(Vec<u32>);

impl Drop for ShmGuard {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = Backing::for_base_id(*id).unlink();
        }
    }
}

/// A child process running one helper action; killed by pid on drop.
struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Helper {
    fn spawn(action: &str, base_id: u32, epoch: u32) -> Helper {
        let exe = std::env::current_exe().expect("the test binary has a path");
        let mut child = Command::new(exe)
            .args(["--exact", "tests::helper_process_entry", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(HELPER_ENV, format!("{action} {base_id} {epoch}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the test binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Helper {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"))
    }

    /// Wait (bounded) for the child to print `READY`.
    fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                // libtest prints "test ... " before the helper's output on the same line.
                Ok(l) if l.trim_end().ends_with("READY") => return,
                Ok(_) => {}
                Err(e) => panic!("helper never became ready: {e}"),
            }
        }
    }

    /// Wait (bounded) for a clean exit.
    fn finish(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                assert!(status.success(), "helper failed: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "helper did not exit in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill9(mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(self.pid(), Signal::SIGCONT);
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Not a test: the body of the helper processes the tests start. Without `BATON_SHM_HELPER` it
/// returns at once.
#[test]
fn helper_process_entry() {
    let Ok(spec) = std::env::var(HELPER_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    let [action, base_id, epoch] = parts[..] else {
        panic!("bad helper spec {spec}");
    };
    let base_id: u32 = base_id.parse().expect("base id");
    let epoch: u32 = epoch.parse().expect("epoch");
    let ready = || {
        println!("READY");
        let _ = std::io::stdout().flush();
    };
    let wait_for_parent = || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    };
    match action {
        "add" => {
            let store = Store::with_region(
                Region::open(opts(base_id, epoch, OpenMode::Attach)).expect("attach"),
                &[],
            );
            let c = store.counter("c");
            for _ in 0..100_000 {
                c.inc();
            }
            store.detach().expect("detach");
        }
        "hold" => {
            let region = Region::open(opts(base_id, epoch, OpenMode::Attach)).expect("attach");
            region.hold_lock_forever().expect("lock");
            ready();
            std::thread::sleep(Duration::from_secs(60));
        }
        "gauge" => {
            let store = Store::with_region(
                Region::open(opts(base_id, epoch, OpenMode::Attach)).expect("attach"),
                &[],
            );
            store.gauge("g").add(3);
            ready();
            wait_for_parent();
            drop(store);
        }
        "create_and_die" => {
            let store = Store::with_region(
                Region::open(opts(base_id, 0, OpenMode::Create)).expect("create"),
                &[],
            );
            store.counter("c").add(7);
            ready();
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown helper action {other}"),
    }
}

#[test]
fn two_processes_add_to_one_counter_exactly() {
    let id = unique_base_id();
    let _guard = ShmGuard(vec![id]);
    let store = Store::with_region(
        Region::open(opts(id, 0, OpenMode::Create)).expect("create"),
        &[],
    );
    let c = store.counter("c");
    let a = Helper::spawn("add", id, 1);
    let b = Helper::spawn("add", id, 2);
    for _ in 0..100_000 {
        c.inc();
    }
    a.finish();
    b.finish();
    assert_eq!(c.value(), 300_000);
    assert_eq!(value(&store.snapshot(), "c"), Some(Value::Counter(300_000)));
    assert_eq!(store.detach().expect("detach"), Some(Detached::Removed));
    assert!(!Path::new(&shm_path(id)).exists());
}

#[test]
fn lock_holder_killed_with_sigkill_is_recovered() {
    let id = unique_base_id();
    let _guard = ShmGuard(vec![id]);
    let region = Region::open(opts(id, 0, OpenMode::Create)).expect("create");
    let holder = Helper::spawn("hold", id, 1);
    holder.ready();
    holder.kill9();
    // The dead holder's lock is recovered (EOWNERDEAD → consistent) and its entry reaped.
    assert_eq!(region.reap_dead_generations().expect("lock recovered"), 1);
    let store = Store::with_region(region, &[]);
    store.counter("after").inc();
    assert_eq!(
        value(&store.snapshot(), "after"),
        Some(Value::Counter(1)),
        "allocation works after recovery"
    );
    assert_eq!(store.generations().len(), 1);
    store.detach().expect("detach");
    assert!(!Path::new(&shm_path(id)).exists());
}

#[test]
fn stopped_lock_holder_never_blocks_the_other_generation() {
    let id = unique_base_id();
    let _guard = ShmGuard(vec![id]);
    let store = Store::with_region(
        Region::open(opts(id, 0, OpenMode::Create)).expect("create"),
        &[],
    );
    let holder = Helper::spawn("hold", id, 1);
    holder.ready();
    kill(holder.pid(), Signal::SIGSTOP).expect("stop the holder");
    let started = Instant::now();
    let c = store.counter("new.stat");
    c.add(5);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let snap = store.snapshot();
    assert_eq!(
        value(&snap, "new.stat"),
        Some(Value::Counter(5)),
        "works locally"
    );
    assert_eq!(value(&snap, OVERFLOW_COUNTER), Some(Value::Counter(1)));
    assert!(matches!(
        store.region().map(Region::reap_dead_generations),
        Some(Err(Error::Lock { .. }))
    ));
    kill(holder.pid(), Signal::SIGCONT).expect("continue the holder");
    holder.kill9();
    store.detach().expect("detach after the holder died");
    assert!(!Path::new(&shm_path(id)).exists());
}

#[test]
fn gauge_share_of_an_exited_generation_is_removed() {
    let id = unique_base_id();
    let _guard = ShmGuard(vec![id]);
    let store = Store::with_region(
        Region::open(opts(id, 0, OpenMode::Create)).expect("create"),
        &[],
    );
    store.gauge("g").add(5);
    let clean = Helper::spawn("gauge", id, 1);
    clean.ready();
    assert_eq!(value(&store.snapshot(), "g"), Some(Value::Gauge(8)));
    clean.finish();
    assert_eq!(value(&store.snapshot(), "g"), Some(Value::Gauge(5)));

    let killed = Helper::spawn("gauge", id, 2);
    killed.ready();
    assert_eq!(value(&store.snapshot(), "g"), Some(Value::Gauge(8)));
    killed.kill9();
    // Excluded at once (its liveness lock is gone), then reaped.
    assert_eq!(value(&store.snapshot(), "g"), Some(Value::Gauge(5)));
    assert_eq!(
        store
            .region()
            .map(Region::reap_dead_generations)
            .transpose()
            .ok()
            .flatten(),
        Some(1)
    );
    assert_eq!(value(&store.snapshot(), "g"), Some(Value::Gauge(5)));
    store.detach().expect("detach");
    assert!(!Path::new(&shm_path(id)).exists());
}

#[test]
fn epoch_zero_refuses_a_live_chain_and_reclaims_a_dead_one() {
    let id = unique_base_id();
    let _guard = ShmGuard(vec![id]);
    let first = Region::open(opts(id, 0, OpenMode::Create)).expect("create");
    let err = Region::open(opts(id, 0, OpenMode::Create)).expect_err("a live chain is refused");
    let msg = err.to_string();
    assert!(matches!(err, Error::ChainLive { .. }), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    drop(first);
    assert!(!Path::new(&shm_path(id)).exists());

    let crashed = Helper::spawn("create_and_die", id, 0);
    crashed.ready();
    crashed.kill9();
    assert!(
        Path::new(&shm_path(id)).exists(),
        "a crashed chain leaves its region"
    );
    let store = Store::with_region(
        Region::open(opts(id, 0, OpenMode::Create)).expect("reclaimed"),
        &[],
    );
    assert_eq!(
        store.counter("c").value(),
        0,
        "a reclaimed region starts fresh"
    );
    store.detach().expect("detach");
    assert!(!Path::new(&shm_path(id)).exists());
}

#[test]
fn last_generation_out_removes_the_region() {
    let id = unique_base_id();
    let _guard = ShmGuard(vec![id]);
    let parent = Region::open(opts(id, 0, OpenMode::Create)).expect("create");
    let child = Region::open(opts(id, 1, OpenMode::Attach)).expect("attach");
    assert!(matches!(
        Region::open(opts(id, 1, OpenMode::Attach)),
        Err(Error::EpochTaken { epoch: 1, .. })
    ));
    assert_eq!(parent.detach().expect("detach"), Detached::Remaining);
    assert!(Path::new(&shm_path(id)).exists());
    assert_eq!(child.detach().expect("detach"), Detached::Removed);
    assert_eq!(child.detach().expect("detach"), Detached::Already);
    assert!(!Path::new(&shm_path(id)).exists());
    assert!(matches!(
        Region::open(opts(id, 2, OpenMode::Attach)),
        Err(Error::NoRegion { .. })
    ));
}

#[test]
fn counters_survive_generations_and_histograms_stay_continuous() {
    let id = unique_base_id();
    let _guard = ShmGuard(vec![id]);
    let parent = Store::with_region(
        Region::open(opts(id, 0, OpenMode::Create)).expect("create"),
        &["server.live"],
    );
    parent.counter("rq").add(10);
    parent.histogram("t").record_ms(3.0);
    parent.gauge("server.live").set(1);
    let child = Store::with_region(
        Region::open(opts(id, 1, OpenMode::Attach)).expect("attach"),
        &["server.live"],
    );
    child.gauge("server.live").set(1);
    child.counter("rq").add(5);
    child.histogram("t").record_ms(7.0);
    let snap = child.snapshot();
    assert_eq!(value(&snap, "rq"), Some(Value::Counter(15)));
    assert_eq!(
        value(&snap, "server.live"),
        Some(Value::Gauge(1)),
        "newest, not summed"
    );
    parent.detach().expect("detach");
    let snap = child.snapshot();
    assert_eq!(value(&snap, "rq"), Some(Value::Counter(15)), "never reset");
    let Some(Value::Histogram(h)) = value(&snap, "t") else {
        panic!("histogram missing")
    };
    assert_eq!((h.count, h.cumulative[2], h.cumulative[3]), (2, 1, 2));
    child.detach().expect("detach");
    assert!(!Path::new(&shm_path(id)).exists());
}

#[test]
fn two_base_ids_do_not_see_each_other() {
    let (a_id, b_id) = (unique_base_id(), unique_base_id());
    let _guard = ShmGuard(vec![a_id, b_id]);
    let a = Store::with_region(
        Region::open(opts(a_id, 0, OpenMode::Create)).expect("a"),
        &[],
    );
    let b = Store::with_region(
        Region::open(opts(b_id, 0, OpenMode::Create)).expect("b"),
        &[],
    );
    a.counter("only.a").inc();
    b.counter("only.b").add(2);
    assert_eq!(value(&a.snapshot(), "only.b"), None);
    assert_eq!(value(&b.snapshot(), "only.a"), None);
    assert_eq!(value(&b.snapshot(), "only.b"), Some(Value::Counter(2)));
    a.detach().expect("detach");
    b.detach().expect("detach");
    assert!(!Path::new(&shm_path(a_id)).exists() && !Path::new(&shm_path(b_id)).exists());
}

#[test]
fn other_capacity_or_version_is_refused_clearly() {
    let id = unique_base_id();
    let _guard = ShmGuard(vec![id]);
    let region = Region::open(opts(id, 0, OpenMode::Create)).expect("create");
    let mut other = opts(id, 1, OpenMode::Attach);
    other.max_stats = 128;
    let err = Region::open(other).expect_err("capacity differs");
    let msg = err.to_string();
    assert!(matches!(err, Error::Capacity { .. }), "{msg}");
    assert!(
        msg.contains("--max-stats 64") && msg.contains("--max-stats 128"),
        "{msg}"
    );

    region
        .mapping()
        .u32_at(lay::OFF_VERSION)
        .store(99, Ordering::Relaxed);
    let err = Region::open(opts(id, 1, OpenMode::Attach)).expect_err("version differs");
    assert!(
        matches!(
            err,
            Error::Version {
                found: 99,
                expected: 1,
                ..
            }
        ),
        "{err}"
    );
    let err = RegionView::open(&Backing::for_base_id(id)).expect_err("version differs");
    assert!(err.to_string().contains("layout version 99"), "{err}");
    region
        .mapping()
        .u32_at(lay::OFF_VERSION)
        .store(LAYOUT_VERSION, Ordering::Relaxed);
    region.detach().expect("detach");
    assert!(!Path::new(&shm_path(id)).exists());
}

#[test]
fn header_matches_the_golden_fixture() {
    let golden: &[u8] = include_bytes!("../tests/fixtures/header_v1.bin");
    let layout = Layout::new(4, 8).expect("layout");
    let created = 0x0102_0304_0506_0708;
    let encoded = encode_header(&layout, created);
    if std::env::var_os("BATON_BLESS").is_some() {
        std::fs::write("tests/fixtures/header_v1.bin", &encoded).expect("bless");
    }
    assert_eq!(
        encoded, golden,
        "layout version 1 changed: bump LAYOUT_VERSION"
    );
    // The fixture still decodes; a changed version fails loudly.
    assert_eq!(lay::decode_header(golden, layout.total_size), Ok(layout));
    let mut bumped = golden.to_vec();
    bumped[lay::OFF_VERSION..lay::OFF_VERSION + 4].copy_from_slice(&2u32.to_ne_bytes());
    assert_eq!(
        lay::decode_header(&bumped[..], layout.total_size),
        Err(lay::HeaderError::Version(2))
    );

    // A real region's header is that encoding (outside the mutex and the generation table).
    let id = unique_base_id();
    let _guard = ShmGuard(vec![id]);
    let mut o = opts(id, 0, OpenMode::Create);
    o.max_stats = 4;
    o.max_obj_name_len = 8;
    let region = Region::open(o).expect("create");
    let map = region.mapping();
    let created = map.load_u64(lay::OFF_CREATED_NS);
    let expect = encode_header(&layout, created);
    let actual: Vec<u8> = (0..HEADER_SIZE).map(|i| map.load_u8(i)).collect();
    assert_eq!(actual[..lay::OFF_ATTACH_SEQ], expect[..lay::OFF_ATTACH_SEQ]);
    assert_eq!(
        actual[lay::OFF_READY..lay::OFF_MUTEX],
        expect[lay::OFF_READY..lay::OFF_MUTEX]
    );
    assert_eq!(
        actual[lay::OFF_MUTEX..lay::OFF_GENERATIONS].len(),
        lay::MUTEX_BYTES
    );
    assert_eq!(
        actual[lay::OFF_ATTACH_SEQ..lay::OFF_ATTACH_SEQ + 8],
        1u64.to_ne_bytes()
    );
    drop(region);
    assert!(!Path::new(&shm_path(id)).exists());
}

#[test]
fn read_only_view_equals_the_store_snapshot() {
    let id = unique_base_id();
    let _guard = ShmGuard(vec![id]);
    let store = Store::with_region(
        Region::open(opts(id, 0, OpenMode::Create)).expect("create"),
        &[],
    );
    store.counter("a").add(3);
    store.gauge("b").add(-2);
    store.histogram("c").record_ms(12.0);
    let view = RegionView::open(&Backing::for_base_id(id)).expect("view");
    let report = view.read();
    assert_eq!(report.snapshot().stats, store.snapshot().stats);
    assert_eq!(report.generations.len(), 1);
    assert!(report.generations[0].live, "liveness is visible read-only");
    assert_eq!(report.generations[0].pid, std::process::id());
    let b = report.stats.iter().find(|r| r.name == "b").expect("gauge");
    assert_eq!(b.shares, vec![(0, -2)]);
    store.detach().expect("detach");
    assert!(matches!(
        RegionView::open(&Backing::for_base_id(id)),
        Err(Error::NoRegion { .. })
    ));
}

#[test]
fn full_region_and_long_names_fall_back_to_process_memory() {
    let id = unique_base_id();
    let _guard = ShmGuard(vec![id]);
    let mut o = opts(id, 0, OpenMode::Create);
    o.max_stats = 3;
    let store = Store::with_region(Region::open(o).expect("create"), &[]);
    // Slot 0 is stats.overflow.
    store.counter("one").inc();
    store.counter("two").inc();
    store.counter("three").add(4);
    store.counter(&"x".repeat(200)).inc();
    let snap = store.snapshot();
    assert_eq!(value(&snap, "three"), Some(Value::Counter(4)));
    assert_eq!(value(&snap, OVERFLOW_COUNTER), Some(Value::Counter(2)));
    assert_eq!(store.region().map(Region::usage), Some((3, 3)));
    store.detach().expect("detach");
    assert!(!Path::new(&shm_path(id)).exists());
}

#[test]
fn dynamic_base_id_skips_taken_ones() {
    let id = unique_base_id();
    let _guard = ShmGuard(vec![id]);
    assert_eq!(pick_free_base_id(id, id + 5).expect("free"), id);
    let region = Region::open(opts(id, 0, OpenMode::Create)).expect("create");
    assert_eq!(pick_free_base_id(id, id + 5).expect("free"), id + 1);
    assert!(matches!(
        pick_free_base_id(id, id),
        Err(Error::NoFreeBaseId { .. })
    ));
    drop(region);
    assert!(!Path::new(&shm_path(id)).exists());
}

mod hostile;
