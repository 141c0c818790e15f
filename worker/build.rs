//! Builds the warm-container agent (`agent/src/main.rs`) into a static executable that the worker
//! carries inside itself and writes out at start (see `warm::agent`). One `rustc` call, with the
//! standard library only, for the architecture the worker is built for: an aarch64 worker gets an
//! aarch64 agent once that target's standard library (and a C toolchain for it) is installed.
//! Where the build fails, the worker is built without an agent, runs every fast job cold, and
//! says so at start; the failure is printed here as a cargo warning.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(dcc_agent)");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let source = manifest.join("../agent/src");
    for file in ["main.rs", "protocol.rs", "start.rs", "sys.rs"] {
        println!("cargo::rerun-if-changed={}", source.join(file).display());
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("dcc-agent");
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let built = Command::new(rustc)
        .args(["--edition=2024", "--crate-name=dcc_agent", "--crate-type=bin"])
        .args(["-C", "opt-level=s", "-C", "panic=abort", "-C", "codegen-units=1"])
        .args(["-C", "strip=symbols", "-C", "target-feature=+crt-static"])
        .args(["--cap-lints=allow", "--target", &target, "-o"])
        .arg(&out)
        .arg(source.join("main.rs"))
        // Not the worker's own flags or wrapper: the agent is a different kind of program.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .output();
    match built {
        Ok(o) if o.status.success() => {
            println!("cargo::rustc-cfg=dcc_agent");
            println!("cargo::rustc-env=DCC_AGENT_PROGRAM={}", out.display());
        }
        Ok(o) => warn_cold(&target, &String::from_utf8_lossy(&o.stderr)),
        Err(e) => warn_cold(&target, &e.to_string()),
    }
}

fn warn_cold(target: &str, why: &str) {
    let first = why.lines().find(|l| l.contains("error")).unwrap_or(why.trim());
    println!("cargo::warning=no warm-container agent for {target} (fast jobs will run cold): {first}");
}
