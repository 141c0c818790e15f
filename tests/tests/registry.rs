//! Private images from a real password-protected registry (Debian's `docker-registry`, htpasswd
//! auth, plain HTTP on 127.0.0.1, which the Docker daemon allows without configuration): pulled
//! with credentials from a `docker login` config file or from `DCC_REGISTRY_AUTH`, refused with
//! `IMAGE_PULL_DENIED` (distinct from `IMAGE_NOT_FOUND`) for a wrong or missing password, and the
//! password never shows in the job, its logs or the worker's log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dcc_e2e::{Dcc, IMAGE, Redis, Role, eventually, random_name};
use serde_json::json;

const USER: &str = "ci-bot";
const PASSWORD: &str = "s3cret-Pa55word-never-logged";

/// A registry on 127.0.0.1 with one htpasswd user; stopped on drop.
struct Registry {
    child: Child,
    host: String,
    dir: tempfile::TempDir,
}

impl Registry {
    async fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = dcc_e2e::free_port();
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .expect("htpasswd (apache2-utils) is installed");
        assert!(htpasswd.status.success());
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: dcc-test\n    path: {root}/htpasswd\n",
            root = dir.path().display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", &dir.path().join("config.yml").to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry (Debian package) is installed");
        let host = format!("127.0.0.1:{port}");
        let url = format!("http://{host}/v2/");
        eventually(Duration::from_secs(20), "the registry answers", || async {
            let r = reqwest::get(&url).await.ok()?;
            (r.status() == 401).then_some(())
        })
        .await;
        Registry { child, host, dir }
    }

    /// A `docker login` config folder for this registry (what a user's worker host would have).
    fn login(&self, password: &str) -> PathBuf {
        let conf = self.dir.path().join(format!("docker-{}", random_name("c")));
        std::fs::create_dir_all(&conf).unwrap();
        let mut login = Command::new("docker")
            .arg("--config")
            .arg(&conf)
            .args(["login", &self.host, "-u", USER, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        login.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
        let out = login.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "docker login: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        conf
    }

    /// Pushes the test image as `private/busybox:<tag>` and removes it locally, so running it
    /// needs a pull. Returns the reference.
    fn push(&self, conf: &Path, tag: &str) -> String {
        let reference = format!("{}/private/busybox:{tag}", self.host);
        docker(&["tag", IMAGE, &reference]);
        let out = Command::new("docker")
            .arg("--config")
            .arg(conf)
            .args(["push", &reference])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker push: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        docker(&["rmi", &reference]);
        reference
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn docker(args: &[&str]) {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes pulled references (the images stay out of other tests' way).
fn forget(references: &[&str]) {
    for r in references {
        let _ = Command::new("docker").args(["rmi", r]).output();
    }
}

async fn run(api: &dcc_e2e::Api, image: &str) -> serde_json::Value {
    let id = api
        .submit_id(json!({"image": image, "command": ["echo", "private ok"]}))
        .await;
    eventually(Duration::from_secs(60), "the job ends", || async {
        let v = api.job(&id).await;
        matches!(v["status"].as_str(), Some("succeeded" | "failed")).then_some(v)
    })
    .await
}

#[tokio::test]
async fn private_images_run_with_credentials_and_a_wrong_password_is_pull_denied() {
    let redis = Redis::start();
    let registry = Registry::start().await;
    let conf = registry.login(PASSWORD);
    let via_login = registry.push(&conf, &random_name("a"));
    let via_env = registry.push(&conf, &random_name("b"));
    let denied = registry.push(&conf, &random_name("c"));
    let anonymous = registry.push(&conf, &random_name("d"));
    let via_file = registry.push(&conf, &random_name("e"));
    let missing = format!("{}/private/none:latest", registry.host);

    // Credentials from the config file `docker login` wrote.
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_DOCKER_CONFIG", conf.join("config.json").display())
        .start()
        .await;
    let api = dcc.api();
    let v = run(&api, &via_login).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(api.log(v["jobId"].as_str().unwrap(), "stdout").await, "private ok\n");
    // With good credentials, an image the registry does not have is not found, not denied.
    let v = run(&api, &missing).await;
    assert_eq!(v["error"]["code"], "IMAGE_NOT_FOUND", "{v}");
    drop(dcc);

    // Credentials from DCC_REGISTRY_AUTH (what Terraform passes from SSM).
    let auth = |password: &str| json!({ registry.host.clone(): {"username": USER, "password": password} }).to_string();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_REGISTRY_AUTH", auth(PASSWORD))
        .env("DCC_DOCKER_CONFIG", "/nonexistent/config.json")
        .start()
        .await;
    let v = run(&dcc.api(), &via_env).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    drop(dcc);
    // The same JSON from a file (what the Terraform user-data writes from SSM).
    let file = registry.dir.path().join("registry-auth.json");
    std::fs::write(&file, auth(PASSWORD)).unwrap();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_REGISTRY_AUTH_FILE", file.display())
        .env("DCC_DOCKER_CONFIG", "/nonexistent/config.json")
        .start()
        .await;
    let v = run(&dcc.api(), &via_file).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    drop(dcc);

    // A wrong password: IMAGE_PULL_DENIED with the registry's words; no password anywhere.
    let wrong = "wrong-Pa55word-never-logged";
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_REGISTRY_AUTH", auth(wrong))
        .env("DCC_DOCKER_CONFIG", "/nonexistent/config.json")
        .start()
        .await;
    let v = run(&dcc.api(), &denied).await;
    assert_eq!(v["error"]["code"], "IMAGE_PULL_DENIED", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&registry.host) && msg.to_lowercase().contains("unauthorized"),
        "{msg}"
    );
    let log = dcc.log();
    for secret in [wrong, PASSWORD] {
        assert!(
            !v.to_string().contains(secret) && !log.contains(secret),
            "a password leaked"
        );
    }
    drop(dcc);

    // No credentials at all: denied too (the registry wants a login), not "not found".
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_DOCKER_CONFIG", "/nonexistent/config.json")
        .start()
        .await;
    let v = run(&dcc.api(), &anonymous).await;
    assert_eq!(v["error"]["code"], "IMAGE_PULL_DENIED", "{v}");
    forget(&[&via_login, &via_env, &via_file, &denied, &anonymous]);
}

/// ECR pull tokens come from the worker's AWS identity (moto stands for the ECR API), and are
/// cached: with the API gone, the same token still answers until shortly before it expires.
#[tokio::test]
async fn ecr_tokens_come_from_the_aws_identity_and_are_cached() {
    use aws_sdk_ecr::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
    use base64::Engine;
    let moto = dcc_e2e::Moto::start();
    let aws = aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "test", "test", None, None, "test",
        )))
        .build();
    // What the ECR API hands out, asked directly.
    let direct = aws_sdk_ecr::Client::new(&aws)
        .get_authorization_token()
        .send()
        .await
        .unwrap();
    let token = direct.authorization_data()[0]
        .authorization_token()
        .unwrap()
        .to_string();
    let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(&token).unwrap()).unwrap();
    let (user, password) = decoded.split_once(':').unwrap();

    let registries = dcc_worker::registry::Registries::new(None, Some("/nonexistent/config.json".into()))
        .unwrap()
        .with_aws_config(aws);
    let image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:1";
    let c = registries.credentials(image).await.unwrap().unwrap();
    assert_eq!(
        (c.username.as_deref(), c.password.as_deref()),
        (Some(user), Some(password))
    );
    assert_eq!(
        c.serveraddress.as_deref(),
        Some("123456789012.dkr.ecr.us-east-1.amazonaws.com")
    );
    assert_eq!(
        registries.credentials("ghcr.io/team/app").await.unwrap(),
        None,
        "only ECR hosts"
    );
    drop(moto);
    let again = registries.credentials(image).await.unwrap().unwrap();
    assert_eq!(again.password.as_deref(), Some(password), "cached: no second call");
    // Another registry needs its own token, and the API is gone: a clear error, no secret.
    let e = registries
        .credentials("123456789012.dkr.ecr.eu-west-1.amazonaws.com/app")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("GetAuthorizationToken") && !e.contains(password), "{e}");
}
