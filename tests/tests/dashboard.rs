//! The dashboard in a real browser: headless Chromium through chromedriver (WebDriver) loads `/`,
//! a job is submitted through the API, and the page shows it turn `succeeded` without a reload;
//! its detail view shows the job's stdout. A screenshot is saved (`target/…/dashboard.png`).
//! With a few hundred jobs run, the history charts draw the same totals `GET /api/v1/stats`
//! counts, the failures table names the code and image, and the job table's filters hold
//! (`target/…/dashboard-history.png`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dcc_e2e::{Dcc, IMAGE, Redis, free_port, sh};
use fantoccini::{ClientBuilder, Locator};

#[tokio::test]
async fn dashboard_shows_a_job_turn_succeeded_live() {
    let redis = Redis::start();
    let dcc = Dcc::builder(dcc_e2e::Role::Server, &redis)
        .env("DCC_API_KEYS", "dash-key")
        .start()
        .await;
    let (client, driver) = browser().await;
    let api = dcc.api().with_key("dash-key");
    let result = async {
        // The page asks for the key (stored in localStorage), then goes live.
        open(&client, &api.base, "dash-key").await?;
        let id = api.submit_id(sh("sleep 1; echo hello from the dashboard test")).await;
        let css = format!("tr[data-id='{id}'] [data-status]");
        // The table re-renders on every event: read it with one script call (no stale elements).
        wait_for(&client, "the job row to read succeeded", |c| {
            let css = css.clone();
            async move { Ok(text_of(&c, &css).await? == "succeeded") }
        })
        .await?;
        client
            .execute(
                &format!("document.querySelector(\"tr[data-id='{id}']\").click()"),
                vec![],
            )
            .await?;
        wait_for(&client, "the detail view with stdout", |c| async move {
            Ok(text_of(&c, "#d-body").await?.contains("hello from the dashboard test"))
        })
        .await?;
        // An array is one row with its children's counts; no row per child.
        let mut job = sh("true");
        job["array"] = serde_json::json!({"size": 3});
        let aid = api.submit_id(job).await;
        let counts = format!("tr[data-id='{aid}'] .counts");
        wait_for(&client, "the array's row to count 3 ended", |c| {
            let counts = counts.clone();
            async move { Ok(text_of(&c, &counts).await?.starts_with("3/3 ended")) }
        })
        .await?;
        assert_eq!(
            text_of(&client, &format!("tr[data-id='{aid}'] [data-status]")).await?,
            "succeeded"
        );
        assert_eq!(
            text_of(&client, &format!("tr[data-id='{aid}.0']")).await?,
            "",
            "no row for a child"
        );
        wait_for(&client, "the workers panel", |c| async move {
            Ok(text_of(&c, "#workers").await?.contains("HEALTHY"))
        })
        .await?;
        let png = client.screenshot().await?;
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let path = dcc_e2e::dcc_bin().with_file_name("dashboard.png");
        std::fs::write(&path, &png).unwrap();
        println!("screenshot: {}", path.display());
        Ok::<(), fantoccini::error::CmdError>(())
    }
    .await;
    close(client, driver).await;
    result.expect("the browser steps succeed");
}

#[tokio::test]
async fn history_graphs_a_few_hundred_jobs_and_the_table_filters() {
    let redis = Redis::start();
    let dcc = Dcc::builder(dcc_e2e::Role::Server, &redis)
        .env("DCC_API_KEYS", "dash-key")
        .env("DCC_CPUS", "8")
        .start()
        .await;
    let api = dcc.api().with_key("dash-key");
    // 240 succeed, 40 fail (exit 3), 20 are cancelled as soon as they are queued.
    let mut scripts = vec!["echo ok"; 240];
    scripts.extend(vec!["echo bad >&2; exit 3"; 40]);
    for chunk in scripts.chunks(40) {
        futures_util::future::join_all(chunk.iter().map(|s| api.submit_id(sh(s)))).await;
    }
    for _ in 0..20 {
        let id = api.submit_id(sh("sleep 30")).await;
        assert!(
            api.post(&format!("/api/v1/jobs/{id}/cancel"), &serde_json::json!({}))
                .await
                .status
                < 300
        );
    }
    let totals = |s: &serde_json::Value, k: &str| {
        s["queues"][0]["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[k].as_u64().unwrap())
            .sum::<u64>()
    };
    dcc_e2e::eventually(Duration::from_secs(240), "300 jobs to end", || async {
        let s = api.get("/api/v1/stats?queue=cpu").await.body;
        let ended = ["succeeded", "failed", "cancelled"].map(|k| totals(&s, k));
        (ended == [240, 40, 20]).then_some(())
    })
    .await;
    let (client, driver) = browser().await;
    let result = async {
        open(&client, &api.base, "dash-key").await?;
        for (series, total) in [("succeeded", "240"), ("failed", "40"), ("cancelled", "20"), ("submitted", "300")] {
            let css = format!("#g-throughput path[data-series='{series}']");
            wait_for(&client, &format!("the {series} line to total {total}"), |c| {
                let css = css.clone();
                async move { Ok(attr_of(&c, &css, "data-total").await? == total) }
            })
            .await?;
        }
        assert!(attr_of(&client, "#g-workers path[data-series='slots']", "d").await?.starts_with('M'));
        assert_eq!(text_of(&client, "#h-failures tr.failure").await?, format!("NONZERO_EXIT{IMAGE}40"));
        // Filters: failed jobs only; then an image no job has.
        client
            .execute("const f = document.getElementById('f-status'); f.value = 'failed'; f.dispatchEvent(new Event('change'))", vec![])
            .await?;
        wait_for(&client, "only failed rows", |c| async move {
            let v = c
                .execute("return [...document.querySelectorAll('#jobs [data-status]')].map((e) => e.textContent)", vec![])
                .await?;
            let statuses: Vec<&str> = v.as_array().unwrap().iter().filter_map(|s| s.as_str()).collect();
            Ok(statuses.len() == 40 && statuses.iter().all(|s| *s == "failed"))
        })
        .await?;
        let png = client.screenshot().await?;
        let path = dcc_e2e::dcc_bin().with_file_name("dashboard-history.png");
        std::fs::write(&path, &png).unwrap();
        println!("screenshot: {}", path.display());
        client
            .execute("const f = document.getElementById('f-image'); f.value = 'no-such-image'; f.dispatchEvent(new Event('change'))", vec![])
            .await?;
        wait_for(&client, "no row", |c| async move { Ok(text_of(&c, "#jobs").await?.is_empty()) }).await?;
        Ok::<(), fantoccini::error::CmdError>(())
    }
    .await;
    close(client, driver).await;
    result.expect("the browser steps succeed");
}

/// Ends the browser session and its chromedriver.
async fn close(client: fantoccini::Client, mut driver: std::process::Child) {
    let _ = client.close().await;
    let _ = driver.kill();
    let _ = driver.wait();
}

/// Opens the dashboard at `base` with API key `key` (kept in localStorage) and waits for it to go
/// live.
async fn open(client: &fantoccini::Client, base: &str, key: &str) -> Result<(), fantoccini::error::CmdError> {
    client.goto(&format!("{base}/")).await?;
    client.find(Locator::Id("key")).await?.send_keys(key).await?;
    client
        .execute(
            "document.getElementById('key').dispatchEvent(new Event('change'))",
            vec![],
        )
        .await?;
    wait_for(client, "the WebSocket to go live", |c| async move {
        Ok(text_of(&c, "#conn").await? == "live")
    })
    .await
}

/// Attribute `name` of the first element matching `css`, or "" when there is none.
async fn attr_of(c: &fantoccini::Client, css: &str, name: &str) -> Result<String, fantoccini::error::CmdError> {
    let v = c
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? (e.getAttribute(arguments[1]) || '') : '';",
            vec![css.into(), name.into()],
        )
        .await?;
    Ok(v.as_str().unwrap_or_default().to_string())
}

/// Headless Chromium through a chromedriver of its own: the WebDriver client and the driver
/// process (kill it when done).
async fn browser() -> (fantoccini::Client, std::process::Child) {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed (scripts/test.sh installs chromium-driver)");
    let webdriver = format!("http://127.0.0.1:{port}");
    let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
        "goog:chromeOptions": {"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1400,900", format!("--user-data-dir={}", tempfile::tempdir().unwrap().keep().display())]}
    }))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        match ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(caps.clone())
            .connect(&webdriver)
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("chromedriver did not answer: {e}"),
        }
    };
    (client, driver)
}

/// The text of the first element matching `css`, or "" when there is none.
async fn text_of(c: &fantoccini::Client, css: &str) -> Result<String, fantoccini::error::CmdError> {
    let v = c
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            vec![css.into()],
        )
        .await?;
    Ok(v.as_str().unwrap_or_default().to_string())
}

async fn wait_for<F, Fut>(c: &fantoccini::Client, what: &str, mut cond: F) -> Result<(), fantoccini::error::CmdError>
where
    F: FnMut(fantoccini::Client) -> Fut,
    Fut: std::future::Future<Output = Result<bool, fantoccini::error::CmdError>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if cond(c.clone()).await? {
            return Ok(());
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
