//! The lake's layout: every prefix and every key rule, in one place. These are contracts
//! between stages (extract and cdc-sink write `raw/`, transform reads it and writes `curated/`,
//! `manifests/` and `quarantine/`, the loader reads manifests and writes `loads/` and
//! `state/`), so no other file spells a prefix: `scripts/test` fails the build if one does.
//!
//! | prefix | written by | holds |
//! | --- | --- | --- |
//! | `raw/<table>/…`, `raw/cdc/<table>/…` | extract, cdc-sink, users | source objects as they came |
//! | `curated/<table>/year=/month=/` | transform, Glue job | Parquet for Athena and Redshift |
//! | `manifests/<table>/` | transform, Glue job (last) | one JSON per source object |
//! | `loads/<table>/` | redshift-loader | COPY manifests (never under `manifests/`) |
//! | `quarantine/<table>/`, `quarantine/_cdc-sink/` | every stage | bad rows with the reason |
//! | `state/` | extract, redshift-loader, transform | leases, watermarks, statement ids, Glue run claims |
//! | `raw/<table>/shard=<id>/…` | extract | gzip JSON lines parts, named by run and index |
//! | `spill/cdc/` | wal-decoder | changes too large for one Kinesis record |

/// Source objects as they came: extract's parts, users' uploads. Transform triggers here.
pub const RAW: &str = "raw/";
/// Change events written by cdc-sink, one folder per table.
pub const RAW_CDC: &str = "raw/cdc/";
/// Typed, partitioned Parquet: the tables Athena and Redshift read.
pub const CURATED: &str = "curated/";
/// One manifest per source object, written last by the transform: the loader's trigger.
pub const MANIFESTS: &str = "manifests/";
/// The loader's COPY manifests. Never under `manifests/`, which would trigger the loader again.
pub const LOADS: &str = "loads/";
/// Rows and records that failed validation, with the reason (as sensitive as `raw/`).
pub const QUARANTINE: &str = "quarantine/";
/// Records the cdc-sink could not place in any table.
pub const QUARANTINE_CDC_SINK: &str = "quarantine/_cdc-sink/";
/// Leases, watermarks and running statement ids.
pub const STATE: &str = "state/";
/// Changes too large for one Kinesis record, pointed at from the stream.
pub const SPILL_CDC: &str = "spill/cdc/";

/// Every top-level prefix, for checks and listings.
pub const PREFIXES: [&str; 7] = [RAW, CURATED, MANIFESTS, LOADS, QUARANTINE, STATE, SPILL_CDC];

/// Partition keys of every curated table, in path order.
pub const PARTITION_KEYS: [&str; 2] = ["year", "month"];

/// Longest stem kept from a source file name (keys stay readable and short).
const STEM_MAX_CHARS: usize = 40;

/// `raw/cdc/<table>/`: where cdc-sink writes a table's change objects.
pub fn raw_cdc_prefix(table: &str) -> String {
    format!("{RAW_CDC}{table}/")
}

/// `raw/cdc/<table>/<shard id>/<first>-<last>.jsonl`: one group of change events of a Kinesis
/// batch (one table, one shard), named by the sequence numbers of its first and last record so
/// that a redelivered batch overwrites the same object instead of adding a duplicate.
pub fn cdc_object_key(table: &str, shard_id: &str, first_seq: &str, last_seq: &str) -> String {
    format!("{RAW_CDC}{table}/{shard_id}/{first_seq}-{last_seq}.jsonl")
}

/// `spill/cdc/<table>/<lsn>-<index>.json`: a change too large for one Kinesis record (the
/// event itself); `index` tells apart the changes of one LSN (a key change is two events).
pub fn spill_key(table: &str, lsn: u64, index: u64) -> String {
    format!("{SPILL_CDC}{table}/{lsn}-{index}.json")
}

/// `raw/cdc/<table>/snapshot/<consistent lsn>/<page>.jsonl`: one page of `sluice cdc
/// snapshot`'s copy of a table (events with `op = "r"`), the page number zero-padded so the
/// pages list in order; a rerun for the same consistent point rewrites the same keys.
pub fn cdc_snapshot_key(table: &str, consistent_lsn: u64, page: u64) -> String {
    format!("{RAW_CDC}{table}/snapshot/{consistent_lsn}/{page:08}.jsonl")
}

/// `state/cdc/snapshot/<table>.json`: how far the snapshot of a table got.
pub fn cdc_snapshot_progress_key(table: &str) -> String {
    format!("{STATE}cdc/snapshot/{table}.json")
}

/// `quarantine/_cdc-sink/<shard id>/<first>-<last>.jsonl`: the records of one Kinesis batch
/// (one shard) that cdc-sink refused, named by the first and last refused sequence numbers.
pub fn cdc_quarantine_key(shard_id: &str, first_seq: &str, last_seq: &str) -> String {
    format!("{QUARANTINE_CDC_SINK}{shard_id}/{first_seq}-{last_seq}.jsonl")
}

/// `curated/<table>/`: the Glue table location.
pub fn curated_prefix(table: &str) -> String {
    format!("{CURATED}{table}/")
}

/// `curated/<table>/year=YYYY/month=MM/`: one Glue partition's location.
pub fn partition_prefix(table: &str, year: &str, month: &str) -> String {
    format!("{CURATED}{table}/year={year}/month={month}/")
}

/// `manifests/<table>/`: every manifest of a table.
pub fn manifests_prefix(table: &str) -> String {
    format!("{MANIFESTS}{table}/")
}

/// `loads/<table>/`: the loader's COPY manifests for a table.
pub fn loads_prefix(table: &str) -> String {
    format!("{LOADS}{table}/")
}

/// `quarantine/<table>/`: a table's quarantined rows.
pub fn quarantine_prefix(table: &str) -> String {
    format!("{QUARANTINE}{table}/")
}

/// `state/<name>`: a state object (lease, watermark, statement id).
pub fn state_key(name: &str) -> String {
    format!("{STATE}{name}")
}

/// `state/loads/<table>/lease`: the lease that keeps loads of one table one at a time.
pub fn load_lease_key(table: &str) -> String {
    format!("{STATE}loads/{table}/lease")
}

/// `state/loads/<table>/<batch>.statement.json`: the Data API statement a load submitted,
/// recorded before polling so a re-invocation resumes it instead of submitting again.
pub fn load_statement_key(table: &str, batch: &str) -> String {
    format!("{STATE}loads/{table}/{batch}.statement.json")
}

/// `state/loads/<table>/`: where a table's lease and statement records are (listed to find
/// statements other batches left running).
pub fn load_state_prefix(table: &str) -> String {
    format!("{STATE}loads/{table}/")
}

/// The batch of a [`load_statement_key`] of `table`; None for any other key.
pub fn load_statement_batch<'a>(table: &str, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(&load_state_prefix(table))?
        .strip_suffix(".statement.json")
        .filter(|b| !b.is_empty() && !b.contains('/'))
}

/// `state/glue/<table>/<source hash>-<etag>.json`: the claim on the one Glue job run of one
/// version of a source object, written create-if-absent before the run is started, so a
/// re-delivered event reports that run instead of starting a second one. The ETag keeps a
/// later upload under the same key (new content) from being taken for the same object.
pub fn glue_claim_key(table: &str, source_key: &str, etag: &str) -> String {
    let etag: String = etag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    format!(
        "{STATE}glue/{table}/{}-{etag}.json",
        source_hash(source_key)
    )
}

/// `state/extract/<table>/<shard>/`: one shard's extract state (lease, watermark, run).
pub fn extract_state_prefix(table: &str, shard: &str) -> String {
    format!("{STATE}extract/{table}/{shard}/")
}

/// `state/extract/<table>/<shard>/lease`: keeps runs of one shard one at a time.
pub fn extract_lease_key(table: &str, shard: &str) -> String {
    format!("{}lease", extract_state_prefix(table, shard))
}

/// `state/extract/<table>/<shard>/state.json`: the shard's watermark and its running range.
pub fn extract_state_key(table: &str, shard: &str) -> String {
    format!("{}state.json", extract_state_prefix(table, shard))
}

/// The folder of a historical dump's runs, under a shard's folder.
const EXTRACT_HISTORICAL: &str = "historical/";

/// `<raw_prefix>shard=<id>/`: every part extract wrote for one shard of a table. `raw_prefix`
/// is the table's (validated to start with `raw/` and end with `/`).
pub fn extract_shard_prefix(raw_prefix: &str, shard: &str) -> String {
    format!("{raw_prefix}shard={shard}/")
}

/// `<raw_prefix>shard=<id>/<run>/` for an incremental range, `<raw_prefix>shard=<id>/historical/<run>/`
/// for a dump: the parts of one run, `run` naming its range (extract's `RunRecord::id`).
pub fn extract_run_prefix(raw_prefix: &str, shard: &str, historical: bool, run: &str) -> String {
    let kind = if historical { EXTRACT_HISTORICAL } else { "" };
    format!("{}{kind}{run}/", extract_shard_prefix(raw_prefix, shard))
}

/// `<run prefix>part-<index:05>.jsonl.gz`: one part of a run (gzip JSON lines, which the
/// transform reads by the `.gz` ending). Same run and index, same key: a re-run after a crash
/// writes the keys the first run would have.
pub fn extract_part_key(run_prefix: &str, index: u32) -> String {
    format!("{run_prefix}part-{index:05}.jsonl.gz")
}

/// The index of an [`extract_part_key`] under `run_prefix`; None for any other key.
pub fn extract_part_index(run_prefix: &str, key: &str) -> Option<u32> {
    let digits = key
        .strip_prefix(run_prefix)?
        .strip_prefix("part-")?
        .strip_suffix(".jsonl.gz")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `loads/<table>/<batch>.json`: the record of one load (manifests, statement id, counts).
pub fn load_record_key(table: &str, batch: &str) -> String {
    format!("{LOADS}{table}/{batch}.json")
}

/// `loads/<table>/<batch>/replay-<ms>.json`: the record of a later load of the same manifests
/// (the first load's record stays as it was).
pub fn load_replay_record_key(table: &str, batch: &str, finished_at_ms: u64) -> String {
    format!("{LOADS}{table}/{batch}/replay-{finished_at_ms}.json")
}

/// `loads/<table>/<batch>/copy-<n>.manifest`: the COPY manifest of one group of files (never
/// under `manifests/`, which would trigger the loader again).
pub fn copy_manifest_key(table: &str, batch: &str, group: usize) -> String {
    format!("{LOADS}{table}/{batch}/copy-{group}.manifest")
}

/// `quarantine/<table>/load-<hash of the file key>.jsonl`: the rows of one curated file the
/// loader could not load (a NULL merge key).
pub fn load_quarantine_key(table: &str, file_key: &str) -> String {
    format!("{QUARANTINE}{table}/load-{}.jsonl", source_hash(file_key))
}

/// Whether a key is a source object the transform takes (under `raw/`, not a folder marker).
pub fn is_raw_object(key: &str) -> bool {
    key.starts_with(RAW) && !key.ends_with('/')
}

/// Whether a key is a manifest (`manifests/<table>/<hash>.json`).
pub fn is_manifest(key: &str) -> bool {
    key.starts_with(MANIFESTS) && key.ends_with(".json")
}

/// The table of a manifest key: `manifests/<table>/<file>.json` gives `<table>`; None for any
/// other key (another prefix, a folder marker, a deeper path).
pub fn manifest_table(key: &str) -> Option<&str> {
    if !is_manifest(key) {
        return None;
    }
    let (table, file) = key.strip_prefix(MANIFESTS)?.split_once('/')?;
    (!table.is_empty() && !file.contains('/') && file != ".json").then_some(table)
}

/// The hash rule: xxh3-64 of the whole source key, 16 lower-case hex digits. Distinct keys
/// give distinct names even when their file names are equal; the same key always gives the
/// same name, so a re-delivered event overwrites instead of duplicating.
pub fn source_hash(source_key: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(source_key.as_bytes()))
}

/// The stem rule: the source file name up to its first `.`, lower-cased, every character
/// other than `[a-z0-9_-]` replaced by `_`, at most 40 characters; `object` when empty.
/// It only makes keys readable; uniqueness comes from the hash.
pub fn source_stem(source_key: &str) -> String {
    let name = source_key.rsplit('/').next().unwrap_or(source_key);
    let base = name.split('.').next().unwrap_or(name);
    let mut stem: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(STEM_MAX_CHARS)
        .collect();
    if stem.is_empty() {
        stem.push_str("object");
    }
    stem
}

/// The lake keys one source object maps to. Deterministic: the same key always gives the
/// same names, so a re-delivered event overwrites instead of duplicating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKeys {
    pub table: String,
    /// See [`source_stem`].
    pub stem: String,
    /// See [`source_hash`].
    pub hash: String,
    /// `manifests/<table>/<hash>.json`
    pub manifest_key: String,
    /// `quarantine/<table>/<hash>.jsonl`
    pub quarantine_key: String,
}

impl ObjectKeys {
    pub fn new(table: &str, source_key: &str) -> Self {
        let hash = source_hash(source_key);
        Self {
            manifest_key: format!("{MANIFESTS}{table}/{hash}.json"),
            quarantine_key: format!("{QUARANTINE}{table}/{hash}.jsonl"),
            table: table.to_string(),
            stem: source_stem(source_key),
            hash,
        }
    }

    /// `curated/<table>/year=YYYY/month=MM/<stem>-<hash>-<part:05>.parquet`
    pub fn curated_key(&self, year: &str, month: &str, part: u32) -> String {
        format!(
            "{}{}-{}-{part:05}.parquet",
            partition_prefix(&self.table, year, month),
            self.stem,
            self.hash
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glue_claims_are_per_object_version_under_state_glue() {
        let k = glue_claim_key(
            "funnel",
            "raw/funnel/dump 2019.csv",
            "\"9b2cf535f27731c9-3\"",
        );
        assert_eq!(
            k,
            format!(
                "state/glue/funnel/{}-9b2cf535f27731c9-3.json",
                source_hash("raw/funnel/dump 2019.csv")
            )
        );
        assert_ne!(
            k,
            glue_claim_key("funnel", "raw/funnel/dump 2019.csv", "other")
        );
        assert_ne!(
            k,
            glue_claim_key("funnel", "raw/funnel/dump 2020.csv", "9b2cf535f27731c9-3")
        );
    }

    #[test]
    fn keys_follow_the_stem_and_hash_rule() {
        let k = ObjectKeys::new("funnel", "raw/funnel/2019-Oct sample+1.csv.gz");
        assert_eq!(k.hash.len(), 16);
        assert_eq!(k.hash, source_hash("raw/funnel/2019-Oct sample+1.csv.gz"));
        assert_eq!(k.stem, "2019-oct_sample_1");
        assert_eq!(k.manifest_key, format!("manifests/funnel/{}.json", k.hash));
        assert_eq!(
            k.quarantine_key,
            format!("quarantine/funnel/{}.jsonl", k.hash)
        );
        assert_eq!(
            k.curated_key("2019", "10", 3),
            format!(
                "curated/funnel/year=2019/month=10/2019-oct_sample_1-{}-00003.parquet",
                k.hash
            )
        );
        // The hash is of the whole key: same file name elsewhere, different hash.
        assert_ne!(k.hash, source_hash("raw/funnel/x/2019-Oct sample+1.csv.gz"));
        // A pinned value, so the rule cannot drift from the Glue job's copy of it.
        assert_eq!(source_hash("raw/funnel/a.csv"), {
            format!("{:016x}", xxhash_rust::xxh3::xxh3_64(b"raw/funnel/a.csv"))
        });
    }

    #[test]
    fn manifest_keys_name_their_table() {
        let k = ObjectKeys::new("funnel", "raw/funnel/a.csv");
        assert_eq!(manifest_table(&k.manifest_key), Some("funnel"));
        assert_eq!(
            manifest_table("manifests/my table/x.json"),
            Some("my table")
        );
        for not in [
            "manifests/funnel/",
            "manifests/funnel/x.txt",
            "manifests/x.json",
            "manifests//x.json",
            "manifests/funnel/sub/x.json",
            "manifests/funnel/.json",
            "raw/funnel/x.json",
            "loads/funnel/x.json",
        ] {
            assert_eq!(manifest_table(not), None, "{not}");
        }
    }

    #[test]
    fn stems_are_bounded_and_never_empty() {
        assert_eq!(source_stem("raw/t/.hidden"), "object");
        assert_eq!(source_stem("raw/t/"), "object");
        assert_eq!(
            source_stem(&format!("raw/t/{}.csv", "A".repeat(80))).len(),
            40
        );
        assert_eq!(source_stem("raw/t/日本.csv"), "__");
    }

    #[test]
    fn extract_keys_are_per_shard_and_run() {
        assert_eq!(
            extract_lease_key("orders", "eu1"),
            "state/extract/orders/eu1/lease"
        );
        assert_eq!(
            extract_state_key("orders", "eu1"),
            "state/extract/orders/eu1/state.json"
        );
        assert!(
            extract_state_key("orders", "eu1").starts_with(&extract_state_prefix("orders", "eu1"))
        );
        let run = extract_run_prefix("raw/orders/", "eu1", false, "20240101T000000.000000Z-ab");
        assert_eq!(run, "raw/orders/shard=eu1/20240101T000000.000000Z-ab/");
        let dump = extract_run_prefix("raw/orders/", "eu1", true, "r1");
        assert_eq!(dump, "raw/orders/shard=eu1/historical/r1/");
        assert!(dump.starts_with(&extract_shard_prefix("raw/orders/", "eu1")));
        let part = extract_part_key(&run, 7);
        assert_eq!(part, format!("{run}part-00007.jsonl.gz"));
        assert!(is_raw_object(&part));
        assert_eq!(extract_part_index(&run, &part), Some(7));
        assert_eq!(
            extract_part_index(&run, &extract_part_key(&run, 123_456)),
            Some(123_456)
        );
        for not in [
            format!("{run}part-.jsonl.gz"),
            format!("{run}part-0x1.jsonl.gz"),
            format!("{run}part-00001.jsonl"),
            format!("{dump}part-00001.jsonl.gz"),
        ] {
            assert_eq!(extract_part_index(&run, &not), None, "{not}");
        }
    }

    #[test]
    fn prefixes_and_predicates() {
        assert_eq!(curated_prefix("t"), "curated/t/");
        assert_eq!(
            partition_prefix("t", "2024", "03"),
            "curated/t/year=2024/month=03/"
        );
        assert_eq!(raw_cdc_prefix("orders"), "raw/cdc/orders/");
        assert_eq!(
            cdc_object_key("orders", "shardId-000000000000", "4959", "4961"),
            "raw/cdc/orders/shardId-000000000000/4959-4961.jsonl"
        );
        assert!(cdc_object_key("orders", "s", "1", "2").starts_with(&raw_cdc_prefix("orders")));
        assert_eq!(
            spill_key("orders", 22817392, 0),
            "spill/cdc/orders/22817392-0.json"
        );
        assert_eq!(
            cdc_snapshot_key("orders", 22_817_392, 3),
            "raw/cdc/orders/snapshot/22817392/00000003.jsonl"
        );
        assert!(cdc_snapshot_key("orders", 1, 0).starts_with(&raw_cdc_prefix("orders")));
        assert_eq!(
            cdc_snapshot_progress_key("orders"),
            "state/cdc/snapshot/orders.json"
        );
        assert_eq!(
            cdc_quarantine_key("shardId-000000000000", "4959", "4961"),
            "quarantine/_cdc-sink/shardId-000000000000/4959-4961.jsonl"
        );

        assert_eq!(loads_prefix("t"), "loads/t/");
        assert_eq!(manifests_prefix("t"), "manifests/t/");
        assert_eq!(quarantine_prefix("t"), "quarantine/t/");
        assert_eq!(state_key("leases/t"), "state/leases/t");
        assert_eq!(load_lease_key("t"), "state/loads/t/lease");
        assert!(load_lease_key("t").starts_with(&load_state_prefix("t")));
        assert_eq!(
            load_statement_batch("t", &load_statement_key("t", "ab12")),
            Some("ab12")
        );
        assert_eq!(load_statement_batch("t", &load_lease_key("t")), None);
        assert_eq!(
            load_statement_batch("t", &load_statement_key("t2", "ab12")),
            None
        );
        assert!(load_quarantine_key("t", "curated/t/x.parquet").starts_with("quarantine/t/load-"));
        assert!(is_raw_object("raw/t/a.csv"));
        assert!(!is_raw_object("raw/t/"));
        assert!(!is_raw_object("curated/t/a.parquet"));
        assert!(is_manifest("manifests/t/0123.json"));
        assert!(!is_manifest("loads/t/0123.json"));
        assert!(RAW_CDC.starts_with(RAW));
        assert!(QUARANTINE_CDC_SINK.starts_with(QUARANTINE));
    }

    /// The rule of this module, checked over the code that ships: no other file of `shared/`,
    /// `functions/` or `cli/` spells a lake prefix as a string literal (test code, which
    /// writes sample keys, and comments are exempt).
    #[test]
    fn no_prefix_literal_outside_layout() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        for dir in ["shared/src", "functions", "cli/src"] {
            collect_rs(&root.join(dir), &mut files);
        }
        assert!(files.len() > 10, "found only {} source files", files.len());
        // A prefix at the start of a literal (`"curated/…"`) or after a bucket (`…/curated/…`).
        let needles: Vec<String> = PREFIXES
            .iter()
            .flat_map(|p| [format!("\"{p}"), format!("/{p}")])
            .collect();
        let mut found = Vec::new();
        for f in &files {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // `*_tests.rs`: a test module kept beside its code (`#[path]`), as wal/ does.
            let test_code = name == "tests.rs"
                || name.ends_with("_tests.rs")
                || name == "conformance.rs"
                || name == "testing.rs"
                || f.components().any(|c| c.as_os_str() == "tests");
            if f.ends_with("lake/layout.rs") || test_code {
                continue;
            }
            let text = std::fs::read_to_string(f).unwrap();
            for (i, line) in text.lines().enumerate() {
                if line.trim_start() == "#[cfg(test)]" {
                    break; // the test module, at the end of the file by our convention
                }
                if line.trim_start().starts_with("//") {
                    continue;
                }
                if needles.iter().any(|n| line.contains(n.as_str())) {
                    found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
        assert!(
            found.is_empty(),
            "lake prefixes spelled outside lake/layout.rs (use its constants):\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn metrics_knows_no_function() {
        let metrics = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics");
        let mut files = Vec::new();
        collect_rs(&metrics, &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(
                !text.contains("crate::transform"),
                "{} imports transform",
                f.display()
            );
        }
    }

    fn collect_rs(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("target") {
                    collect_rs(&p, out);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
}
