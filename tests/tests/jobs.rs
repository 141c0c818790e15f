//! Standard jobs end to end through the HTTP API: real Redis, real Docker, the real binary.
//! Ports the 2018 system's job tests (exit codes, wait, logs, inputs, outputs, multipart,
//! custom ids, 404s, timeout) and adds cancel, delete, limits and clean-up checks.

use std::time::Duration;

use base64::Engine;
use dcc_e2e::proxy::TcpProxy;
use dcc_e2e::{Dcc, IMAGE, Redis, Role, assert_no_redis_trace, containers_of, containers_of_job, eventually, sh};
use serde_json::json;

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn exit_codes_and_logs() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();

    let ok = api.run(sh("exit 0")).await;
    assert_eq!(ok["status"], "succeeded");
    assert_eq!(ok["exitCode"], 0);
    assert_eq!(ok["error"], json!(null));
    assert_eq!(ok["attempt"], 1);
    assert!(ok["imageDigest"].as_str().unwrap().starts_with("sha256:"));
    assert!(ok["stats"]["totalMs"].as_i64().unwrap() >= 0);

    let three = api.run(sh("exit 3")).await;
    assert_eq!(three["status"], "failed");
    assert_eq!(three["exitCode"], 3);
    assert_eq!(three["error"]["code"], "NONZERO_EXIT");

    // The command form (no shell script) with exit code 4.
    let four = api
        .run(json!({"image": IMAGE, "command": ["sh", "-c", "exit 4"]}))
        .await;
    assert_eq!(four["exitCode"], 4);

    // Every job knows its id and where its files are; a job's own env cannot change them.
    let me = api
        .run(
            json!({"image": IMAGE, "command": ["sh", "-c", "echo $DCC_JOB_ID $DCC_INPUTS $DCC_OUTPUTS"],
            "env": {"DCC_JOB_ID": "spoofed"}}),
        )
        .await;
    let me_id = me["jobId"].as_str().unwrap();
    assert_eq!(api.log(me_id, "stdout").await, format!("{me_id} /inputs /outputs\n"));

    // Multi-line stdout kept exactly; stdout and stderr kept apart.
    let logs = api
        .run(sh("printf 'line 1\\nline 2\\n\\nline 4'; echo oops >&2; echo more"))
        .await;
    let id = logs["jobId"].as_str().unwrap();
    assert_eq!(api.log(id, "stdout").await, "line 1\nline 2\n\nline 4more\n");
    assert_eq!(api.log(id, "stderr").await, "oops\n");
    // Removed right after the result is recorded (the client does not wait for it).
    eventually(Duration::from_secs(5), "no container left behind", || async {
        containers_of(&dcc.worker_id).is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn inputs_and_outputs_byte_exact() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let blob: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
    let job = json!({
        "image": IMAGE,
        "command": ["sh", "-c", "cat /inputs/a.txt; cp /inputs/data/blob.bin /outputs/copy.bin; mkdir -p /outputs/sub && echo -n made > /outputs/sub/new.txt"],
        "inputs": [
            {"name": "a.txt", "value": "hello input\n"},
            {"name": "data/blob.bin", "value": b64, "encoding": "base64"}
        ],
        "meta": {"owner": "test"}
    });
    let v = api.run(job).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let id = v["jobId"].as_str().unwrap();
    assert_eq!(api.log(id, "stdout").await, "hello input\n");
    assert_eq!(v["meta"], json!({"owner": "test"}));
    let mut names: Vec<_> = v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, vec!["copy.bin", "sub/new.txt"]);
    let (s, copy) = api.get_bytes(&format!("/api/v1/jobs/{id}/outputs/copy.bin")).await;
    assert_eq!(s, 200);
    assert_eq!(copy, blob, "binary output differs from the input");
    let (_, new) = api.get_bytes(&format!("/api/v1/jobs/{id}/outputs/sub/new.txt")).await;
    assert_eq!(new, b"made");
    let missing = api.get(&format!("/api/v1/jobs/{id}/outputs/nope.txt")).await;
    assert_eq!((missing.status, missing.code()), (404, "NOT_FOUND"));
}

#[tokio::test]
async fn inputs_are_read_only_and_no_network_by_default() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let v = api
        .run(
            json!({"image": IMAGE, "command": ["sh", "-c", "stat -c %a /inputs/x /inputs; ls /sys/class/net"],
                    "inputs": [{"name": "x", "value": "1"}]}),
        )
        .await;
    let out = api.log(v["jobId"].as_str().unwrap(), "stdout").await;
    assert!(out.starts_with("444\n555\n"), "modes: {out}");
    assert_eq!(
        out.lines().skip(2).collect::<Vec<_>>(),
        vec!["lo"],
        "only loopback without network: {out}"
    );
}

#[tokio::test]
async fn multipart_submission_with_two_files() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let one: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
    let two = b"\x00\xff\x00second".to_vec();
    let job = json!({"id": "multi-1", "image": IMAGE, "wait": true,
        "command": ["sh", "-c", "cp /inputs/one.bin /outputs/one.bin; cp /inputs/dir/two.bin /outputs/two.bin; cat /inputs/inline.txt"],
        "inputs": [{"name": "inline.txt", "value": "inline"}]});
    // Names with '/' go as plain quoted strings (reqwest would otherwise send RFC 5987 `name*=`).
    let form = reqwest::multipart::Form::new()
        .percent_encode_noop()
        .text("job", job.to_string())
        .part(
            "one.bin",
            reqwest::multipart::Part::bytes(one.clone()).file_name("whatever.bin"),
        )
        .part("dir/two.bin", reqwest::multipart::Part::bytes(two.clone()));
    let a = api.post_multipart("/api/v1/jobs", form).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["jobId"], "multi-1");
    assert_eq!(a.body["status"], "succeeded");
    assert_eq!(api.get_bytes("/api/v1/jobs/multi-1/outputs/one.bin").await.1, one);
    assert_eq!(api.get_bytes("/api/v1/jobs/multi-1/outputs/two.bin").await.1, two);
    assert_eq!(api.log("multi-1", "stdout").await, "inline");

    // The job part must come first.
    let form = reqwest::multipart::Form::new()
        .part("a.bin", reqwest::multipart::Part::bytes(vec![1]))
        .text("job", json!({"image": IMAGE}).to_string());
    let a = api.post_multipart("/api/v1/jobs", form).await;
    assert_eq!((a.status, a.code()), (400, "INVALID_JOB"));
    // A bad file name is refused with the field named.
    let form = reqwest::multipart::Form::new()
        .percent_encode_noop()
        .text("job", json!({"image": IMAGE}).to_string())
        .part("../escape", reqwest::multipart::Part::bytes(vec![1]));
    let a = api.post_multipart("/api/v1/jobs", form).await;
    assert_eq!((a.status, a.code()), (400, "INVALID_JOB"));
    assert_eq!(a.body["error"]["field"], "inputs.../escape");
    // Nothing of the refused submissions was left in storage: only multi-1 exists.
    let objects = dcc.storage.objects("jobs/").await;
    assert!(!objects.is_empty());
    assert!(objects.iter().all(|o| o.starts_with("multi-1/")), "{objects:?}");
}

#[tokio::test]
async fn custom_ids_follow_the_same_id_rule() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let job = json!({"id": "my-job.1", "image": IMAGE, "command": ["true"], "inputs": [{"name": "a", "value": "x"}]});
    let first = api.submit(job.clone()).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.body["jobId"], "my-job.1");
    let again = api.submit(job.clone()).await;
    assert_eq!(
        again.status, 200,
        "identical resubmission returns the existing job: {:?}",
        again.body
    );
    assert_eq!(again.body["jobId"], "my-job.1");
    let mut other = job.clone();
    other["inputs"][0]["value"] = json!("y");
    let conflict = api.submit(other).await;
    assert_eq!((conflict.status, conflict.code()), (409, "ID_CONFLICT"));
    assert_eq!(conflict.body["error"]["field"], "id");
    api.wait_status("my-job.1", "succeeded", LONG).await;
    // Only one submission's inputs remain staged.
    let staged: Vec<String> = dcc
        .storage
        .objects("jobs/my-job.1/")
        .await
        .into_iter()
        .filter(|o| o.starts_with("inputs-"))
        .collect();
    assert_eq!(staged.len(), 1, "{staged:?}");
}

#[tokio::test]
async fn unknown_jobs_are_404() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    for path in [
        "/api/v1/jobs/fakejob",
        "/api/v1/jobs/fakejob/stdout",
        "/api/v1/jobs/fakejob/stderr",
        "/api/v1/jobs/fakejob/outputs/x",
        "/api/v1/jobs/fakejob/wait",
        "/api/v1/jobs/bad%20id",
    ] {
        let a = api.get(path).await;
        assert_eq!((a.status, a.code()), (404, "NOT_FOUND"), "{path}: {:?}", a.body);
        assert!(a.body["error"]["message"].as_str().unwrap().contains("fakejob") || path.contains("bad"));
    }
    let a = api.post("/api/v1/jobs/fakejob/cancel", &json!({})).await;
    assert_eq!((a.status, a.code()), (404, "NOT_FOUND"));
    let a = api.call(reqwest::Method::DELETE, "/api/v1/jobs/fakejob", None).await;
    assert_eq!((a.status, a.code()), (404, "NOT_FOUND"));
    let a = api.get("/api/v1/nothing-here").await;
    assert_eq!((a.status, a.code()), (404, "NOT_FOUND"));
    let a = api.call(reqwest::Method::PUT, "/api/v1/jobs", None).await;
    assert_eq!((a.status, a.code()), (405, "METHOD_NOT_ALLOWED"));
}

#[tokio::test]
async fn timeout_kills_the_container() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let mut job = sh("echo started; sleep 60");
    job["parameters"] = json!({"maxDurationSecs": 1});
    let v = api.run(job).await;
    assert_eq!(v["status"], "timed_out");
    assert_eq!(v["error"]["code"], "TIMED_OUT");
    assert_eq!(v["exitCode"], json!(null));
    assert!(v["stats"]["runMs"].as_u64().unwrap() < 10_000);
    assert_eq!(api.log(v["jobId"].as_str().unwrap(), "stdout").await, "started\n");
    eventually(Duration::from_secs(5), "the killed container to be removed", || async {
        containers_of(&dcc.worker_id).is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn bad_image_fails_fast_with_image_not_found() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let v = api.run(json!({"image": "this_docker_image_is_fubar"})).await;
    assert_eq!(v["status"], "failed");
    assert_eq!(v["error"]["code"], "IMAGE_NOT_FOUND");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("this_docker_image_is_fubar")
    );
    assert_eq!(v["attempt"], 1, "a missing image is not retried");
    let v = api.run(json!({"image": IMAGE, "command": ["/no/such/program"]})).await;
    assert_eq!(v["status"], "failed");
    assert_eq!(v["error"]["code"], "CONTAINER_FAILED");
}

#[tokio::test]
async fn cancel_queued_and_running() {
    let redis = Redis::start();
    let dcc = Dcc::builder(dcc_e2e::Role::Server, &redis)
        .env("DCC_CPUS", 1)
        .start()
        .await;
    let api = dcc.api();
    let running = api.submit_id(sh("echo begun; sleep 120")).await;
    api.wait_status(&running, "running", LONG).await;
    let queued = api.submit_id(sh("echo should-not-run")).await;
    assert_eq!(api.job(&queued).await["status"], "queued");

    let a = api.post(&format!("/api/v1/jobs/{queued}/cancel"), &json!({})).await;
    assert_eq!(a.status, 202);
    let v = api.job(&queued).await;
    assert_eq!(v["status"], "cancelled");
    assert_eq!(v["attempt"], 0, "a cancelled queued job never starts");
    assert_eq!(v["startedAt"], json!(null));

    // Wait for the container to exist, then cancel: it is killed promptly.
    eventually(LONG, "the container to exist", || async {
        (!containers_of_job(&running).is_empty()).then_some(())
    })
    .await;
    let a = api.post(&format!("/api/v1/jobs/{running}/cancel"), &json!({})).await;
    assert_eq!(a.status, 202);
    assert_eq!(
        api.job(&running).await["status"],
        "cancelled",
        "cancelled is observable at once"
    );
    eventually(
        Duration::from_secs(5),
        "the cancelled container to be removed",
        || async { containers_of_job(&running).is_empty().then_some(()) },
    )
    .await;
    // Cancelling an ended job changes nothing.
    let a = api.post(&format!("/api/v1/jobs/{running}/cancel"), &json!({})).await;
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("cancelled")));
    // The slot is free again: the next job runs.
    let v = api.run(sh("echo next")).await;
    assert_eq!(v["status"], "succeeded");
    assert_eq!(api.job(&queued).await["status"], "cancelled");
}

#[tokio::test]
async fn delete_leaves_no_trace() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let v = api
        .run(json!({"image": IMAGE, "command": ["sh", "-c", "echo x > /outputs/o; echo log"], "inputs": [{"name": "i", "value": "1"}]}))
        .await;
    let id = v["jobId"].as_str().unwrap().to_string();
    assert!(!dcc.storage.objects(&format!("jobs/{id}/")).await.is_empty());
    let a = api
        .call(reqwest::Method::DELETE, &format!("/api/v1/jobs/{id}"), None)
        .await;
    assert_eq!(a.status, 204);
    assert_eq!(api.get(&format!("/api/v1/jobs/{id}")).await.status, 404);
    assert!(
        dcc.storage.objects(&format!("jobs/{id}/")).await.is_empty(),
        "files left in storage"
    );
    assert_no_redis_trace(&redis, &id).await;

    // Deleting a running job kills it and removes everything too.
    let running = api.submit_id(sh("echo going; sleep 120")).await;
    eventually(LONG, "the container to exist", || async {
        (!containers_of_job(&running).is_empty()).then_some(())
    })
    .await;
    let a = api
        .call(reqwest::Method::DELETE, &format!("/api/v1/jobs/{running}"), None)
        .await;
    assert_eq!(a.status, 204);
    eventually(Duration::from_secs(5), "the container to be removed", || async {
        containers_of_job(&running).is_empty().then_some(())
    })
    .await;
    // The worker may have been uploading logs when the delete came; it cleans up after itself.
    let prefix = format!("jobs/{running}/");
    eventually(
        Duration::from_secs(10),
        "the deleted job's files to be gone",
        || async { dcc.storage.objects(&prefix).await.is_empty().then_some(()) },
    )
    .await;
    assert_no_redis_trace(&redis, &running).await;
}

#[tokio::test]
async fn resource_limits_are_applied() {
    let redis = Redis::start();
    let dcc = Dcc::builder(dcc_e2e::Role::Server, &redis)
        .env("DCC_PIDS_LIMIT", 64)
        .start()
        .await;
    let api = dcc.api();
    let mut job = sh("sleep 120");
    job["parameters"] = json!({"cpus": 0.5, "memoryMb": 64});
    let id = api.submit_id(job).await;
    let info = dcc_e2e::inspect_job_container(&id).await;
    let hc = info.host_config.unwrap();
    assert_eq!(hc.memory, Some(64 * 1024 * 1024));
    assert_eq!(hc.memory_swap, Some(64 * 1024 * 1024));
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    assert_eq!(hc.pids_limit, Some(64));
    assert_ne!(hc.network_mode.as_deref(), Some("bridge"), "no network unless asked");
    assert_eq!(hc.privileged, Some(false));
    assert!(
        hc.security_opt
            .unwrap_or_default()
            .contains(&"no-new-privileges".to_string())
    );
    let labels = info.config.unwrap().labels.unwrap();
    assert_eq!(labels.get("dcc.job"), Some(&id));
    assert_eq!(labels.get("dcc.worker"), Some(&dcc.worker_id));
    assert_eq!(labels.get("dcc.attempt").map(String::as_str), Some("1"));
    api.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;

    // Memory over the limit is killed by the kernel and reported.
    let mut hog = sh("head -c 200000000 /dev/zero | tail > /dev/null");
    hog["parameters"] = json!({"memoryMb": 16});
    let v = api.run(hog).await;
    assert_eq!(v["status"], "failed", "{v}");
    eventually(Duration::from_secs(5), "no container left", || async {
        containers_of(&dcc.worker_id).is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn listing_pages_newest_first_and_filters() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut j = sh("true");
        j["id"] = json!(format!("list-{i}"));
        ids.push(api.submit_id(j).await);
    }
    let failing = api.run(sh("exit 1")).await["jobId"].as_str().unwrap().to_string();
    for id in &ids {
        api.wait_status(id, "succeeded", LONG).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/jobs?limit=2&cursor={c}"),
            None => "/api/v1/jobs?limit=2".to_string(),
        };
        let page = api.get(&path).await;
        assert_eq!(page.status, 200);
        for j in page.body["jobs"].as_array().unwrap() {
            seen.push(j["jobId"].as_str().unwrap().to_string());
        }
        match page.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut expected: Vec<String> = ids.iter().rev().cloned().collect();
    expected.insert(0, failing.clone());
    assert_eq!(seen, expected, "newest first, no repeats, nothing skipped");
    let failed = api.get("/api/v1/jobs?status=failed").await;
    let f: Vec<_> = failed.body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["jobId"].clone())
        .collect();
    assert_eq!(f, vec![json!(failing)]);
    let bad = api.get("/api/v1/jobs?status=done").await;
    assert_eq!((bad.status, bad.code()), (400, "INVALID_REQUEST"));
    assert_eq!(api.get("/api/v1/jobs?queue=gpu").await.body["jobs"], json!([]));
    // A cursor that is not one is refused, not taken as "start over" (a client would loop).
    for c in ["garbage", "12:", "x:list-1", "12:bad%20id"] {
        let bad = api.get(&format!("/api/v1/jobs?cursor={c}")).await;
        assert_eq!((bad.status, bad.code()), (400, "INVALID_REQUEST"), "{c}");
        assert_eq!(bad.body["error"]["field"], "cursor");
    }
}

#[tokio::test]
async fn long_poll_answers_when_the_job_ends() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let id = api.submit_id(sh("sleep 1; echo done")).await;
    let v = api.get(&format!("/api/v1/jobs/{id}/wait?timeoutSecs=60")).await;
    assert_eq!(v.status, 200);
    assert_eq!(v.body["status"], "succeeded");
    let slow = api.submit_id(sh("sleep 30")).await;
    let v = tokio::time::timeout(
        Duration::from_secs(5),
        api.get(&format!("/api/v1/jobs/{slow}/wait?timeoutSecs=1")),
    )
    .await
    .expect("a 1 s wait answers within 5 s");
    assert_eq!((v.status, v.code()), (504, "WAIT_TIMEOUT"));
    assert_eq!(v.body["jobId"], json!(slow));
    let bad = api.get(&format!("/api/v1/jobs/{slow}/wait?timeoutSecs=0")).await;
    assert_eq!((bad.status, bad.code()), (400, "INVALID_REQUEST"));
    api.call(reqwest::Method::DELETE, &format!("/api/v1/jobs/{slow}"), None)
        .await;
}

#[tokio::test]
async fn symbolic_links_in_outputs_are_skipped_not_followed() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let v = api
        .run(sh(
            "ln -s /etc/passwd /outputs/link; mkdir /outputs/d; ln -s / /outputs/d/root; echo real > /outputs/real",
        ))
        .await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let names: Vec<&str> = v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["real"]);
}

/// A job without inputs, as root and as another user: in copy mode the root job's folders are a
/// volume and a read-only tmpfs (no upload), the other user's are uploaded; in bind mode both are
/// bound. Either way `/inputs` is empty and read-only, `/outputs` writable, and exactly what was
/// left there comes back.
#[tokio::test]
async fn folders_of_jobs_without_inputs_as_root_and_as_another_user() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    for (image, uid) in [(IMAGE, "0"), (dcc_e2e::user_image(), "1000")] {
        let script = "id -u; ls -A /inputs | wc -l; touch /inputs/x 2>/dev/null && echo inputs-writable; \
                      echo out > /outputs/a.txt; mkdir /outputs/d && echo deep > /outputs/d/b.txt";
        let v = api.run(json!({"image": image, "command": ["sh", "-c", script]})).await;
        assert_eq!(v["status"], "succeeded", "{image}: {v}");
        let id = v["jobId"].as_str().unwrap();
        let out = api.log(id, "stdout").await;
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            vec![uid, "0"],
            "{image}: {out}"
        );
        let mut names: Vec<&str> = v["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["a.txt", "d/b.txt"], "{image}");
        let (s, a) = api.get_bytes(&format!("/api/v1/jobs/{id}/outputs/a.txt")).await;
        assert_eq!((s, a.as_slice()), (200, b"out\n".as_slice()), "{image}");

        // Nothing written, or written and removed again: nothing comes back.
        for script in ["touch /tmp/t; ls /outputs", "echo x > /outputs/t; rm /outputs/t"] {
            let v = api.run(json!({"image": image, "command": ["sh", "-c", script]})).await;
            assert_eq!(v["status"], "succeeded", "{image} {script}: {v}");
            assert_eq!(v["outputs"], json!([]), "{image} {script}");
        }
    }
    eventually(Duration::from_secs(5), "no container left behind", || async {
        containers_of(&dcc.worker_id).is_empty().then_some(())
    })
    .await;
}

/// Logs come whole up to DCC_MAX_LOG_BYTES, whatever the Docker daemon's own log settings (on
/// our machines json-file with max-size 10m, max-file 3, which kept only the last ~260,000
/// lines of this job's 600,000 when the logs were read back from the daemon), and a cut is
/// marked in the log itself.
#[tokio::test]
async fn long_logs_are_whole_and_a_cut_is_marked() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let v = api.run(sh("seq 1 600000; seq 1 200000 >&2")).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let id = v["jobId"].as_str().unwrap();
    for (stream, n) in [("stdout", 600_000), ("stderr", 200_000)] {
        let text = api.log(id, stream).await;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            n,
            "{stream}: {} lines, from {:?}",
            lines.len(),
            lines.first()
        );
        assert_eq!((lines[0], lines[n - 1]), ("1", n.to_string().as_str()), "{stream}");
        assert!(!text.contains("[dcc:"), "{stream} marked although whole");
    }
    drop(dcc);

    let redis = Redis::start();
    let dcc = Dcc::builder(dcc_e2e::Role::Server, &redis)
        .env("DCC_MAX_LOG_BYTES", 100_000)
        .start()
        .await;
    let api = dcc.api();
    let v = api.run(sh("seq 1 600000")).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let text = api.log(v["jobId"].as_str().unwrap(), "stdout").await;
    let note = "\n[dcc: log cut at DCC_MAX_LOG_BYTES]\n";
    assert!(text.starts_with("1\n2\n3\n"), "{}", &text[..20]);
    assert!(text.ends_with(note), "no cut note: {}", &text[text.len() - 60..]);
    assert_eq!(text.len(), 100_000 + note.len());
}

/// Two deployments on one Docker host (each its own Redis) run a job of the same id at the same
/// time: their containers are named apart, and both succeed.
#[tokio::test]
async fn two_deployments_on_one_host_run_jobs_of_the_same_id_at_once() {
    let (ra, rb) = (Redis::start(), Redis::start());
    let (a, b) = (Dcc::server(&ra).await, Dcc::server(&rb).await);
    let job = json!({"id": "same-id", "image": IMAGE, "command": ["sh", "-c", "sleep 2; echo ran"]});
    for dcc in [&a, &b] {
        assert_eq!(dcc.api().submit(job.clone()).await.status, 201);
    }
    for dcc in [&a, &b] {
        let v = dcc.api().wait_status("same-id", "succeeded", LONG).await;
        assert_eq!(v["attempt"], 1, "{v}\n{}", dcc.log());
        assert_eq!(dcc.api().log("same-id", "stdout").await, "ran\n");
    }
}

/// A worker sends an ended job's result and its next claim in one round trip (one pipeline, two
/// scripts): four jobs queued before a one-slot worker starts, its Redis traffic read through a
/// proxy. Each result (`succeeded`) but perhaps the last goes out in the same chunk as a claim
/// (the claim script's first key is the queue's fast lane); before, every result was a round
/// trip of its own and the claim another.
#[tokio::test]
async fn a_result_goes_out_with_the_next_claim() {
    // One server, even in the suite's cluster pass: the proxy stands for one node, and a
    // cluster client would learn the others' addresses and go around it.
    let redis = Redis::start_with(&[]);
    let server = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let api = server.api();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(api.submit_id(sh("true")).await);
    }
    let proxy = TcpProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], redis.port()))).await;
    proxy.record_requests();
    let _worker = Dcc::builder(Role::Worker, &redis)
        .storage(&server.storage)
        .env("DCC_REDIS_URL", proxy.url())
        .env("DCC_CPUS", 1)
        .start()
        .await;
    for id in &ids {
        api.wait_status(id, "succeeded", LONG).await;
    }
    let has = |c: &[u8], s: &str| c.windows(s.len()).any(|w| w == s.as_bytes());
    // (A chunk loading the library, or a script, holds their text, not a call.)
    let chunks = proxy.requests();
    let calls: Vec<&Vec<u8>> = chunks
        .iter()
        .filter(|c| !has(c, "SCRIPT") && !has(c, "FUNCTION"))
        .collect();
    let with_claim = ids
        .iter()
        .filter(|id| {
            calls
                .iter()
                .any(|c| has(c, &format!(":job:{id}")) && has(c, "succeeded") && has(c, ":queue:cpu:fast"))
        })
        .count();
    assert!(
        with_claim >= ids.len() - 1,
        "only {with_claim} of {} results went out with a claim",
        ids.len()
    );
    // A function (or script) Redis does not have yet is loaded before its call goes out again:
    // a result is sent at most twice (once more, it went out again and was refused again).
    for id in &ids {
        let sent = calls
            .iter()
            .filter(|c| has(c, &format!(":job:{id}")) && has(c, "succeeded"))
            .count();
        assert!((1..=2).contains(&sent), "the result of {id} went out {sent} times");
    }
}
