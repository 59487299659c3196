//! The catalog as one JSON file in the lake (by convention `<lake>/_catalog/catalog.json`):
//! databases → tables (definition, version counter, partitions). It gives the embedded mode
//! and tests the same evolution rules as Glue without an AWS account.
//!
//! Every change is a read-modify-write of the whole file under a process-wide lock, written to
//! a temp file beside it and renamed into place, so readers never see half a catalog. Writers
//! in other processes are not coordinated: the local catalog serves one process at a time.
//!
//! The column-evolution rules live here too (`plan_evolution`), shared with the Glue catalog so
//! both refuse and accept exactly the same changes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Catalog, CatalogColumn, CatalogError, EnsureOutcome, PartitionSpec, TableDef};

/// Serialises every read-modify-write of any local catalog file in this process.
static FILE_LOCK: Mutex<()> = Mutex::new(());

/// The file layout version written into the file, so a later layout can tell old files apart.
const FORMAT_VERSION: u32 = 1;

/// A catalog kept in a local JSON file.
#[derive(Debug, Clone)]
pub struct LocalCatalog {
    path: PathBuf,
}

impl LocalCatalog {
    /// A catalog stored at `path` (created on first write; a missing file is an empty catalog).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Runs `f` on the loaded catalog under the lock, off the async runtime's threads, and
    /// saves the catalog when `f` reports a change.
    async fn with_file<T, F>(&self, f: F) -> Result<T, CatalogError>
    where
        T: Send + 'static,
        F: FnOnce(&mut CatalogFile) -> Result<(T, bool), CatalogError> + Send + 'static,
    {
        let path = self.path.clone();
        let shown = path.display().to_string();
        let task = tokio::task::spawn_blocking(move || {
            let _guard = FILE_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
            let mut file = load(&path)?;
            let (value, changed) = f(&mut file)?;
            if changed {
                save(&path, &file)?;
            }
            Ok(value)
        });
        match task.await {
            Ok(result) => result,
            Err(join) => Err(CatalogError::Local {
                path: shown,
                message: join.to_string(),
            }),
        }
    }
}

/// The whole file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    /// Layout version of the file (`FORMAT_VERSION`).
    format: u32,
    /// Databases by name.
    databases: BTreeMap<String, DatabaseEntry>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseEntry {
    /// Tables by name.
    tables: BTreeMap<String, TableEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableEntry {
    /// The table as the catalog knows it (evolved columns included).
    def: TableDef,
    /// Bumped on every change of `def`, like Glue's table version id.
    version: u64,
    /// Registered partitions, sorted by values, no duplicates.
    partitions: Vec<PartitionSpec>,
}

fn local_err(path: &Path, message: impl Into<String>) -> CatalogError {
    CatalogError::Local {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn load(path: &Path) -> Result<CatalogFile, CatalogError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(CatalogFile {
                format: FORMAT_VERSION,
                ..CatalogFile::default()
            });
        }
        Err(e) => return Err(local_err(path, format!("cannot read: {e}"))),
    };
    let file: CatalogFile = serde_json::from_slice(&text)
        .map_err(|e| local_err(path, format!("not a catalog file: {e}")))?;
    if file.format != FORMAT_VERSION {
        return Err(local_err(
            path,
            format!(
                "layout version {} is not the supported version {FORMAT_VERSION}",
                file.format
            ),
        ));
    }
    Ok(file)
}

/// Writes the file atomically: a temp file in the same folder, flushed, then renamed over it.
fn save(path: &Path, file: &CatalogFile) -> Result<(), CatalogError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let fail =
        |what: &str, e: &dyn std::fmt::Display| local_err(path, format!("cannot {what}: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| fail("create its folder", &e))?;
    let json = serde_json::to_vec_pretty(file).map_err(|e| fail("serialise", &e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".sluice-tmp-")
        .tempfile_in(dir)
        .map_err(|e| fail("create a temp file", &e))?;
    tmp.write_all(&json).map_err(|e| fail("write", &e))?;
    tmp.as_file().sync_data().map_err(|e| fail("flush", &e))?;
    tmp.persist(path).map_err(|e| fail("replace", &e.error))?;
    Ok(())
}

/// What an existing table needs to match a definition.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Evolution {
    /// Columns to append, in the definition's order.
    pub(super) added: Vec<CatalogColumn>,
    /// The definition's projection range differs from the table's (e.g. a new year).
    pub(super) projection_changed: bool,
}

/// Compares an existing table with a definition: new columns are appended, columns missing
/// from the definition are kept, and a changed column type or a changed set of partition keys
/// is refused (the files already written would no longer match the table).
pub(super) fn plan_evolution(
    existing: &TableDef,
    def: &TableDef,
) -> Result<Evolution, CatalogError> {
    let incompatible =
        |column: &str, existing: String, requested: String| CatalogError::Incompatible {
            database: def.database.clone(),
            table: def.table.clone(),
            column: column.to_string(),
            existing,
            requested,
        };
    let same_keys = existing.partition_keys.len() == def.partition_keys.len()
        && existing
            .partition_keys
            .iter()
            .zip(&def.partition_keys)
            .all(|(a, b)| a.eq_ignore_ascii_case(b));
    if !same_keys {
        return Err(incompatible(
            "(partition keys)",
            existing.partition_keys.join(","),
            def.partition_keys.join(","),
        ));
    }
    let mut added = Vec::new();
    for col in &def.columns {
        match existing
            .columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(&col.name))
        {
            Some(old) if normalise_type(&old.glue_type) != normalise_type(&col.glue_type) => {
                return Err(incompatible(
                    &col.name,
                    old.glue_type.clone(),
                    col.glue_type.clone(),
                ));
            }
            Some(_) => {}
            None if added
                .iter()
                .any(|c: &CatalogColumn| c.name.eq_ignore_ascii_case(&col.name)) => {}
            None => added.push(col.clone()),
        }
    }
    Ok(Evolution {
        added,
        projection_changed: existing.projection_years != def.projection_years,
    })
}

/// Glue lower-cases types and may drop spaces (`decimal(10, 2)` vs `decimal(10,2)`); compare
/// the forms that mean the same type as equal.
fn normalise_type(t: &str) -> String {
    t.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

#[async_trait]
impl Catalog for LocalCatalog {
    async fn ensure_table(&self, def: &TableDef) -> Result<EnsureOutcome, CatalogError> {
        let def = def.clone();
        self.with_file(move |file| {
            let db = file.databases.entry(def.database.clone()).or_default();
            let Some(entry) = db.tables.get_mut(&def.table) else {
                let entry = TableEntry {
                    def: def.clone(),
                    version: 1,
                    partitions: Vec::new(),
                };
                db.tables.insert(def.table.clone(), entry);
                return Ok((
                    EnsureOutcome {
                        created: true,
                        added_columns: Vec::new(),
                    },
                    true,
                ));
            };
            let plan = plan_evolution(&entry.def, &def)?;
            let changed = !plan.added.is_empty() || plan.projection_changed;
            let added_columns = plan.added.iter().map(|c| c.name.clone()).collect();
            entry.def.columns.extend(plan.added);
            entry.def.projection_years = def.projection_years;
            if changed {
                entry.version += 1;
            }
            Ok((
                EnsureOutcome {
                    created: false,
                    added_columns,
                },
                changed,
            ))
        })
        .await
    }

    async fn add_partitions(
        &self,
        def: &TableDef,
        parts: &[PartitionSpec],
    ) -> Result<(), CatalogError> {
        if def.projection_years.is_some() || parts.is_empty() {
            return Ok(());
        }
        let def = def.clone();
        let parts = parts.to_vec();
        let path = self.path.clone();
        self.with_file(move |file| {
            let entry = file
                .databases
                .get_mut(&def.database)
                .and_then(|db| db.tables.get_mut(&def.table))
                .ok_or_else(|| {
                    local_err(
                        &path,
                        format!(
                            "table {}.{} is not in the catalog; ensure_table creates it",
                            def.database, def.table
                        ),
                    )
                })?;
            let mut changed = false;
            for part in parts {
                if part.values.len() != entry.def.partition_keys.len() {
                    return Err(local_err(
                        &path,
                        format!(
                            "partition {:?} of {}.{} has {} values for partition keys {:?}",
                            part.values,
                            def.database,
                            def.table,
                            part.values.len(),
                            entry.def.partition_keys
                        ),
                    ));
                }
                // Existing partitions count as success and keep their location, as in Glue.
                if let Err(at) = entry
                    .partitions
                    .binary_search_by(|p| p.values.cmp(&part.values))
                {
                    entry.partitions.insert(at, part);
                    changed = true;
                }
            }
            Ok(((), changed))
        })
        .await
    }

    async fn get_table(
        &self,
        database: &str,
        table: &str,
    ) -> Result<Option<TableDef>, CatalogError> {
        let (database, table) = (database.to_string(), table.to_string());
        self.with_file(move |file| {
            let def = file
                .databases
                .get(&database)
                .and_then(|db| db.tables.get(&table))
                .map(|t| t.def.clone());
            Ok((def, false))
        })
        .await
    }

    async fn list_partitions(
        &self,
        database: &str,
        table: &str,
    ) -> Result<Vec<Vec<String>>, CatalogError> {
        let (database, table) = (database.to_string(), table.to_string());
        let path = self.path.clone();
        self.with_file(move |file| {
            let entry = file
                .databases
                .get(&database)
                .and_then(|db| db.tables.get(&table))
                .ok_or_else(|| {
                    local_err(
                        &path,
                        format!("table {database}.{table} is not in the catalog"),
                    )
                })?;
            Ok((
                entry.partitions.iter().map(|p| p.values.clone()).collect(),
                false,
            ))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(columns: &[(&str, &str)]) -> TableDef {
        TableDef {
            database: "db".into(),
            table: "t".into(),
            location: "/lake/curated/t/".into(),
            columns: columns
                .iter()
                .map(|(n, t)| CatalogColumn {
                    name: n.to_string(),
                    glue_type: t.to_string(),
                })
                .collect(),
            partition_keys: vec!["year".into(), "month".into()],
            projection_years: None,
        }
    }

    #[test]
    fn evolution_appends_keeps_and_refuses() {
        let old = def(&[
            ("id", "bigint"),
            ("price", "decimal(10, 2)"),
            ("gone", "string"),
        ]);
        let new = def(&[
            ("id", "bigint"),
            ("price", "DECIMAL(10,2)"),
            ("brand", "string"),
        ]);
        let plan = plan_evolution(&old, &new).unwrap();
        assert_eq!(
            plan.added,
            vec![CatalogColumn {
                name: "brand".into(),
                glue_type: "string".into()
            }]
        );
        assert!(!plan.projection_changed);

        let changed = def(&[("id", "string")]);
        match plan_evolution(&old, &changed) {
            Err(CatalogError::Incompatible {
                column,
                existing,
                requested,
                ..
            }) => {
                assert_eq!(
                    (column.as_str(), existing.as_str(), requested.as_str()),
                    ("id", "bigint", "string")
                );
            }
            other => panic!("expected Incompatible, got {other:?}"),
        }

        let mut repartitioned = def(&[("id", "bigint")]);
        repartitioned.partition_keys = vec!["day".into()];
        assert!(matches!(
            plan_evolution(&old, &repartitioned),
            Err(CatalogError::Incompatible { .. })
        ));
    }

    #[tokio::test]
    async fn a_corrupt_file_is_an_error_not_an_empty_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.json");
        std::fs::write(&path, b"{ not json").unwrap();
        let cat = LocalCatalog::new(&path);
        assert!(matches!(
            cat.get_table("db", "t").await,
            Err(CatalogError::Local { .. })
        ));
    }
}
