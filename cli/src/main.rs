//! `sluice`: run the pipeline's functions locally, on the same code the Lambdas run.
//!
//! `sluice demo` makes sample data and transforms it on a local lake under `./sluice-demo/`;
//! `sluice transform` runs the transform on given objects of a local or S3 lake;
//! `sluice load` loads a table's manifests into the warehouse (Redshift, or PostgreSQL);
//! `sluice warehouse ddl` prints the warehouse tables the loader writes;
//! `sluice cdc setup|snapshot|run|peek` sets up change data capture from PostgreSQL, copies the
//! tables' current rows, runs the wal-decoder once, and prints a slot's pending changes;
//! `sluice extract` runs the extract once: tables from their shards into `raw/`.

mod cdc;
mod demo;
mod extract;
mod load;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use sluice::catalog::{Catalog, GlueCatalog, LocalCatalog};
use sluice::config::Pipeline;
use sluice::lake::ObjectStore;
use sluice::transform::{TransformSummary, Transformer};

/// mimalloc: the decoders allocate many small strings and maps per record (see the workspace
/// Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "OLTP → S3 lake → Redshift, run locally"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate sample data and transform it on a local lake, then print a summary; with
    /// --target, load it into PostgreSQL and print the reconciliation.
    Demo {
        /// Where the demo lake goes.
        #[arg(long, default_value = "sluice-demo")]
        dir: PathBuf,
        /// Funnel rows to generate.
        #[arg(long, default_value_t = 20_000)]
        rows: usize,
        /// Then load the tables with a warehouse section into this PostgreSQL database
        /// (postgres://USER@HOST:PORT/DB) and print the reconciliation.
        #[arg(long)]
        target: Option<String>,
    },
    /// Transform raw objects of a lake (local directory or s3://bucket).
    Transform {
        /// The pipeline file.
        #[arg(long)]
        pipeline: PathBuf,
        /// The lake: a local directory (catalog in <dir>/_catalog/) or s3://BUCKET (Glue).
        #[arg(long)]
        lake: String,
        /// Key file for PII hashing, instead of the pipeline's [hash_key].
        #[arg(long)]
        hash_key_file: Option<PathBuf>,
        /// Object keys, e.g. raw/funnel/2019-10.csv.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Load a table's manifests into the warehouse, as the redshift-loader Lambda does
    /// (backfills, replays of its dead-letter queue), and print the reconciliation.
    Load {
        /// The pipeline file.
        #[arg(long)]
        pipeline: PathBuf,
        /// The lake: a local directory or s3://BUCKET.
        #[arg(long)]
        lake: String,
        /// The table (it needs a [tables.warehouse] section).
        #[arg(long)]
        table: String,
        /// A PostgreSQL database (postgres://USER@HOST:PORT/DB) instead of the pipeline's
        /// [redshift] section.
        #[arg(long)]
        target: Option<String>,
        /// Manifest keys to load (manifests/<table>/<hash>.json), all in one transaction;
        /// default: every manifest of the table.
        #[arg(long = "manifest")]
        manifests: Vec<String>,
    },
    /// Extract tables from their shards (MySQL, MariaDB, PostgreSQL) into raw/ as the extract
    /// Lambda does: the next incremental range of each shard, or a full dump (docs/EXTRACT.md).
    Extract {
        /// The pipeline file (its tables with a [tables.source] section).
        #[arg(long)]
        pipeline: PathBuf,
        /// The lake: a local directory or s3://BUCKET (parts under raw/, state under state/).
        #[arg(long)]
        lake: String,
        /// A table to extract (repeat for several); default: every table with a source.
        #[arg(long = "table")]
        tables: Vec<String>,
        /// A shard to read (repeat for several), of each table; default: all of them.
        #[arg(long = "shard")]
        shards: Vec<String>,
        /// A full dump in key order, after which the incremental watermark is where it began.
        #[arg(long)]
        historical: bool,
        /// Stop each shard after this many pages (run again to go on).
        #[arg(long)]
        max_pages: Option<u64>,
    },
    /// Change data capture from PostgreSQL (docs/CDC.md).
    Cdc {
        #[command(subcommand)]
        command: cdc::CdcCommand,
    },
    /// The warehouse the loader writes.
    Warehouse {
        #[command(subcommand)]
        command: WarehouseCommand,
    },
}

#[derive(Subcommand)]
enum WarehouseCommand {
    /// Print the DDL: each final table (and the loader's side tables) from the output schema,
    /// and Redshift Spectrum's external schema for each Glue database.
    Ddl {
        /// The pipeline file.
        #[arg(long)]
        pipeline: PathBuf,
        /// `redshift` or `postgres`.
        #[arg(long, default_value = "redshift")]
        dialect: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { dir, rows, target } => demo::run(&dir, rows, target.as_deref()).await,
        Command::Transform {
            pipeline,
            lake,
            hash_key_file,
            keys,
        } => transform(&pipeline, &lake, hash_key_file, &keys).await,
        Command::Load {
            pipeline,
            lake,
            table,
            target,
            manifests,
        } => {
            load::run(load::LoadArgs {
                pipeline: &pipeline,
                lake: &lake,
                table: &table,
                target: target.as_deref(),
                manifests,
            })
            .await
        }
        Command::Extract {
            pipeline,
            lake,
            tables,
            shards,
            historical,
            max_pages,
        } => {
            extract::run(extract::ExtractArgs {
                pipeline: &pipeline,
                lake: &lake,
                tables,
                shards,
                historical,
                max_pages,
            })
            .await
        }
        Command::Cdc { command } => cdc::run(command).await,
        Command::Warehouse {
            command: WarehouseCommand::Ddl { pipeline, dialect },
        } => warehouse_ddl(&pipeline, &dialect),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Opens the lake and the catalog that goes with it.
pub(crate) async fn open_lake(
    lake: &str,
) -> Result<(Arc<dyn ObjectStore>, Arc<dyn Catalog>), BoxError> {
    if lake.starts_with("s3://") {
        let clients = sluice::aws::Clients::from_env().await;
        let store = sluice::lake::open_with_client(lake, &clients.s3)?;
        Ok((store, Arc::new(GlueCatalog::new(clients.glue))))
    } else {
        std::fs::create_dir_all(lake)?;
        let store: Arc<dyn ObjectStore> = Arc::new(sluice::lake::LocalStore::new(lake)?);
        let catalog = LocalCatalog::new(PathBuf::from(lake).join("_catalog").join("catalog.json"));
        Ok((store, Arc::new(catalog)))
    }
}

async fn transform(
    pipeline: &std::path::Path,
    lake: &str,
    hash_key_file: Option<PathBuf>,
    keys: &[String],
) -> Result<(), BoxError> {
    let p = Pipeline::from_path(pipeline)?;
    let hash_key = sluice::secrets::load_hash_key(&p, hash_key_file.as_deref(), None).await?;
    let t = Transformer::new(p, hash_key)?;
    let (store, catalog) = open_lake(lake).await?;
    let mut failed = 0;
    for key in keys {
        let size = store.head(key).await.map(|m| m.size_bytes).unwrap_or(0);
        // A bar only on a terminal and for objects that take a while: drawn into a pipe, it
        // would cost more than the transform itself.
        let show = std::io::stderr().is_terminal() && size >= 32 * 1024 * 1024;
        let bar = if show {
            ProgressBar::new(size)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(key.clone());
        let progress_bar = bar.clone();
        let progress: sluice::transform::Progress = Arc::new(move |n| progress_bar.inc(n));
        let res = t
            .transform_object(store.as_ref(), catalog.as_ref(), key, Some(progress))
            .await;
        bar.finish_and_clear();
        match res {
            Ok(s) => println!("{}", summary_line(&s)),
            Err(e) => {
                failed += 1;
                eprintln!("error: {key}: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} of {} objects failed", keys.len()).into());
    }
    Ok(())
}

fn warehouse_ddl(pipeline: &std::path::Path, dialect: &str) -> Result<(), BoxError> {
    use sluice::warehouse::{spectrum_schema, Dialect, LoadPlan};
    let dialect = match dialect {
        "redshift" => Dialect::Redshift,
        "postgres" => Dialect::Postgres,
        other => return Err(format!("--dialect {other}: expected redshift or postgres").into()),
    };
    let p = Pipeline::from_path(pipeline)?;
    let mut any = false;
    for t in p.tables.iter().filter(|t| t.warehouse.is_some()) {
        any = true;
        let plan = LoadPlan::new(t)?;
        println!("-- table {}", t.name);
        // The session setting first: without it Redshift folds upper-case names.
        for s in plan
            .session(dialect)
            .into_iter()
            .chain(plan.create_tables(dialect))
        {
            println!("{};", s.sql);
        }
    }
    if !any {
        return Err("no table of the pipeline has a [tables.warehouse] section".into());
    }
    if let (Some(r), Dialect::Redshift) = (&p.redshift, dialect) {
        let dbs: std::collections::BTreeSet<&str> = p
            .tables
            .iter()
            .map(|t| t.catalog.database.as_str())
            .collect();
        for db in dbs {
            println!("-- Spectrum: the lake's tables in Glue database {db}");
            println!("{};", spectrum_schema(db, &r.copy_iam_role));
        }
    }
    Ok(())
}

/// One line per object, `key=value` pairs (greppable by scripts, readable by people).
pub(crate) fn summary_line(s: &TransformSummary) -> String {
    let c = s.counts;
    format!(
        "table={} key={} rows_read={} rows_written={} rows_duplicate={} rows_quarantined={} partitions={} files={} quarantine={} duration_ms={}",
        s.table,
        s.source_key,
        c.rows_read,
        c.rows_written,
        c.rows_duplicate,
        c.rows_quarantined,
        s.partitions.len(),
        s.files.len(),
        s.quarantine_key.as_deref().unwrap_or("-"),
        s.duration_ms
    )
}
