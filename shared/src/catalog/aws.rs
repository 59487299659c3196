//! The catalog in AWS Glue (aws-sdk-glue): Parquet tables that Athena and Redshift Spectrum
//! query, with additive schema evolution and `year`/`month` partitions, either registered
//! (BatchCreatePartition) or projected (Athena partition projection, nothing to register).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_glue::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_glue::types::{
    Column, DatabaseInput, PartitionInput, SerDeInfo, StorageDescriptor, Table, TableInput,
};

use super::local::plan_evolution;
use super::{Catalog, CatalogColumn, CatalogError, EnsureOutcome, PartitionSpec, TableDef};

/// Hive input/output formats and SerDe that make Athena and Spectrum read Parquet.
const INPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat";
const OUTPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat";
const SERDE: &str = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe";

/// BatchCreatePartition accepts at most this many partitions per call.
const PARTITION_CHUNK: usize = 100;

/// Table parameters that carry partition projection; replaced as a set when the range changes.
const PROJECTION_KEYS: [&str; 8] = [
    "projection.enabled",
    "projection.year.type",
    "projection.year.range",
    "projection.month.type",
    "projection.month.range",
    "projection.month.digits",
    "storage.location.template",
    // Never written by us, but a stale one would keep projection half-configured.
    "projection.year.digits",
];

/// A catalog in AWS Glue.
#[derive(Debug, Clone)]
pub struct GlueCatalog {
    client: aws_sdk_glue::Client,
}

impl GlueCatalog {
    /// A catalog using `client` (its region and account decide which Glue catalog).
    pub fn new(client: aws_sdk_glue::Client) -> Self {
        Self { client }
    }

    /// The table as Glue has it, or `None` when the table or its database is missing.
    async fn fetch_table(
        &self,
        database: &str,
        table: &str,
    ) -> Result<Option<Table>, CatalogError> {
        match self
            .client
            .get_table()
            .database_name(database)
            .name(table)
            .send()
            .await
        {
            Ok(out) => Ok(out.table().cloned()),
            Err(e) if e.code() == Some("EntityNotFoundException") => Ok(None),
            Err(e) => Err(service_error(
                "GetTable",
                &format!("{database}.{table}"),
                &e,
            )),
        }
    }

    /// Creates the database; `true` when it did not exist before.
    async fn create_database(&self, database: &str) -> Result<bool, CatalogError> {
        let input = DatabaseInput::builder()
            .name(database)
            .build()
            .map_err(|e| build_error("CreateDatabase", database, &e))?;
        match self
            .client
            .create_database()
            .database_input(input)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("AlreadyExistsException") => Ok(false),
            Err(e) => Err(service_error("CreateDatabase", database, &e)),
        }
    }

    /// Creates the table; `false` when another writer created it first.
    async fn create_table(&self, def: &TableDef) -> Result<bool, CatalogError> {
        let target = target(def);
        let mut input = TableInput::builder()
            .name(&def.table)
            .table_type("EXTERNAL_TABLE")
            .set_parameters(Some(table_parameters(HashMap::new(), def)))
            .storage_descriptor(storage_descriptor(def, &def.location)?);
        for key in &def.partition_keys {
            input = input.partition_keys(column(key, "string", &target)?);
        }
        let input = input
            .build()
            .map_err(|e| build_error("CreateTable", &target, &e))?;
        match self
            .client
            .create_table()
            .database_name(&def.database)
            .table_input(input)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("AlreadyExistsException") => Ok(false),
            Err(e) => Err(service_error("CreateTable", &target, &e)),
        }
    }

    /// Brings an existing table up to `def`: appends new columns and refreshes projection
    /// parameters in one UpdateTable carrying the version read, so a concurrent update makes
    /// this one fail (`Conflict`) instead of silently undoing it.
    async fn evolve(&self, def: &TableDef, table: Table) -> Result<EnsureOutcome, CatalogError> {
        let target = target(def);
        let plan = plan_evolution(&table_def(&def.database, &table), def)?;
        if plan.added.is_empty() && !plan.projection_changed {
            return Ok(EnsureOutcome::default());
        }

        let mut sd = table
            .storage_descriptor
            .clone()
            .unwrap_or_else(|| StorageDescriptor::builder().build());
        let mut columns = sd.columns.take().unwrap_or_default();
        for col in &plan.added {
            columns.push(column(&col.name, &col.glue_type, &target)?);
        }
        sd.columns = Some(columns);
        let mut params = table.parameters.clone().unwrap_or_default();
        if plan.projection_changed {
            params = table_parameters(params, def);
        }

        // UpdateTable replaces the whole definition: everything not carried over is lost.
        let input = TableInput::builder()
            .name(&table.name)
            .set_description(table.description.clone())
            .set_owner(table.owner.clone())
            .retention(table.retention)
            .set_table_type(
                table
                    .table_type
                    .clone()
                    .or_else(|| Some("EXTERNAL_TABLE".into())),
            )
            .set_parameters(Some(params))
            .set_partition_keys(table.partition_keys.clone())
            .set_target_table(table.target_table.clone())
            .storage_descriptor(sd)
            .build()
            .map_err(|e| build_error("UpdateTable", &target, &e))?;
        let mut req = self
            .client
            .update_table()
            .database_name(&def.database)
            .table_input(input);
        if let Some(version) = table.version_id() {
            req = req.version_id(version);
        }
        match req.send().await {
            Ok(_) => Ok(EnsureOutcome {
                created: false,
                added_columns: plan.added.into_iter().map(|c| c.name).collect(),
            }),
            Err(e) if e.code() == Some("ConcurrentModificationException") => {
                Err(CatalogError::Conflict {
                    database: def.database.clone(),
                    table: def.table.clone(),
                })
            }
            Err(e) => Err(service_error("UpdateTable", &target, &e)),
        }
    }
}

#[async_trait]
impl Catalog for GlueCatalog {
    async fn ensure_table(&self, def: &TableDef) -> Result<EnsureOutcome, CatalogError> {
        let mut created_database = false;
        // GetTable first: on the common path (table exists, nothing new) that is the only call.
        // Two rounds, because a writer that creates the table between our GetTable and our
        // CreateTable makes ours fail; the second round evolves the table it created.
        for _ in 0..2 {
            if let Some(table) = self.fetch_table(&def.database, &def.table).await? {
                let mut outcome = self.evolve(def, table).await?;
                outcome.created |= created_database;
                return Ok(outcome);
            }
            created_database |= self.create_database(&def.database).await?;
            if self.create_table(def).await? {
                return Ok(EnsureOutcome {
                    created: true,
                    added_columns: Vec::new(),
                });
            }
        }
        Err(CatalogError::Conflict {
            database: def.database.clone(),
            table: def.table.clone(),
        })
    }

    async fn add_partitions(
        &self,
        def: &TableDef,
        parts: &[PartitionSpec],
    ) -> Result<(), CatalogError> {
        if def.projection_years.is_some() {
            return Ok(());
        }
        let target = target(def);
        for chunk in parts.chunks(PARTITION_CHUNK) {
            let mut req = self
                .client
                .batch_create_partition()
                .database_name(&def.database)
                .table_name(&def.table);
            for part in chunk {
                req = req.partition_input_list(
                    PartitionInput::builder()
                        .set_values(Some(part.values.clone()))
                        .storage_descriptor(storage_descriptor(def, &part.location)?)
                        .build(),
                );
            }
            let out = req
                .send()
                .await
                .map_err(|e| service_error("BatchCreatePartition", &target, &e))?;

            // Partitions that exist already are what a re-delivered event produces: success.
            let failed: Vec<_> = out
                .errors()
                .iter()
                .filter(|err| {
                    err.error_detail().and_then(|d| d.error_code())
                        != Some("AlreadyExistsException")
                })
                .collect();
            if failed.is_empty() {
                continue;
            }
            let retryable = failed.iter().all(|err| {
                err.error_detail()
                    .and_then(|d| d.error_code())
                    .is_some_and(crate::aws::is_retryable_code)
            });
            let shown: Vec<String> = failed
                .iter()
                .take(5)
                .map(|err| {
                    let detail = err.error_detail();
                    format!(
                        "{:?}: {} {}",
                        err.partition_values(),
                        detail
                            .and_then(|d| d.error_code())
                            .unwrap_or("unknown error"),
                        detail.and_then(|d| d.error_message()).unwrap_or(""),
                    )
                })
                .collect();
            return Err(CatalogError::Service {
                op: "BatchCreatePartition",
                target,
                message: format!(
                    "{} of {} partitions were not created: {}{}",
                    failed.len(),
                    chunk.len(),
                    shown.join("; "),
                    if failed.len() > shown.len() {
                        "; …"
                    } else {
                        ""
                    }
                ),
                retryable,
            });
        }
        Ok(())
    }

    async fn get_table(
        &self,
        database: &str,
        table: &str,
    ) -> Result<Option<TableDef>, CatalogError> {
        Ok(self
            .fetch_table(database, table)
            .await?
            .map(|t| table_def(database, &t)))
    }

    async fn list_partitions(
        &self,
        database: &str,
        table: &str,
    ) -> Result<Vec<Vec<String>>, CatalogError> {
        let target = format!("{database}.{table}");
        let mut pages = self
            .client
            .get_partitions()
            .database_name(database)
            .table_name(table)
            .into_paginator()
            .send();
        let mut values = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| service_error("GetPartitions", &target, &e))?;
            values.extend(page.partitions().iter().map(|p| p.values().to_vec()));
        }
        values.sort();
        Ok(values)
    }
}

fn target(def: &TableDef) -> String {
    format!("{}.{}", def.database, def.table)
}

fn column(name: &str, glue_type: &str, target: &str) -> Result<Column, CatalogError> {
    Column::builder()
        .name(name)
        .r#type(glue_type)
        .build()
        .map_err(|e| build_error("CreateTable", target, &e))
}

/// Storage of the table or of one partition: Parquet files under `location`.
fn storage_descriptor(def: &TableDef, location: &str) -> Result<StorageDescriptor, CatalogError> {
    let target = target(def);
    let columns = def
        .columns
        .iter()
        .map(|c| column(&c.name, &c.glue_type, &target))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StorageDescriptor::builder()
        .set_columns(Some(columns))
        .location(location)
        .input_format(INPUT_FORMAT)
        .output_format(OUTPUT_FORMAT)
        .serde_info(SerDeInfo::builder().serialization_library(SERDE).build())
        .build())
}

/// `params` with the table properties `def` asks for: Parquet with zstd, and partition
/// projection when `projection_years` is set (removed when it is not).
fn table_parameters(
    mut params: HashMap<String, String>,
    def: &TableDef,
) -> HashMap<String, String> {
    params.insert("classification".into(), "parquet".into());
    params.insert("parquet.compression".into(), "ZSTD".into());
    for key in PROJECTION_KEYS {
        params.remove(key);
    }
    if let Some((first, last)) = def.projection_years {
        let mut location = def.location.clone();
        if !location.ends_with('/') {
            location.push('/');
        }
        let projection = [
            ("projection.enabled", "true".to_string()),
            ("projection.year.type", "integer".into()),
            ("projection.year.range", format!("{first},{last}")),
            ("projection.month.type", "integer".into()),
            ("projection.month.range", "1,12".into()),
            ("projection.month.digits", "2".into()),
            (
                "storage.location.template",
                format!("{location}year=${{year}}/month=${{month}}/"),
            ),
        ];
        params.extend(projection.into_iter().map(|(k, v)| (k.to_string(), v)));
    }
    params
}

/// Reads a Glue table back as a definition.
fn table_def(database: &str, table: &Table) -> TableDef {
    let sd = table.storage_descriptor();
    TableDef {
        database: database.to_string(),
        table: table.name().to_string(),
        location: sd
            .and_then(|s| s.location())
            .unwrap_or_default()
            .to_string(),
        columns: sd
            .map(|s| s.columns())
            .unwrap_or_default()
            .iter()
            .map(|c| CatalogColumn {
                name: c.name().to_string(),
                glue_type: c.r#type().unwrap_or_default().to_string(),
            })
            .collect(),
        partition_keys: table
            .partition_keys()
            .iter()
            .map(|c| c.name().to_string())
            .collect(),
        projection_years: projection_years(table.parameters()),
    }
}

/// The `year` range of an enabled partition projection, if the table has one.
fn projection_years(params: Option<&HashMap<String, String>>) -> Option<(i32, i32)> {
    let params = params?;
    if !params
        .get("projection.enabled")?
        .trim()
        .eq_ignore_ascii_case("true")
    {
        return None;
    }
    let (first, last) = params.get("projection.year.range")?.split_once(',')?;
    Some((first.trim().parse().ok()?, last.trim().parse().ok()?))
}

fn build_error(op: &'static str, target: &str, err: &BuildError) -> CatalogError {
    CatalogError::Service {
        op,
        target: target.to_string(),
        message: format!("invalid request: {err}"),
        retryable: false,
    }
}

/// Turns an SDK error into `CatalogError::Service` through the one classifier every client uses.
fn service_error<E>(op: &'static str, target: &str, err: &SdkError<E>) -> CatalogError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let f = crate::aws::classify(err);
    CatalogError::Service {
        op,
        target: target.to_string(),
        message: f.message,
        retryable: f.retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(projection_years: Option<(i32, i32)>) -> TableDef {
        TableDef {
            database: "db".into(),
            table: "t".into(),
            location: "s3://lake/curated/t".into(),
            columns: vec![CatalogColumn {
                name: "id".into(),
                glue_type: "bigint".into(),
            }],
            partition_keys: vec!["year".into(), "month".into()],
            projection_years,
        }
    }

    #[test]
    fn projection_parameters_round_trip() {
        let params = table_parameters(HashMap::new(), &def(Some((2019, 2030))));
        assert_eq!(
            params["storage.location.template"],
            "s3://lake/curated/t/year=${year}/month=${month}/"
        );
        assert_eq!(params["projection.year.range"], "2019,2030");
        assert_eq!(projection_years(Some(&params)), Some((2019, 2030)));

        let without = table_parameters(params, &def(None));
        assert_eq!(projection_years(Some(&without)), None);
        assert!(!without.contains_key("storage.location.template"));
        assert_eq!(without["classification"], "parquet");
    }
}
