//! Who a request comes from, for the edge's limits: the client's address (through trusted
//! proxies), the bucket it is rate limited in (an IPv6 client by its /64, which one subscriber
//! usually holds whole), and the caps on open live streams per client and in all.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use crate::extract::Req;
use crate::metrics::SSE_CLIENTS;

/// The edge's settings.
#[derive(Debug, Clone, Default)]
pub struct EdgeSettings {
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Open streams one client may hold.
    pub max_streams_per_ip: usize,
    /// Open streams in all.
    pub max_streams: usize,
}

impl EdgeSettings {
    /// The client of `req`: its peer, or, when the peer is a trusted proxy, the right-most
    /// `X-Forwarded-For` address that is not one (an entry that is not an address stops the
    /// walk: what is left of it cannot be believed, so the last proxy stands for the client).
    pub fn client(&self, req: &Req) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        let mut client = req.ip();
        if !trusted(&client) {
            return client;
        }
        let forwarded: Vec<&str> = req
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        for entry in forwarded.iter().rev() {
            match entry.parse::<IpAddr>() {
                Ok(ip) if trusted(&ip) => client = ip,
                Ok(ip) => return ip,
                Err(_) => return client,
            }
        }
        client
    }

    /// The rate-limit bucket of `req`'s client: an IPv4 address, or an IPv6 address's /64.
    pub fn bucket(&self, req: &Req) -> IpAddr {
        bucket(self.client(req))
    }
}

/// An IPv4 address as it is (also when mapped into IPv6), an IPv6 address's /64.
pub fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & (u128::MAX << 64);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The open live streams, by client bucket.
#[derive(Debug, Default, Clone)]
pub struct Streams {
    open: Arc<Mutex<Open>>,
}

/// Open streams per client, and in all.
#[derive(Debug, Default)]
struct Open {
    by_client: HashMap<IpAddr, usize>,
    total: usize,
}

/// One open stream; closing it (dropping) frees its place.
#[derive(Debug)]
pub struct StreamPermit {
    open: Arc<Mutex<Open>>,
    client: IpAddr,
}

impl Streams {
    /// A place for one more stream of `client`, if neither cap of `settings` is reached.
    pub fn open(&self, client: IpAddr, settings: &EdgeSettings) -> Option<StreamPermit> {
        let mut open = lock(&self.open);
        let mine = open.by_client.get(&client).copied().unwrap_or(0);
        if open.total >= settings.max_streams || mine >= settings.max_streams_per_ip {
            return None;
        }
        *open.by_client.entry(client).or_default() += 1;
        open.total += 1;
        metrics::gauge!(SSE_CLIENTS).increment(1.0);
        Some(StreamPermit { open: self.open.clone(), client })
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        open.total -= 1;
        if let Some(count) = open.by_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.by_client.remove(&self.client);
            }
        }
        metrics::gauge!(SSE_CLIENTS).decrement(1.0);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain counters: a panic elsewhere cannot leave them half-updated.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http::{HeaderMap, HeaderValue};

    use super::*;

    fn req(peer: &str, forwarded: &[&str]) -> Req {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        let peer: SocketAddr = format!("{peer}:40000").parse().unwrap();
        Req { headers, query: String::new(), peer: Some(peer), body: bytes::Bytes::new() }
    }

    fn settings(trusted: &[&str]) -> EdgeSettings {
        EdgeSettings {
            trusted_proxies: trusted.iter().map(|n| n.parse().unwrap()).collect(),
            max_streams_per_ip: 2,
            max_streams: 3,
        }
    }

    #[test]
    fn the_client_is_the_right_most_address_no_trusted_proxy_added() {
        let edge = settings(&["10.0.0.0/8"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Not from a proxy: the header is the client's to forge, and ignored.
        assert_eq!(edge.client(&req("203.0.113.9", &["1.2.3.4"])), ip("203.0.113.9"));
        // From the proxy: the forged left-most entry is skipped.
        assert_eq!(edge.client(&req("10.0.0.2", &["1.2.3.4, 198.51.100.7"])), ip("198.51.100.7"));
        // Through two proxies, over two headers.
        assert_eq!(
            edge.client(&req("10.0.0.2", &["198.51.100.7, 10.0.0.3", "10.0.0.4"])),
            ip("198.51.100.7")
        );
        // Nothing to believe: the proxy stands for the client.
        assert_eq!(edge.client(&req("10.0.0.2", &[])), ip("10.0.0.2"));
        assert_eq!(edge.client(&req("10.0.0.2", &["1.2.3.4, junk"])), ip("10.0.0.2"));
        // No proxy trusted: the peer, whatever the header says.
        assert_eq!(settings(&[]).client(&req("10.0.0.2", &["1.2.3.4"])), ip("10.0.0.2"));
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(bucket(ip("2001:db8:1:2:aaaa::1")), bucket(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(bucket(ip("2001:db8:1:2::1")), bucket(ip("2001:db8:1:3::1")));
        assert_eq!(bucket(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_ne!(bucket(ip("192.0.2.1")), bucket(ip("192.0.2.2")));
    }

    #[test]
    fn streams_are_capped_per_client_and_in_all() {
        let (edge, streams) = (settings(&[]), Streams::default());
        let (a, b, c) =
            (bucket([1, 1, 1, 1].into()), bucket([2, 2, 2, 2].into()), bucket([3, 3, 3, 3].into()));
        let a1 = streams.open(a, &edge).unwrap();
        let _a2 = streams.open(a, &edge).unwrap();
        assert!(streams.open(a, &edge).is_none(), "a third stream of one client");
        let _b1 = streams.open(b, &edge).unwrap();
        assert!(streams.open(c, &edge).is_none(), "a fourth stream in all");
        drop(a1);
        assert!(streams.open(c, &edge).is_some(), "a closed stream frees its place");
    }
}
