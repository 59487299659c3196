//! Start-up for the `wal-decoder` Lambda (being written).

fn main() {}
