//! `GET /api/v1/stats` on a real stack: two tenants' jobs run (one fails), and each tenant's key
//! counts only its own jobs and sees no fleet depth, while an admin's counts everyone's (or one
//! tenant's with `tenant=`) beside the fleet the server sampled; malformed ranges are 400s naming
//! the parameter; the route is in the OpenAPI document.

use std::time::Duration;

use dcc_e2e::{Dcc, IMAGE, Redis, Role, eventually, sh};
use serde_json::Value;

/// The sums of the cpu queue's points of `stats`: (submitted, started, succeeded, failed).
fn cpu_totals(stats: &Value) -> (u64, u64, u64, u64) {
    let points = stats["queues"][0]["points"].as_array().unwrap();
    assert_eq!(stats["queues"][0]["queue"], "cpu");
    let sum = |k: &str| points.iter().map(|p| p[k].as_u64().unwrap()).sum::<u64>();
    (sum("submitted"), sum("started"), sum("succeeded"), sum("failed"))
}

/// Whether any cpu point has `k` set (not null).
fn any_set(stats: &Value, k: &str) -> bool {
    stats["queues"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| !p[k].is_null())
}

#[tokio::test]
async fn tenants_see_their_own_numbers_and_admins_everyones() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_API_KEYS", "root")
        .keys(&[("team-a", "submit", "ka", None), ("team-b", "submit", "kb", None)])
        .start()
        .await;
    let anon = dcc.api();
    let (a, b, root) = (anon.with_key("ka"), anon.with_key("kb"), anon.with_key("root"));
    let mut ends = vec![];
    for (who, script, end) in [
        (&a, "echo one", "succeeded"),
        (&a, "echo two", "succeeded"),
        (&a, "exit 3", "failed"),
        (&b, "echo three", "succeeded"),
    ] {
        ends.push((who, who.submit_id(sh(script)).await, end));
    }
    for (who, id, end) in ends {
        who.wait_status(&id, end, Duration::from_secs(60)).await;
    }

    let mine = a.get("/api/v1/stats").await;
    assert_eq!(mine.status, 200, "{}", mine.body);
    assert_eq!(mine.body["tenant"], "team-a");
    assert_eq!(cpu_totals(&mine.body), (3, 3, 2, 1));
    assert_eq!(mine.body["failures"][0]["code"], "NONZERO_EXIT");
    assert_eq!(mine.body["failures"][0]["image"], IMAGE);
    assert_eq!(mine.body["tenants"].as_array().unwrap().len(), 1, "{}", mine.body);
    assert!(!any_set(&mine.body, "depth"), "another tenant's queue is not shown");
    assert_eq!(cpu_totals(&b.get("/api/v1/stats").await.body), (1, 1, 1, 0));
    let other = b.get("/api/v1/stats?tenant=team-a").await;
    assert_eq!((other.status, other.code()), (403, "FORBIDDEN"));
    assert_eq!(b.get("/api/v1/stats?tenant=team-b").await.status, 200);

    // The admin: everyone's jobs, per tenant, and the fleet as the server sampled it (at start
    // and every 15 s: the first sample is there by now).
    let all = eventually(Duration::from_secs(20), "a fleet sample", || async {
        let s = root.get("/api/v1/stats?queue=cpu").await.body;
        any_set(&s, "workers").then_some(s)
    })
    .await;
    assert_eq!(cpu_totals(&all), (4, 4, 3, 1));
    assert!(any_set(&all, "depth") && any_set(&all, "slots"), "{all}");
    assert_eq!(all["queues"].as_array().unwrap().len(), 1, "queue=cpu");
    let tenants: Vec<&str> = all["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, ["team-a", "team-b"], "busiest first");
    let only_b = root.get("/api/v1/stats?tenant=team-b").await.body;
    assert_eq!(cpu_totals(&only_b), (1, 1, 1, 0));

    // Ranges: RFC 3339 or ms; bounded; each refusal names its parameter.
    let now = dcc_shared::clock::now_ms();
    let since = dcc_shared::clock::rfc3339(now - 10 * 60_000);
    let r = root.get(&format!("/api/v1/stats?from={since}&step=300")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["stepSecs"], 300);
    assert_eq!(cpu_totals(&r.body), (4, 4, 3, 1));
    let day_ago = now - 2 * 86_400_000;
    for (query, field) in [
        ("step=90".to_string(), "step"),
        (format!("from={now}&to={}", now - 1), "from"),
        (format!("from={}", now - 8 * 86_400_000), "to"),
        (format!("from={day_ago}"), "step"),
        ("from=yesterday".to_string(), "from"),
        ("window=1h".to_string(), "window"),
    ] {
        let r = root.get(&format!("/api/v1/stats?{query}")).await;
        assert_eq!((r.status, r.code()), (400, "INVALID_REQUEST"), "{query}: {}", r.body);
        assert_eq!(r.body["error"]["field"], field, "{query}");
    }
    let r = root.get(&format!("/api/v1/stats?from={day_ago}")).await;
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains("step of 180 s"),
        "{}",
        r.body
    );
    let doc = root.get("/api/v1/openapi.json").await.body;
    assert!(doc["paths"]["/api/v1/stats"]["get"].is_object());
}
