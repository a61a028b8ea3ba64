//! The leniencies Envoy 1.40 has in reading a bootstrap, end to end: what `envoy --mode
//! validate` accepts (and rejects) the `baton` binary accepts (and rejects) too, and what a
//! running Envoy shows (auto-generated listener names, `node` in `/server_info`, metadata in
//! `/config_dump`) a running Baton shows the same way.

use crate::support::*;

/// `baton --mode validate -c <file>` on `text`.
fn validate(name: &str, text: &str) -> (std::process::ExitStatus, String, String) {
    let dir = TempDir::new("lenient");
    let path = dir.file(name);
    std::fs::write(&path, text).unwrap();
    run_baton(&["--mode", "validate", "-c", path.to_str().unwrap()])
}

#[test]
fn an_empty_config_file_is_an_error_and_braces_are_an_empty_bootstrap() {
    // Envoy: "error initializing configuration 'empty.yaml': Unable to convert YAML as JSON".
    for text in ["", "# just a comment\n"] {
        let (status, stdout, stderr) = validate("empty.yaml", text);
        assert_eq!(status.code(), Some(1), "{text:?}: {stdout}");
        assert!(stderr.contains("holds no configuration"), "{stderr}");
    }
    let (status, stdout, stderr) = validate("braces.yaml", "{}\n");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.ends_with("braces.yaml' OK\n"), "{stdout}");
}
