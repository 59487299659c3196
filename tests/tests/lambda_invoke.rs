//! The built `transform` binary, run as a Lambda function under `cargo lambda watch
//! --only-lambda-apis` (the runtime API emulator only; no second build) and invoked with
//! `cargo lambda invoke --data-file events/...`, against moto_server. See
//! scripts/lambda-invoke-recipe.md for the recipe and its gotchas.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use sluice::transform::Manifest;
use sluice_tests::{
    funnel_rows, funnel_sample, get_object, list_keys, moto_endpoint, moto_sdk_config, moto_secret,
    parquet_batches, pipeline_copy, put_object, unique_name, workspace_root, TEST_HASH_KEY,
};

/// The function name: the binary's name, the stub manifest's `[[bin]]`, the invoke target.
const FUNCTION: &str = "transform";
/// The bucket and key `events/s3-put.json` names (its key decoded).
const BUCKET: &str = "sluice-lake";
const KEY: &str = "raw/funnel/2019-10 sample+1.csv";
/// Emulator-side limit on one invocation, so a stuck invoke fails instead of hanging.
const INVOKE_TIMEOUT_SECS: u64 = 60;

const HOW_TO_BUILD: &str = "run scripts/test or cargo build --workspace --bins";

/// The built `transform` binary: `$SLUICE_BIN_DIR` (scripts/test), else
/// `$CARGO_TARGET_DIR/debug`, else `<workspace>/target/debug`.
fn transform_binary() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLUICE_BIN_DIR").filter(|d| !d.is_empty()) {
        let p = Path::new(&dir).join(FUNCTION);
        assert!(
            p.is_file(),
            "SLUICE_BIN_DIR={} has no `{FUNCTION}` binary: {HOW_TO_BUILD}",
            p.parent().unwrap_or(Path::new("")).display()
        );
        return p;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let p = target.join("debug").join(FUNCTION);
    assert!(
        p.is_file(),
        "the `{FUNCTION}` binary is not built ({} is missing; SLUICE_BIN_DIR is not set): {HOW_TO_BUILD}",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The emulator and the function, stopped on drop (function first, then the emulator: see the
/// recipe's gotcha 7), whether the test passed or panicked.
struct Lambda {
    dir: tempfile::TempDir,
    port: u16,
    watch: Option<Child>,
    function: Option<Child>,
}

impl Lambda {
    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn logs(&self) -> String {
        format!(
            "--- function stdout ---\n{}\n--- function stderr ---\n{}\n--- cargo lambda watch ---\n{}",
            tail(&self.log("function.out")),
            tail(&self.log("function.err")),
            tail(&self.log("watch.log"))
        )
    }

    /// Starts the emulator and waits until it accepts connections.
    fn start_emulator() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // A stub manifest: watch needs one naming the function as a binary; it never builds it.
        std::fs::write(
            dir.path().join("Cargo.toml"),
            format!(
                "[package]\nname = \"lambda-apis-stub\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
                 [[bin]]\nname = \"{FUNCTION}\"\npath = \"main.rs\"\n\n[workspace]\n"
            ),
        )
        .expect("stub manifest");
        std::fs::write(dir.path().join("main.rs"), "fn main() {}\n").expect("stub main.rs");

        let version = Command::new("cargo").args(["lambda", "--version"]).output();
        assert!(
            version.as_ref().is_ok_and(|o| o.status.success()),
            "`cargo lambda` is not available ({version:?}): scripts/test installs it \
             (python3 -m pip install -r scripts/requirements-test.txt)"
        );

        let port = free_port();
        let log = File::create(dir.path().join("watch.log")).expect("watch log");
        let watch = Command::new("cargo")
            .args(["lambda", "watch", "--only-lambda-apis", "--manifest-path"])
            .arg(dir.path().join("Cargo.toml"))
            .args([
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &port.to_string(),
            ])
            .args(["--timeout", &INVOKE_TIMEOUT_SECS.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            // Its own process group, so stopping it takes anything it spawned.
            .process_group(0)
            .spawn()
            .expect("spawn cargo lambda watch");
        let mut lambda = Lambda {
            dir,
            port,
            watch: Some(watch),
            function: None,
        };

        let deadline = Instant::now() + Duration::from_secs(30);
        // Readiness is a TCP accept: an HTTP GET of `/` would be an invocation (gotcha 1).
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = lambda
                .watch
                .as_mut()
                .and_then(|w| w.try_wait().ok().flatten())
            {
                panic!(
                    "cargo lambda watch exited ({status}) before listening:\n{}",
                    lambda.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "cargo lambda watch did not listen on {port} within 30 s:\n{}",
                lambda.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        lambda
    }

    /// Starts the function binary against the emulator (after it listens: gotcha 6).
    fn start_function(&mut self, bin: &Path, pipeline: &Path) {
        let out = File::create(self.log("function.out")).expect("function log");
        let err = File::create(self.log("function.err")).expect("function log");
        let child = Command::new(bin)
            .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{}/.rt/{FUNCTION}", self.port),
            )
            .env("SLUICE_PIPELINE", pipeline)
            .env("AWS_ENDPOINT_URL", moto_endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.dir.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.path().join("no-aws-credentials"),
            )
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_LAMBDA_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        self.function = Some(child);
    }

    /// `cargo lambda invoke` with extra args (`--data-file F` or `--data-ascii S`); fails
    /// early with the logs if the function or the emulator dies meanwhile.
    fn invoke(&mut self, data: &[&str]) -> (ExitStatus, String, String) {
        let out_path = self.log("invoke.out");
        let err_path = self.log("invoke.err");
        let mut child = Command::new("cargo")
            .args([
                "lambda",
                "invoke",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &self.port.to_string(),
            ])
            .args(data)
            .args(["--output-format", "json", FUNCTION])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).expect("invoke out"))
            .stderr(File::create(&err_path).expect("invoke err"))
            .spawn()
            .expect("spawn cargo lambda invoke");
        let deadline = Instant::now() + Duration::from_secs(INVOKE_TIMEOUT_SECS + 10);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for invoke") {
                break s;
            }
            let function_exit = self
                .function
                .as_mut()
                .and_then(|f| f.try_wait().ok().flatten());
            if function_exit.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "invoke {data:?} did not finish (function exit: {function_exit:?}):\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        (status, stdout, stderr)
    }

    fn invoke_ok(&mut self, data: &[&str]) -> Value {
        let (status, stdout, stderr) = self.invoke(data);
        assert!(
            status.success(),
            "invoke {data:?} failed ({status}): {stderr}\n{}",
            self.logs()
        );
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("invoke output is not JSON ({e}): {stdout:?}"))
    }
}

impl Drop for Lambda {
    fn drop(&mut self) {
        if let Some(mut f) = self.function.take() {
            let _ = f.kill();
            let _ = f.wait();
        }
        if let Some(mut w) = self.watch.take() {
            // The whole group it leads (cargo execs cargo-lambda, but be sure), then the child.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", w.id())])
                .stderr(Stdio::null())
                .status();
            let _ = w.kill();
            let _ = w.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Creates `sluice-lake` in moto (already there from an earlier run on the same server is
/// fine) and empties it: this test is the only one that uses the fixture's bucket.
async fn fixture_bucket(s3: &aws_sdk_s3::Client) {
    if let Err(e) = s3.create_bucket().bucket(BUCKET).send().await {
        let owned = e
            .as_service_error()
            .is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists());
        assert!(
            owned,
            "create bucket {BUCKET}: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        );
    }
    for key in list_keys(s3, BUCKET, "").await {
        s3.delete_object()
            .bucket(BUCKET)
            .key(&key)
            .send()
            .await
            .expect("empty the fixture bucket");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_binary_serves_the_event_fixtures() {
    // Checked first, so a missing build fails before anything starts.
    let bin = transform_binary();
    let events = workspace_root().join("events");
    let put_event = events.join("s3-put.json");
    let test_event = events.join("s3-test-event.json");

    // moto: the bucket and object the fixture names, a hash-key secret, a pipeline copy that
    // names that secret and a Glue database of its own.
    let sdk = moto_sdk_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(sluice::aws::s3_config(&sdk));
    fixture_bucket(&s3).await;
    let sample = funnel_sample(7, &[(2019, 10), (2019, 11)], 20);
    put_object(&s3, BUCKET, KEY, sample.csv.clone()).await;
    let secret = format!("sluice/{}", unique_name("hash-key"));
    moto_secret(&sdk, &secret, TEST_HASH_KEY).await;
    let db = unique_name("invoke").replace('-', "_");

    let mut lambda = Lambda::start_emulator();
    let pipeline = pipeline_copy(lambda.dir.path(), &db, &secret);
    lambda.start_function(&bin, &pipeline);

    // 1. The S3 put fixture, as is.
    let out = lambda.invoke_ok(&["--data-file", put_event.to_str().expect("utf-8 path")]);
    assert_eq!(out["ignored"], serde_json::json!([]), "{out}");
    let processed = out["processed"].as_array().expect("processed array");
    assert_eq!(processed.len(), 1, "{out}");
    let p = &processed[0];
    assert_eq!(p["bucket"], BUCKET);
    assert_eq!(p["key"], KEY, "the fixture's key decoded");
    assert_eq!(p["table"], "funnel");
    assert_eq!(p["rows_read"], sample.rows_read);
    assert_eq!(p["rows_written"], sample.expected.len() as u64);
    assert_eq!(p["rows_duplicate"], sample.rows_duplicate);
    assert_eq!(p["rows_quarantined"], 1);
    assert_eq!(p["files"], 2);
    let manifest_key = p["manifest_key"].as_str().expect("manifest_key");

    // What it wrote, read back from moto.
    let m: Manifest = serde_json::from_slice(&get_object(&s3, BUCKET, manifest_key).await)
        .expect("manifest JSON");
    let curated = list_keys(&s3, BUCKET, "curated/").await;
    assert_eq!(
        m.files.iter().map(|f| f.key.clone()).collect::<Vec<_>>(),
        curated
    );
    for (k, month) in curated.iter().zip(["10", "11"]) {
        assert!(
            k.starts_with(&format!(
                "curated/funnel/year=2019/month={month}/2019-10_sample_1-"
            )) && k.ends_with("-00000.parquet"),
            "{k}"
        );
    }
    let mut rows = Vec::new();
    for k in &curated {
        for b in parquet_batches(get_object(&s3, BUCKET, k).await) {
            rows.extend(funnel_rows(&b));
        }
    }
    assert_eq!(
        rows, sample.expected,
        "curated rows (hashed with the key from the moto secret)"
    );
    assert_eq!(
        (m.counts.rows_read, m.counts.rows_written),
        (sample.rows_read, sample.expected.len() as u64)
    );
    let quarantine = m.quarantine_key.as_deref().expect("quarantine key");
    let mut want_all = vec![
        KEY.to_string(),
        manifest_key.to_string(),
        quarantine.to_string(),
    ];
    want_all.extend(curated.iter().cloned());
    want_all.sort();
    assert_eq!(list_keys(&s3, BUCKET, "").await, want_all);
    let glue = aws_sdk_glue::Client::new(&sdk);
    let parts = glue
        .get_partitions()
        .database_name(&db)
        .table_name("funnel")
        .send()
        .await
        .expect("GetPartitions");
    assert_eq!(parts.partitions().len(), 2);

    // The EMF metrics line on the function's stdout.
    let stdout = std::fs::read_to_string(lambda.log("function.out")).unwrap_or_default();
    let emf: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 1, "one EMF line per object:\n{stdout}");
    assert_eq!(emf[0]["Table"], "funnel");
    assert_eq!(emf[0]["RowsWritten"], sample.expected.len() as u64);

    // 2. The s3:TestEvent fixture: accepted, nothing done.
    let out = lambda.invoke_ok(&["--data-file", test_event.to_str().expect("utf-8 path")]);
    assert_eq!(out, serde_json::json!({ "processed": [], "ignored": [] }));

    // 3. A key no table owns: the invocation fails, naming the key; the function lives on.
    let bad = std::fs::read_to_string(&put_event)
        .expect("fixture")
        .replace("raw/funnel/2019-10+sample%2B1.csv", "raw/nope/x.csv");
    let (status, stdout, stderr) = lambda.invoke(&["--data-ascii", &bad]);
    assert!(
        !status.success(),
        "an unknown table must fail the invocation: {stdout}"
    );
    // cargo lambda prints `Error: <errorType>` and the message wrapped at 80 columns in a
    // box (`│`), breaking lines even inside a key: compare with all of that removed.
    let flat: String = stderr
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '│' && *c != '×')
        .collect();
    for part in [
        "Error:BadInput",
        "s3://sluice-lake/raw/nope/x.csv:",
        "knownrawprefixesareraw/funnel/,raw/customers/",
    ] {
        assert!(
            flat.contains(part),
            "cargo lambda invoke's error lacks {part:?}:\n{stderr}"
        );
    }
    let out = lambda.invoke_ok(&["--data-file", test_event.to_str().expect("utf-8 path")]);
    assert_eq!(out["processed"], serde_json::json!([]));
    let alive = lambda
        .function
        .as_mut()
        .map(|f| f.try_wait().expect("try_wait"));
    assert!(
        matches!(alive, Some(None)),
        "the function process is still serving: {alive:?}"
    );
}
