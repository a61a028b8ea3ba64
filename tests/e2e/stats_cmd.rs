//! `baton stats` exit codes that need a region on disk: a file that is not a Baton stats region
//! exits 6 ("corrupt region"), with one line on stderr.

use crate::support::*;

#[test]
fn baton_stats_on_a_corrupt_region_exits_6() {
    let dir = TempDir::new("corrupt-region");
    let region = dir.file("baton.sock.stats");
    std::fs::write(&region, vec![0x5a_u8; 64 * 1024]).expect("write region");
    let (status, out, err) = run_baton(&[
        "stats",
        "--base-id",
        "1",
        "--hot-restart-file",
        &region.display().to_string(),
    ]);
    assert_eq!(status.code(), Some(6), "stdout {out:?} stderr {err:?}");
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains("not a Baton stats region"), "{err:?}");
}
