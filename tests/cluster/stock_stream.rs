//! The stock stream of any node shows the changes of SKUs every node holds.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Cluster, SERIAL};

/// Reads server-sent events from `stream` until `done` holds for the levels seen last per SKU.
async fn read_until(
    stream: &mut reqwest::Response,
    seen: &mut std::collections::HashMap<String, Value>,
    done: impl Fn(&std::collections::HashMap<String, Value>) -> bool,
) {
    let mut buffer = String::new();
    while !done(seen) {
        let chunk = stream.chunk().await.unwrap().expect("the stream ended");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            for data in block.lines().filter_map(|l| l.strip_prefix("data:")) {
                let levels: Value = serde_json::from_str(data.trim()).unwrap();
                seen.insert(levels["sku"].as_str().unwrap().to_owned(), levels);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_stock_stream_shows_the_skus_every_node_holds() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3, 3).await;
    // SKUs until nodes 1 and 2 each hold one.
    let mut held: [Option<String>; 3] = Default::default();
    for n in 0.. {
        let sku = format!("FEED-{n}");
        cluster.create_product(0, &sku, 10).await;
        let owner = cluster.owner(0, "sku", &sku).await.unwrap();
        held[owner].get_or_insert(sku);
        if held[1].is_some() && held[2].is_some() {
            break;
        }
    }
    let (on_1, on_2) = (held[1].clone().unwrap(), held[2].clone().unwrap());
    // (`create_product` returns once every running node has the product.)
    let mut stream = cluster
        .http
        .get(format!("{}/v1/inventory/stream?sku={on_1},{on_2}", cluster.nodes[0].url()))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let mut seen = std::collections::HashMap::new();
    read_until(&mut stream, &mut seen, |seen| seen.len() == 2).await;

    // Each restocked through the other peer: node 0 holds neither, and sees both.
    for i in 0..5 {
        for (via, sku) in [(2, &on_1), (1, &on_2)] {
            let (status, _) = cluster
                .admin_call(
                    via,
                    Method::POST,
                    &format!("/v1/admin/inventory/{sku}/restock"),
                    json!({"qty": 1}),
                )
                .await;
            assert_eq!(status, 200, "restock {i} of {sku}");
        }
    }
    let at_15 = |seen: &std::collections::HashMap<String, Value>| {
        [&on_1, &on_2].iter().all(|sku| seen.get(*sku).is_some_and(|l| l["on_hand"] == 15))
    };
    tokio::time::timeout(Duration::from_secs(10), read_until(&mut stream, &mut seen, at_15))
        .await
        .unwrap_or_else(|_| panic!("node 0's stream did not show the peers' changes: {seen:?}"));
    drop(stream);
    cluster.finish().await;
}
