//! Request ids, structured logs and Prometheus metrics.

use dcc_e2e::{Dcc, Redis, sh};

#[tokio::test]
async fn request_ids_are_echoed_and_logged() {
    let redis = Redis::start();
    let dcc = Dcc::builder(dcc_e2e::Role::Server, &redis)
        .env("DCC_LOG_FORMAT", "json")
        .start()
        .await;
    let api = dcc.api();
    let r = api
        .http
        .get(format!("{}/api/v1/queues", api.base))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
    let r = api
        .http
        .get(format!("{}/api/v1/jobs/nope", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 32, "a fresh id when the client sends none");
    let id = api.submit_id(sh("true")).await;
    api.wait_status(&id, "succeeded", std::time::Duration::from_secs(30))
        .await;
    let log = dcc.log();
    // JSON lines; the access-log line of each request carries its id; worker lines carry the job.
    let lines: Vec<serde_json::Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!lines.is_empty(), "DCC_LOG_FORMAT=json gives JSON lines:\n{log}");
    assert!(
        lines
            .iter()
            .any(|l| l["span"]["request_id"] == "trace-me-42" && l["fields"]["status"] == 200),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["span"]["request_id"] == generated.as_str() && l["fields"]["status"] == 404)
    );
    assert!(
        lines
            .iter()
            .any(|l| l["span"]["job_id"] == id.as_str() && l["span"]["attempt"] == 1),
        "worker lines carry job id and attempt"
    );
}

#[tokio::test]
async fn prometheus_metrics() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    api.run(sh("true")).await;
    api.run(sh("exit 1")).await;
    api.submit(serde_json::json!({"image": ""})).await;
    let r = api.http.get(format!("{}/metrics", api.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    // Every sample line parses as `name{labels} value`.
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "bad value in {line:?}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in {line:?}"
        );
    }
    let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
    assert!(has("dcc_jobs_finished_total{state=\"succeeded\"} 1"), "{text}");
    assert!(has("dcc_jobs_finished_total{state=\"failed\"} 1"), "{text}");
    assert!(has("dcc_jobs_queued{queue=\"cpu\"} 0"), "{text}");
    assert!(has("dcc_jobs_running{queue=\"gpu\"} 0"), "{text}");
    assert!(has("dcc_workers{health=\"HEALTHY\"} 1"), "{text}");
    assert!(
        has("dcc_job_queue_wait_seconds_bucket{queue=\"cpu\",le=\"+Inf\"} 2"),
        "{text}"
    );
    assert!(has("dcc_job_run_seconds_count{queue=\"cpu\"} 2"), "{text}");
    assert!(
        text.contains("dcc_http_request_duration_seconds") && text.contains("route=\"/api/v1/jobs\""),
        "{text}"
    );
    assert!(text.contains("status=\"400\""), "{text}");
}
