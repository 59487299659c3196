//! Golden cases (`tests/golden/`, format in its README): running a case through the Rust
//! transform or the PySpark job, and the ONE comparison of a lake directory with a case's
//! `expected/` files that judges every implementation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use sluice::catalog::LocalCatalog;
use sluice::config::Pipeline;
use sluice::lake::manifest::{Manifest, ManifestColumn, RowCounts};
use sluice::lake::quarantine::QuarantineRecord;
use sluice::lake::{LocalStore, ObjectStore, PutMode};
use sluice::transform::Transformer;

use crate::{render_rows, workspace_root};

/// The prefixes a transform writes; everything under them is compared.
const OUTPUT_PREFIXES: [&str; 3] = ["curated/", "quarantine/", "manifests/"];

/// The start of the reason of a line that is not JSON; the parser's detail follows it.
const BAD_JSON: &str = "bad JSON: ";

/// The expected files, in the order mismatches are reported.
pub const EXPECTED_FILES: [&str; 5] = [
    "files.txt",
    "manifest.json",
    "schema.txt",
    "rows.txt",
    "quarantine.jsonl",
];

/// `case.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    /// The lake key the input is stored under.
    source_key: String,
    /// What the case is about, for people.
    #[allow(dead_code)]
    description: Option<String>,
}

/// One case directory.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub source_key: String,
    /// `input.csv` or `input.jsonl`.
    pub input: PathBuf,
    /// `hash.key`, when the case has one.
    pub hash_key: Option<PathBuf>,
}

impl Case {
    pub fn pipeline(&self) -> PathBuf {
        self.dir.join("pipeline.toml")
    }

    pub fn expected_dir(&self) -> PathBuf {
        self.dir.join("expected")
    }

    /// The expected files as they are checked in (a missing file is `None`).
    pub fn expected(&self) -> Outputs {
        EXPECTED_FILES
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(self.expected_dir().join(f)).ok();
                (f.to_string(), text)
            })
            .collect()
    }

    /// Writes `outputs` as the expected files (`SLUICE_BLESS=1`); a `None` removes the file.
    pub fn bless(&self, outputs: &Outputs) {
        let dir = self.expected_dir();
        std::fs::create_dir_all(&dir).expect("create expected/");
        for (name, text) in outputs {
            let path = dir.join(name);
            match text {
                Some(t) => std::fs::write(&path, t).expect("write expected file"),
                None => {
                    if path.exists() {
                        std::fs::remove_file(&path).expect("remove expected file");
                    }
                }
            }
        }
    }
}

/// `tests/golden/`.
pub fn golden_dir() -> PathBuf {
    workspace_root().join("tests/golden")
}

/// Every case under `tests/golden/`, by name; only `SLUICE_GOLDEN_CASE` when it is set.
pub fn cases() -> Vec<Case> {
    let only = std::env::var("SLUICE_GOLDEN_CASE").ok();
    let mut out = Vec::new();
    let entries = std::fs::read_dir(golden_dir()).expect("tests/golden/ exists");
    for e in entries {
        let dir = e.expect("dir entry").path();
        if !dir.join("case.toml").is_file() {
            continue;
        }
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("case directory name is UTF-8")
            .to_string();
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        out.push(load_case(name, dir));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        !out.is_empty(),
        "no golden case found (SLUICE_GOLDEN_CASE={only:?})"
    );
    out
}

fn load_case(name: String, dir: PathBuf) -> Case {
    let text = std::fs::read_to_string(dir.join("case.toml")).expect("read case.toml");
    let c: CaseFile =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{name}/case.toml: {e}"));
    let inputs: Vec<PathBuf> = ["input.csv", "input.jsonl"]
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(
        inputs.len(),
        1,
        "{name}: exactly one of input.csv, input.jsonl"
    );
    let hash_key = Some(dir.join("hash.key")).filter(|p| p.is_file());
    Case {
        name,
        source_key: c.source_key,
        input: inputs[0].clone(),
        hash_key,
        dir,
    }
}

/// An empty lake for one run of `case`: under `SLUICE_GOLDEN_KEEP/<runner>/<case>/` when that
/// is set (kept for inspection), else a temp dir (removed when the guard drops).
pub fn run_lake(case: &Case, runner: &str) -> (PathBuf, Option<tempfile::TempDir>) {
    match std::env::var_os("SLUICE_GOLDEN_KEEP") {
        Some(keep) => {
            let dir = PathBuf::from(keep).join(runner).join(&case.name);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).expect("clear the kept lake");
            }
            std::fs::create_dir_all(&dir).expect("create the kept lake");
            (dir, None)
        }
        None => {
            let t = tempfile::tempdir().expect("tempdir");
            (t.path().to_path_buf(), Some(t))
        }
    }
}

/// Copies the case's input to `<lake>/<source_key>`.
pub fn place_input(case: &Case, lake: &Path) {
    let target = lake.join(&case.source_key);
    std::fs::create_dir_all(target.parent().expect("source key has a folder"))
        .expect("create raw folder");
    std::fs::copy(&case.input, &target).expect("copy the input into the lake");
}

/// Runs the Rust transform on the case into `lake` (step 2–3 of the README).
pub async fn run_rust(case: &Case, lake: &Path) -> Result<(), String> {
    let pipeline = Pipeline::from_path(&case.pipeline()).map_err(|e| e.to_string())?;
    if pipeline.tables.len() != 1 {
        return Err(format!(
            "pipeline.toml has {} tables; a case has one",
            pipeline.tables.len()
        ));
    }
    let key = sluice::secrets::load_hash_key(&pipeline, case.hash_key.as_deref(), None)
        .await
        .map_err(|e| e.to_string())?;
    let t = Transformer::new(pipeline, key).map_err(|e| e.to_string())?;
    let store = LocalStore::new(lake).map_err(|e| e.to_string())?;
    let catalog = LocalCatalog::new(lake.join("_catalog/catalog.json"));
    let input = std::fs::read(&case.input).map_err(|e| e.to_string())?;
    store
        .put(&case.source_key, Bytes::from(input), PutMode::Overwrite)
        .await
        .map_err(|e| e.to_string())?;
    t.transform_object(&store, &catalog, &case.source_key, None)
        .await
        .map(|_| ())
        .map_err(|e| format!("transform failed: {e}"))
}

/// `infra/glue/transform_job.py`.
pub fn pyspark_job() -> PathBuf {
    workspace_root().join("infra/glue/transform_job.py")
}

/// Runs the PySpark job's local mode on the case into `lake`, with the command line the
/// README fixes.
pub fn run_pyspark(case: &Case, lake: &Path) -> Result<(), String> {
    place_input(case, lake);
    let mut cmd = Command::new("python3");
    cmd.current_dir(workspace_root())
        .arg(pyspark_job())
        .arg("--local")
        .arg("--pipeline")
        .arg(case.pipeline())
        .arg("--lake")
        .arg(lake)
        .arg("--source-key")
        .arg(&case.source_key);
    if let Some(k) = &case.hash_key {
        cmd.arg("--hash-key-file").arg(k);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start python3: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let tail = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    Err(format!(
        "{:?} exited with {}\n--- stderr (last 40 lines)\n{}\n--- stdout (last 40 lines)\n{}",
        cmd,
        out.status,
        tail(&out.stderr),
        tail(&out.stdout)
    ))
}

/// A rendering of the expected files from one lake: file name → text (`None`: no such file).
pub type Outputs = BTreeMap<String, Option<String>>;

/// The manifest as `manifest.json` holds it: without what differs between writers.
#[derive(Serialize)]
struct ComparedManifest<'a> {
    version: u32,
    table: &'a str,
    source_key: &'a str,
    source_bytes: u64,
    columns: &'a [ManifestColumn],
    files: Vec<ComparedFile<'a>>,
    #[serde(flatten)]
    counts: RowCounts,
    quarantine_key: Option<&'a str>,
}

#[derive(Serialize)]
struct ComparedFile<'a> {
    key: &'a str,
    year: &'a str,
    month: &'a str,
    rows: u64,
}

/// Lines joined with a final newline (none for no lines).
fn lines_text(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Renders the expected files from the lake at `lake` (the README's rules), plus the
/// consistency problems found on the way (manifest vs objects). Errors that stop the
/// rendering (no manifest, unreadable Parquet) are problems too.
pub async fn render_lake(lake: &Path) -> (Outputs, Vec<String>) {
    let mut problems = Vec::new();
    let mut out: Outputs = EXPECTED_FILES.iter().map(|f| (f.to_string(), None)).collect();
    let store = match LocalStore::new(lake) {
        Ok(s) => s,
        Err(e) => return (out, vec![format!("lake {}: {e}", lake.display())]),
    };
    let mut listed = BTreeMap::new();
    for p in OUTPUT_PREFIXES {
        match store.list(p).await {
            Ok(objs) => listed.extend(objs.into_iter().map(|m| (m.key, m.size_bytes))),
            Err(e) => problems.push(format!("list {p}: {e}")),
        }
    }
    let keys: Vec<String> = listed.keys().cloned().collect();
    out.insert("files.txt".into(), Some(lines_text(&keys)));

    // Curated Parquet: rows per file and the schema.
    let mut rows = Vec::new();
    let mut schema: Option<Vec<String>> = None;
    let mut parquet_rows = BTreeMap::new();
    for key in keys.iter().filter(|k| k.starts_with("curated/")) {
        let bytes = match store.get_bytes(key).await {
            Ok(b) => b,
            Err(e) => {
                problems.push(format!("read {key}: {e}"));
                continue;
            }
        };
        let (file_schema, file_rows) = match parquet_rows_and_schema(bytes) {
            Ok(x) => x,
            Err(e) => {
                problems.push(format!("{key} is not a readable Parquet file: {e}"));
                continue;
            }
        };
        match &schema {
            None => schema = Some(file_schema),
            Some(s) if *s != file_schema => problems.push(format!(
                "{key} has schema {file_schema:?}, another curated file has {s:?}"
            )),
            Some(_) => {}
        }
        parquet_rows.insert(key.clone(), file_rows.len() as u64);
        rows.push(format!("# {key}"));
        let mut sorted = file_rows;
        sorted.sort();
        rows.extend(sorted);
    }
    if !rows.is_empty() {
        out.insert("rows.txt".into(), Some(lines_text(&rows)));
    }
    if let Some(s) = schema {
        out.insert("schema.txt".into(), Some(lines_text(&s)));
    }

    // Quarantine: at most one object; every record of the shared shape, nothing more.
    let q_keys: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("quarantine/"))
        .collect();
    if q_keys.len() > 1 {
        problems.push(format!("more than one quarantine object: {q_keys:?}"));
    }
    if let Some(k) = q_keys.first() {
        match store.get_bytes(k).await {
            Ok(b) => match quarantine_lines(&b) {
                Ok(lines) => {
                    out.insert("quarantine.jsonl".into(), Some(lines_text(&lines)));
                }
                Err(e) => problems.push(format!("{k}: {e}")),
            },
            Err(e) => problems.push(format!("read {k}: {e}")),
        }
    }

    // The manifest, through the loader's type, and its agreement with the objects.
    let m_keys: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("manifests/"))
        .collect();
    match m_keys.as_slice() {
        [k] => match store.get_bytes(k).await {
            Ok(b) => match Manifest::from_json(&b, k) {
                Ok(m) => {
                    problems.extend(manifest_problems(&m, &listed, &parquet_rows));
                    out.insert("manifest.json".into(), Some(compared_manifest(&m)));
                }
                Err(e) => problems.push(format!("the loader cannot read it: {e}")),
            },
            Err(e) => problems.push(format!("read {k}: {e}")),
        },
        other => problems.push(format!("expected one manifest, found {other:?}")),
    }
    (out, problems)
}

/// The schema lines and the rendered rows of one Parquet file.
fn parquet_rows_and_schema(bytes: Bytes) -> Result<(Vec<String>, Vec<String>), String> {
    let b = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| e.to_string())?;
    let schema = b
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let ty = format!("{:?}", f.data_type()).replace("Some(\"+00:00\")", "Some(\"UTC\")");
            format!("{}: {ty}", f.name())
        })
        .collect();
    let mut rows = Vec::new();
    for batch in b.build().map_err(|e| e.to_string())? {
        rows.extend(render_rows(&batch.map_err(|e| e.to_string())?));
    }
    Ok((schema, rows))
}

/// Quarantine records re-serialised in the shared shape, sorted by (line, column, reason).
/// A record with a field the shape lacks is refused (it would be silently dropped).
fn quarantine_lines(b: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(b).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: not JSON: {e}", i + 1))?;
        let r: QuarantineRecord = serde_json::from_value(v.clone())
            .map_err(|e| format!("line {}: not a quarantine record: {e}", i + 1))?;
        let back = serde_json::to_value(&r).map_err(|e| e.to_string())?;
        if back != v {
            return Err(format!(
                "line {}: fields beyond the quarantine record's: {line}",
                i + 1
            ));
        }
        records.push(canonical_reason(r));
    }
    records.sort_by(|a, b| {
        (a.line, &a.column, &a.reason).cmp(&(b.line, &b.column, &b.reason))
    });
    records
        .iter()
        .map(|r| serde_json::to_string(r).map_err(|e| e.to_string()))
        .collect()
}

/// The parser's own wording after `bad JSON: ` is not part of the contract (serde_json and
/// Python's json module word the same fault differently); the rest of a reason is.
fn canonical_reason(mut r: QuarantineRecord) -> QuarantineRecord {
    if r.reason.starts_with(BAD_JSON) {
        r.reason = format!("{BAD_JSON}…");
    }
    r
}

/// What a manifest claims that the lake does not show.
fn manifest_problems(
    m: &Manifest,
    listed: &BTreeMap<String, u64>,
    parquet_rows: &BTreeMap<String, u64>,
) -> Vec<String> {
    let mut p = Vec::new();
    let in_manifest: Vec<&str> = m.files.iter().map(|f| f.key.as_str()).collect();
    let curated: Vec<&str> = listed
        .keys()
        .filter(|k| k.starts_with("curated/"))
        .map(String::as_str)
        .collect();
    let mut sorted = in_manifest.clone();
    sorted.sort();
    if sorted != curated {
        p.push(format!(
            "manifest files {in_manifest:?} are not the curated objects {curated:?}"
        ));
    }
    for f in &m.files {
        if let Some(size) = listed.get(&f.key) {
            if *size != f.bytes {
                p.push(format!(
                    "manifest says {} has {} bytes; the object has {size}",
                    f.key, f.bytes
                ));
            }
        }
        if let Some(rows) = parquet_rows.get(&f.key) {
            if *rows != f.rows {
                p.push(format!(
                    "manifest says {} has {} rows; the Parquet file has {rows}",
                    f.key, f.rows
                ));
            }
        }
        if !f
            .key
            .contains(&format!("/year={}/month={}/", f.year, f.month))
        {
            p.push(format!(
                "manifest file {} is not in partition year={}/month={}",
                f.key, f.year, f.month
            ));
        }
    }
    if m.file_rows() != m.counts.rows_written {
        p.push(format!(
            "manifest files hold {} rows, rows_written is {}",
            m.file_rows(),
            m.counts.rows_written
        ));
    }
    match &m.quarantine_key {
        Some(k) if !listed.contains_key(k) => {
            p.push(format!("manifest names quarantine {k}, which is not there"))
        }
        None if listed.keys().any(|k| k.starts_with("quarantine/")) => {
            p.push("a quarantine object exists, the manifest names none".into())
        }
        _ => {}
    }
    p
}

fn compared_manifest(m: &Manifest) -> String {
    let c = ComparedManifest {
        version: m.version,
        table: &m.table,
        source_key: &m.source_key,
        source_bytes: m.source_bytes,
        columns: &m.columns,
        files: m
            .files
            .iter()
            .map(|f| ComparedFile {
                key: &f.key,
                year: &f.year,
                month: &f.month,
                rows: f.rows,
            })
            .collect(),
        counts: m.counts,
        quarantine_key: m.quarantine_key.as_deref(),
    };
    let mut s = serde_json::to_string_pretty(&c).unwrap_or_else(|e| format!("<{e}>"));
    s.push('\n');
    s
}

/// The differences between the expected files and `actual`, one message per file, each with
/// a line diff (`-` expected, `+` actual). Empty when they are equal.
pub fn compare(expected: &Outputs, actual: &Outputs) -> Vec<String> {
    let mut out = Vec::new();
    for name in EXPECTED_FILES {
        let e = expected.get(name).cloned().flatten();
        let a = actual.get(name).cloned().flatten();
        match (e, a) {
            (None, None) => {}
            (Some(_), None) => out.push(format!("{name}: expected, but the run produced none")),
            (None, Some(a)) => out.push(format!(
                "{name}: the run produced one, none is expected:\n{}",
                indent(&a)
            )),
            (Some(e), Some(a)) if e != a => {
                out.push(format!("{name} differs (- expected, + actual):\n{}", diff(&e, &a)))
            }
            _ => {}
        }
    }
    out
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// A line diff by longest common subsequence (the files are small); unchanged lines are shown
/// only next to changes, with `…` for the gaps.
pub fn diff(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.split_inclusive('\n').collect();
    let a: Vec<&str> = actual.split_inclusive('\n').collect();
    let (n, m) = (e.len(), a.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if e[i] == a[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && e[i] == a[j] {
            ops.push((' ', e[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', a[j]));
            j += 1;
        } else {
            ops.push(('-', e[i]));
            i += 1;
        }
    }
    let near = |k: usize| {
        ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
            .iter()
            .any(|o| o.0 != ' ')
    };
    let mut s = String::new();
    let mut gap = false;
    for (k, (op, line)) in ops.iter().enumerate() {
        if *op == ' ' && !near(k) {
            if !gap {
                s.push_str("    …\n");
                gap = true;
            }
            continue;
        }
        gap = false;
        let shown = line.strip_suffix('\n').unwrap_or(line);
        let nl = if line.ends_with('\n') { "" } else { " (no final newline)" };
        let _ = writeln!(s, "  {op} {shown}{nl}");
    }
    s
}

/// Compares the lake at `lake` with the case's expected files: every problem, or `Ok`. The
/// one comparison for every implementation (Rust, PySpark, any output directory).
pub async fn check_lake(case: &Case, lake: &Path) -> Result<(), String> {
    let (actual, problems) = render_lake(lake).await;
    let mut msgs = problems;
    msgs.extend(compare(&case.expected(), &actual));
    if msgs.is_empty() {
        Ok(())
    } else {
        Err(msgs.join("\n"))
    }
}
