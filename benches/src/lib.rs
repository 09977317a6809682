//! Storefront benchmarks live in `benches/`; see BENCHMARKS.md.
