//! Which addresses a webhook may reach (EVENTS.md "Webhooks", the SSRF rules): never link-local
//! (169.254.0.0/16, fe80::/10: cloud metadata services live there); loopback, private,
//! unique-local, shared (CGNAT), unspecified, multicast and broadcast addresses only when
//! `webhooks_allow_private` is set.
//!
//! The rules hold on the addresses a name resolves to when the delivery is made, not only when
//! the webhook was created: [`GuardedResolver`] is the delivery client's only resolver, so a
//! connection can only ever go to an address that passed them (a name that re-resolves to a
//! private address between check and connect gets nowhere).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an address is refused, if it is.
pub fn refusal(ip: IpAddr, allow_private: bool) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_link_local() {
                Some("a link-local address")
            } else if allow_private {
                None
            } else if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
                Some("a private address")
            } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || a == 0 {
                Some("not a unicast host address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if first & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if allow_private {
                None
            } else if v6.is_loopback() {
                Some("a loopback address")
            } else if first & 0xfe00 == 0xfc00 {
                Some("a private (unique local) address")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("not a unicast host address")
            } else {
                None
            }
        }
    }
}

/// Resolves `host:port` and checks every address; answers them, or why the host is refused.
pub async fn resolve_checked(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    for addr in &addrs {
        if let Some(why) = refusal(addr.ip(), allow_private) {
            return Err(format!("{host} resolves to {}, {why}", addr.ip()));
        }
    }
    Ok(addrs)
}

/// The delivery client's resolver: a name resolves only to addresses the rules allow.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    /// `webhooks_allow_private`.
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // The port is the URL's: reqwest puts it on each address it gets back.
            let addrs = resolve_checked(&host, 0, allow_private).await?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

impl GuardedResolver {
    /// As the resolver reqwest takes.
    pub fn shared(self) -> Arc<GuardedResolver> {
        Arc::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn link_local_is_refused_always_and_private_unless_allowed() {
        for always in ["169.254.169.254", "fe80::1", "::ffff:169.254.169.254"] {
            assert!(refusal(ip(always), true).is_some(), "{always}");
            assert!(refusal(ip(always), false).is_some(), "{always}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "0.0.0.0",
            "::",
        ] {
            assert!(refusal(ip(private), false).is_some(), "{private}");
            assert!(refusal(ip(private), true).is_none(), "{private} when allowed");
        }
        for public in ["93.184.216.34", "2606:2800:220:1::1", "::ffff:93.184.216.34"] {
            assert!(refusal(ip(public), false).is_none(), "{public}");
        }
    }

    #[tokio::test]
    async fn names_are_checked_on_what_they_resolve_to() {
        let refused = resolve_checked("localhost", 80, false).await.unwrap_err();
        assert!(refused.contains("loopback"), "{refused}");
        assert!(resolve_checked("localhost", 80, true).await.is_ok());
        assert!(resolve_checked("[::1]", 80, false).await.is_err());
    }
}
