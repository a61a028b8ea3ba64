use super::*;

fn run(args: &[&str]) -> Parsed {
    parse(
        std::iter::once("baton")
            .chain(args.iter().copied())
            .map(OsString::from),
    )
}

fn ok(args: &[&str]) -> Options {
    match run(args) {
        Parsed::Run(o) => o,
        other => panic!("{args:?}: expected options, got {other:?}"),
    }
}

/// What one argument vector must produce.
enum Expect {
    Run(fn(&Options) -> bool),
    /// Exit code 1, one stderr line containing the substring, empty stdout.
    Error(&'static str),
    /// Exit code 0 with stdout containing the substring.
    Print(&'static str),
}

#[test]
fn argument_table() {
    use Expect::*;
    let cases: Vec<(&[&str], Expect)> = vec![
        (
            &["-c", "a.yaml"],
            Run(|o| {
                o.config_path == Some(PathBuf::from("a.yaml"))
                    && o.config_yaml.is_none()
                    && o.mode == Mode::Serve
                    && o.log_level == LogLevel::Info
                    && o.base_id == 0
                    && o.restart_epoch == 0
                    && o.drain_time == Duration::from_secs(600)
                    && o.parent_shutdown_time == Duration::from_secs(900)
                    && o.drain_strategy == DrainStrategy::Gradual
                    && o.socket_path == DEFAULT_SOCKET_PATH
                    && o.socket_mode == 0
                    && o.max_stats == 16_384
                    && o.max_obj_name_len == 60
                    && o.concurrency >= 1
                    && !o.disable_hot_restart
            }),
        ),
        (
            &["--config-path", "b.yaml"],
            Run(|o| o.config_path == Some(PathBuf::from("b.yaml"))),
        ),
        (
            &["--config-path=c.yaml"],
            Run(|o| o.config_path == Some(PathBuf::from("c.yaml"))),
        ),
        (
            &["--config-yaml", "admin: {}"],
            Run(|o| o.config_yaml.as_deref() == Some("admin: {}")),
        ),
        (
            &["-c", "a", "--mode", "validate"],
            Run(|o| o.mode == Mode::Validate),
        ),
        (
            &["-c", "a", "--mode", "init_only"],
            Error("init_only is not supported"),
        ),
        (
            &["-c", "a", "--mode", "bogus"],
            Error("invalid value 'bogus' for '--mode"),
        ),
        (
            &["-c", "a", "-l", "warn"],
            Run(|o| o.log_level == LogLevel::Warning),
        ),
        (
            &["-c", "a", "--log-level", "critical"],
            Run(|o| o.log_level == LogLevel::Critical),
        ),
        (
            &["-c", "a", "--log-level", "off"],
            Run(|o| o.log_level == LogLevel::Off),
        ),
        (
            &["-c", "a", "--log-level", "loud"],
            Error("expected one of trace"),
        ),
        (
            &["-c", "a", "--log-path", "/tmp/x.log"],
            Run(|o| o.log_path == Some(PathBuf::from("/tmp/x.log"))),
        ),
        (
            &["-c", "a", "--concurrency", "3"],
            Run(|o| o.concurrency == 3),
        ),
        (
            &["-c", "a", "--concurrency", "0"],
            Run(|o| o.concurrency == 1),
        ),
        (
            &["-c", "a", "--concurrency", "-2"],
            Error("'--concurrency <N>'"),
        ),
        (
            &["-c", "a", "--concurrency", "many"],
            Error("invalid value 'many'"),
        ),
        (&["-c", "a", "--base-id", "7"], Run(|o| o.base_id == 7)),
        (
            &["-c", "a", "--base-id", "4294967296"],
            Error("invalid value '4294967296'"),
        ),
        (
            &["-c", "a", "--restart-epoch", "2"],
            Run(|o| o.restart_epoch == 2),
        ),
        (
            &[
                "-c",
                "a",
                "--use-dynamic-base-id",
                "--base-id-path",
                "/tmp/id",
            ],
            Run(|o| o.use_dynamic_base_id && o.base_id_path == Some(PathBuf::from("/tmp/id"))),
        ),
        (
            &["-c", "a", "--base-id-path", "/tmp/id"],
            Run(|o| !o.use_dynamic_base_id),
        ),
        (
            &["-c", "a", "--use-dynamic-base-id", "--restart-epoch", "1"],
            Error("cannot use --restart-epoch=1 with --use-dynamic-base-id"),
        ),
        (
            &["-c", "a", "--use-dynamic-base-id", "--restart-epoch", "0"],
            Run(|o| o.use_dynamic_base_id),
        ),
        (
            &["-c", "a", "--disable-hot-restart", "--restart-epoch", "3"],
            Error("cannot use --restart-epoch=3 with --disable-hot-restart"),
        ),
        (
            &["-c", "a", "--disable-hot-restart"],
            Run(|o| o.disable_hot_restart),
        ),
        (
            &[
                "-c",
                "a",
                "--drain-time-s",
                "5",
                "--parent-shutdown-time-s",
                "10",
            ],
            Run(|o| {
                o.drain_time == Duration::from_secs(5)
                    && o.parent_shutdown_time == Duration::from_secs(10)
            }),
        ),
        // Envoy only advises drain time <= parent shutdown time; it does not reject the reverse.
        (
            &[
                "-c",
                "a",
                "--drain-time-s",
                "20",
                "--parent-shutdown-time-s",
                "10",
            ],
            Run(|o| o.drain_time > o.parent_shutdown_time),
        ),
        (
            &["-c", "a", "--drain-strategy", "immediate"],
            Run(|o| o.drain_strategy == DrainStrategy::Immediate),
        ),
        (
            &["-c", "a", "--drain-strategy", "fast"],
            Error("expected gradual or immediate"),
        ),
        (
            &[
                "-c",
                "a",
                "--socket-path",
                "/run/b.sock",
                "--socket-mode",
                "660",
            ],
            Run(|o| o.socket_path == "/run/b.sock" && o.socket_mode == 0o660),
        ),
        (
            &["-c", "a", "--socket-path", "/run/b.sock"],
            Run(|o| o.socket_mode == 0o600),
        ),
        (
            &["-c", "a", "--socket-mode", "0o640", "--socket-path", "/s"],
            Run(|o| o.socket_mode == 0o640),
        ),
        (
            &["-c", "a", "--socket-mode", "1777"],
            Error("expected octal permission bits"),
        ),
        (
            &["-c", "a", "--socket-mode", "689"],
            Error("expected octal permission bits"),
        ),
        (
            &["-c", "a", "--socket-path", ""],
            Error("--socket-path must not be empty"),
        ),
        (
            &[
                "-c",
                "a",
                "--skip-hot-restart-on-no-parent",
                "--skip-hot-restart-parent-stats",
            ],
            Run(|o| o.skip_hot_restart_on_no_parent && o.skip_hot_restart_parent_stats),
        ),
        (&["-c", "a"], Run(|o| !o.disable_connection_handover)),
        (
            &["-c", "a"],
            Run(|o| o.rollback_window == Duration::from_secs(DEFAULT_ROLLBACK_WINDOW_S)),
        ),
        (
            &["-c", "a", "--rollback-window-s", "0"],
            Run(|o| o.rollback_window.is_zero()),
        ),
        (
            &["-c", "a"],
            Run(|o| {
                o.rollback_gate
                    == GateOptions {
                        failure_percent: DEFAULT_GATE_FAILURE_PERCENT,
                        min_requests: DEFAULT_GATE_MIN_REQUESTS,
                    }
            }),
        ),
        (
            &[
                "-c",
                "a",
                "--rollback-gate-failure-percent",
                "100",
                "--rollback-gate-min-requests",
                "5",
            ],
            Run(|o| o.rollback_gate.failure_percent == 100 && o.rollback_gate.min_requests == 5),
        ),
        (
            &["-c", "a", "--rollback-gate-failure-percent", "101"],
            Error("101 is not in 0..=100"),
        ),
        (
            &["-c", "a", "--rollback-gate-min-requests", "0"],
            Error("0 is not in 1.."),
        ),
        (
            &["-c", "a", "--disable-connection-handover"],
            Run(|o| o.disable_connection_handover),
        ),
        (
            &[
                "-c",
                "a",
                "--hot-restart-file",
                "/dev/shm/b",
                "--socket-path",
                "/s",
            ],
            Run(|o| o.hot_restart_file == Some(PathBuf::from("/dev/shm/b"))),
        ),
        (
            &[
                "-c",
                "a",
                "--service-cluster",
                "front",
                "--service-node",
                "n1",
            ],
            Run(|o| {
                o.service_cluster.as_deref() == Some("front")
                    && o.service_node.as_deref() == Some("n1")
            }),
        ),
        (
            &["-c", "a", "--max-stats", "100", "--max-obj-name-len", "128"],
            Run(|o| o.max_stats == 100 && o.max_obj_name_len == 128),
        ),
        (
            &["-c", "a", "--max-stats", "0"],
            Error("must be between 1 and 100000000"),
        ),
        (
            &["-c", "a", "--max-stats", "100000001"],
            Error("must be between 1 and 100000000"),
        ),
        (
            &["-c", "a", "--max-obj-name-len", "59"],
            Error("must be between 60 and 4096"),
        ),
        (&[], Error("no configuration: give -c/--config-path")),
        (&["--mode", "validate"], Error("no configuration")),
        (&["-c", "a", "--foo"], Error("unexpected argument '--foo'")),
        (
            &["-c"],
            Error("a value is required for '--config-path <PATH>'"),
        ),
        (
            &["-c", "a", "-c", "b"],
            Error("cannot be used multiple times"),
        ),
        (&["--version"], Print("baton version: ")),
        (&["--help"], Print("--config-path")),
        (&["-h"], Print("Usage: baton")),
        (&["--hot-restart-version"], Print("baton.1.1.16384.60\n")),
        (
            &[
                "--hot-restart-version",
                "--max-stats",
                "10",
                "--max-obj-name-len",
                "70",
            ],
            Print("baton.1.1.10.70\n"),
        ),
        (
            &["--hot-restart-version", "--disable-hot-restart"],
            Print("disabled\n"),
        ),
    ];
    assert!(cases.len() >= 25);
    for (args, expect) in cases {
        let got = run(args);
        match (expect, got) {
            (Run(check), Parsed::Run(o)) => assert!(check(&o), "{args:?}: options {o:?}"),
            (
                Error(want),
                Parsed::Exit {
                    code,
                    stdout,
                    stderr,
                },
            ) => {
                assert_eq!(code, 1, "{args:?}");
                assert!(stdout.is_empty(), "{args:?}: {stdout}");
                assert!(stderr.contains(want), "{args:?}: {stderr:?} lacks {want:?}");
                assert!(stderr.starts_with("baton: error: "), "{args:?}: {stderr:?}");
                assert!(stderr.ends_with(" (see --help)\n"), "{args:?}: {stderr:?}");
                assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
            }
            (
                Print(want),
                Parsed::Exit {
                    code,
                    stdout,
                    stderr,
                },
            ) => {
                assert_eq!(code, 0, "{args:?}");
                assert!(stderr.is_empty(), "{args:?}: {stderr}");
                assert!(stdout.contains(want), "{args:?}: {stdout:?} lacks {want:?}");
            }
            (_, got) => panic!("{args:?}: unexpected {got:?}"),
        }
    }
}

#[test]
fn version_is_one_line() {
    match run(&["--version"]) {
        Parsed::Exit {
            code: 0, stdout, ..
        } => {
            assert_eq!(stdout.lines().count(), 1);
            assert!(stdout.starts_with(&format!("baton version: {}/", env!("CARGO_PKG_VERSION"))));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn default_concurrency_is_cpu_count() {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(ok(&["-c", "a"]).concurrency, cpus);
}

#[test]
fn json_has_envoy_shape() {
    let o = ok(&[
        "-c",
        "/etc/b.yaml",
        "--concurrency",
        "2",
        "--base-id",
        "3",
        "-l",
        "warn",
        "--service-cluster",
        "front",
        "--drain-time-s",
        "45",
        "--drain-strategy",
        "immediate",
    ]);
    let j = o.to_json();
    assert_eq!(j["base_id"], "3");
    assert_eq!(j["concurrency"], 2);
    assert_eq!(j["config_path"], "/etc/b.yaml");
    assert_eq!(j["config_yaml"], "");
    assert_eq!(j["log_level"], "warning");
    assert_eq!(j["log_path"], "");
    assert_eq!(j["service_cluster"], "front");
    assert_eq!(j["service_node"], "");
    assert_eq!(j["mode"], "Serve");
    assert_eq!(j["restart_epoch"], 0);
    assert_eq!(j["drain_time"], "45s");
    assert_eq!(j["parent_shutdown_time"], "900s");
    assert_eq!(j["drain_strategy"], "Immediate");
    assert_eq!(j["disable_hot_restart"], false);
    assert_eq!(j["use_dynamic_base_id"], false);
    assert_eq!(j["socket_path"], DEFAULT_SOCKET_PATH);
    assert_eq!(j["socket_mode"], 0);
    assert_eq!(j["max_stats"], "16384");
    assert_eq!(j["rollback_window"], "10s");
}

#[test]
fn hot_restart_version_tracks_layout() {
    assert_ne!(
        hot_restart_version(16_384, 60),
        hot_restart_version(16_384, 61)
    );
    assert_ne!(
        hot_restart_version(16_384, 60),
        hot_restart_version(16_385, 60)
    );
    let o = ok(&["-c", "a", "--disable-hot-restart"]);
    assert_eq!(o.hot_restart_version(), "disabled");
}
