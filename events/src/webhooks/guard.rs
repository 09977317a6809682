//! Which addresses a webhook may reach (EVENTS.md "Webhooks", the SSRF rules): never link-local
//! (169.254.0.0/16, fe80::/10: cloud metadata services live there); loopback, private,
//! unique-local, shared (CGNAT), unspecified, multicast and broadcast addresses only when
//! `webhooks_allow_private` is set.
//!
//! The rules hold on the addresses a name resolves to when the delivery is made, not only when
//! the webhook was created: [`GuardedResolver`] is the delivery client's only resolver, so a
//! connection can only ever go to an address that passed them (a name that re-resolves to a
//! private address between check and connect gets nowhere).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The IPv4 address an IPv6 address carries, where it carries one: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`)
/// and 6to4 (`2002:AABB:CCDD::/48`). The rules are applied to it, so no such form reaches an
/// address they refuse.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = v6.octets();
    let v4 = |a: usize, b: usize, c: usize, d: usize| Some(Ipv4Addr::new(o[a], o[b], o[c], o[d]));
    let s = v6.segments();
    if let Some(mapped) = v6.to_ipv4_mapped() {
        Some(mapped)
    } else if (s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1))
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        // IPv4-compatible (not :: and ::1), or NAT64's well-known /96.
        v4(12, 13, 14, 15)
    } else if s[..3] == [0x64, 0xff9b, 1] {
        // RFC 6052 with a /48 prefix: the address is in octets 6-7 and 9-10 (8 is reserved).
        v4(6, 7, 9, 10)
    } else if s[0] == 0x2002 {
        v4(2, 3, 4, 5)
    } else {
        None
    }
}

/// Why an address is refused, if it is.
pub fn refusal(ip: IpAddr, allow_private: bool) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
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
            } else if a >= 240 || (a == 192 && b == 0 && c == 0) || (a == 198 && (b & 0xfe) == 18) {
                Some("a reserved address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if s[0] & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if allow_private {
                None
            } else if v6.is_loopback() {
                Some("a loopback address")
            } else if s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfec0 {
                Some("a private (unique or site local) address")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("not a unicast host address")
            } else if s[..4] == [0x100, 0, 0, 0] {
                Some("a reserved (discard) address")
            } else {
                None
            }
        }
    }
}

/// Why a host cannot be delivered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// It is, or resolves to, an address the rules refuse: final.
    Refused(String),
    /// It does not resolve now (it may later).
    Unresolved(String),
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfit::Refused(why) | Unfit::Unresolved(why) => f.write_str(why),
        }
    }
}

/// Resolves `host:port` and checks every address; answers them, or why the host is unfit.
pub async fn resolve_checked(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Unfit> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Unfit::Unresolved(format!("cannot resolve {host}: {e}")))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(Unfit::Unresolved(format!("{host} resolves to no address")));
    }
    for addr in &addrs {
        if let Some(why) = refusal(addr.ip(), allow_private) {
            return Err(Unfit::Refused(format!("{host} resolves to {}, {why}", addr.ip())));
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
            let addrs =
                resolve_checked(&host, 0, allow_private).await.map_err(|e| e.to_string())?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
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
        for always in [
            "169.254.169.254",
            "fe80::1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1:a9fe:a9:fe00::",
            "::169.254.169.254",
            "2002:a9fe:a9fe::1",
        ] {
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
        assert!(matches!(&refused, Unfit::Refused(why) if why.contains("loopback")), "{refused}");
        let unresolved = resolve_checked("no-such-host.invalid", 80, false).await.unwrap_err();
        assert!(matches!(unresolved, Unfit::Unresolved(_)), "{unresolved}");
        assert!(resolve_checked("localhost", 80, true).await.is_ok());
        assert!(resolve_checked("[::1]", 80, false).await.is_err());
    }
}
