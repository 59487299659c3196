//! A built function binary run as a Lambda function and invoked the way `cargo lambda` does it
//! by hand: `cargo lambda watch --only-lambda-apis` serves the Lambda runtime API (the emulator
//! only: it builds nothing), the bootstrap binary that `cargo build` made polls it, and `cargo
//! lambda invoke` sends each event. The function's AWS calls go to moto_server.
//!
//! A function's bootstrap test is a few lines:
//!
//! ```no_run
//! use sluice_tests::{LambdaFunction, Payload};
//!
//! let mut f = LambdaFunction::new("transform") // the binary and function name
//!     .env("SLUICE_PIPELINE", "/path/to/pipeline.toml")
//!     .start();
//! let response = f.invoke_ok(&Payload::event("s3-test-event.json")); // events/s3-test-event.json
//! assert_eq!(response["processed"], serde_json::json!([]));
//! let failed = f.invoke(&Payload::json(r#"{"Records": "not a list"}"#));
//! assert!(!failed.status.success(), "{}", failed.error_text());
//! // Dropping `f` stops the function and the emulator, pass or panic.
//! ```
//!
//! What it takes care of:
//! - Watch needs a manifest that names the function as a binary: a stub one in a temp
//!   directory, never built.
//! - The emulator is ready when it accepts a TCP connection; an HTTP GET of `/` would be an
//!   invocation.
//! - The function starts only once the emulator listens, with the variables the Lambda service
//!   sets (`AWS_LAMBDA_RUNTIME_API`, name, version, memory), dummy credentials and the moto
//!   endpoint, and no way to reach real AWS credentials or profiles; then the test's own
//!   variables, which override any of those.
//! - The emulator's port is free when picked; if another process takes it first, a new one
//!   is tried.
//! - An invocation that hangs, or a function that dies meanwhile, fails the test with the
//!   logs instead of hanging it.
//! - Drop stops the function first, then the emulator's whole process group, and prints the
//!   logs when the test is panicking.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{moto_endpoint, workspace_root};

/// Emulator-side limit on one invocation, so a stuck invoke fails instead of hanging.
const DEFAULT_INVOKE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `cargo lambda watch` may take to listen.
const WATCH_START_TIMEOUT: Duration = Duration::from_secs(30);

const HOW_TO_BUILD: &str = "run scripts/test or cargo build --workspace --bins --tests";

/// The built binary `name`: in `$SLUICE_BIN_DIR` (scripts/test sets it), else
/// `$CARGO_TARGET_DIR/debug`, else `<workspace>/target/debug`. Fails, saying how to build it,
/// when it is not there.
pub fn built_binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("SLUICE_BIN_DIR").filter(|d| !d.is_empty()) {
        let p = Path::new(&dir).join(name);
        assert!(
            p.is_file(),
            "SLUICE_BIN_DIR={} has no `{name}` binary: {HOW_TO_BUILD}",
            Path::new(&dir).display()
        );
        return p;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let p = target.join("debug").join(name);
    assert!(
        p.is_file(),
        "the `{name}` binary is not built ({} is missing; SLUICE_BIN_DIR is not set): {HOW_TO_BUILD}",
        p.display()
    );
    p
}

/// What one invocation sends.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A file, sent as is (`--data-file`).
    File(PathBuf),
    /// JSON text (`--data-ascii`).
    Json(String),
}

impl Payload {
    /// The fixture `events/<name>` (shared with `cargo lambda invoke --data-file` by hand and
    /// the unit tests); fails when it does not exist.
    pub fn event(name: &str) -> Self {
        let path = workspace_root().join("events").join(name);
        assert!(path.is_file(), "no event fixture {}", path.display());
        Payload::File(path)
    }

    /// A payload given as JSON text.
    pub fn json(text: impl Into<String>) -> Self {
        Payload::Json(text.into())
    }

    fn args(&self) -> [&OsStr; 2] {
        match self {
            Payload::File(p) => ["--data-file".as_ref(), p.as_os_str()],
            Payload::Json(t) => ["--data-ascii".as_ref(), t.as_ref()],
        }
    }
}

/// The outcome of one `cargo lambda invoke`.
#[derive(Debug)]
pub struct Invocation {
    /// Success when the function returned a response, failure when it returned an error.
    pub status: ExitStatus,
    /// `cargo lambda invoke`'s stdout: the response, as JSON, on success.
    pub stdout: String,
    /// `cargo lambda invoke`'s stderr: the error type and message, on failure.
    pub stderr: String,
    /// What the function printed on stdout during this invocation (log lines, EMF metrics).
    pub function_stdout: String,
    /// What the function printed on stderr during this invocation.
    pub function_stderr: String,
}

impl Invocation {
    /// The response as JSON, or the error text ([`Invocation::error_text`]) when the function
    /// returned an error.
    pub fn response(&self) -> Result<Value, String> {
        if !self.status.success() {
            return Err(self.error_text());
        }
        Ok(serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("invoke output is not JSON ({e}): {:?}", self.stdout)))
    }

    /// The error report without layout: `cargo lambda` prints `Error: <errorType>` and the
    /// message wrapped at 80 columns in a box (`│`, `×`), breaking lines even inside a key, so
    /// this is stderr with every whitespace and box character removed. Compare with
    /// `contains` on expected parts written without spaces.
    pub fn error_text(&self) -> String {
        self.stderr
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '│' && *c != '×')
            .collect()
    }
}

/// A function to start: a built binary, its name, and its environment.
#[derive(Debug, Clone)]
pub struct LambdaFunction {
    name: String,
    bin: PathBuf,
    env: Vec<(OsString, OsString)>,
    invoke_timeout: Duration,
}

impl LambdaFunction {
    /// The built binary `name` ([`built_binary`]), served as the function `name` (binary and
    /// function names are the same across the workspace). Fails at once when it is not built.
    pub fn new(name: &str) -> Self {
        LambdaFunction {
            name: name.to_string(),
            bin: built_binary(name),
            env: Vec::new(),
            invoke_timeout: DEFAULT_INVOKE_TIMEOUT,
        }
    }

    /// Sets an environment variable of the function, after (so over) the harness's own.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The limit on one invocation (60 s by default); the emulator enforces it.
    pub fn invoke_timeout(mut self, limit: Duration) -> Self {
        self.invoke_timeout = limit;
        self
    }

    /// Starts the emulator on a free loopback port, waits until it listens, then starts the
    /// function against it.
    pub fn start(self) -> RunningLambda {
        let version = Command::new("cargo").args(["lambda", "--version"]).output();
        assert!(
            version.as_ref().is_ok_and(|o| o.status.success()),
            "`cargo lambda` is not available ({version:?}): scripts/test installs it \
             (python3 -m pip install -r scripts/requirements-test.txt)"
        );
        let moto = moto_endpoint();
        let dir = tempfile::tempdir().expect("tempdir");
        // A stub manifest: watch needs one naming the function as a binary; it never builds it.
        std::fs::write(
            dir.path().join("Cargo.toml"),
            format!(
                "[package]\nname = \"lambda-apis-stub\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
                 [[bin]]\nname = \"{}\"\npath = \"main.rs\"\n\n[workspace]\n",
                self.name
            ),
        )
        .expect("stub manifest");
        std::fs::write(dir.path().join("main.rs"), "fn main() {}\n").expect("stub main.rs");

        let mut lambda = RunningLambda {
            name: self.name.clone(),
            dir,
            port: 0,
            invoke_timeout: self.invoke_timeout,
            watch: None,
            function: None,
        };
        lambda.start_emulator();
        lambda.start_function(&self, &moto);
        lambda
    }
}

/// A function served by the emulator. Dropping it stops both, whether the test passed or
/// panicked (then it prints the tails of their logs).
pub struct RunningLambda {
    name: String,
    dir: tempfile::TempDir,
    port: u16,
    invoke_timeout: Duration,
    watch: Option<Child>,
    function: Option<Child>,
}

impl RunningLambda {
    /// A scratch directory that lives as long as the function (the emulator's stub and the
    /// logs are in it too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The emulator's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the function printed on stdout so far.
    pub fn function_stdout(&self) -> String {
        std::fs::read_to_string(self.log("function.out")).unwrap_or_default()
    }

    /// Everything the function printed on stderr so far.
    pub fn function_stderr(&self) -> String {
        std::fs::read_to_string(self.log("function.err")).unwrap_or_default()
    }

    /// The function process's exit status, or `None` while it is still serving.
    pub fn function_exit(&mut self) -> Option<ExitStatus> {
        self.function
            .as_mut()
            .and_then(|f| f.try_wait().expect("try_wait on the function process"))
    }

    /// The last lines of the function's and the emulator's logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- function stdout ---\n{}\n--- function stderr ---\n{}\n--- cargo lambda watch ---\n{}",
            tail(&self.log("function.out")),
            tail(&self.log("function.err")),
            tail(&self.log("watch.log"))
        )
    }

    /// Sends one payload with `cargo lambda invoke` and returns its outcome, success or
    /// error. Fails the test, with the logs, if the function or the emulator dies meanwhile or
    /// the invocation outlives its limit.
    pub fn invoke(&mut self, payload: &Payload) -> Invocation {
        let out_path = self.log("invoke.out");
        let err_path = self.log("invoke.err");
        let out_from = file_len(&self.log("function.out"));
        let err_from = file_len(&self.log("function.err"));
        let mut child = Command::new("cargo")
            .args(["lambda", "invoke", "--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &self.port.to_string()])
            .args(payload.args())
            .args(["--output-format", "json", &self.name])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).expect("invoke out"))
            .stderr(File::create(&err_path).expect("invoke err"))
            .spawn()
            .expect("spawn cargo lambda invoke");
        let deadline = Instant::now() + self.invoke_timeout + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for invoke") {
                break s;
            }
            let function_exit = self.function_exit();
            if function_exit.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "invoke {payload:?} did not finish (function exit: {function_exit:?}):\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Invocation {
            status,
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
            function_stdout: read_from(&self.log("function.out"), out_from),
            function_stderr: read_from(&self.log("function.err"), err_from),
        }
    }

    /// [`RunningLambda::invoke`] that must succeed: the response as JSON.
    pub fn invoke_ok(&mut self, payload: &Payload) -> Value {
        let inv = self.invoke(payload);
        match inv.response() {
            Ok(v) => v,
            Err(_) => panic!(
                "invoke {payload:?} failed ({}): {}\n{}",
                inv.status,
                inv.stderr,
                self.logs()
            ),
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `cargo lambda watch` on a free port and waits until it accepts connections; a
    /// port taken by someone else in between is retried on another.
    fn start_emulator(&mut self) {
        for attempt in 1..=3 {
            let port = free_port();
            self.port = port;
            let log = File::create(self.log("watch.log")).expect("watch log");
            let watch = Command::new("cargo")
                .args(["lambda", "watch", "--only-lambda-apis", "--manifest-path"])
                .arg(self.dir.path().join("Cargo.toml"))
                .args(["--invoke-address", "127.0.0.1"])
                .args(["--invoke-port", &port.to_string()])
                .args(["--timeout", &self.invoke_timeout.as_secs().to_string()])
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                // In the test's own process group (cargo and cargo-lambda exec in place): when
                // nextest interrupts or times out the test, its signal reaches the emulator too.
                .spawn()
                .expect("spawn cargo lambda watch");
            self.watch = Some(watch);

            let deadline = Instant::now() + WATCH_START_TIMEOUT;
            // Readiness is a TCP accept: an HTTP GET of `/` would be an invocation.
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return;
                }
                let exited = self
                    .watch
                    .as_mut()
                    .and_then(|w| w.try_wait().ok().flatten());
                if let Some(status) = exited {
                    let log = std::fs::read_to_string(self.log("watch.log")).unwrap_or_default();
                    if attempt < 3 && log.to_ascii_lowercase().contains("address already in use") {
                        self.watch = None;
                        break; // another port
                    }
                    panic!(
                        "cargo lambda watch exited ({status}) before listening:\n{}",
                        self.logs()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "cargo lambda watch did not listen on {port} within {WATCH_START_TIMEOUT:?}:\n{}",
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Starts the function binary against the emulator (which must already listen).
    fn start_function(&mut self, f: &LambdaFunction, moto: &str) {
        let out = File::create(self.log("function.out")).expect("function log");
        let err = File::create(self.log("function.err")).expect("function log");
        let child = Command::new(&f.bin)
            .env("AWS_LAMBDA_FUNCTION_NAME", &f.name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{}/.rt/{}", self.port, f.name),
            )
            .env("AWS_ENDPOINT_URL", moto)
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
            .envs(f.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", f.bin.display()));
        self.function = Some(child);
    }
}

impl Drop for RunningLambda {
    fn drop(&mut self) {
        // The function first, then the emulator it polls.
        if let Some(mut f) = self.function.take() {
            let _ = f.kill();
            let _ = f.wait();
        }
        if let Some(mut w) = self.watch.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn file_len(path: &Path) -> usize {
    std::fs::metadata(path).map_or(0, |m| m.len() as usize)
}

/// The text of a file from byte `from` on.
fn read_from(path: &Path, from: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(bytes.get(from..).unwrap_or_default()).into_owned()
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
