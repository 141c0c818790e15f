//! The dashboard in a real browser: headless Chromium through chromedriver (WebDriver) loads `/`,
//! a job is submitted through the API, and the page shows it turn `succeeded` without a reload;
//! its detail view shows the job's stdout. A screenshot is saved (`target/…/dashboard.png`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dcc_e2e::{Dcc, Redis, free_port, sh};
use fantoccini::{ClientBuilder, Locator};

#[tokio::test]
async fn dashboard_shows_a_job_turn_succeeded_live() {
    let redis = Redis::start();
    let dcc = Dcc::builder(dcc_e2e::Role::Server, &redis)
        .env("DCC_API_KEYS", "dash-key")
        .start()
        .await;
    let port = free_port();
    let mut driver = Command::new("chromedriver")
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
    let api = dcc.api().with_key("dash-key");
    let result = async {
        client.goto(&format!("{}/", api.base)).await?;
        // The page asks for the key (stored in localStorage), then goes live.
        let key = client.find(Locator::Id("key")).await?;
        key.send_keys("dash-key").await?;
        client
            .execute(
                "document.getElementById('key').dispatchEvent(new Event('change'))",
                vec![],
            )
            .await?;
        wait_for(&client, "the WebSocket to go live", |c| async move {
            Ok(text_of(&c, "#conn").await? == "live")
        })
        .await?;
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
    let _ = client.close().await;
    let _ = driver.kill();
    let _ = driver.wait();
    result.expect("the browser steps succeed");
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
