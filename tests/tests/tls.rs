//! Redis over TLS with a password (`rediss://`), as ElastiCache with in-transit encryption and an
//! auth token serves it: a redis-server with a test CA, and `dcc` trusting that CA.

use std::process::{Command, Stdio};
use std::time::Duration;

use dcc_e2e::{Dcc, Redis, Role, eventually, sh};

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(ok.success(), "openssl {args:?}");
}

#[tokio::test]
async fn jobs_run_over_rediss_with_an_auth_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=dcc-test-ca",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    );
    let port = dcc_e2e::free_port();
    let p = |f: &str| d.join(f).display().to_string();
    let mut redis = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--tls-cert-file",
            &p("srv.pem"),
            "--tls-key-file",
            &p("srv.key"),
            "--tls-ca-cert-file",
            &p("ca.pem"),
        ])
        .args([
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "s3cret-token",
            "--save",
            "",
            "--dir",
            &p(""),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server with TLS");
    eventually(Duration::from_secs(10), "the TLS port", || async {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    })
    .await;
    // The harness needs a Redis value for the builder; the URL below overrides it.
    let placeholder = Redis::start();
    let dcc = Dcc::builder(Role::Server, &placeholder)
        .env("DCC_REDIS_URL", format!("rediss://:s3cret-token@127.0.0.1:{port}"))
        .env("SSL_CERT_FILE", p("ca.pem"))
        .start()
        .await;
    let api = dcc.api();
    assert_eq!(api.get("/readyz").await.status, 200);
    let v = api.run(sh("echo over tls")).await;
    assert_eq!(v["status"], "succeeded");
    assert_eq!(api.log(v["jobId"].as_str().unwrap(), "stdout").await, "over tls\n");
    drop(dcc);
    // A wrong token is refused: the API reports Redis unavailable rather than half-working.
    let bad = Dcc::builder(Role::ApiOnly, &placeholder)
        .env("DCC_REDIS_URL", format!("rediss://:wrong@127.0.0.1:{port}"))
        .env("SSL_CERT_FILE", p("ca.pem"))
        .start()
        .await;
    let r = bad.api().get("/readyz").await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    let _ = redis.kill();
    let _ = redis.wait();
}
