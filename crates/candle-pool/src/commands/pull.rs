//! `candle-pool pull`: a model's files from the Hub into the Hugging Face cache, without
//! loading it (to prepare a machine, or before `serve`), refused before a byte is fetched when
//! the model can never fit this machine's budget.

use crate::model_args::{ModelArgs, pool_of, runtime};

/// Options of `candle-pool pull`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
}

/// Runs `candle-pool pull`: prints the folder the files are in.
pub fn run(args: Args) -> Result<(), String> {
    let served = args.model.served()?;
    let key = served.key.clone();
    let dir = runtime()?.block_on(async {
        let pool = pool_of(served)?;
        let result = pool.fetch_files(&key).await;
        pool.shutdown().await;
        result.map_err(|e| e.to_string())
    })?;
    println!("{}", dir.display());
    Ok(())
}
