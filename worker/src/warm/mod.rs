//! Warm single-use containers for fast jobs (`DCC_WARM_POOL`). A cold job pays Docker's create
//! and start (namespaces, cgroups, mounts: most of its ~150 ms); a warm container has paid them
//! before the job arrived. It runs only DCC's [`agent`] and has its own inputs, outputs and
//! control folders bound in; a fast job of the same shape (image, CPUs, memory, network, working
//! folder) that finds one has the agent start its command ([`run`]), and the container is
//! removed afterwards like any other: **one job per container, never reused**. The pool then
//! makes a new one in the background.
//!
//! Shapes are learned from the fast jobs this worker ran (cold or warm); a shape no fast job used
//! for the idle lifetime is forgotten and its containers removed. Idle warm containers hold no CPU slot or memory
//! reservation (they run nothing). Only CPU jobs in bind mode use the pool: GPU jobs and copy mode
//! (a daemon that cannot see the worker's folders) run cold.

pub mod agent;
pub mod init;
pub mod run;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::CreateContainerOptionsBuilder;
use dcc_shared::job::{JobRecord, Lane, QueueName};

use crate::container::{self, HostLimits};
use crate::docker::{self, LABEL_ATTEMPT, LABEL_JOB, Owner};
use crate::step::StepError;

/// The job label of warm containers starts with this (the rest is the container's token).
const WARM_LABEL_PREFIX: &str = "warm-";

/// How a worker's pool is sized.
#[derive(Clone, Debug)]
pub struct WarmSettings {
    /// Most warm containers at once (idle ones, not counting those running a job); 0: no pool.
    pub size: usize,
    /// How long a shape no fast job used keeps its containers.
    pub idle: Duration,
}

/// What makes two fast jobs interchangeable for a warm container: everything fixed when a
/// container is created. The command, environment and inputs are the job's own when it starts.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Shape {
    image: String,
    nano_cpus: i64,
    memory_mb: u64,
    network: bool,
    working_dir: Option<String>,
}

impl Shape {
    /// The shape of `job`, when it may run warm: a fast CPU job.
    pub fn of(job: &JobRecord) -> Option<Shape> {
        if job.lane != Lane::Fast || job.queue != QueueName::Cpu {
            return None;
        }
        let p = &job.spec.parameters;
        Some(Shape {
            image: job.spec.image.clone(),
            nano_cpus: container::nano_cpus(p.cpus),
            memory_mb: p.memory_mb,
            network: p.network,
            working_dir: job.spec.working_dir.clone(),
        })
    }
}

/// A started warm container, handed to one job.
pub struct Warm {
    /// The container's name.
    pub name: String,
    /// Its token (in its job label).
    pub token: String,
    /// Its folder on the worker: `in/` bound read-only at `/inputs`, `out/` at `/outputs`.
    pub scratch: tempfile::TempDir,
    /// Its first process, when the worker sees it (shares the host's PID namespace).
    pub init: Option<init::Init>,
    /// Its agent, connected, waiting for the job's command.
    pub agent: agent::Agent,
    /// The image it was created from, as looked up then (the job runs that one).
    pub image: docker::Image,
}

#[derive(Default)]
struct Inner {
    idle: HashMap<Shape, Vec<Warm>>,
    /// Shapes fast jobs used, with when they last did.
    wanted: HashMap<Shape, Instant>,
    /// Tokens of containers being made (they exist in Docker before they are idle here).
    making: HashSet<String>,
    /// Tokens of warm containers running a job (until their clean-up).
    in_use: HashSet<String>,
    /// No more containers (shutdown).
    closed: bool,
}

impl Inner {
    fn idle_count(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }

    /// On a miss while the pool is full: the idle container to give up so the missing shape gets
    /// one — from the shape with the most idle ones, the least recently used among equals.
    fn evict(&mut self) -> Option<Warm> {
        let wanted = &self.wanted;
        let shape = self
            .idle
            .iter()
            .filter(|(_, list)| !list.is_empty())
            .max_by_key(|(shape, list)| (list.len(), std::cmp::Reverse(wanted.get(*shape).copied())))
            .map(|(shape, _)| shape.clone())?;
        self.idle.get_mut(&shape).and_then(Vec::pop)
    }

    /// The next shape to make a container for: the wanted shape with the fewest idle containers
    /// (the most recently used first among equals), while the pool has room.
    fn next_to_fill(&self, size: usize, idle: Duration) -> Option<Shape> {
        if self.closed || self.idle_count() + self.making.len() >= size {
            return None;
        }
        self.wanted
            .iter()
            .filter(|(_, used)| used.elapsed() < idle)
            .min_by_key(|(shape, used)| (self.idle.get(*shape).map_or(0, Vec::len), std::cmp::Reverse(**used)))
            .map(|(shape, _)| shape.clone())
    }
}

/// The warm containers of one worker.
pub struct WarmPool {
    docker: Docker,
    settings: WarmSettings,
    owner: Owner,
    limits: HostLimits,
    /// The agent program on the worker, bound into each container.
    agent: PathBuf,
    /// Where the containers' folders are made.
    tmp_dir: PathBuf,
    inner: Mutex<Inner>,
    /// Signalled when the number of idle containers changed (the worker's health key shows it).
    pub changed: tokio::sync::Notify,
}

impl WarmPool {
    /// A pool for `worker`, or `None` when it is off (`size` 0) or this worker has no agent for
    /// its architecture.
    pub fn new(
        docker: Docker,
        settings: WarmSettings,
        owner: &Owner,
        limits: HostLimits,
        tmp_dir: PathBuf,
    ) -> Option<Arc<Self>> {
        if settings.size == 0 {
            return None;
        }
        let agent = tmp_dir.join("dcc-agent");
        match agent::write(&agent) {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    arch = std::env::consts::ARCH,
                    "DCC_WARM_POOL is set but this worker was built without the warm-container agent \
                     for its architecture: every fast job runs cold (see docs/configuration.md)"
                );
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "no warm containers: the agent could not be written");
                return None;
            }
        }
        tracing::info!(
            size = settings.size,
            arch = std::env::consts::ARCH,
            "warm containers for fast jobs, each started by DCC's agent"
        );
        Some(Arc::new(WarmPool {
            docker,
            settings,
            owner: owner.clone(),
            limits,
            agent,
            tmp_dir,
            inner: Mutex::new(Inner::default()),
            changed: tokio::sync::Notify::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A warm container of `shape` for one job, if one is idle; either way the shape counts as
    /// used. The pool makes up for it once the job's container is gone ([`WarmPool::after_job`]):
    /// making one now would compete with the job for the daemon.
    pub fn take(self: &Arc<Self>, shape: &Shape) -> Option<Warm> {
        let (warm, evicted) = {
            let mut g = self.lock();
            g.wanted.insert(shape.clone(), Instant::now());
            let warm = g.idle.get_mut(shape).and_then(Vec::pop);
            if let Some(w) = &warm {
                g.in_use.insert(w.token.clone());
            }
            let full = g.idle_count() + g.making.len() >= self.settings.size;
            let evicted = if warm.is_none() && full { g.evict() } else { None };
            (warm, evicted)
        };
        if let Some(old) = evicted {
            let pool = self.clone();
            tokio::spawn(async move { docker::remove(&pool.docker, &old.name).await });
        }
        if warm.is_some() {
            self.changed.notify_one();
        }
        warm
    }

    /// After a fast job's container was removed (`token`: the warm one it ran in): makes up for
    /// what it took, and for the shape it taught.
    pub fn after_job(self: &Arc<Self>, token: Option<&str>) {
        if let Some(t) = token {
            self.lock().in_use.remove(t);
        }
        tokio::spawn(self.clone().refill());
    }

    /// Whether a container's job label is one of this pool's containers (being made, idle or
    /// running a job): not a stray.
    pub fn holds(&self, job_label: &str) -> bool {
        let Some(token) = job_label.strip_prefix(WARM_LABEL_PREFIX) else {
            return false;
        };
        let g = self.lock();
        g.in_use.contains(token) || g.making.contains(token) || g.idle.values().flatten().any(|w| w.token == token)
    }

    /// Idle warm containers now.
    pub fn idle_count(&self) -> usize {
        self.lock().idle_count()
    }

    /// Makes containers while a wanted shape has fewer than its share and the pool has room.
    async fn refill(self: Arc<Self>) {
        loop {
            let token = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
            let shape = {
                let mut g = self.lock();
                let Some(shape) = g.next_to_fill(self.settings.size, self.settings.idle) else {
                    return;
                };
                g.making.insert(token.clone());
                shape
            };
            let made = self.make(&shape, token.clone()).await;
            let late = {
                let mut g = self.lock();
                g.making.remove(&token);
                match made {
                    Ok(warm) if !g.closed => {
                        g.idle.entry(shape).or_default().push(warm);
                        self.changed.notify_one();
                        None
                    }
                    Ok(warm) => Some(warm),
                    Err(e) => {
                        // Not again until a job of that shape comes back (the image may be gone).
                        // The worker's own failures (its folder, the agent) are the operator's to see.
                        if matches!(e, StepError::Local { .. }) {
                            tracing::warn!(error = %e, image = %shape.image, "could not make a warm container");
                        } else {
                            tracing::debug!(error = %e, image = %shape.image, "could not make a warm container");
                        }
                        g.wanted.remove(&shape);
                        None
                    }
                }
            };
            // Made while the pool closed.
            if let Some(warm) = late {
                docker::remove(&self.docker, &warm.name).await;
                return;
            }
        }
    }

    /// Creates and starts one warm container of `shape`, and takes its agent's connection.
    async fn make(&self, shape: &Shape, token: String) -> Result<Warm, StepError> {
        let local = StepError::local("making a warm container's folders");
        let scratch = tempfile::Builder::new()
            .prefix("dcc-warm-")
            .tempdir_in(&self.tmp_dir)
            .map_err(local)?;
        let (inp, out) = (scratch.path().join("in"), scratch.path().join("out"));
        for (dir, mode) in [(&inp, 0o755), (&out, 0o777)] {
            std::fs::create_dir(dir)
                .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)))
                .map_err(StepError::local("making a warm container's folders"))?;
        }
        let channel = agent::Channel::make(&scratch.path().join("ctl"))
            .map_err(StepError::local("making a warm container's control folder"))?;
        let binds = vec![
            format!("{}:{}:ro", self.agent.display(), agent::PATH_IN_CONTAINER),
            channel.bind(),
            format!("{}:/inputs:ro", inp.display()),
            format!("{}:/outputs:rw", out.display()),
        ];
        let name = format!("dcc-warm-{}-{token}", self.owner.worker);
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let started = async {
            // Looked up once here rather than at each job's start: the container is created
            // from this very image (by its id), whatever its name points to later.
            let image = docker::Image::from(self.docker.inspect_image(&shape.image).await?);
            let body = self.body(shape, &image.id, &token, binds);
            self.docker.create_container(Some(opts), body).await?;
            self.docker.start_container(&name, None).await?;
            Ok::<_, bollard::errors::Error>(image)
        };
        let image = match started.await {
            Ok(image) => image,
            Err(e) => {
                docker::remove(&self.docker, &name).await;
                return Err(StepError::docker("starting a warm container failed", &e, false));
            }
        };
        let pid = self.docker.inspect_container(&name, None).await.ok();
        let init = pid.and_then(|c| c.state?.pid).and_then(init::Init::find);
        match channel.accept(init).await {
            Ok(agent) => Ok(Warm {
                name,
                token,
                scratch,
                init,
                agent,
                image,
            }),
            Err(why) => {
                docker::remove(&self.docker, &name).await;
                Err(StepError::Local {
                    what: "connecting a warm container's agent",
                    source: std::io::Error::other(why),
                })
            }
        }
    }

    /// What a warm container of `shape` is created from: the image `image_id` with the agent as
    /// its entrypoint (the image's own entrypoint and command are the job's business, at its
    /// start).
    fn body(&self, shape: &Shape, image_id: &str, token: &str, binds: Vec<String>) -> ContainerCreateBody {
        let mut host = container::limited(shape.nano_cpus, shape.memory_mb, shape.network, &self.limits);
        host.binds = Some(binds);
        // The agent must be the first process (it reaps, and the worker checks its connection
        // against the container's first process): never a daemon-wide `--init` in front of it.
        host.init = Some(false);
        ContainerCreateBody {
            network_disabled: (!shape.network).then_some(true),
            image: Some(image_id.to_string()),
            entrypoint: Some(vec![agent::PATH_IN_CONTAINER.to_string()]),
            working_dir: shape.working_dir.clone(),
            labels: Some(
                [
                    (LABEL_JOB.to_string(), format!("{WARM_LABEL_PREFIX}{token}")),
                    (LABEL_ATTEMPT.to_string(), "0".to_string()),
                ]
                .into_iter()
                .chain(self.owner.labels())
                .collect(),
            ),
            tty: Some(false),
            open_stdin: Some(false),
            host_config: Some(host),
            ..Default::default()
        }
    }

    /// Forgets shapes no fast job used within the idle lifetime, and removes their containers.
    pub async fn sweep(&self) {
        let old: Vec<Warm> = {
            let mut g = self.lock();
            let idle = self.settings.idle;
            g.wanted.retain(|_, used| used.elapsed() < idle);
            let unused: Vec<Shape> = g.idle.keys().filter(|s| !g.wanted.contains_key(*s)).cloned().collect();
            unused.iter().filter_map(|s| g.idle.remove(s)).flatten().collect()
        };
        for w in old {
            docker::remove(&self.docker, &w.name).await;
        }
    }

    /// Makes no more containers and removes the idle ones (shutdown).
    pub async fn close(&self) {
        let idle: Vec<Warm> = {
            let mut g = self.lock();
            g.closed = true;
            g.idle.drain().flat_map(|(_, list)| list).collect()
        };
        for w in idle {
            docker::remove(&self.docker, &w.name).await;
        }
    }
}
