//! redb versus fjall for the embedded journal: durable appends (one fsync per commit) of
//! batches of 100-byte events plus the stream's head, in two layouts: `rows` (one row per event,
//! keyed (stream, seq)) and `framed` (one row per append holding its events, the layout the
//! embedded store uses).
//! This is the measurement the embedded backend's choice rests on (see BENCHMARKS.md).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const EVENT: [u8; 100] = [7; 100];
const BATCHES: [u64; 3] = [1, 64, 1024];

fn key(stream: &str, seq: u64) -> Vec<u8> {
    let mut key = stream.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn frame(batch: u64) -> Vec<u8> {
    let mut out = (batch as u32).to_le_bytes().to_vec();
    for _ in 0..batch {
        out.extend_from_slice(&(EVENT.len() as u32).to_le_bytes());
        out.extend_from_slice(&EVENT);
    }
    out
}

#[derive(Clone, Copy)]
enum Layout {
    Rows,
    Framed,
}

const LAYOUTS: [(Layout, &str); 2] = [(Layout::Rows, "rows"), (Layout::Framed, "framed")];

fn redb_appends(c: &mut Criterion) {
    const JOURNAL: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("journal");
    const HEADS: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("heads");
    let mut group = c.benchmark_group("journal_backends/redb");
    for (layout, name) in LAYOUTS {
        for batch in BATCHES {
            let dir = tempfile::tempdir().unwrap();
            let db = redb::Database::create(dir.path().join("bench.redb")).unwrap();
            let mut seq = 0u64;
            group.throughput(Throughput::Elements(batch));
            group.bench_function(BenchmarkId::new(name, batch), |b| {
                b.iter(|| {
                    let mut txn = db.begin_write().unwrap();
                    txn.set_durability(redb::Durability::Immediate).unwrap();
                    {
                        let mut journal = txn.open_table(JOURNAL).unwrap();
                        match layout {
                            Layout::Rows => {
                                for _ in 0..batch {
                                    seq += 1;
                                    journal
                                        .insert(key("sku/HOT", seq).as_slice(), EVENT.as_slice())
                                        .unwrap();
                                }
                            }
                            Layout::Framed => {
                                journal
                                    .insert(
                                        key("sku/HOT", seq + 1).as_slice(),
                                        frame(batch).as_slice(),
                                    )
                                    .unwrap();
                                seq += batch;
                            }
                        }
                        txn.open_table(HEADS).unwrap().insert("sku/HOT", seq).unwrap();
                    }
                    txn.commit().unwrap();
                });
            });
        }
    }
    group.finish();
}

fn fjall_appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal_backends/fjall");
    for (layout, name) in LAYOUTS {
        for batch in BATCHES {
            let dir = tempfile::tempdir().unwrap();
            let db = fjall::Database::builder(dir.path()).open().unwrap();
            let journal = db.keyspace("journal", fjall::KeyspaceCreateOptions::default).unwrap();
            let heads = db.keyspace("heads", fjall::KeyspaceCreateOptions::default).unwrap();
            let mut seq = 0u64;
            group.throughput(Throughput::Elements(batch));
            group.bench_function(BenchmarkId::new(name, batch), |b| {
                b.iter(|| {
                    let mut write = db.batch().durability(Some(fjall::PersistMode::SyncAll));
                    match layout {
                        Layout::Rows => {
                            for _ in 0..batch {
                                seq += 1;
                                write.insert(&journal, key("sku/HOT", seq), EVENT.as_slice());
                            }
                        }
                        Layout::Framed => {
                            write.insert(&journal, key("sku/HOT", seq + 1), frame(batch));
                            seq += batch;
                        }
                    }
                    write.insert(&heads, "sku/HOT", seq.to_be_bytes().as_slice());
                    write.commit().unwrap();
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, redb_appends, fjall_appends);
criterion_main!(benches);
