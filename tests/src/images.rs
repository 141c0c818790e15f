//! The test images, built locally (no registry is reachable), each once per test binary.

use std::process::{Command, Stdio};
use std::sync::Once;

use crate::process::repo_root;

/// The image every test job runs (built locally: no registry is reachable).
pub const IMAGE: &str = "dcc-busybox:latest";

/// Builds the test image once per test binary.
pub fn ensure_image() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/build-test-image.sh"))
            .status()
            .expect("bash runs");
        assert!(status.success(), "building the test image failed");
    });
}

/// The test image with `USER 1000` (a job that does not run as root), built once per test
/// binary; returns its name.
pub fn user_image() -> &'static str {
    static ONCE: Once = Once::new();
    derived_image(&ONCE, "dcc-busybox-user:latest", "USER 1000")
}

/// The test image with an entrypoint and a default command (`echo entry default`).
pub fn entry_image() -> &'static str {
    static ONCE: Once = Once::new();
    derived_image(
        &ONCE,
        "dcc-busybox-entry:latest",
        "ENTRYPOINT [\"/bin/echo\", \"entry\"]\nCMD [\"default\"]",
    )
}

/// Builds `name` from the test image plus `lines` of Dockerfile, once per `once`.
fn derived_image(once: &'static Once, name: &'static str, lines: &str) -> &'static str {
    ensure_image();
    once.call_once(|| {
        let mut child = Command::new("docker")
            .args(["build", "-q", "-t", name, "-"])
            .env("DOCKER_BUILDKIT", "0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("docker runs");
        let dockerfile = format!("FROM {IMAGE}\n{lines}\n");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), dockerfile.as_bytes())
            .expect("Dockerfile written");
        assert!(child.wait().expect("docker build").success(), "building {name} failed");
    });
    name
}

/// The test image plus `/bin/racer` (tests/fixtures/racer.c, built static here with `cc`): a
/// hostile job's helper that swaps names under `/outputs` with links and FIFOs while the worker
/// collects them. Built once per test binary; returns its name.
pub fn racer_image() -> &'static str {
    static ONCE: Once = Once::new();
    const NAME: &str = "dcc-racer:latest";
    ensure_image();
    ONCE.call_once(|| {
        let ctx = tempfile::tempdir().expect("a temp folder");
        let src = repo_root().join("tests/fixtures/racer.c");
        let built = Command::new("cc")
            .args(["-static", "-O2", "-o"])
            .arg(ctx.path().join("racer"))
            .arg(&src)
            .status()
            .expect("cc runs");
        assert!(built.success(), "building the racer failed (cc -static; libc6-dev)");
        let dockerfile = format!("FROM {IMAGE}\nCOPY racer /bin/racer\n");
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).expect("Dockerfile written");
        let status = Command::new("docker")
            .args(["build", "-q", "-t", NAME])
            .arg(ctx.path())
            .env("DOCKER_BUILDKIT", "0")
            .stdout(Stdio::null())
            .status()
            .expect("docker runs");
        assert!(status.success(), "building {NAME} failed");
    });
    NAME
}
