//! Traces over OTLP: two nodes export to a receiver in the test (OTLP/HTTP, protobuf, as a
//! collector takes it on port 4318), which decodes what they send. A checkout through one node
//! of a SKU the other holds is one trace across both nodes, continuing the caller's
//! `traceparent`: its request, the calls forwarded between the nodes and each saga step.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use warp::{Filter, Reply};

use crate::harness::{Cluster, Placement, SERIAL, eventually};

/// A span as received, with the node that sent it.
#[derive(Debug, Clone)]
struct Received {
    node: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text(kv.value.as_ref()))).collect()
}

/// Starts the receiver: `POST /v1/traces` with an `application/x-protobuf` body, answered 200
/// with an empty `ExportTraceServiceResponse`; anything else is refused (and counted as such).
async fn receiver() -> (u16, Arc<Mutex<Vec<Received>>>, Arc<Mutex<Vec<String>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let (into, bad) = (spans.clone(), refused.clone());
    let route = warp::post()
        .and(warp::path!("v1" / "traces"))
        .and(warp::header::<String>("content-type"))
        .and(warp::body::bytes())
        .map(move |content_type: String, body: bytes::Bytes| {
            let request = match ExportTraceServiceRequest::decode(body.as_ref()) {
                Ok(request) if content_type == "application/x-protobuf" => request,
                other => {
                    bad.lock().unwrap().push(format!("{content_type}: {other:?}"));
                    return warp::http::StatusCode::BAD_REQUEST.into_response();
                }
            };
            for resource_spans in request.resource_spans {
                let resource = resource_spans.resource.unwrap_or_default();
                let node = attributes(&resource.attributes)
                    .remove("service.instance.id")
                    .unwrap_or_default();
                for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                    into.lock().unwrap().push(Received {
                        node: node.clone(),
                        name: span.name,
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_span_id: span.parent_span_id,
                        attributes: attributes(&span.attributes),
                    });
                }
            }
            // An empty ExportTraceServiceResponse: all accepted.
            warp::reply::with_header(Vec::<u8>::new(), "content-type", "application/x-protobuf")
                .into_response()
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (port, spans, refused)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_is_one_trace_across_the_two_nodes_it_touches() {
    let _serial = SERIAL.lock().await;
    let (port, spans, refused) = receiver().await;
    let traced = Placement {
        env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), format!("http://127.0.0.1:{port}")),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ],
        ..Placement::default()
    };
    let cluster = Cluster::start_placed(vec![traced.clone(), traced], 2).await;
    // A SKU the second node holds: the checkout through the first reaches it there.
    let mut sku = String::new();
    for n in 0.. {
        sku = format!("TRACE-{n}");
        cluster.create_product(0, &sku, 10).await;
        if cluster.owner(0, "sku", &sku).await == Some(1) {
            break;
        }
    }
    let (_, token) = cluster.customers(0, "traced", 1).await.remove(0);
    // The caller's own trace, which the checkout continues.
    let (client_trace, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let answer = cluster
        .http
        .post(format!("{}/v1/checkout", cluster.nodes[0].url()))
        .bearer_auth(&token)
        .header("Idempotency-Key", "traced-1")
        .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
        .json(&serde_json::json!({"payment_token": "tok_visa", "items": [{"sku": sku, "qty": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201, "{:?}", answer.text().await);

    let (first, second) = (cluster.nodes[0].id.clone(), cluster.nodes[1].id.clone());
    let steps = ["saga reserve", "saga authorize", "saga commit", "saga capture"];
    let in_trace = || -> Vec<Received> {
        let spans = spans.lock().unwrap();
        spans.iter().filter(|s| hex(&s.trace_id) == client_trace).cloned().collect()
    };
    eventually(crate::T, "the checkout's spans from both nodes, its four steps done", || async {
        let trace = in_trace();
        let names: HashSet<&str> = trace.iter().map(|s| s.name.as_str()).collect();
        trace.iter().any(|s| s.node == first && s.name == "POST /v1/checkout")
            && trace.iter().any(|s| s.node == second)
            && steps.iter().all(|step| names.contains(step))
    })
    .await;
    let trace = in_trace();
    assert!(refused.lock().unwrap().is_empty(), "refused exports: {:?}", refused.lock().unwrap());

    let request = trace.iter().find(|s| s.name == "POST /v1/checkout").unwrap();
    assert_eq!(hex(&request.parent_span_id), client_span, "the request continues the caller");
    assert_eq!(request.attributes["http.response.status_code"], "201");
    assert_eq!(request.attributes["http.route"], "POST /v1/checkout");
    // The second node's part came with a call forwarded from the first.
    assert!(
        trace.iter().any(|s| s.node == second
            && s.attributes.get("peer.node") == Some(&first)
            && s.name.ends_with(&format!("call from {first}"))),
        "a call forwarded to {second}: {trace:#?}"
    );
    // One tree: every span's parent is in the trace, or is the caller's span.
    let ids: HashSet<String> = trace.iter().map(|s| hex(&s.span_id)).collect();
    for span in &trace {
        let parent = hex(&span.parent_span_id);
        assert!(parent == client_span || ids.contains(&parent), "orphan {span:#?} in {trace:#?}");
    }
    // Each step once, all of the same order.
    for step in steps {
        let found: Vec<&Received> = trace.iter().filter(|s| s.name == step).collect();
        assert_eq!(found.len(), 1, "{step}: {found:#?}");
        assert!(found[0].attributes["order.id"].starts_with("ord_"), "{:#?}", found[0]);
    }
    cluster.finish().await;
}
