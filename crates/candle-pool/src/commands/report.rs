//! `candle-pool report`: load embedders, serve one request of their run profile each, and
//! print the registry estimate next to what was measured.

use std::path::PathBuf;

use model_serving::ModelOptions;
use model_serving::report::{MemoryReport, ProfileRequest, ReportRow, measure_profile};

use crate::model_args::ModelArgs;

/// Options of `candle-pool report`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// More models to measure, each `KEY=PATH`, one after the other in this process.
    #[arg(long = "also", value_name = "KEY=PATH")]
    also: Vec<String>,
}

/// Runs `candle-pool report`.
pub fn run(args: &Args) -> Result<(), String> {
    let mut models = vec![args.model.clone()];
    for pair in &args.also {
        let (key, path) = pair
            .split_once('=')
            .ok_or_else(|| format!("--also {pair}: give KEY=PATH"))?;
        models.push(ModelArgs {
            model: key.to_owned(),
            weights: Some(PathBuf::from(path)),
            hf_cache: false,
            ..args.model.clone()
        });
    }
    let mut rows = Vec::new();
    for m in &models {
        let served = m.served()?;
        let ModelOptions::Embed(options) = &served.options else {
            return Err(served
                .embed_options("be measured by `report` (it measures embedders)")
                .unwrap_err()
                .to_string());
        };
        let memory = options.memory;
        let request = ProfileRequest {
            batch: served.registry.map_or(1, |i| i.default_profile.batch),
            seq_len: memory.and_then(|d| d.profile_seq_len).map(|s| s as usize),
        };
        let spec = served.pool_spec(0);
        let (model, measured) = measure_profile(&served, request).map_err(|e| e.to_string())?;
        drop(model);
        rows.push(ReportRow {
            key: served.key.clone(),
            estimate_mb: memory.and_then(|d| d.estimate_mb),
            declared_resident_bytes: memory.map(|d| d.resident_bytes),
            declared_per_batch_bytes: memory.map(|_| spec.per_request_bytes),
            measured: Some(measured.load),
            peak_request_bytes: Some(measured.peak_rss_bytes),
            estimate_exceeded: memory
                .is_some_and(|d| measured.load.resident_bytes > d.resident_bytes),
        });
    }
    println!("{}", MemoryReport { rows });
    Ok(())
}
