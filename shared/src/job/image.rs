//! Which images may run (`DCC_IMAGE_ALLOW`). Patterns are globs (`*` crosses `/`) over the
//! image's repository, without tag or digest, matched in two spellings: as written
//! (`dcc-busybox`, `ghcr.io/team/tool`) and fully qualified (`docker.io/library/busybox`), so
//! `docker.io/library/*` and `busybox` both do what they say. No patterns: every image.

use glob::{MatchOptions, Pattern};

/// The operator's image allow-list.
#[derive(Clone, Debug, Default)]
pub struct ImageAllow {
    patterns: Vec<Pattern>,
}

const ANYWHERE: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

impl ImageAllow {
    /// Parses the patterns; an empty list allows every image.
    pub fn parse(patterns: &[String]) -> Result<Self, String> {
        let patterns = patterns
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(|p| Pattern::new(p).map_err(|e| format!("DCC_IMAGE_ALLOW: {p:?} is not a pattern: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(ImageAllow { patterns })
    }

    /// Whether any image is refused at all.
    pub fn is_open(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `image` may run.
    pub fn allows(&self, image: &str) -> bool {
        if self.is_open() {
            return true;
        }
        let written = repository(image);
        let full = qualified(written);
        self.patterns
            .iter()
            .any(|p| p.matches_with(written, ANYWHERE) || p.matches_with(&full, ANYWHERE))
    }
}

/// The reference without `@digest` and `:tag` (a `:` before the last `/` is a registry port).
fn repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// The registry an image is pulled from: its first component when that names a host
/// (`ghcr.io`, `registry.local:5000`, `localhost`), else `docker.io`.
pub fn registry(image: &str) -> &str {
    let repo = repository(image);
    match qualified(repo).split_once('/') {
        Some((host, _)) if repo.starts_with(host) => &repo[..host.len()],
        _ => "docker.io",
    }
}

/// Docker's own expansion: no registry means `docker.io`, no namespace on it means `library/`.
fn qualified(repo: &str) -> String {
    let first = repo.split('/').next().unwrap_or(repo);
    let has_registry = repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        repo.to_string()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(p: &[&str]) -> ImageAllow {
        ImageAllow::parse(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn patterns_over_registry_and_repository() {
        assert!(allow(&[]).allows("anything/at:all"));
        let a = allow(&["docker.io/library/*", "ghcr.io/team/*", "dcc-*"]);
        assert!(a.allows("busybox"));
        assert!(a.allows("busybox:1.36@sha256:abc"));
        assert!(a.allows("docker.io/library/alpine:3"));
        assert!(a.allows("ghcr.io/team/tool:v1"));
        assert!(a.allows("ghcr.io/team/sub/tool"));
        assert!(a.allows("dcc-busybox:latest"));
        assert!(!a.allows("someone/miner"), "docker.io/someone/miner");
        assert!(!a.allows("ghcr.io/other/tool"));
        assert!(!a.allows("evil.example/library/busybox"));
        let ported = allow(&["registry.local:5000/*"]);
        assert!(ported.allows("registry.local:5000/app:2"));
        assert!(!ported.allows("registry.local:5001/app"));
        assert!(ImageAllow::parse(&["[".into()]).is_err());
    }

    #[test]
    fn registry_of_an_image() {
        assert_eq!(registry("busybox"), "docker.io");
        assert_eq!(registry("team/tool:1"), "docker.io");
        assert_eq!(registry("ghcr.io/team/tool:v1"), "ghcr.io");
        assert_eq!(registry("127.0.0.1:5000/private/busybox@sha256:ab"), "127.0.0.1:5000");
        assert_eq!(registry("localhost/x"), "localhost");
        assert_eq!(
            registry("123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:3"),
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
        );
    }
}
