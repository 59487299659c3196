//! Sluice: the library every function and the CLI use. One folder per concept; handlers stay thin.

pub mod aws;
pub mod catalog;
pub mod cdc;
pub mod config;
pub mod events;
pub mod extract;
pub mod glue_job;
pub mod lake;
pub mod lambda;
pub mod metrics;
pub mod schema;
pub mod secrets;
#[cfg(test)]
pub mod testing;
pub mod transform;
pub mod warehouse;
