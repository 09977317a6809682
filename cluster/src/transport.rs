//! Sessions between nodes: the `ractor_cluster` node server (cookie-authenticated, optionally over
//! mutual TLS), connecting to seeds and members with back-off, and our own heartbeat over the
//! sessions.
//!
//! `ractor_cluster` reports a peer whose process died within milliseconds, but a stopped (hung)
//! process keeps its session "ready" forever and nothing reconnects after a peer restarts. So every
//! heartbeat this node pings each peer (its SKU region host); a peer that misses [`MISSED_PINGS`] pings in
//! a row has its session closed (its commands fail fast instead of waiting for their deadline), and
//! every member that beats in the store but has no session is connected again, with back-off. A
//! node that cannot reach most of the members beating in the store (the minority side of a
//! partition) marks itself isolated: it stops beating and serving until it reaches them again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use storefront_actors::{EntityKind, StockFeed};

use crate::call::Execute;
use crate::remote::{HostArgs, HostMsg, Links, RegionHost, ping};
use crate::stock_feed;
use crate::{ClusterError, MemberStatus, Ownership};

/// Pings a peer may miss in a row before its session is closed.
const MISSED_PINGS: u32 = 3;
/// The longest wait between two connection attempts to one address.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// TLS on the sessions between nodes: every node presents its certificate and accepts only peers
/// whose certificate the cluster's CA signed (mutual TLS). PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// This node's certificate chain; its names must include the host of its cluster address.
    pub cert: std::path::PathBuf,
    /// This node's private key.
    pub key: std::path::PathBuf,
    /// The CA that signs every node's certificate.
    pub ca: std::path::PathBuf,
}

/// How this node reaches its peers.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Where this node listens for peers (`HOST:PORT`).
    pub listen: String,
    /// Peers to contact first (`HOST:PORT`; names resolve through DNS at each attempt).
    pub seeds: Vec<String>,
    /// The shared secret every node of the cluster authenticates with.
    pub cookie: String,
    /// How often peers are pinged and connections checked.
    pub heartbeat: Duration,
    /// TLS on the sessions; `None`: plain TCP (the cookie authenticates, nothing is encrypted).
    pub tls: Option<TlsFiles>,
}

/// Both sides of mutual TLS from `files`.
fn tls(files: &TlsFiles) -> Result<(TlsAcceptor, TlsConnector), ClusterError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read_certs = |path: &std::path::Path| {
        CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| transport_error(&format!("TLS certificates in {}", path.display()), e))
    };
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| transport_error(&format!("TLS key in {}", files.key.display()), e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certs(&files.ca)? {
        roots.add(ca).map_err(|e| transport_error("TLS CA certificate", e))?;
    }
    let roots = Arc::new(roots);
    // The provider is named, not taken from the process: with more than one compiled in (the
    // HTTP client brings ring), rustls has no default to take.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| transport_error("TLS client verifier", e))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| transport_error("TLS server protocols", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| transport_error("TLS server configuration", e))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| transport_error("TLS client protocols", e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| transport_error("TLS client configuration", e))?;
    Ok((TlsAcceptor::from(Arc::new(server)), TlsConnector::from(Arc::new(client))))
}

/// Opens a session to `addr` (`HOST:PORT`), over TLS when `connector` is set.
async fn connect(
    server: &ActorRef<NodeServerMessage>,
    addr: &str,
    connector: Option<&TlsConnector>,
) -> Result<(), String> {
    match connector {
        None => ractor_cluster::client_connect(server, addr).await.map_err(|e| e.to_string()),
        Some(connector) => {
            let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
            ractor_cluster::client_connect_enc(server, addr, connector.clone(), name)
                .await
                .map_err(|e| e.to_string())
        }
    }
}

/// The running transport of a node.
pub(crate) struct Transport {
    server: ActorRef<NodeServerMessage>,
    hosts: Vec<ActorRef<HostMsg>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The stock feed to peers (`stock_feed::forward`).
    forwarding: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").finish_non_exhaustive()
    }
}

fn transport_error(what: &str, err: impl std::fmt::Display) -> ClusterError {
    ClusterError::Region(format!("cluster transport: {what}: {err}"))
}

impl Transport {
    /// Starts the region host and the node server, then keeps sessions to seeds and members.
    pub(crate) async fn start(
        config: TransportConfig,
        ownership: Ownership,
        links: Arc<Links>,
        local: Arc<dyn Execute>,
        feed: StockFeed,
    ) -> Result<Self, ClusterError> {
        let node_id = ownership.node_id().to_owned();
        let (host_name, port) = config
            .listen
            .rsplit_once(':')
            .ok_or_else(|| transport_error("listen address", "not HOST:PORT"))?;
        let port: u16 = port.parse().map_err(|e| transport_error("listen port", e))?;
        let mut hosts = Vec::new();
        for kind in EntityKind::ALL {
            let args = HostArgs {
                kind,
                node_id: node_id.clone(),
                links: links.clone(),
                local: local.clone(),
                feed: feed.clone(),
            };
            let (host, _) = Actor::spawn(None, RegionHost, args)
                .await
                .map_err(|e| transport_error("region host", e))?;
            hosts.push(host);
        }
        let (acceptor, connector) = match &config.tls {
            Some(files) => {
                let (acceptor, connector) = tls(files)?;
                (Some(acceptor), Some(connector))
            }
            None => (None, None),
        };
        let mut server = NodeServer::new(
            port,
            config.cookie.clone(),
            node_id.clone(),
            host_name.to_owned(),
            acceptor.map(IncomingEncryptionMode::Tls),
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        );
        // A literal address is listened on as given; a host name (a pod's DNS name) on every
        // interface.
        if let Ok(ip) = host_name.trim_matches(['[', ']']).parse() {
            server = server.with_listen_addr(ip);
        }
        let (server, _) =
            Actor::spawn(None, server, ()).await.map_err(|e| transport_error("node server", e))?;
        // No peer is reached before the first ping: until then this node claims nothing that
        // a peer the store shows up could hold.
        ownership.set_reachable(std::collections::HashSet::new());
        let (stop, stopped) = watch::channel(false);
        let forwarding =
            tokio::spawn(stock_feed::forward(feed, ownership.clone(), stopped.clone()));
        let task = tokio::spawn(keep_sessions(
            config,
            connector,
            ownership,
            links.clone(),
            server.clone(),
            stopped,
        ));
        Ok(Self { server, hosts, stop, task, forwarding })
    }

    /// Closes every session and stops the host and the server.
    pub(crate) async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
        let _ = self.forwarding.await;
        for host in self.hosts {
            host.stop(None);
        }
        self.server.stop(None);
    }
}

/// The authenticated sessions of this node, by peer node id.
async fn sessions(
    server: &ActorRef<NodeServerMessage>,
) -> HashMap<String, ActorRef<ractor_cluster::NodeSessionMessage>> {
    match ractor::call_t!(server, NodeServerMessage::GetSessions, 1_000) {
        Ok(sessions) => sessions
            .into_values()
            // ractor_cluster names a peer `node_name@hostname`.
            .filter_map(|s| {
                let name = s.peer_name?.name;
                let node = name.split_once('@').map_or(name.as_str(), |(node, _)| node).to_owned();
                Some((node, s.actor))
            })
            .collect(),
        Err(_) => HashMap::new(),
    }
}

/// When an address may next be tried, and the back-off after that.
struct Attempts(HashMap<String, (Instant, Duration)>);

impl Attempts {
    fn due(&mut self, addr: &str, now: Instant, heartbeat: Duration) -> bool {
        let (next, backoff) = self.0.entry(addr.to_owned()).or_insert((now, heartbeat));
        if now < *next {
            return false;
        }
        *next = now + *backoff;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        true
    }
}

async fn keep_sessions(
    config: TransportConfig,
    connector: Option<TlsConnector>,
    ownership: Ownership,
    links: Arc<Links>,
    server: ActorRef<NodeServerMessage>,
    mut stopped: watch::Receiver<bool>,
) {
    let me = ownership.node_id().to_owned();
    let grace = config.heartbeat * MISSED_PINGS;
    let mut attempts = Attempts(HashMap::new());
    let mut missed: HashMap<String, u32> = HashMap::new();
    let mut last_answer: HashMap<String, Instant> = HashMap::new();
    // Peers that count for the majority, and since when (a peer that comes up gets the grace).
    let mut up_since: HashMap<String, Instant> = HashMap::new();
    let mut had_session: Vec<String> = Vec::new();
    let mut ticks = tokio::time::interval(config.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let now = Instant::now();
        let live = sessions(&server).await;
        // A session that is gone fails the calls waiting on it now.
        for node in had_session.iter().filter(|node| !live.contains_key(*node)) {
            links.fail_node(node);
        }
        had_session = live.keys().cloned().collect();
        // Our heartbeat: every peer's host must answer a ping within one heartbeat.
        let pings =
            live.keys().map(|node| async move { (node, ping(node, config.heartbeat).await) });
        for (node, answered) in futures::future::join_all(pings).await {
            if answered {
                last_answer.insert(node.clone(), now);
            }
            let count = missed.entry(node.clone()).or_default();
            *count = if answered { 0 } else { *count + 1 };
            if *count >= MISSED_PINGS {
                tracing::warn!(node, "peer missed {MISSED_PINGS} pings: closing its session");
                if let Some(session) = live.get(node) {
                    session.stop(Some("missed pings".into()));
                }
                links.fail_node(node);
                *count = 0;
            }
        }
        // A node that cannot reach most of the members beating in the store is the minority
        // of a partition: it must stop serving, so that the majority takes its shards over.
        // Only members seen beating and taking shards count (not a leaving node, not a record
        // seen once that may be a dead node's); a peer is unreachable once it has not answered
        // a ping for the grace, counted from when it came up.
        let view = ownership.view();
        let peers: Vec<&str> = view
            .members
            .iter()
            .filter(|m| m.node_id != me && m.status == MemberStatus::Up && m.beating)
            .map(|m| m.node_id.as_str())
            .collect();
        up_since.retain(|node, _| peers.contains(&node.as_str()));
        let reachable = peers
            .iter()
            .filter(|node| {
                let came_up = *up_since.entry((**node).to_owned()).or_insert(now);
                let last = last_answer.get(**node).copied().map_or(came_up, |l| l.max(came_up));
                now.duration_since(last) < grace
            })
            .count();
        ownership.set_isolated(2 * (reachable + 1) <= peers.len() + 1);
        // Shards are given only to peers that answered within the grace (no allowance for a
        // peer just seen: a node no one can reach, such as one without the cluster's
        // certificate, must never be handed any).
        ownership.set_reachable(
            last_answer
                .iter()
                .filter(|(node, last)| {
                    live.contains_key(*node) && now.duration_since(**last) < grace
                })
                .map(|(node, _)| node.clone())
                .collect(),
        );
        // Forget nodes that left the store.
        let known = |node: &String| view.members.iter().any(|m| &m.node_id == node);
        missed.retain(|node, _| known(node));
        last_answer.retain(|node, _| known(node));
        // Members that beat in the store but have no session, and the seeds until some session
        // is up: connect, each address with its own back-off, each attempt bounded so that a
        // hung peer never stalls this loop.
        let mut targets: Vec<String> = view
            .members
            .iter()
            .filter(|m| m.node_id != me && m.status != MemberStatus::Down)
            .filter(|m| !live.contains_key(&m.node_id))
            .filter_map(|m| m.cluster_addr.clone())
            .collect();
        if live.is_empty() {
            targets.extend(config.seeds.iter().filter(|s| **s != config.listen).cloned());
        }
        attempts.0.retain(|addr, _| targets.contains(addr));
        for addr in targets {
            if !attempts.due(&addr, now, config.heartbeat) {
                continue;
            }
            let (server, connector, limit) = (server.clone(), connector.clone(), grace);
            tokio::spawn(async move {
                match tokio::time::timeout(limit, connect(&server, &addr, connector.as_ref())).await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(addr, error = %e, "cannot connect to a peer"),
                    Err(_) => tracing::debug!(addr, "connecting to a peer timed out"),
                }
            });
        }
    }
}
