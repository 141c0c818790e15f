//! `dcc-scaler`: the scaler as an AWS Lambda (when `AWS_LAMBDA_RUNTIME_API` is set, e.g. on an
//! EventBridge schedule), as one pass from a shell (`once`), or as a simulator (`simulate`).

use anyhow::Context;
use clap::{Parser, Subcommand};
use dcc_scaler_lambda::policy::Policy;
use dcc_scaler_lambda::simulate::{World, parse_trace, table};
use dcc_scaler_lambda::{apply, observe, settings};
use dcc_shared::clock::now_ms;
use dcc_shared::config::RedisConfig;
use dcc_shared::outlook::Outlook;
use dcc_shared::queue::Queue;
use serde_json::{Value, json};

/// DCC's autoscaling pass.
#[derive(Parser)]
#[command(name = "dcc-scaler", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run one pass against Redis and the AutoScaling API, print what was done.
    Once,
    /// Compare DCC's policy with the 2018 lambda and a fixed fleet on an arrival trace.
    Simulate {
        /// CSV trace: time_secs,queue,duration_secs.
        #[arg(long)]
        trace: std::path::PathBuf,
        /// Queue of the trace to simulate.
        #[arg(long, default_value = "cpu")]
        queue: String,
        /// Instance boot time, seconds.
        #[arg(long, default_value_t = 120)]
        boot_secs: u64,
        /// Job slots per instance.
        #[arg(long, default_value_t = 2)]
        slots: u32,
        /// Group min size.
        #[arg(long, default_value_t = 1)]
        min: u32,
        /// Group max size.
        #[arg(long, default_value_t = 60)]
        max: u32,
        /// Size of the fixed fleet compared.
        #[arg(long, default_value_t = 20)]
        fixed: u32,
        /// Spot interruptions per instance-hour (0: on-demand).
        #[arg(long, default_value_t = 0.0)]
        interruptions_per_hour: f64,
    },
}

/// One pass over every configured group; returns one structured record.
async fn pass() -> anyhow::Result<Value> {
    let redis = RedisConfig::from_env();
    let groups = settings::groups().map_err(anyhow::Error::msg)?;
    let outlook_ttl = settings::outlook_ttl().map_err(anyhow::Error::msg)?;
    let queue = Queue::new(&redis.url, &redis.prefix)?
        .agree_on_shards(redis.shards()?)
        .await?;
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let asg = aws_sdk_autoscaling::Client::new(&aws);
    let now = now_ms();
    let pools = observe::observe(&queue, &asg, &groups, now).await?;
    let mut results = Vec::new();
    for (pool, g) in pools.iter().zip(&groups) {
        let plan = dcc_scaler_lambda::policy::plan(pool, &g.policy, now);
        let mut r = apply::apply(&plan, &queue, &asg, now).await;
        let outlook = Outlook {
            group: g.name.clone(),
            max: pool.max,
            desired: plan.desired.unwrap_or(pool.desired),
            slots_per_instance: g.policy.slots_per_instance,
            memory_mb_per_instance: g.memory_mb,
            boot_secs: g.boot_secs,
            at: now,
        };
        // Servers take jobs for an empty fleet only while this holds (a failed write leaves the
        // last one to expire).
        if let Err(e) = queue.publish_outlook(g.queue, &outlook, outlook_ttl).await {
            tracing::warn!(group = %g.name, error = %e, "could not publish the outlook");
        }
        r["observed"] = json!({"desired": pool.desired, "min": pool.min, "max": pool.max,
            "instances": pool.instances.len(), "workers": pool.workers.len(),
            "queued": pool.demand.queued + pool.demand.fast_queued, "running": pool.demand.running});
        results.push(r);
    }
    let record = json!({"event": "ScalerPass", "at": now, "groups": results});
    tracing::info!(record = %record, "scaler pass");
    Ok(record)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("DCC_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Once) => {
            println!("{}", pass().await?);
            Ok(())
        }
        Some(Command::Simulate {
            trace,
            queue,
            boot_secs,
            slots,
            min,
            max,
            fixed,
            interruptions_per_hour,
        }) => {
            let text = std::fs::read_to_string(&trace).with_context(|| format!("reading {}", trace.display()))?;
            let arrivals = parse_trace(&text, &queue).map_err(anyhow::Error::msg)?;
            let world = World {
                slots,
                boot_secs,
                min,
                max,
                interruptions_per_hour,
            };
            let policy = Policy {
                slots_per_instance: slots,
                ..Policy::default()
            };
            let name = trace
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            print!("{}", table(&name, &arrivals, &world, &policy, fixed).0);
            Ok(())
        }
        None if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() => lambda_runtime::run(
            lambda_runtime::service_fn(|_event: lambda_runtime::LambdaEvent<Value>| async {
                pass().await.map_err(|e| lambda_runtime::Error::from(format!("{e:#}")))
            }),
        )
        .await
        .map_err(|e| anyhow::anyhow!("lambda runtime: {e}")),
        None => anyhow::bail!("no command: use `once` or `simulate` (the Lambda mode needs AWS_LAMBDA_RUNTIME_API)"),
    }
}
