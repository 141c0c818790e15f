//! Reading what the policy needs: queue depth and worker health from Redis, group sizes and
//! instances from the AutoScaling API, and the scaler's own memory (first-seen times, last change)
//! from a Redis hash per group. Worker ids are the instances' EC2 ids (the Terraform user-data sets
//! `DCC_WORKER_ID` to the instance id).

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_autoscaling::Client;
use dcc_shared::clock::Millis;
use dcc_shared::queue::Queue;
use dcc_shared::queue::read::QueueDepth;
use dcc_shared::workers::Health;

use crate::policy::{Demand, Instance, Pool, Worker, WorkerHealth};
use crate::settings::GroupSettings;

/// Waiting jobs per lane whose size is checked against an instance's (the oldest ones).
const TOO_LARGE_SCAN: usize = 1000;

/// Reads the state of every configured group.
pub async fn observe(queue: &Queue, asg: &Client, groups: &[GroupSettings], now: Millis) -> anyhow::Result<Vec<Pool>> {
    let depths = queue.depths(now).await.context("reading queue depths")?;
    let workers = queue.workers().await.context("reading worker health")?;
    let names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    let described = asg
        .describe_auto_scaling_groups()
        .set_auto_scaling_group_names(Some(names))
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "DescribeAutoScalingGroups: {}",
                aws_sdk_autoscaling::error::DisplayErrorContext(e)
            )
        })?;
    let mut conn = queue.conn().await?;
    let mut pools = Vec::new();
    for g in groups {
        let Some(group) = described
            .auto_scaling_groups()
            .iter()
            .find(|a| a.auto_scaling_group_name() == Some(g.name.as_str()))
        else {
            anyhow::bail!("autoscaling group {} does not exist", g.name);
        };
        let key = queue.keys().scaler(&g.name);
        let memory: HashMap<String, String> = redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await?;
        let mut instances = Vec::new();
        let mut first_seen_new = Vec::new();
        for i in group.instances() {
            let Some(id) = i.instance_id() else { continue };
            let seen = memory.get(&format!("seen:{id}")).and_then(|v| v.parse().ok());
            if seen.is_none() {
                first_seen_new.push(id.to_string());
            }
            instances.push(Instance {
                id: id.to_string(),
                in_service: i.lifecycle_state().map(|s| s.as_str()) == Some("InService"),
                protected: i.protected_from_scale_in().unwrap_or(false),
                first_seen_ms: seen.unwrap_or(now),
            });
        }
        // Remember new instances; forget the ones that left.
        let mut pipe = redis::pipe();
        let mut changes = 0;
        for id in &first_seen_new {
            changes += 1;
            pipe.cmd("HSET").arg(&key).arg(format!("seen:{id}")).arg(now);
        }
        for field in memory.keys().filter(|f| f.starts_with("seen:")) {
            if !instances.iter().any(|i| field == &format!("seen:{}", i.id)) {
                changes += 1;
                pipe.cmd("HDEL").arg(&key).arg(field);
            }
        }
        if changes > 0 {
            let _: () = pipe.query_async(&mut conn).await?;
        }
        let depth = depths.iter().find(|(q, _)| *q == g.queue).map(|(_, d)| d);
        let demand = demand(queue, g, depth).await?;
        let pool_workers = workers
            .iter()
            .filter(|w| instances.iter().any(|i| i.id == w.id))
            .map(|w| (w.id.clone(), worker(w)))
            .collect();
        pools.push(Pool {
            group: g.name.clone(),
            min: group.min_size().unwrap_or(0).max(0) as u32,
            max: group.max_size().unwrap_or(0).max(0) as u32,
            desired: group.desired_capacity().unwrap_or(0).max(0) as u32,
            instances,
            workers: pool_workers,
            demand,
            last_change_ms: memory.get("last_change").and_then(|v| v.parse().ok()).unwrap_or(0),
        });
    }
    Ok(pools)
}

/// A worker's health key as the policy needs it.
fn worker(w: &dcc_shared::workers::WorkerInfo) -> Worker {
    let health = match w.health {
        Health::Healthy => WorkerHealth::Healthy,
        Health::Unhealthy => WorkerHealth::Unhealthy,
        Health::Draining => WorkerHealth::Draining,
    };
    Worker {
        running_jobs: w.running_jobs,
        health,
        idle_since_ms: w.idle_since,
    }
}

/// The group's demand: its queue's depth less the jobs no instance of it can ever take, and,
/// when an instance's memory is known, the memory the jobs reserve.
async fn demand(queue: &Queue, g: &GroupSettings, depth: Option<&QueueDepth>) -> anyhow::Result<Demand> {
    let (big_fast, big) = queue
        .too_large_for(g.queue, g.policy.slots_per_instance, TOO_LARGE_SCAN)
        .await
        .context("reading queued jobs' sizes")?;
    let memory_mb = match g.policy.memory_mb_per_instance {
        Some(_) => queue
            .memory_demand(g.queue, g.policy.slots_per_instance, TOO_LARGE_SCAN)
            .await
            .context("reading queued and running jobs' memory")?,
        None => 0,
    };
    Ok(Demand {
        queued: depth.map(|d| d.queued).unwrap_or(0).saturating_sub(big),
        fast_queued: depth.map(|d| d.fast_queued).unwrap_or(0).saturating_sub(big_fast),
        running: depth.map(|d| d.running).unwrap_or(0),
        memory_mb,
    })
}
