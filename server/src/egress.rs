//! Where the server may connect when it fetches a `url` input or POSTs a completion webhook:
//! public addresses only, unless the operator opens internal ones on purpose
//! (`DCC_URL_INPUT_ALLOW`, `DCC_NOTIFY_ALLOW`: CIDRs and/or host names).
//!
//! A URL is checked three times, because each check alone can be slipped past:
//! - at submit, an address literal in the URL (`http://169.254.169.254/…`) → `INVALID_JOB`;
//! - when connecting, every address a name resolves to, inside the HTTP client's resolver, so
//!   the address checked is the address dialled (no DNS rebinding between check and use) →
//!   `INPUT_FETCH_FAILED`;
//! - on every redirect hop (a public page may redirect to the metadata service).
//!
//! Proxies from the environment are not used: through one, the resolver would see the proxy's
//! name, not the target's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;

/// Redirect hops followed at most.
const MAX_REDIRECTS: usize = 5;

/// The operator's allow-list and the rule for everything else.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The variable that holds the allow-list (named in refusals).
    var: &'static str,
    /// Internal networks allowed on purpose.
    nets: Vec<IpNet>,
    /// Host names allowed on purpose, whatever they resolve to (lower case).
    hosts: Vec<String>,
}

/// Why a URL may not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The URL names an internal address.
    #[error(
        "{0} is not a public address; only public addresses are reached (an operator can allow internal ones with {1})"
    )]
    Address(IpAddr, &'static str),
    /// The name resolves to internal addresses only.
    #[error(
        "{0} resolves only to addresses that are not public; only public addresses are reached (an operator can allow it with {1})"
    )]
    Name(String, &'static str),
}

impl Default for Policy {
    /// Public addresses only (the `url` inputs' policy with nothing allowed).
    fn default() -> Self {
        Policy {
            var: "DCC_URL_INPUT_ALLOW",
            nets: Vec::new(),
            hosts: Vec::new(),
        }
    }
}

impl Policy {
    /// Parses the entries of the allow-list variable `var` (`DCC_URL_INPUT_ALLOW`,
    /// `DCC_NOTIFY_ALLOW`): a CIDR (`10.1.0.0/16`), an address (`10.1.2.3`), or a host name
    /// (`files.internal`).
    pub fn parse(var: &'static str, entries: &[String]) -> Result<Self, String> {
        let mut p = Policy {
            var,
            ..Policy::default()
        };
        for e in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if let Ok(net) = e.parse::<IpNet>() {
                p.nets.push(net);
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                p.nets.push(IpNet::from(ip));
            } else if e.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
                p.hosts.push(e.to_ascii_lowercase());
            } else {
                return Err(format!("{var}: {e:?} is neither a CIDR, an address nor a host name"));
            }
        }
        Ok(p)
    }

    /// Whether connecting to `ip` is allowed.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.nets.iter().any(|n| n.contains(&canonical(ip)) || n.contains(&ip))
    }

    fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    /// The check at submit: an address literal in `url` must be allowed. Names are checked
    /// when they are resolved.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        // The URL parser has already normalised literals (`2130706433` → `127.0.0.1`).
        let host = url.host_str().unwrap_or_default();
        match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) if !self.allows_ip(ip) => Err(Refused::Address(ip, self.var)),
            _ => Ok(()),
        }
    }

    /// A client builder that connects only where this policy allows.
    fn builder(&self, timeout: Duration) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .no_proxy()
            .dns_resolver(Arc::new(Resolver(Arc::new(self.clone()))))
    }

    /// A client for webhooks: connects only where this policy allows, follows no redirect (a
    /// POST is not replayed elsewhere; a receiver that moved gets a failed delivery saying so).
    pub fn post_client(&self, timeout: Duration) -> reqwest::Result<reqwest::Client> {
        self.builder(timeout).redirect(redirect::Policy::none()).build()
    }

    /// An HTTP client that connects only where this policy allows.
    pub fn client(&self, timeout: Duration) -> reqwest::Result<reqwest::Client> {
        let hops = self.clone();
        self.builder(timeout)
            .redirect(redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                }
                if !matches!(attempt.url().scheme(), "http" | "https") {
                    return attempt.error("a redirect left http(s)");
                }
                match hops.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => attempt.error(format!("a redirect was refused: {e}")),
                }
            }))
            .build()
    }
}

/// An error and its causes in one line (reqwest's own `Display` names only the outermost).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The policy's refusal inside a client error (the resolver's, carried up as a connect error),
/// if that is what it is.
pub fn refusal<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(r) = c.downcast_ref::<Refused>() {
            return Some(r);
        }
        cur = c.source();
    }
    None
}

/// Resolves with the system resolver, then keeps only allowed addresses.
struct Resolver(Arc<Policy>);

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let keep: Vec<SocketAddr> = if policy.allows_host(&host) {
                all
            } else {
                all.into_iter().filter(|a| policy.allows_ip(a.ip())).collect()
            };
            if keep.is_empty() {
                let refused = Refused::Name(host, policy.var);
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(keep.into_iter()) as Addrs)
        })
    }
}

/// An IPv4 address written in IPv6 as the IPv4 address it reaches; anything else unchanged.
/// The forms: IPv4-mapped `::ffff:a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d` (RFC 2765),
/// well-known NAT64 `64:ff9b::a.b.c.d` (RFC 6052), 6to4 `2002:AABB:CCDD::/48` (RFC 3056).
/// The others carrying one (IPv4-compatible `::a.b.c.d`, Teredo `2001::/32`, local-use NAT64
/// `64:ff9b:1::/48`, whose prefix length and so the IPv4 position are the operator's) are not
/// public at all: see [`public_v6`].
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    let s = v6.segments();
    let o = v6.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    if s[0..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
        return IpAddr::V4(last);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return IpAddr::V4(last);
    }
    if s[0] == 0x2002 {
        return IpAddr::V4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    ip
}

/// Whether `ip` is an ordinary public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", 0.0.0.0/8
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 169 && b == 254) // link-local: the cloud metadata service
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224) // multicast, reserved, broadcast
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0) // Teredo: tunnels to addresses we cannot see
        // NAT64 outside the well-known /96 (unwrapped by `canonical`): the local-use
        // 64:ff9b:1::/48 goes through a private translator, the rest is unassigned.
        || (s[0] == 0x64 && s[1] == 0xff9b)
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
        || (s[0..6] == [0, 0, 0, 0, 0, 0])) // IPv4-compatible ::a.b.c.d (deprecated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_in_every_spelling_are_refused() {
        for s in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "2002:a9fe:a9fe::",
            "::127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip(s)), "{s} counted as public");
        }
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip(s)), "{s} counted as internal");
        }
    }

    /// Every IPv6 form that carries an IPv4 address is judged by that address (or, where the
    /// form reaches a network DCC cannot see, refused outright).
    #[test]
    fn ipv4_embedded_in_ipv6_is_judged_by_the_ipv4_address() {
        for s in [
            "::ffff:0:7f00:1",          // IPv4-translated (RFC 2765) 127.0.0.1
            "::ffff:0:a9fe:a9fe",       // IPv4-translated 169.254.169.254
            "::ffff:0:a00:1",           // IPv4-translated 10.0.0.1
            "64:ff9b:1::a9fe:a9fe",     // local-use NAT64 (RFC 8215), /96 spelling
            "64:ff9b:1:a9fe:a9:fe00::", // local-use NAT64, /48 spelling (RFC 6052)
            "64:ff9b:1::808:808",       // local-use NAT64 reaches a private translator
            "64:ff9b::a9fe:a9fe",       // well-known NAT64
            "64:ff9b::a00:1",
            "::ffff:a9fe:a9fe", // IPv4-mapped
            "::a9fe:a9fe",      // IPv4-compatible
            "::8.8.8.8",        // IPv4-compatible is deprecated: nothing routes it
            "2002:7f00:1::",    // 6to4 of 127.0.0.1
            "2002:a00:1:ffff::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
            "2001::1",
            "100::1", // discard-only (RFC 6666)
        ] {
            assert!(!is_public(ip(s)), "{s} counted as public");
        }
        for s in ["::ffff:0:808:808", "64:ff9b::808:808", "2002:808:808::1"] {
            assert!(is_public(ip(s)), "{s} counted as internal");
        }
        let p = Policy::parse("DCC_URL_INPUT_ALLOW", &["10.0.0.0/8".into()]).unwrap();
        assert!(
            p.allows_ip(ip("::ffff:0:a00:1")),
            "the allow-list sees through the translation"
        );
    }

    #[test]
    fn the_allow_list_opens_what_it_names() {
        let p = Policy::parse(
            "DCC_URL_INPUT_ALLOW",
            &["10.1.0.0/16".into(), "127.0.0.1".into(), "Files.Internal".into()],
        )
        .unwrap();
        assert!(p.allows_ip(ip("10.1.2.3")) && !p.allows_ip(ip("10.2.0.1")));
        assert!(p.allows_ip(ip("127.0.0.1")) && p.allows_ip(ip("::ffff:127.0.0.1")));
        assert!(p.allows_host("files.internal.") && !p.allows_host("other.internal"));
        assert!(Policy::parse("DCC_NOTIFY_ALLOW", &["bad entry!".into()]).is_err());
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let none = Policy::default();
        assert!(
            none.check_url(&url("http://169.254.169.254/latest/meta-data/"))
                .is_err()
        );
        assert!(none.check_url(&url("http://[::ffff:7f00:1]:8080/")).is_err());
        assert!(none.check_url(&url("http://2130706433/")).is_err(), "decimal 127.0.0.1");
        assert!(
            none.check_url(&url("http://example.org/")).is_ok(),
            "names are checked when resolved"
        );
        assert!(p.check_url(&url("http://127.0.0.1:9/")).is_ok());
    }
}
