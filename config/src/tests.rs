use std::io::Write;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn key_of(err: ConfigError) -> String {
    match err {
        ConfigError::Invalid { key, .. } => key,
        other => panic!("expected an invalid key, got {other}"),
    }
}

#[test]
fn defaults_need_nothing() {
    let config = Config::load(None, env(&[]), vec![]).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.http_addr, "127.0.0.1:8080");
    assert_eq!(config.store, "embedded");
    assert_eq!(config.entities.shard_count, 256);
}

#[test]
fn layers_override_in_order() {
    let f =
        file("http_addr = \"127.0.0.1:9000\"\n[entities]\nshard_count = 64\nsnapshot_every = 10\n");
    let config = Config::load(
        Some(f.path()),
        env(&[
            ("STOREFRONT_ENTITIES__SHARD_COUNT", "32"),
            ("STOREFRONT_RATE_LIMIT__ENABLED", "false"),
            ("STOREFRONT_SHOP__BASE_CURRENCY", "EUR"),
            ("STOREFRONT_ADMIN_EMAIL", "root@example.com"),
            ("STOREFRONT_ADMIN_PASSWORD", "0123456789"),
            ("STOREFRONT_CONFIG", "ignored.toml"),
            ("PATH", "/usr/bin"),
        ]),
        vec![Override::new("http_addr", "127.0.0.1:9100")],
    )
    .unwrap();
    assert_eq!(config.http_addr, "127.0.0.1:9100", "flag beats file");
    assert_eq!(config.entities.shard_count, 32, "env beats file");
    assert_eq!(config.entities.snapshot_every, 10, "file beats default");
    assert!(!config.rate_limit.enabled);
    assert_eq!(config.shop.base_currency, "EUR");
    assert_eq!(config.admin_password.as_ref().map(Secret::expose), Some("0123456789"));
}

#[test]
fn secrets_never_print() {
    let config = Config::load(
        None,
        env(&[
            ("STOREFRONT_ADMIN_EMAIL", "a@b.c"),
            ("STOREFRONT_ADMIN_PASSWORD", "hunter2hunter2"),
        ]),
        vec![],
    )
    .unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[test]
fn unknown_keys_are_rejected_and_named() {
    let f = file("[entities]\nshard_cuont = 3\n");
    let err = Config::load(Some(f.path()), env(&[]), vec![]).unwrap_err();
    assert!(err.to_string().contains("shard_cuont"), "{err}");
    assert_eq!(key_of(err), "entities.shard_cuont");

    let err = Config::load(None, env(&[("STOREFRONT_NOPE", "1")]), vec![]).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");

    let err = Config::load(None, env(&[("STOREFRONT_SHOP__COLOUR", "red")]), vec![]).unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");
}

#[test]
fn wrong_types_name_the_key() {
    let f = file("[entities]\nshard_count = \"many\"\n");
    let err = Config::load(Some(f.path()), env(&[]), vec![]).unwrap_err();
    assert_eq!(key_of(err), "entities.shard_count");
    let err = Config::load(None, env(&[("STOREFRONT_RATE_LIMIT__ENABLED", "maybe")]), vec![])
        .unwrap_err();
    assert_eq!(key_of(err), "rate_limit.enabled");
}

#[test]
fn validate_names_the_bad_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("STOREFRONT_HTTP_ADDR", "nowhere")], "http_addr"),
        (&[("STOREFRONT_STORE", "mysql://x")], "store"),
        (&[("STOREFRONT_SHOP__BASE_CURRENCY", "usd")], "shop.base_currency"),
        (&[("STOREFRONT_ENTITIES__SHARD_COUNT", "0")], "entities.shard_count"),
        (&[("STOREFRONT_ENTITIES__SNAPSHOT_EVERY", "0")], "entities.snapshot_every"),
        (&[("STOREFRONT_CHECKOUT__GATEWAY_MAX_ATTEMPTS", "0")], "checkout.gateway_max_attempts"),
        (&[("STOREFRONT_ADMIN_EMAIL", "a@b.c")], "admin_password"),
        (&[("STOREFRONT_CLUSTER__SEEDS", "10.0.0.2:7000")], "cluster.seeds"),
        (&[("STOREFRONT_AUTH__SIGNING_KEYS", "k1:short")], "auth.signing_keys[0]"),
        (
            &[("STOREFRONT_AUTH__SIGNING_KEYS", "k2:0123456789abcdef0123456789abcdef,nokid")],
            "auth.signing_keys[1]",
        ),
        (&[("STOREFRONT_AUTH__ACCESS_TTL_SECS", "5")], "auth.access_ttl_secs"),
        (&[("STOREFRONT_HTTP__BODY_LIMIT_BYTES", "10")], "http.body_limit_bytes"),
        (&[("STOREFRONT_HTTP__METRICS_ADDR", "nowhere")], "http.metrics_addr"),
        (
            &[
                ("STOREFRONT_CLUSTER__SEEDS", "n2:7000, n3:7000"),
                ("STOREFRONT_STORE", "postgres://u@localhost:5432/db"),
            ],
            "cluster.addr",
        ),
        (
            &[
                ("STOREFRONT_CLUSTER__SEEDS", "n2:7000"),
                ("STOREFRONT_CLUSTER__ADDR", "n1:7000"),
                ("STOREFRONT_CLUSTER__COOKIE", "a-cluster-cookie-of-some-length"),
                ("STOREFRONT_STORE", "postgres://u@localhost:5432/db"),
            ],
            "auth.signing_keys",
        ),
        (&[("STOREFRONT_CLUSTER__ADDR", "n1:7000")], "cluster.addr"),
        (
            &[
                ("STOREFRONT_CLUSTER__ADDR", "n1"),
                ("STOREFRONT_STORE", "postgres://u@localhost:5432/db"),
            ],
            "cluster.addr",
        ),
        (
            &[
                ("STOREFRONT_CLUSTER__ADDR", "n1:7000"),
                ("STOREFRONT_STORE", "postgres://u@localhost:5432/db"),
            ],
            "cluster.cookie",
        ),
        (
            &[
                ("STOREFRONT_CLUSTER__ADDR", "n1:7000"),
                ("STOREFRONT_CLUSTER__COOKIE", "short"),
                ("STOREFRONT_STORE", "postgres://u@localhost:5432/db"),
            ],
            "cluster.cookie",
        ),
        (&[("STOREFRONT_CLUSTER__HEARTBEAT_MS", "10")], "cluster.heartbeat_ms"),
        (&[("STOREFRONT_CLUSTER__MEMBER_TTL_MS", "1500")], "cluster.member_ttl_ms"),
        (&[("STOREFRONT_EVENTS__AMQP_URL", "http://broker")], "events.amqp_url"),
        (&[("STOREFRONT_EVENTS__WEBHOOK_MAX_ATTEMPTS", "0")], "events.webhook_max_attempts"),
        (&[("STOREFRONT_NOTIFY__SMTP_URL", "mail.example.com")], "notify.smtp_url"),
        (&[("STOREFRONT_NOTIFY__SMS_URL", "http://127.0.0.1:9")], "notify.sms_account"),
        (&[("STOREFRONT_NOTIFY__MAX_ATTEMPTS", "0")], "notify.max_attempts"),
    ];
    for (vars, key) in cases {
        let err = Config::load(None, env(vars), vec![]).unwrap_err();
        assert_eq!(&key_of(err), key, "for {vars:?}");
    }
}

#[test]
fn seeds_split_on_commas() {
    let config = Config::load(
        None,
        env(&[
            ("STOREFRONT_CLUSTER__SEEDS", "n2:7000, n3:7000"),
            ("STOREFRONT_CLUSTER__ADDR", "n1:7000"),
            ("STOREFRONT_CLUSTER__COOKIE", "a-cluster-cookie-of-some-length"),
            ("STOREFRONT_STORE", "postgres://u@localhost:5432/db"),
            ("STOREFRONT_AUTH__SIGNING_KEYS", "k1:0123456789abcdef0123456789abcdef"),
        ]),
        vec![],
    )
    .unwrap();
    assert_eq!(config.cluster.seeds, ["n2:7000", "n3:7000"]);
}

#[test]
fn broken_files_are_reported() {
    let f = file("this is = = not toml");
    assert!(matches!(
        Config::load(Some(f.path()), env(&[]), vec![]),
        Err(ConfigError::Syntax { .. })
    ));
    assert!(matches!(
        Config::load(Some(Path::new("/nonexistent/storefront.toml")), env(&[]), vec![]),
        Err(ConfigError::Read { .. })
    ));
}

/// The `STOREFRONT_*` variables a container of `manifest` sets, in order: a literal value with
/// `$(POD_NAME)` as the first pod's name, a Secret's key as the example Secret's value. Reads
/// the manifests' own simple shape (`- name:` then `value:` or a one-line `secretKeyRef`).
fn manifest_env(manifest: &str, secret: &str) -> Vec<(String, String)> {
    let example = |key: &str| {
        secret
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")).map(str::to_owned))
            .unwrap_or_else(|| panic!("the example Secret has no {key}"))
    };
    let lines: Vec<&str> = manifest.lines().map(str::trim).collect();
    let mut vars = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix("- name: STOREFRONT_") else { continue };
        let next = lines[i + 1];
        let value = if let Some(value) = next.strip_prefix("value: ") {
            value.replace("$(POD_NAME)", "storefront-0")
        } else {
            let reference = lines[i + 2];
            let key = reference
                .split("key: ")
                .nth(1)
                .and_then(|rest| rest.split([',', '}']).next())
                .unwrap_or_else(|| panic!("STOREFRONT_{name}: not a value or a secretKeyRef"));
            example(key)
        };
        vars.push((format!("STOREFRONT_{name}"), value));
    }
    vars
}

#[test]
fn the_kubernetes_manifests_configure_nodes_and_notifiers_that_start() {
    let configmap = include_str!("../../k8s/configmap.yaml");
    let secret = include_str!("../../k8s/secret.example.yaml");
    let toml: String = configmap
        .split("storefront.toml: |\n")
        .nth(1)
        .expect("the ConfigMap holds storefront.toml")
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let f = file(&toml);
    let node = manifest_env(include_str!("../../k8s/statefulset.yaml"), secret);
    assert!(node.len() >= 10, "{node:?}");
    let config = Config::load(Some(f.path()), node, vec![]).unwrap();
    assert_eq!(config.cluster.node_id, "storefront-0");
    assert_eq!(config.cluster.addr.as_deref(), Some("storefront-0.storefront-peers:7000"));
    assert_eq!(config.cluster.seeds.len(), 3);
    assert!(config.store.starts_with("postgres://"), "a shared store");
    assert_eq!(config.http_addr, "0.0.0.0:8080");
    assert!(!config.demo_data);
    // SIGTERM's drain (in-flight requests, then the handoff) fits the pod's grace period.
    assert!(config.http.shutdown_grace_secs * 2 < 60);
    let notifier = manifest_env(include_str!("../../k8s/notifier.yaml"), secret);
    let config = Config::load(Some(f.path()), notifier, vec![]).unwrap();
    assert!(config.store.starts_with("postgres://"), "what was sent is shared by the replicas");
    assert_eq!(config.notify.metrics_addr, "0.0.0.0:9185");
}
