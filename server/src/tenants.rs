//! Who is calling: named API keys with a role and limits, for several teams on one DCC.
//!
//! Keys come from `DCC_API_KEYS` (plain keys, each an admin, as before) and from
//! `DCC_API_KEYS_FILE`, a JSON file holding only SHA-256 digests of the keys:
//!
//! ```json
//! {"keys": [{"name": "team-a", "role": "submit", "sha256": "<hex of sha256(key)>",
//!            "submitsPerSec": 10, "burst": 20}]}
//! ```
//!
//! The file is re-read when it changes (checked every few seconds), so keys are added, revoked
//! and rotated without a restart; a file that does not parse is logged and the previous keys
//! stay. Keys are compared as digests in constant time, every entry every time, and never logged.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Tenants DCC names itself: `admin` owns what plain `DCC_API_KEYS` submit, `local` what a
/// keyless server ran (and so every job from before keys were turned on). A keys-file entry of
/// either name would own their jobs, so the names are refused there (in any case).
pub const RESERVED_TENANTS: &[&str] = &[ADMIN_TENANT, LOCAL_TENANT];
/// The tenant of plain `DCC_API_KEYS`.
pub const ADMIN_TENANT: &str = "admin";
/// The tenant of every caller of a keyless server.
pub const LOCAL_TENANT: &str = "local";

/// How often the keys file is checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: every tenant's jobs, fleet operations (drain, undrain).
    Admin,
    /// Submit jobs, and read, wait on, cancel and delete its own tenant's jobs.
    Submit,
    /// Read its own tenant's jobs.
    Read,
}

/// The caller of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    /// The tenant (the key's name); jobs it submits belong to it.
    pub tenant: String,
    /// What it may do.
    pub role: Role,
    /// Submits per second it may sustain (`None`: unlimited).
    pub submits_per_sec: Option<f64>,
    /// Submits it may burst above that rate.
    pub burst: u32,
    /// Its tenant's quotas (jobs queued + running at once; fast ones).
    pub quota: dcc_shared::queue::enqueue::Quota,
}

impl Principal {
    /// Whoever calls a server without keys: a local, single-user stack.
    pub fn local() -> Self {
        Principal {
            tenant: LOCAL_TENANT.into(),
            role: Role::Admin,
            submits_per_sec: None,
            burst: 0,
            quota: Default::default(),
        }
    }

    /// Whether it sees every tenant's jobs.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether it may see a job owned by `tenant` (`""`: a job from before tenants existed,
    /// admins only).
    pub fn owns(&self, tenant: &str) -> bool {
        self.is_admin() || (!tenant.is_empty() && tenant == self.tenant)
    }
}

/// Client-chosen ids are per tenant: a non-admin's id `x1` is stored as `<tenant>.x1` (tenant
/// names have no '.'), so two tenants may both use `x1`; everything a tenant is sent shows its own
/// spelling. Admins' ids (and generated ones) are stored as they are, and admins see stored ids.
impl Principal {
    fn prefix(&self) -> Option<String> {
        (!self.is_admin()).then(|| format!("{}.", self.tenant))
    }

    /// The stored id of a client-chosen id, or `INVALID_JOB` when the scoped form is too long.
    pub fn scoped(&self, client: &dcc_shared::job::JobId) -> Result<dcc_shared::job::JobId, crate::error::ApiError> {
        let Some(p) = self.prefix() else {
            return Ok(client.clone());
        };
        dcc_shared::job::JobId::parse(&format!("{p}{client}")).map_err(|m| {
            crate::error::ApiError::from(dcc_shared::job::spec::SpecError::Invalid {
                field: Some("id".into()),
                message: format!("id is too long for tenant {:?}: {m}", self.tenant),
            })
        })
    }

    /// Whose jobs a listing or a count covers when the caller asks for `requested` (`tenant=`):
    /// an admin's, any one tenant's or (`None`) everyone's; a tenant's key, its own (naming
    /// another is 403).
    pub fn tenant_filter(&self, requested: Option<&str>) -> Result<Option<String>, crate::error::ApiError> {
        match requested {
            _ if !self.is_admin() && requested.is_some_and(|t| t != self.tenant) => Err(crate::error::ApiError::new(
                crate::error::Code::Forbidden,
                "a tenant's key sees its own jobs only",
            )),
            _ if !self.is_admin() => Ok(Some(self.tenant.clone())),
            t => Ok(t.map(String::from)),
        }
    }

    /// The stored ids a path id may name for this caller, most specific first.
    pub fn candidates(&self, path_id: &str) -> Vec<String> {
        match self.prefix() {
            Some(p) => vec![format!("{p}{path_id}"), path_id.to_string()],
            None => vec![path_id.to_string()],
        }
    }

    /// A stored id as this caller spells it.
    pub fn external<'a>(&self, stored: &'a str) -> &'a str {
        match self.prefix() {
            Some(p) => stored.strip_prefix(p.as_str()).unwrap_or(stored),
            None => stored,
        }
    }

    /// A job view as this caller sees it: its own spelling of the id, in the links too.
    pub fn view(&self, mut v: dcc_shared::job::JobView) -> dcc_shared::job::JobView {
        let ext = self.external(&v.job_id).to_string();
        if ext != v.job_id {
            let (from, to) = (format!("/api/v1/jobs/{}/", v.job_id), format!("/api/v1/jobs/{ext}/"));
            v.stdout_url = v.stdout_url.replacen(&from, &to, 1);
            v.stderr_url = v.stderr_url.replacen(&from, &to, 1);
            for o in &mut v.outputs {
                o.url = o.url.replacen(&from, &to, 1);
            }
            v.job_id = ext;
        }
        for d in &mut v.depends_on {
            d.job_id = self.external(&d.job_id).to_string();
        }
        if let Some(c) = &mut v.array_child {
            c.parent_id = self.external(&c.parent_id).to_string();
        }
        if let Some(a) = &mut v.array {
            a.children_url = format!("/api/v1/jobs/{}/children", v.job_id);
        }
        v
    }

    /// An error as this caller sees it (the `jobId` of WAIT_TIMEOUT and NO_WORKER).
    pub fn error(&self, mut e: crate::error::ApiError) -> crate::error::ApiError {
        if let Some(stored) = e.job_id.take() {
            let ext = self.external(&stored).to_string();
            e.message = e.message.replace(&stored, &ext);
            e.job_id = Some(ext);
        }
        e
    }
}

/// The caller of a request as the auth middleware resolved it (the local admin when keys are
/// off, or for a route that needs none).
pub fn of(req: &axum::extract::Request) -> Principal {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::local)
}

/// Takes one submit from `who`'s rate (every API server shares it through Redis): `429
/// RATE_LIMITED` with `Retry-After` when its bucket is empty.
pub async fn admit(state: &crate::state::AppState, who: &Principal) -> Result<(), crate::error::ApiError> {
    let Some(rate) = who.submits_per_sec else { return Ok(()) };
    match state.queue.take_submit(&who.tenant, rate, who.burst).await? {
        None => Ok(()),
        Some(wait) => Err(crate::error::ApiError {
            retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u32),
            ..crate::error::ApiError::new(
                crate::error::Code::RateLimited,
                format!(
                    "{:?} may submit {rate} jobs a second (burst {}); retry later",
                    who.tenant, who.burst
                ),
            )
        }),
    }
}

#[derive(Deserialize)]
struct KeysFile {
    keys: Vec<FileKey>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileKey {
    name: String,
    role: Role,
    sha256: String,
    #[serde(default)]
    submits_per_sec: Option<f64>,
    #[serde(default)]
    burst: Option<u32>,
    #[serde(default)]
    max_active_jobs: Option<u32>,
    #[serde(default)]
    max_fast_jobs: Option<u32>,
}

/// One key: its digest and who it is.
struct Entry {
    digest: [u8; 32],
    principal: Principal,
}

/// Every known key.
#[derive(Default)]
struct Ring {
    entries: Vec<Entry>,
}

impl Ring {
    fn find(&self, presented: &str) -> Option<Principal> {
        let p: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every entry is compared, match or not, and each comparison takes the same time.
        let mut found = None;
        for e in &self.entries {
            let same = e.digest.iter().zip(p.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
            if same && found.is_none() {
                found = Some(e.principal.clone());
            }
        }
        found
    }
}

/// The keys of this process, reloadable.
#[derive(Clone)]
pub struct Keys {
    ring: Arc<RwLock<Arc<Ring>>>,
    plain: Arc<Vec<String>>,
    file: Option<PathBuf>,
}

impl Keys {
    /// Keys from `plain` (admins) and `file`; an unreadable file at start is an error.
    pub fn load(plain: &[String], file: Option<PathBuf>) -> Result<Self, String> {
        let keys = Keys {
            ring: Arc::new(RwLock::new(Arc::new(Ring::default()))),
            plain: Arc::new(plain.to_vec()),
            file,
        };
        keys.reload()?;
        Ok(keys)
    }

    /// Whether any key is configured (else every caller is [`Principal::local`]).
    pub fn enabled(&self) -> bool {
        !self.plain.is_empty() || self.file.is_some()
    }

    /// Who `presented` is, if it is a key.
    pub fn find(&self, presented: &str) -> Option<Principal> {
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner()).clone();
        ring.find(presented)
    }

    fn reload(&self) -> Result<usize, String> {
        let mut entries: Vec<Entry> = self
            .plain
            .iter()
            .map(|k| Entry {
                digest: Sha256::digest(k.as_bytes()).into(),
                principal: Principal {
                    tenant: ADMIN_TENANT.into(),
                    ..Principal::local()
                },
            })
            .collect();
        if let Some(path) = &self.file {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("DCC_API_KEYS_FILE {}: {e}", path.display()))?;
            entries.extend(parse_file(&text).map_err(|e| format!("DCC_API_KEYS_FILE {}: {e}", path.display()))?);
        }
        let n = entries.len();
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Ring { entries });
        Ok(n)
    }

    /// Re-reads the keys file whenever it changes, until the process ends.
    pub fn spawn_reload(&self) {
        let Some(path) = self.file.clone() else { return };
        let keys = self.clone();
        tokio::spawn(async move {
            let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let mut seen: Option<SystemTime> = modified(&path);
            loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                let now = modified(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                match keys.reload() {
                    Ok(n) => tracing::info!(keys = n, "API keys reloaded"),
                    Err(e) => tracing::warn!(error = e, "API keys file not reloaded; the previous keys stay"),
                }
            }
        });
    }
}

fn parse_file(text: &str) -> Result<Vec<Entry>, String> {
    let file: KeysFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    file.keys
        .into_iter()
        .map(|k| {
            let digest: [u8; 32] = hex::decode(k.sha256.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("key {:?}: sha256 must be 64 hex digits", k.name))?;
            if k.name.is_empty()
                || k.name.len() > 64
                || !k
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!("key name {:?}: 1 to 64 letters, digits, '-' or '_'", k.name));
            }
            if RESERVED_TENANTS.iter().any(|r| r.eq_ignore_ascii_case(&k.name)) {
                return Err(format!(
                    "key name {:?} is reserved: DCC's own tenants are {RESERVED_TENANTS:?} (plain DCC_API_KEYS are \"admin\", a keyless server is \"local\"); name the tenant otherwise",
                    k.name
                ));
            }
            if k.submits_per_sec.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                return Err(format!("key {:?}: submitsPerSec must be above 0", k.name));
            }
            Ok(Entry {
                digest,
                principal: Principal {
                    tenant: k.name,
                    role: k.role,
                    submits_per_sec: k.submits_per_sec,
                    burst: k.burst.unwrap_or(1).max(1),
                    quota: dcc_shared::queue::enqueue::Quota {
                        active: k.max_active_jobs.unwrap_or(0),
                        fast: k.max_fast_jobs.unwrap_or(0),
                    },
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(k: &str) -> String {
        hex::encode(Sha256::digest(k.as_bytes()))
    }

    #[test]
    fn keys_resolve_to_their_tenant_and_role() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"keys": [{{"name": "team-a", "role": "submit", "sha256": "{}", "submitsPerSec": 5, "burst": 10}},
                             {{"name": "viewer", "role": "read", "sha256": "{}"}}]}}"#,
                digest("ka"),
                digest("kr")
            ),
        )
        .unwrap();
        let keys = Keys::load(&["root".into()], Some(path.clone())).unwrap();
        let a = keys.find("ka").unwrap();
        assert_eq!(
            (a.tenant.as_str(), a.role, a.submits_per_sec, a.burst),
            ("team-a", Role::Submit, Some(5.0), 10)
        );
        assert_eq!(keys.find("kr").unwrap().role, Role::Read);
        assert!(keys.find("root").unwrap().is_admin());
        assert!(keys.find("nope").is_none() && keys.find("").is_none());
        assert!(a.owns("team-a") && !a.owns("team-b") && !a.owns(""));
        // A broken file does not replace the keys in force.
        std::fs::write(&path, "{not json").unwrap();
        assert!(keys.reload().is_err());
        assert!(keys.find("ka").is_some());
        assert!(parse_file(r#"{"keys": [{"name": "x", "role": "submit", "sha256": "abc"}]}"#).is_err());
        assert!(parse_file(r#"{"keys": [{"name": "x", "role": "boss", "sha256": "abc"}]}"#).is_err());
    }

    /// `admin` (plain keys) and `local` (no keys; jobs from before keys) are DCC's own tenants:
    /// a keys-file entry of that name would own their jobs.
    #[test]
    fn internal_tenant_names_are_refused() {
        for name in ["admin", "local", "Admin", "LOCAL"] {
            let text = format!(
                r#"{{"keys": [{{"name": "{name}", "role": "read", "sha256": "{}"}}]}}"#,
                digest("k")
            );
            let err = parse_file(&text).err().unwrap_or_else(|| panic!("{name} was accepted"));
            assert!(err.contains("reserved") && err.contains(name), "{err}");
        }
        let text = format!(
            r#"{{"keys": [{{"name": "administrators", "role": "read", "sha256": "{}"}}]}}"#,
            digest("k")
        );
        assert!(parse_file(&text).is_ok());
    }
}
