//! The `dcc` client commands against a real server: exit codes that scripts can use, outputs
//! written to disk, plain and `--json` output.

use std::process::Command;

use dcc_e2e::{Dcc, IMAGE, Redis, dcc_bin};
use serde_json::{Value, json};

struct Cli {
    url: String,
    dir: tempfile::TempDir,
}

impl Cli {
    fn job(&self, name: &str, job: Value) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, job.to_string()).unwrap();
        p.display().to_string()
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(dcc_bin())
            .args(args)
            .env("DCC_URL", &self.url)
            .output()
            .expect("dcc runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[tokio::test]
async fn submit_wait_exit_codes_and_json() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let cli = Cli {
        url: dcc.api().base.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let ok = cli.job("ok.json", json!({"image": IMAGE, "command": ["sh", "-c", "echo hi"]}));
    let (code, out, _) = cli.run(&["submit", &ok, "--wait"]);
    assert_eq!((code, out.as_str()), (0, "hi\n"));
    let three = cli.job("three.json", json!({"image": IMAGE, "command": ["sh", "-c", "exit 3"]}));
    assert_eq!(cli.run(&["submit", &three, "--wait"]).0, 3, "the job's exit code");
    let slow = cli.job(
        "slow.json",
        json!({"image": IMAGE, "command": ["sleep", "30"], "parameters": {"maxDurationSecs": 1}}),
    );
    assert_eq!(cli.run(&["submit", &slow, "--wait"]).0, 124, "timed out");
    let bad = cli.job("bad.json", json!({"image": "no_such_image_here"}));
    assert_eq!(
        cli.run(&["submit", &bad, "--wait"]).0,
        125,
        "failed without an exit code"
    );
    let (code, out, _) = cli.run(&["submit", &ok, "--wait", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).expect("--json prints the job view");
    assert_eq!(v["status"], "succeeded");
    let id = v["jobId"].as_str().unwrap().to_string();
    let (_, out, _) = cli.run(&["status", &id, "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["jobId"], json!(id));
    let (_, out, _) = cli.run(&["logs", &id]);
    assert_eq!(out, "hi\n");
    let (_, out, _) = cli.run(&["ls", "--json", "--status", "failed"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["jobs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (code, _, err) = cli.run(&[
        "submit",
        &cli.job("invalid.json", json!({"image": IMAGE, "cmd": ["x"]})),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("INVALID_JOB") && err.contains("cmd"), "{err}");
    // A job id alone on stdout without --wait, then cancel and rm.
    let long = cli.job("long.json", json!({"image": IMAGE, "command": ["sleep", "60"]}));
    let (_, out, _) = cli.run(&["submit", &long]);
    let long_id = out.trim().to_string();
    let (code, out, _) = cli.run(&["cancel", &long_id]);
    assert_eq!((code, out.trim()), (0, format!("{long_id} cancelled").as_str()));
    assert_eq!(cli.run(&["rm", &long_id]).0, 0);
    assert_eq!(cli.run(&["status", &long_id]).0, 2, "gone");
}

#[tokio::test]
async fn run_writes_outputs_to_a_folder() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let cli = Cli {
        url: dcc.api().base.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let job = cli.job(
        "fast.json",
        json!({"image": IMAGE, "command": ["sh", "-c", "mkdir -p /outputs/d && cp /inputs/x /outputs/d/y && echo done"],
               "inputs": [{"name": "x", "value": "AAEC/w==", "encoding": "base64"}]}),
    );
    let out_dir = cli.dir.path().join("out");
    let (code, out, _) = cli.run(&["run", &job, "--out", &out_dir.display().to_string()]);
    assert_eq!((code, out.as_str()), (0, "done\n"));
    assert_eq!(std::fs::read(out_dir.join("d/y")).unwrap(), vec![0u8, 1, 2, 255]);
    let (_, out, _) = cli.run(&["queues", "--json"]);
    assert!(serde_json::from_str::<Value>(&out).unwrap()["cpu"].is_object());
    let (_, out, _) = cli.run(&["workers"]);
    assert!(out.contains("HEALTHY"), "{out}");
}

/// A client in a pipeline whose reader goes away (`| head`) exits quietly with 0, not a panic.
#[tokio::test]
async fn a_closed_pipe_ends_the_client_quietly() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    // 2 MB of stdout: far over a pipe's buffer, so the writer meets the closed pipe.
    let big = api
        .run(json!({"image": IMAGE, "command": ["sh", "-c", "yes line | head -c 2000000"]}))
        .await;
    let id = big["jobId"].as_str().unwrap().to_string();
    for i in 0..5 {
        api.submit_id(json!({"image": IMAGE, "command": ["true"], "meta": {"i": i}}))
            .await;
    }
    for cmd in [format!("logs {id}"), "ls".into(), format!("status {id}")] {
        let out = Command::new("bash")
            .args([
                "-c",
                &format!("set -o pipefail; {} {cmd} | head -1 >/dev/null", dcc_bin().display()),
            ])
            .env("DCC_URL", &api.base)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "dcc {cmd} | head: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "dcc {cmd}: {err}"
        );
    }
}

/// `--depends-on` chains jobs from the shell; a failed first step fails the second (exit 125).
#[tokio::test]
async fn submit_depends_on_chains_jobs() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let cli = Cli {
        url: dcc.api().base.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let first = cli.job(
        "first.json",
        json!({"image": IMAGE, "command": ["sh", "-c", "sleep 1; exit 4"]}),
    );
    let (code, id, err) = cli.run(&["submit", &first]);
    assert_eq!(code, 0, "{err}");
    let id = id.trim();
    let then = cli.job(
        "then.json",
        json!({"image": IMAGE, "command": ["sh", "-c", "echo then"]}),
    );
    let (code, out, _) = cli.run(&["submit", &then, "--depends-on", &format!("{id}:ended"), "--wait"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "then\n"),
        "runs once the first ended, however"
    );
    let (code, _, err) = cli.run(&["submit", &then, "--depends-on", id, "--wait"]);
    assert_eq!(
        code, 125,
        "the first failed: DEPENDENCY_FAILED, no exit code of its own ({err})"
    );
    assert!(err.contains("DEPENDENCY_FAILED"), "{err}");
    let (code, _, err) = cli.run(&["submit", &then, "--depends-on", &format!("{id}:maybe")]);
    assert_eq!(code, 2, "{err}");
}

/// `--array N [--parallelism P]` submits an array job; `--wait` waits for every child.
#[tokio::test]
async fn submit_array_waits_for_every_child() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let cli = Cli {
        url: dcc.api().base.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let job = cli.job(
        "sweep.json",
        json!({"image": IMAGE, "command": ["sh", "-c", "exit $((DCC_ARRAY_INDEX == 2))"]}),
    );
    let (code, out, err) = cli.run(&["submit", &job, "--array", "3", "--parallelism", "2", "--wait", "--json"]);
    assert_eq!(
        code, 125,
        "child 2 failed: the array failed without an exit code of its own ({err})"
    );
    let v: Value = serde_json::from_str(&out).expect("the array's view");
    assert_eq!(
        (
            v["array"]["size"].as_u64(),
            v["array"]["parallelism"].as_u64(),
            v["array"]["children"]["failed"].as_u64()
        ),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(v["error"]["code"], "CHILDREN_FAILED");
    assert_eq!(
        cli.run(&["submit", &job, "--parallelism", "2"]).0,
        2,
        "--parallelism needs --array"
    );
}

/// `dcc top`: one plain frame when asked (`--once`, or piped), and in a pseudo-terminal (util-linux
/// `script` gives it one, as an operator's ssh session would) frames redrawn in place every
/// second, with the queues, the worker, the last minutes' history and the jobs just run, their
/// failures by code and image.
#[tokio::test]
async fn top_shows_the_fleet_and_redraws_it_in_a_terminal() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let cli = Cli {
        url: dcc.api().base.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let ok = cli.job("ok.json", json!({"image": IMAGE, "command": ["true"]}));
    let three = cli.job("three.json", json!({"image": IMAGE, "command": ["sh", "-c", "exit 3"]}));
    for (job, code) in [(&ok, 0), (&ok, 0), (&three, 3)] {
        assert_eq!(cli.run(&["submit", job, "--wait"]).0, code);
    }
    let (code, frame, err) = cli.run(&["top", "--once"]);
    assert_eq!(code, 0, "{err}");
    for part in [
        "QUEUE",
        "cpu",
        "WORKERS 1",
        &dcc.worker_id,
        "LAST 3 JOBS   failed 1   succeeded 2",
        "FAILURES BY CODE   NONZERO_EXIT 1",
        &format!("FAILURES BY IMAGE  {IMAGE} 1"),
        "HISTORY cpu (per minute)",
    ] {
        assert!(frame.contains(part), "{part:?} missing from:\n{frame}");
    }
    // The history's lines (HH:MM, then the counts) add up to the three jobs, one of them failed.
    let column = |i: usize| -> u64 {
        frame
            .lines()
            .filter(|l| l.len() > 5 && l.as_bytes()[2] == b':' && l[..2].chars().all(|c| c.is_ascii_digit()))
            .map(|l| l.split_whitespace().nth(i).unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!((column(1), column(2), column(3), column(4)), (3, 3, 2, 1), "{frame}");
    assert!(
        !frame.contains('\x1b'),
        "a frame for a pipe has no escape codes:\n{frame}"
    );

    let command = format!("{} top --interval 1", dcc_bin().display());
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("DCC_URL", &cli.url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let mut stdout = child.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let text = dcc_e2e::eventually(std::time::Duration::from_secs(30), "three frames drawn", || async {
        let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
        (text.matches("\x1b[H\x1b[2J").count() >= 3).then_some(text)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let last = text.rsplit("\x1b[H\x1b[2J").next().unwrap();
    assert!(last.contains("succeeded 2"), "the last frame:\n{last}");
    assert!(last.contains(&dcc.worker_id), "the last frame:\n{last}");
}
