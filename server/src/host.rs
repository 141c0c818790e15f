//! DNS rebinding: a page on `evil.example` whose name the attacker re-points at 127.0.0.1 talks
//! to a local DCC as if it were the server's own page (its `Origin` equals the `Host` it sends),
//! so the Origin guard (`origin`) lets it through. What gives it away is the `Host` header: the
//! attacker's name, never one of this server's.
//!
//! A keyless server therefore answers only requests whose `Host` names it: `localhost`, an IP
//! address (a page served from an address literal cannot be rebound; the browser dials the
//! address itself), or a name in `DCC_PUBLIC_HOSTS`. Others get `421 HOST_NOT_ALLOWED`. A keyed
//! server is protected by its keys (a rebinding page has none) and usually sits behind proxies
//! and load balancers with names of their own: it checks `Host` only when `DCC_PUBLIC_HOSTS`
//! lists its names. Requests without `Host` (HTTP/1.0 tools) are not browsers' and pass.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Code};
use crate::state::AppState;

/// The middleware.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let listed = &state.config.public_hosts;
    let checked = !state.keys.enabled() || !listed.is_empty();
    let host = req
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().map(String::from).unwrap_or_default())
        .or_else(|| req.uri().host().map(String::from));
    match host {
        Some(h) if checked && !names_this_server(&h, listed) => refused(&h).into_response(),
        _ => next.run(req).await,
    }
}

/// Whether a `Host` value (`name[:port]`, `[v6]:port`) is `localhost`, an address, or listed.
fn names_this_server(host: &str, listed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => return v6.split_once(']').is_some_and(|(a, _)| a.parse::<IpAddr>().is_ok()),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.parse::<IpAddr>().is_ok() || listed.contains(&name)
}

fn refused(host: &str) -> ApiError {
    ApiError::new(
        Code::HostNotAllowed,
        format!(
            "this server does not answer to the name {host:?} (a page reaching it by another name may be a DNS rebinding attack); an operator can add the name to DCC_PUBLIC_HOSTS"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_name_this_server() {
        let listed = vec!["dcc.internal".to_string()];
        for h in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.:8080",
            "127.0.0.1:8080",
            "10.1.2.3",
            "[::1]:8080",
            "[fe80::1]",
            "dcc.internal:443",
            "DCC.Internal",
        ] {
            assert!(names_this_server(h, &listed), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io:8080",
            "[::1",
            "",
            "dcc.internal.evil.example",
        ] {
            assert!(!names_this_server(h, &listed), "{h}");
        }
    }
}
