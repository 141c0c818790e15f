//! `dcc`: the DCC server (API, with an in-process worker unless `DISABLE_WORKER=true`) and the
//! standalone worker. All configuration comes from environment variables; see
//! `docs/configuration.md`.

use std::future::IntoFuture;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dcc_server::app::{Core, run_worker};
use dcc_shared::config::Config;
use dcc_worker::Shutdown;

/// Redis-backed distributed container job queue.
#[derive(Parser)]
#[command(name = "dcc", version, about)]
struct Cli {
    /// The DCC server the client commands talk to.
    #[arg(long, global = true, env = "DCC_URL", default_value = "http://127.0.0.1:8080")]
    server: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (and run a worker in the same process unless DISABLE_WORKER=true).
    Server,
    /// Run a worker only: claim jobs from Redis and run them on this host's Docker.
    Worker,
    #[command(flatten)]
    Client(dcc_server::cli::ClientCommand),
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DCC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// First signal: quiet (stop claiming, stop accepting connections); after `drain` or a second
/// signal: terminate (running jobs are stopped and handed back to the queue); after `drain` more
/// or a third signal: give up on an unreachable Redis (leases are left to expire).
fn handle_signals(shutdown: Shutdown, drain: Duration) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("shutting down: no new jobs; running jobs may finish (signal again to stop them now)");
        shutdown.quiet();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = tokio::time::sleep(drain) => {}
        }
        tracing::info!("terminating: stopping running jobs");
        shutdown.terminate();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = tokio::time::sleep(drain) => {}
        }
        tracing::warn!("giving up on Redis: what could not be recorded or handed back is left to lease expiry");
        shutdown.give_up();
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Client(cmd) = cli.command {
        let key = std::env::var("DCC_API_KEY").ok().filter(|k| !k.is_empty());
        match dcc_server::cli::run(cmd, &cli.server, key).await {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("dcc: {e:#}");
                std::process::exit(2);
            }
        }
    }
    let config = Config::from_env().context("reading configuration")?;
    init_logs(config.log_json);
    for v in Config::unknown_vars() {
        tracing::warn!(var = v, "unknown DCC_ environment variable (typo?); it is ignored");
    }
    let shutdown = Shutdown::new();
    handle_signals(shutdown.clone(), config.drain_timeout);
    match cli.command {
        Command::Server => server(config, shutdown).await,
        Command::Client(_) => unreachable!("handled above"),
        Command::Worker => {
            let core = Core::open(config).await?;
            // A worker may wait at start (for Redis, or for its previous life's health key to
            // expire): a stop signal ends that wait, there is nothing to drain yet.
            let worker = tokio::select! {
                w = core.start_worker() => w.context("starting the worker")?,
                _ = shutdown.quieted() => {
                    tracing::info!("stopped before the worker started");
                    return Ok(());
                }
            };
            run_worker(worker, shutdown).await;
            Ok(())
        }
    }
}

async fn server(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    config.check_exposure()?;
    let listen = config.listen;
    let disable_worker = config.disable_worker;
    let core = Core::open(config).await?;
    dcc_server::telemetry::handle();
    dcc_server::telemetry::spawn_job_metrics(core.queue.clone(), &core.events());
    dcc_server::history::spawn_sampler(core.queue.clone());
    let app = dcc_server::router(core.app_state()?);
    core.start_webhooks()?;
    // The API listens before the in-process worker starts: a worker may wait at start (for Redis,
    // or for its previous life's health key to expire), and clients should meanwhile get answers
    // (jobs queue up; 503 while Redis is down), not refused connections.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    let s = shutdown.clone();
    let mut serve = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.quieted().await })
            .into_future(),
    );
    let worker = if disable_worker {
        None
    } else {
        tokio::select! {
            w = core.start_worker() => {
                let w = w.context("starting the in-process worker (set DISABLE_WORKER=true for an API-only server)")?;
                Some(tokio::spawn(run_worker(w, shutdown.clone())))
            }
            // Asked to stop before the worker could start: there is nothing to drain.
            _ = shutdown.quieted() => None,
        }
    };
    // Open long-polls may hold the graceful shutdown; `terminate` (drain timeout, second signal)
    // ends the process regardless.
    tokio::select! {
        r = &mut serve => r??,
        _ = shutdown.terminated() => {}
    }
    if let Some(w) = worker {
        let _ = w.await;
    }
    Ok(())
}
