//! Where a test's `dcc` processes keep files: a local folder or a moto S3 server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// Where a test's `dcc` processes keep files: a local folder, or a bucket on a moto server (when
/// `DCC_TEST_STORAGE=s3`, so the same tests run against both backends).
#[derive(Clone)]
pub enum Store {
    /// A local folder.
    Local(PathBuf),
    /// A bucket on a moto S3 server.
    S3 {
        /// The server (stopped when the last user drops it).
        moto: std::sync::Arc<Moto>,
        /// The bucket.
        bucket: String,
    },
}

impl Store {
    /// The backend the environment asks for; a local folder under `dir` by default.
    pub async fn new(dir: &Path) -> Self {
        if std::env::var("DCC_TEST_STORAGE").as_deref() == Ok("s3") {
            Self::s3().await
        } else {
            Store::Local(dir.join("data"))
        }
    }

    /// A fresh bucket on a fresh moto server.
    pub async fn s3() -> Self {
        let moto = Moto::start();
        moto.create_bucket("dcc-test").await;
        Store::S3 {
            moto: std::sync::Arc::new(moto),
            bucket: "dcc-test".into(),
        }
    }

    /// The environment that points `dcc` at this store.
    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            Store::Local(p) => vec![("DCC_STORAGE".into(), p.display().to_string())],
            Store::S3 { moto, bucket } => vec![
                ("DCC_STORAGE".into(), format!("s3://{bucket}/dcc")),
                ("AWS_ENDPOINT_URL".into(), moto.endpoint()),
                ("AWS_ACCESS_KEY_ID".into(), "test".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
                ("AWS_REGION".into(), "us-east-1".into()),
                ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
                ("DCC_S3_FORCE_PATH_STYLE".into(), "true".into()),
            ],
        }
    }

    /// The local folder (tests that reach into the local backend only).
    pub fn path(&self) -> &Path {
        match self {
            Store::Local(p) => p,
            Store::S3 { .. } => panic!("this test needs the local storage backend"),
        }
    }

    /// Names of the stored objects under `prefix` (e.g. `jobs/<id>/`), relative to it.
    pub async fn objects(&self, prefix: &str) -> Vec<String> {
        match self {
            Store::Local(p) => {
                let base = p.join(prefix);
                let mut out = Vec::new();
                let mut stack = vec![base.clone()];
                while let Some(d) = stack.pop() {
                    let Ok(rd) = std::fs::read_dir(&d) else { continue };
                    for e in rd.flatten() {
                        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            stack.push(e.path());
                        } else {
                            out.push(e.path().strip_prefix(&base).unwrap().display().to_string());
                        }
                    }
                }
                out.sort();
                out
            }
            Store::S3 { moto, bucket } => {
                let full = format!("dcc/{prefix}");
                let mut keys = moto.keys(bucket, &full).await;
                for k in keys.iter_mut() {
                    *k = k[full.len()..].to_string();
                }
                keys
            }
        }
    }
}

/// A moto server (S3 API) on a free loopback port, killed on drop. `scripts/test.sh` installs
/// moto into `~/.cache/dcc/moto`; `DCC_MOTO_SERVER` names another `moto_server`.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Starts one and waits until it answers.
    pub fn start() -> Self {
        let bin = std::env::var("DCC_MOTO_SERVER").map(PathBuf::from).unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/dcc/moto/bin/moto_server")
        });
        assert!(
            bin.exists(),
            "{} is missing: run scripts/test.sh, which installs moto",
            bin.display()
        );
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                // moto answers its own reset route; a stranger on the port would not.
                let ok = std::process::Command::new("curl")
                    .args(["-sf", "-X", "POST", &format!("http://127.0.0.1:{port}/moto-api/reset")])
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false);
                if ok {
                    return Moto { child, port };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("moto_server did not start");
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, name: &str) {
        let r = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint()))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "creating bucket {name}: {}", r.status());
    }

    /// Keys under `prefix` in `bucket` (full keys).
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let url = format!("{}/{bucket}?list-type=2&prefix={prefix}", self.endpoint());
        let xml = reqwest::get(url).await.unwrap().text().await.unwrap();
        let mut out: Vec<String> = xml
            .split("<Key>")
            .skip(1)
            .filter_map(|p| p.split("</Key>").next())
            .map(String::from)
            .collect();
        out.sort();
        out
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
