//! The worker binary's own refusals (and, as a side effect of this file existing,
//! `cargo test` builds the binary for the cross-binary tests in tests/).

use std::process::Command;

#[test]
fn gpus_all_without_a_gpu_is_refused_clearly() {
    if pastiche_engine::tch::Cuda::device_count() > 0 {
        return; // a GPU machine: nothing to refuse
    }
    let output = Command::new(env!("CARGO_BIN_EXE_pastiche-worker"))
        .args(["--gpus", "all"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("sees no GPU"));
}

#[test]
fn an_unreachable_coordinator_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = Command::new(env!("CARGO_BIN_EXE_pastiche-worker"))
        .args([
            "--coordinator",
            &format!("http://127.0.0.1:{port}"),
            "--device",
            "cpu",
        ])
        .args(["--connect-timeout", "1s", "--store"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
}
