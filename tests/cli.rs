//! The `storefront` binary: bad configuration is refused with one line and a failing status;
//! a node runs on a fresh data dir and stops cleanly on SIGTERM.
// Test code: an unmet expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn storefront() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_storefront"));
    // The test's own environment must not configure the node.
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("STOREFRONT_")) {
        command.env_remove(name);
    }
    command
}

fn refused(args: &[&str], envs: &[(&str, &str)]) -> String {
    let output = storefront().args(args).envs(envs.iter().copied()).output().unwrap();
    assert!(!output.status.success(), "{args:?} {envs:?} was accepted");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_configuration_is_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[entities]\nshard_cuont = 3\n").unwrap();
    let message = refused(&["serve", "--config", bad.to_str().unwrap()], &[]);
    assert!(message.contains("entities.shard_cuont"), "{message}");

    std::fs::write(&bad, "http_addr = 8080\n").unwrap();
    assert!(refused(&["serve", "--config", bad.to_str().unwrap()], &[]).contains("http_addr"));

    std::fs::write(&bad, "not toml [").unwrap();
    assert!(refused(&["serve", "--config", bad.to_str().unwrap()], &[]).contains("not valid toml"));

    let missing = dir.path().join("missing.toml");
    assert!(
        refused(&["serve", "--config", missing.to_str().unwrap()], &[]).contains("cannot read")
    );

    let message = refused(&["serve"], &[("STOREFRONT_ENTITIES__SHARD_COUNT", "0")]);
    assert!(message.contains("entities.shard_count"), "{message}");
    let message = refused(&["serve", "--seeds", "n2:7000"], &[]);
    assert!(message.contains("shared store"), "{message}");
}

#[test]
fn a_node_starts_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = storefront()
        .args(["serve", "--data-dir", dir.path().to_str().unwrap()])
        .env("STOREFRONT_LOG__JSON", "true")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(node.stdout.take().unwrap());
    let mut lines = stdout.lines();
    let running = lines.by_ref().map(Result::unwrap).find(|line| line.contains("node running"));
    assert!(running.is_some(), "the node never reported running");
    let status = Command::new("kill").args(["-TERM", &node.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(node.wait().unwrap().success(), "a SIGTERM stop must exit 0");
    assert!(dir.path().join("store").is_dir(), "the embedded store lives in the data dir");
}
