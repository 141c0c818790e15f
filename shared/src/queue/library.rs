//! The job transitions as one Redis Functions library, called with `FCALL`. Each transition is
//! still one atomic call whose source is one `.lua` file beside its module; what changes is when
//! its setup runs. `EVALSHA` runs a whole script at every call, so the helpers every transition
//! carries (`context.lua` … `array.lua`) and a claim's own functions were made anew each time
//! (~2.6 µs of a 36 µs claim before it read a key, docs/scaling.md). In a library they are made
//! once, when the library loads, and each call runs only the transition's own part.
//!
//! A transition's file may hold definitions first and then, after a line `-- (each call)`, what
//! each call runs. In the library the definitions see the call's `KEYS` and `ARGV` (and any
//! state the file declares above its functions) as upvalues that each call sets first: Redis
//! runs one call at a time, so no two calls share them. As a script (below) the same file runs
//! top to bottom with the helpers before it, as before.
//!
//! The library's name carries the hash of its text (`dcc_<12 hex>`), so processes of two DCC
//! versions sharing a Redis (a rolling upgrade) each call their own functions. A Redis that lost
//! it (a restart without persistence, a primary that never had it) answers `Function not found`:
//! it is loaded there (`FUNCTION LOAD REPLACE`, on the shard's primary) and the call sent again.
//! A Redis that refuses functions (an ACL without them, a service that restricts them) makes the
//! queue send the same transitions as scripts (`EVALSHA`) from then on. Each process loads the
//! library at its start ([`Queue::install_library`]) and deletes other versions' there.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

use redis::{Cmd, FromRedisValue, RedisError, RedisResult, ToRedisArgs, Value};

use super::Queue;
use crate::connection::{Conn, Target};

/// What every transition may call, in the order they call each other: the lazily decoded settle
/// context and JSON strings, history counters, Redis's clock for leases, quota counts and the
/// backlog, webhooks, wake-ups, dependents, array counts.
const HELPERS: &str = concat!(
    include_str!("context.lua"),
    include_str!("history.lua"),
    include_str!("lease_now.lua"),
    include_str!("active.lua"),
    include_str!("notify.lua"),
    include_str!("wake.lua"),
    include_str!("deps.lua"),
    include_str!("array.lua"),
);

/// The line after which a transition's file holds what each call runs (before it: definitions
/// made once per library load).
const EACH_CALL: &str = "\n-- (each call)\n";

/// The name the library's text uses for itself until its hash is known.
const NAME_SLOT: &str = "{library}";

/// A job transition: one atomic call, its source `<name>.lua`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    Enqueue,
    Claim,
    Renew,
    Finish,
    Release,
    Reap,
    Cancel,
    Delete,
}

impl Transition {
    const ALL: [Transition; 8] = [
        Transition::Enqueue,
        Transition::Claim,
        Transition::Renew,
        Transition::Finish,
        Transition::Release,
        Transition::Reap,
        Transition::Cancel,
        Transition::Delete,
    ];

    fn name(self) -> &'static str {
        match self {
            Transition::Enqueue => "enqueue",
            Transition::Claim => "claim",
            Transition::Renew => "renew",
            Transition::Finish => "finish",
            Transition::Release => "release",
            Transition::Reap => "reap",
            Transition::Cancel => "cancel",
            Transition::Delete => "delete",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Transition::Enqueue => include_str!("enqueue.lua"),
            Transition::Claim => include_str!("claim.lua"),
            Transition::Renew => include_str!("renew.lua"),
            Transition::Finish => include_str!("finish.lua"),
            Transition::Release => include_str!("release.lua"),
            Transition::Reap => include_str!("reap.lua"),
            Transition::Cancel => include_str!("cancel.lua"),
            Transition::Delete => include_str!("delete.lua"),
        }
    }

    /// A call of this transition on `queue`'s Redis; keys and arguments follow.
    pub(crate) fn on(self, queue: &Queue) -> Call {
        Call {
            transition: self,
            form: Form::of(queue),
            refused: queue.functions_refused.clone(),
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// The library and the scripts in one of the two forms a deployment may need: `PUBLISH` on one
/// server; `SPUBLISH` on a cluster, where a plain `PUBLISH` is relayed to every node and counts
/// only its own node's subscribers, and a shard channel stays on its slot's nodes (the channels
/// carry the deployment's hash tag; see [`crate::events`]).
pub(crate) struct Form {
    /// The library's name (`dcc_<12 hex>`).
    name: String,
    /// `FUNCTION LOAD`'s argument.
    library: String,
    /// Each transition's function name, in [`Transition::ALL`] order.
    functions: Vec<String>,
    /// Each transition as a script (helpers first), for a Redis that refuses functions.
    scripts: Vec<redis::Script>,
}

/// The plain form and the sharded one.
static FORMS: LazyLock<(Form, Form)> = LazyLock::new(|| (Form::new(false), Form::new(true)));

impl Form {
    /// The form `queue`'s Redis needs.
    fn of(queue: &Queue) -> &'static Form {
        match queue.target() {
            Target::Node(_) => &FORMS.0,
            Target::Cluster(_) => &FORMS.1,
        }
    }

    /// Loads the library where it is missing (or replaces it with the same text).
    fn load(&self) -> Cmd {
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(&self.library)
            .take()
    }

    fn new(sharded: bool) -> Form {
        let publish = |s: &str| match sharded {
            true => s.replace("redis.call('PUBLISH',", "redis.call('SPUBLISH',"),
            false => s.to_string(),
        };
        let helpers = publish(HELPERS);
        let mut text = format!("{helpers}\n");
        for t in Transition::ALL {
            let source = publish(t.source());
            let (defs, run) = source.split_once(EACH_CALL).unwrap_or(("", &source));
            // (a block each: a transition's locals are its own, and Lua's 200-locals limit is per
            // block)
            text.push_str(&format!(
                "do\nlocal KEYS, ARGV\n{defs}\nredis.register_function('{NAME_SLOT}_{name}', function(keys, args)\n\
                 KEYS, ARGV = keys, args\n{run}\nend)\nend\n",
                name = t.name()
            ));
        }
        let hash = redis::Script::new(&text).get_hash().to_string();
        let name = format!("dcc_{}", &hash[..12]);
        Form {
            library: format!("#!lua name={name}\n{}", text.replace(NAME_SLOT, &name)),
            functions: Transition::ALL.iter().map(|t| format!("{name}_{}", t.name())).collect(),
            scripts: Transition::ALL
                .iter()
                .map(|t| redis::Script::new(&format!("{helpers}{}", publish(t.source()))))
                .collect(),
            name,
        }
    }
}

impl Queue {
    /// At a process's start: loads this version's library on every primary of the deployment
    /// (the first calls then find it), and deletes the libraries of other DCC versions there,
    /// which would otherwise stay in Redis (persisted and replicated) after every upgrade. A
    /// process of such a version still running loads its own again at its next call (one round
    /// trip, once per process start of another version: a start deletes, a call never does). The
    /// names deleted; none where functions are refused.
    pub async fn install_library(&self) -> crate::Result<Vec<String>> {
        let form = Form::of(self);
        let mut dropped = Vec::new();
        for q in self.per_server() {
            let mut c = q.conn().await?;
            let list = redis::cmd("FUNCTION").arg("LIST").take();
            let held: Vec<std::collections::HashMap<String, redis::Value>> = match c.on_home(&list).await {
                Err(e) if refuses_functions(&e) => {
                    refuse(&q.functions_refused, &e);
                    return Ok(dropped);
                }
                held => held?,
            };
            let names: Vec<String> = held
                .iter()
                .filter_map(|lib| redis::from_redis_value_ref(lib.get("library_name")?).ok())
                .collect();
            for name in names.iter().filter(|n| is_dcc_library(n) && **n != form.name) {
                let delete = redis::cmd("FUNCTION").arg("DELETE").arg(name).take();
                // (another process may have deleted it first)
                if let Err(e) = c.on_home::<()>(&delete).await
                    && !e.detail().is_some_and(|d| d.contains("not found"))
                {
                    return Err(e.into());
                }
                dropped.push(name.clone());
            }
            if !names.contains(&form.name) {
                c.on_home::<String>(&form.load()).await?;
            }
        }
        Ok(dropped)
    }
}

/// Marks a queue's Redis as refusing functions (logged the first time).
fn refuse(refused: &AtomicBool, e: &RedisError) {
    if !refused.swap(true, Ordering::Relaxed) {
        tracing::warn!(error = %e, "Redis refuses functions: the job transitions go as scripts (EVALSHA)");
    }
}

/// A library name of DCC's making: `dcc_` and 12 hex digits.
fn is_dcc_library(name: &str) -> bool {
    name.strip_prefix("dcc_")
        .is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One call of a transition: its keys and arguments, sent as `FCALL` (or `EVALSHA` where
/// functions are refused).
pub(crate) struct Call {
    transition: Transition,
    form: &'static Form,
    /// Whether this queue's Redis refused functions (shared by every clone of the queue).
    refused: Arc<AtomicBool>,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call {
    /// Adds a key (`KEYS[n]`).
    pub(crate) fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    /// Adds an argument (`ARGV[n]`).
    pub(crate) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    fn script(&self) -> &redis::Script {
        &self.form.scripts[self.transition as usize]
    }

    /// The command to send (to put it in a pipeline; its error reply goes to [`Call::again`]).
    pub(crate) fn cmd(&self) -> Cmd {
        let mut c = match self.refused.load(Ordering::Relaxed) {
            false => redis::cmd("FCALL")
                .arg(&self.form.functions[self.transition as usize])
                .take(),
            true => redis::cmd("EVALSHA").arg(self.script().get_hash()).take(),
        };
        c.arg(self.keys.len()).arg(&self.keys).arg(&self.args);
        c
    }

    /// Runs the call; where the library (or script) is missing, loads it and runs it again.
    pub(crate) async fn invoke_async<T: FromRedisValue>(&self, conn: &mut Conn) -> RedisResult<T> {
        match self.cmd().query_async(conn).await {
            Err(e) => self.again(e, conn).await,
            ok => ok,
        }
    }

    /// This call's reply `v`, out of a pipeline. A call that did not run (its code missing
    /// there, or functions refused) is sent again alone ([`Call::again`]): what it wrote then
    /// came after everything sent with it.
    pub(crate) async fn reply<T: FromRedisValue>(&self, v: Value, conn: &mut Conn) -> RedisResult<Reply<T>> {
        match v.extract_error() {
            Ok(v) => Ok(Reply {
                value: T::from_redis_value(v).map_err(RedisError::from)?,
                resent: false,
            }),
            Err(e) => Ok(Reply {
                value: self.again(e, conn).await?,
                resent: true,
            }),
        }
    }

    /// After the call was answered `e`: when that says it did not run because its code is
    /// missing there, or because functions are refused, loads what it needs and sends it again;
    /// otherwise `e` (a call that failed running may have written part of its work).
    pub(crate) async fn again<T: FromRedisValue>(&self, e: RedisError, conn: &mut Conn) -> RedisResult<T> {
        if refuses_functions(&e) {
            refuse(&self.refused, &e);
            return self.as_script(conn).await;
        }
        if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) {
            // (loaded first: sent as it is, it would go out as `EVALSHA` and be refused once
            // more before the client loads it)
            self.script().prepare_invoke().load_async(conn).await?;
            return self.as_script(conn).await;
        }
        if !function_missing(&e) {
            return Err(e);
        }
        match conn.on_home::<String>(&self.form.load()).await {
            Ok(_) => self.cmd().query_async(conn).await,
            Err(e) if refuses_functions(&e) => {
                refuse(&self.refused, &e);
                self.as_script(conn).await
            }
            Err(e) => Err(e),
        }
    }

    /// The call as `EVALSHA` (the script loaded first where Redis does not have it).
    async fn as_script<T: FromRedisValue>(&self, conn: &mut Conn) -> RedisResult<T> {
        let mut inv = self.script().prepare_invoke();
        for k in &self.keys {
            inv.key(k.as_slice());
        }
        for a in &self.args {
            inv.arg(a.as_slice());
        }
        inv.invoke_async(conn).await
    }
}

/// A call's reply out of a pipeline ([`Call::reply`]).
pub(crate) struct Reply<T> {
    /// What it answered.
    pub value: T,
    /// It did not run in the pipeline, and was sent again alone after it.
    pub resent: bool,
}

/// `FCALL` of a function this Redis does not hold.
fn function_missing(e: &RedisError) -> bool {
    e.code() == Some("ERR") && e.detail().is_some_and(|d| d.starts_with("Function not found"))
}

/// A Redis that will not run functions: no such command, or an ACL refusing it.
fn refuses_functions(e: &RedisError) -> bool {
    e.code() == Some("NOPERM")
        || (e.code() == Some("ERR") && e.detail().is_some_and(|d| d.starts_with("unknown command")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transition_has_its_function_and_script_in_both_forms() {
        for form in [&FORMS.0, &FORMS.1] {
            let name = form.library.lines().next().unwrap().trim_start_matches("#!lua name=");
            assert_eq!(name, form.name);
            assert!(name.starts_with("dcc_") && name.len() == 16, "{name}");
            assert!(!form.library.contains(NAME_SLOT));
            for t in Transition::ALL {
                let f = &form.functions[t as usize];
                assert_eq!(f, &format!("{name}_{}", t.name()));
                assert!(form.library.contains(&format!("redis.register_function('{f}'")));
            }
        }
        assert!(is_dcc_library(&FORMS.0.name) && is_dcc_library(&FORMS.1.name));
        assert!(!is_dcc_library("dcc_") && !is_dcc_library("dcc_0123456789abc") && !is_dcc_library("dcc_mine_12345"));
        assert_ne!(FORMS.0.library, FORMS.1.library);
        assert!(FORMS.1.library.contains("redis.call('SPUBLISH',"));
        assert!(!FORMS.1.library.contains("redis.call('PUBLISH',"));
    }
}
