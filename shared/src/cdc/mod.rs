//! Change data capture from PostgreSQL: the pgoutput decoder (`copy.rs` frames the peeked rows,
//! `pgoutput.rs` decodes each message, `value.rs` types the values, `decode.rs` turns messages
//! into change events), the change event every stage exchanges (`event.rs`), the wal-decoder's
//! run (`wal/`) and the cdc-sink's (`sink/`).

pub mod copy;
pub mod decode;
pub mod event;
pub mod fastjson;
pub mod pgoutput;
pub mod setup;
pub mod sink;
pub mod snapshot;
pub mod value;
pub mod wal;
