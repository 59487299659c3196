//! The golden cases of `tests/golden/` (format in its README) through every transform: the
//! Rust `Transformer` and the PySpark job's local mode, each judged by the one comparison in
//! `sluice_tests::golden`. `SLUICE_BLESS=1` rewrites the expected files from the Rust run.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sluice_tests::golden::{
    cases, check_lake, compare, pyspark_job, render_lake, run_lake, run_pyspark, run_rust, Case,
};

/// Fails once with every case's problems (none: passes).
fn judge_all(runner: &str, cases: &[Case], failures: Vec<(String, String)>) {
    if failures.is_empty() {
        return;
    }
    let mut msg = format!(
        "{} of {} golden cases fail under the {runner} run:\n",
        failures.len(),
        cases.len()
    );
    for (name, why) in failures {
        msg.push_str(&format!("\n=== {name}\n{why}\n"));
    }
    panic!("{msg}");
}

fn blessing() -> bool {
    std::env::var("SLUICE_BLESS").is_ok_and(|v| v == "1")
}

/// Batch sizes every case also runs with (besides the pipeline's own): one row per batch and
/// a small odd size, so dedup, partitioning and quarantine are checked across batch breaks.
const BATCH_ROWS: [usize; 2] = [1, 7];

#[tokio::test]
async fn rust_transform_passes_every_golden_case() {
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let (lake, _guard) = run_lake(case, "rust");
        if let Err(e) = run_rust(case, &lake, None).await {
            failures.push((case.name.clone(), e));
            continue;
        }
        if blessing() {
            let (outputs, problems) = render_lake(&lake).await;
            if problems.is_empty() {
                case.bless(&outputs);
            } else {
                failures.push((case.name.clone(), problems.join("\n")));
            }
            continue;
        }
        if let Err(e) = check_lake(case, &lake).await {
            failures.push((case.name.clone(), e));
            continue;
        }
        for n in BATCH_ROWS {
            let (lake, _guard) = run_lake(case, &format!("rust-batch-{n}"));
            let checked = match run_rust(case, &lake, Some(n)).await {
                Ok(()) => check_lake(case, &lake).await,
                Err(e) => Err(e),
            };
            if let Err(e) = checked {
                failures.push((format!("{} (batch_rows = {n})", case.name), e));
            }
        }
    }
    judge_all("Rust", &cases, failures);
}

/// The PySpark job in local mode (`python3 infra/glue/transform_job.py --local …`), judged by
/// the same comparison. Its manifest is read with the loader's `Manifest::from_json`.
#[tokio::test]
async fn pyspark_job_passes_every_golden_case() {
    assert!(
        pyspark_job().is_file(),
        "{} is missing: the Glue route's job must pass the same cases",
        pyspark_job().display()
    );
    let cases = cases();
    let lakes: Vec<_> = cases.iter().map(|c| run_lake(c, "pyspark")).collect();
    let jobs: Vec<(&Case, &Path)> = cases
        .iter()
        .zip(&lakes)
        .map(|(c, (lake, _))| (c, lake.as_path()))
        .collect();
    let ran = run_concurrently(&jobs, PYSPARK_AT_ONCE);
    let mut failures = Vec::new();
    for ((case, lake), ran) in jobs.iter().zip(ran) {
        let checked = match ran {
            Ok(()) => check_lake(case, lake).await,
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            failures.push((case.name.clone(), e));
        }
    }
    judge_all("PySpark", &cases, failures);
}

/// PySpark runs at once: each is a JVM of its own (about 10 s of start-up, under 1 GB), so a
/// few in parallel cut the test's time without crowding the machine.
const PYSPARK_AT_ONCE: usize = 3;

/// `run_pyspark` on every job, `at_once` at a time, results in the jobs' order.
fn run_concurrently(jobs: &[(&Case, &Path)], at_once: usize) -> Vec<Result<(), String>> {
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<(), String>>>> =
        jobs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..at_once {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((case, lake)) = jobs.get(i) else {
                    break;
                };
                let r = run_pyspark(case, lake);
                *results[i].lock().expect("result slot") = Some(r);
            });
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .expect("result slot")
                .unwrap_or_else(|| Err("not run".into()))
        })
        .collect()
}

/// Lakes produced some other way, one per case under `SLUICE_GOLDEN_OUTPUT_DIR/<case>/`
/// (`SLUICE_GOLDEN_KEEP` leaves them so), through the same comparison. Run on demand:
/// `--run-ignored only -- external`.
#[tokio::test]
#[ignore = "needs SLUICE_GOLDEN_OUTPUT_DIR; run on demand"]
async fn external_output_passes_every_golden_case() {
    let dir = std::env::var_os("SLUICE_GOLDEN_OUTPUT_DIR")
        .expect("SLUICE_GOLDEN_OUTPUT_DIR names a directory of lakes, one per case");
    let dir = std::path::PathBuf::from(dir);
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let lake = dir.join(&case.name);
        if !lake.is_dir() {
            failures.push((case.name.clone(), format!("{} is missing", lake.display())));
            continue;
        }
        if let Err(e) = check_lake(case, &lake).await {
            failures.push((case.name.clone(), e));
        }
    }
    judge_all("external", &cases, failures);
}

/// The comparison fails when an expected file is wrong: one changed row, one missing
/// quarantine record and one extra key are each reported, with a diff naming the line.
#[tokio::test]
async fn a_wrong_expected_file_fails_the_comparison() {
    let case = cases()
        .into_iter()
        .find(|c| c.expected_dir().join("quarantine.jsonl").is_file())
        .expect("a case with quarantined rows");
    let (lake, _guard) = run_lake(&case, "self-check");
    run_rust(&case, &lake, None).await.expect("Rust run");
    let (actual, problems) = render_lake(&lake).await;
    assert!(problems.is_empty(), "{problems:?}");
    let expected = case.expected();
    assert!(
        compare(&expected, &actual).is_empty(),
        "{}",
        compare(&expected, &actual).join("\n")
    );

    let mut wrong = expected.clone();
    let rows = wrong["rows.txt"].clone().expect("rows.txt");
    let changed = rows.replacen("|", "|x", 1);
    wrong.insert("rows.txt".into(), Some(changed));
    let q = wrong["quarantine.jsonl"].clone().expect("quarantine");
    let first_dropped: String = q.lines().skip(1).map(|l| format!("{l}\n")).collect();
    wrong.insert("quarantine.jsonl".into(), Some(first_dropped));
    let files = wrong["files.txt"].clone().expect("files.txt");
    wrong.insert(
        "files.txt".into(),
        Some(format!("{files}curated/extra.parquet\n")),
    );
    let msgs = compare(&wrong, &actual);
    assert_eq!(msgs.len(), 3, "{msgs:#?}");
    assert!(
        msgs[0].starts_with("files.txt differs") && msgs[0].contains("  - curated/extra.parquet"),
        "{}",
        msgs[0]
    );
    assert!(msgs[1].starts_with("rows.txt differs"), "{}", msgs[1]);
    assert!(
        msgs[1].contains("  - ") && msgs[1].contains("  + "),
        "{}",
        msgs[1]
    );
    assert!(
        msgs[2].starts_with("quarantine.jsonl differs") && msgs[2].contains("  + {"),
        "{}",
        msgs[2]
    );
}
