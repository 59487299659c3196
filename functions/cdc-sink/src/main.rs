//! Start-up for the `cdc-sink` Lambda (being written).

fn main() {}
