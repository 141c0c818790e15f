//! API fuzzing: schemathesis generates requests from the served OpenAPI document and checks that
//! no answer is a server error (5xx other than the contract's 503/504), that every status code and
//! content type is documented, and that every body matches its schema (so errors are in the
//! contract's shape). `scripts/test.sh` installs schemathesis into `~/.cache/dcc/schemathesis`.
//!
//! Deterministic: the fleet routes that change state (drain, undrain) are left out — fuzzed, they
//! would drain this server's only worker and every later fast job would find no worker, in an
//! order that depends on the fuzzer's — and are covered by their own tests (`reliability.rs`).
//! The client's request timeout is above the server's longest wait, so a slow answer is the
//! server's 504, never a client-side timeout.

use std::process::Command;

use dcc_e2e::{Dcc, Redis, Role};

/// The server's longest wait (`wait: true`, `/run`, long-polls).
const MAX_WAIT_SECS: u64 = 30;

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let bin = std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/dcc/schemathesis/bin/schemathesis");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/test.sh, which installs it",
        bin.display()
    );
    let redis = Redis::start();
    // Waits long enough that fuzzed jobs (whose made-up images fail fast) end before a 504. The
    // server declares its one worker's shape (2 CPUs, no GPU, 4 GiB), so a fuzzed job no worker
    // can run is refused at submit (422 UNSCHEDULABLE) rather than answered 503 NO_WORKER, the
    // contract's answer that the fuzzer's server-error check cannot tell from a crash (a GPU job
    // to `/run` failed one run of the stateful phase that way).
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_CPUS", 2)
        .env("DCC_MEMORY_MB", 4096)
        .env("DCC_MAX_CPUS", 2)
        .env("DCC_MAX_GPUS", 0)
        .env("DCC_MAX_MEMORY_MB", 4096)
        .env("DCC_MAX_WAIT_SECS", MAX_WAIT_SECS)
        .env("DCC_LOG", "warn,dcc=info")
        .start()
        .await;
    let url = format!("{}/api/v1/openapi.json", dcc.api().base);
    let worker_health = || async { dcc.api().get("/api/v1/workers").await.body["workers"][0]["health"].clone() };
    let report = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args([
                "run",
                &url,
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args([
                "--max-examples",
                "25",
                "--exclude-path",
                "/api/v1/ws",
                "--exclude-path-regex",
                "^/api/v1/workers/.*/(un)?drain$",
                "--request-timeout",
                &(MAX_WAIT_SECS + 15).to_string(),
                "--max-response-time",
                &(MAX_WAIT_SECS + 10).to_string(),
                "--seed",
                "1",
            ])
            .env("SCHEMATHESIS_HOOKS", "")
            .current_dir(report.path())
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = text.lines().rev().take(25).collect();
    println!("{}", summary.into_iter().rev().collect::<Vec<_>>().join("\n"));
    assert_eq!(worker_health().await, "HEALTHY", "the fuzz run changed the fleet");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
