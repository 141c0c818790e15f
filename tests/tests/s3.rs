//! The S3 backend against a real S3 API (moto server) through the real aws-sdk-s3 client:
//! presigned links, clean deletes, outages, and a 1 GiB round trip in bounded memory.

use dcc_e2e::{Dcc, IMAGE, Redis, Role, Store, sh};
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn outputs_and_logs_redirect_to_presigned_links() {
    let redis = Redis::start();
    let store = Store::s3().await;
    let dcc = Dcc::builder(Role::Server, &redis).storage(&store).start().await;
    let api = dcc.api();
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let form = reqwest::multipart::Form::new()
        .text("job", json!({"image": IMAGE, "wait": true, "command": ["sh", "-c", "cp /inputs/b.bin /outputs/b.bin; echo logged"]}).to_string())
        .part("b.bin", reqwest::multipart::Part::bytes(blob.clone()));
    let v = api.post_multipart("/api/v1/jobs", form).await;
    assert_eq!(v.body["status"], "succeeded", "{:?}", v.body);
    let id = v.body["jobId"].as_str().unwrap();
    for (path, want) in [
        (format!("/api/v1/jobs/{id}/outputs/b.bin"), blob.clone()),
        (format!("/api/v1/jobs/{id}/stdout"), b"logged\n".to_vec()),
    ] {
        let r = no_redirects().get(format!("{}{path}", api.base)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 302, "{path}");
        let location = r.headers()["location"].to_str().unwrap().to_string();
        assert!(location.contains("X-Amz-Signature"), "{location}");
        // A plain HTTP client, no credentials: the link alone gives the exact bytes.
        let got = reqwest::get(&location).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.as_ref(), want.as_slice(), "{path}");
    }
    // Nothing of the job is stored outside its prefix, and DELETE removes every object of it.
    assert!(!store.objects(&format!("jobs/{id}/")).await.is_empty());
    assert_eq!(
        api.call(reqwest::Method::DELETE, &format!("/api/v1/jobs/{id}"), None)
            .await
            .status,
        204
    );
    assert!(
        store.objects(&format!("jobs/{id}/")).await.is_empty(),
        "objects left after DELETE"
    );
    assert!(
        store.objects("").await.is_empty(),
        "objects left: {:?}",
        store.objects("").await
    );
}

#[tokio::test]
async fn unreachable_s3_gives_503_and_leaves_nothing() {
    let redis = Redis::start();
    let store = Store::s3().await;
    let dcc = Dcc::builder(Role::ApiOnly, &redis)
        .storage(&store)
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", dcc_e2e::free_port()))
        .start()
        .await;
    let api = dcc.api();
    let a = api
        .submit(json!({"image": IMAGE, "inputs": [{"name": "a", "value": "x"}]}))
        .await;
    assert_eq!((a.status, a.code()), (503, "UNAVAILABLE"), "{:?}", a.body);
    assert_eq!(
        api.get("/api/v1/jobs").await.body["jobs"],
        json!([]),
        "a job exists after a 503"
    );
    let r = api.get("/readyz").await;
    assert_eq!((r.status, r.code()), (503, "UNAVAILABLE"));
    assert!(r.body["error"]["message"].as_str().unwrap().contains("storage"));
    // A job without inputs needs no storage at submit: it is accepted.
    assert_eq!(api.submit(sh("true")).await.status, 201);
}

/// 1 GiB in and 1 GiB out through S3 with the server's (and in-process worker's) memory bounded.
#[tokio::test]
async fn one_gib_round_trip_in_bounded_memory() {
    const GIB: u64 = 1 << 30;
    const BOUND: u64 = 200 << 20;
    let redis = Redis::start();
    let store = Store::s3().await;
    let dcc = Dcc::builder(Role::Server, &redis).storage(&store).start().await;
    let api = dcc.api();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.bin");
    // 1 GiB of a repeated pseudo-random MiB (written once, streamed from disk).
    let block: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut want = Sha256::new();
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        for _ in 0..1024 {
            f.write_all(&block).unwrap();
            want.update(&block);
        }
    }
    let want = want.finalize();
    let t = std::time::Instant::now();
    let file = tokio::fs::File::open(&input).await.unwrap();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
    let form = reqwest::multipart::Form::new()
        .text(
            "job",
            json!({"image": IMAGE, "wait": true, "command": ["cp", "/inputs/big.bin", "/outputs/big.bin"],
                             "parameters": {"maxDurationSecs": 1800}})
            .to_string(),
        )
        .part("big.bin", reqwest::multipart::Part::stream_with_length(body, GIB));
    let v = api.post_multipart("/api/v1/jobs", form).await;
    assert_eq!(v.body["status"], "succeeded", "{:?}", v.body);
    let id = v.body["jobId"].as_str().unwrap().to_string();
    assert_eq!(v.body["outputs"][0]["size"], GIB);
    let submitted_and_ran = t.elapsed();
    let r = reqwest::get(format!("{}/api/v1/jobs/{id}/outputs/big.bin", api.base))
        .await
        .unwrap();
    assert!(r.status().is_success());
    let mut got = Sha256::new();
    let mut n = 0u64;
    let mut stream = r.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        n += chunk.len() as u64;
        got.update(&chunk);
    }
    assert_eq!(n, GIB);
    assert_eq!(got.finalize(), want, "the 1 GiB output differs from the input");
    let rss = dcc.peak_rss();
    println!(
        "1 GiB round trip: submit+run {:.1} s, download {:.1} s, dcc peak RSS {} MiB (bound {} MiB), stats {}",
        submitted_and_ran.as_secs_f64(),
        (t.elapsed() - submitted_and_ran).as_secs_f64(),
        rss >> 20,
        BOUND >> 20,
        v.body["stats"]
    );
    assert!(rss < BOUND, "peak RSS {} MiB over {} MiB", rss >> 20, BOUND >> 20);
}
