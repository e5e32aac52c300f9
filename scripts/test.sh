#!/usr/bin/env bash
# The whole test suite: the Rust crate's unit tests, then the Python tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --quiet --manifest-path rust/Cargo.toml
python3 nncy/_codegen.py --check
python3 -m pytest -q tests
