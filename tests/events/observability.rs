//! The Grafana dashboard (`k8s/grafana/`) and the alert rules (`k8s/prometheus/`) against what
//! a fresh node and a fresh notifier export: every query parses as PromQL and every selector in
//! it selects at least one series the moment the processes start, so a quiet shop's dashboard
//! shows zeros, never "no data", and no alert watches a metric that does not exist.

use std::collections::BTreeMap;
use std::path::Path;

use promql_parser::parser::{Expr, VectorSelector};

use crate::broker::Vhost;
use crate::process::{node, notify};
use crate::smtp::{Smtp, free_port};

/// One exported series: its metric name and labels.
type Series = (String, BTreeMap<String, String>);

/// The series of a Prometheus text exposition (comments and blank lines skipped).
fn series(exposition: &str) -> Vec<Series> {
    let mut all = Vec::new();
    for line in exposition.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).expect("a sample line has a value");
        let mut labels = BTreeMap::new();
        if line[name_end..].starts_with('{') {
            // `key="value",...}`: values may hold `{`, `}`, `,` and escaped quotes.
            let mut rest = &line[name_end + 1..];
            while !rest.starts_with('}') {
                let eq = rest.find("=\"").expect("a label is key=\"value\"");
                let key = rest[..eq].to_owned();
                let mut value = String::new();
                let mut chars = rest[eq + 2..].char_indices();
                let end = loop {
                    match chars.next().expect("a label value ends with a quote") {
                        (i, '"') => break i,
                        (_, '\\') => value.push(chars.next().expect("an escaped character").1),
                        (_, c) => value.push(c),
                    }
                };
                labels.insert(key, value);
                rest = rest[eq + 2 + end + 1..].trim_start_matches(',');
            }
        }
        all.push((line[..name_end].to_owned(), labels));
    }
    all
}

/// The selectors of `expr` that must select something: not those under an `or vector(..)`
/// fallback, which shows a number even when they select nothing.
fn selectors(expr: &Expr, out: &mut Vec<VectorSelector>) {
    match expr {
        Expr::VectorSelector(vs) => out.push(vs.clone()),
        Expr::MatrixSelector(ms) => out.push(ms.vs.clone()),
        Expr::Binary(b)
            if b.op.to_string() == "or"
                && matches!(b.rhs.as_ref(), Expr::Call(c) if c.func.name == "vector") => {}
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Aggregate(a) => selectors(&a.expr, out),
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Subquery(s) => selectors(&s.expr, out),
        Expr::Call(c) => c.args.args.iter().for_each(|arg| selectors(arg, out)),
        _ => {}
    }
}

/// The selectors of `query` (Grafana's interval variables read as 5m) that select none of
/// `exported`, each as text; panics when the query is not PromQL.
fn unmatched(query: &str, exported: &[Series]) -> Vec<String> {
    let promql = query.replace("$__rate_interval", "5m").replace("$__interval", "1m");
    let expr = promql_parser::parser::parse(&promql)
        .unwrap_or_else(|e| panic!("not PromQL: {query}: {e}"));
    let mut found = Vec::new();
    selectors(&expr, &mut found);
    found
        .into_iter()
        .filter(|vs| {
            !exported.iter().any(|(name, labels)| {
                vs.matchers.matchers.iter().all(|m| {
                    let value = if m.name == "__name__" {
                        name.as_str()
                    } else {
                        labels.get(&m.name).map_or("", String::as_str)
                    };
                    m.is_match(value)
                }) && vs.name.as_ref().is_none_or(|n| n == name)
            })
        })
        .map(|vs| vs.to_string())
        .collect()
}

/// Every `expr` of the dashboard's panels (rows' nested panels too), with its panel's title.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().expect("a dashboard has top-level panels").iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        let targets = panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("a Prometheus target has an expr");
            queries.push((title.clone(), expr.to_owned()));
        }
    }
    queries
}

/// Every `expr:` of a rules file (one line each, as ours are written).
fn rule_queries(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("expr: "))
        .map(|expr| expr.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_and_alert_queries_series_a_fresh_node_and_notifier_export() {
    let vhost = Vhost::new();
    let smtp = Smtp::start().await;
    let node_dir = tempfile::tempdir().unwrap();
    let notify_dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let _node = node(node_dir.path(), port, &vhost.url()).await;
    let _notifier = notify(&vhost, &smtp, notify_dir.path(), metrics_port);
    let mut exported = series(
        &reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let notifier_metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    crate::eventually("the notifier's metrics", || async {
        reqwest::get(&notifier_metrics).await.is_ok()
    })
    .await;
    let notifier_exposition = reqwest::get(&notifier_metrics).await.unwrap().text().await.unwrap();
    exported.extend(series(&notifier_exposition));
    assert!(
        exported.iter().any(|(name, _)| name == "storefront_ready"),
        "the node exports its readiness"
    );

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana/storefront.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard_queries(&dashboard);
    // The contract's panels ("Deployment" in API.md), each by a metric it must show.
    for metric in [
        "storefront_http_request_duration_seconds_count",
        "storefront_http_request_duration_seconds_bucket",
        "storefront_http_responses_total",
        "storefront_sagas_total",
        "storefront_reservations_total",
        "storefront_journal_batch_events_bucket",
        "storefront_journal_append_seconds_bucket",
        "storefront_live_entities",
        "storefront_cluster_shards_held",
        "storefront_events_relay_lag",
        "storefront_notify_sent_total",
    ] {
        assert!(panels.iter().any(|(_, expr)| expr.contains(metric)), "no panel shows {metric}");
    }
    let mut missing = Vec::new();
    for (title, expr) in &panels {
        for selector in unmatched(expr, &exported) {
            missing.push(format!("panel {title:?}: {selector}"));
        }
    }
    let rules = std::fs::read_to_string(root.join("prometheus/storefront-rules.yaml")).unwrap();
    let alerts = rule_queries(&rules);
    assert!(alerts.len() >= 5, "the rules file has its alerts: {alerts:?}");
    for expr in &alerts {
        for selector in unmatched(expr, &exported) {
            missing.push(format!("alert {expr:?}: {selector}"));
        }
    }
    assert!(
        missing.is_empty(),
        "selectors that select nothing on a fresh node:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_exposition_parser_reads_labels_holding_braces_commas_and_quotes() {
    let text = "# TYPE a counter\n\
        a{route=\"GET /v1/products/{product_id}\",status=\"200\"} 1\n\
        b 0\n\
        c{v=\"x,\\\"y\\\"}\"} 2\n";
    let parsed = series(text);
    assert_eq!(parsed.len(), 3);
    assert_eq!(parsed[0].1["route"], "GET /v1/products/{product_id}");
    assert_eq!(parsed[0].1["status"], "200");
    assert_eq!(parsed[1], ("b".to_owned(), BTreeMap::new()));
    assert_eq!(parsed[2].1["v"], "x,\"y\"}");
    let exported = parsed;
    assert!(unmatched("sum(rate(a{status=~\"2..\"}[5m]))", &exported).is_empty());
    assert_eq!(unmatched("rate(a{status=\"500\"}[5m])", &exported).len(), 1);
    assert_eq!(unmatched("absent_metric", &exported).len(), 1);
    assert!(unmatched("sum(rate(a{status=\"500\"}[5m])) or vector(0)", &exported).is_empty());
}
