//! Tasks: where batches come from and how a model is scored on them.
//!
//! Each task generates (or reads) its data deterministically from the run seed, with distinct
//! derived streams for training and evaluation ([`crate::seed`]). Training batch `(step, micro)`
//! is a pure function of the seed, so a resumed run sees exactly the batches a straight run does.

pub mod bpe_lm;
pub mod char_lm;
pub mod icl_regression;
mod interface;
pub mod mad;
pub mod max_retrieval;
pub mod mqar;
pub mod needle;
pub mod separation;
pub mod state_tracking;
mod text;

pub use interface::*;
pub use text::loss_per_position_bucket;

use crate::config::{RunConfig, TaskConfig};
use std::path::Path;

/// Builds the task a config names. `run_dir` holds artifacts of an earlier run (a resumed or
/// evaluated run reuses its tokenizer or vocabulary rather than rebuilding it).
pub fn build(config: &RunConfig, run_dir: Option<&Path>) -> Result<Box<dyn Task>, TaskError> {
    let seed = config.seed;
    Ok(match &config.task {
        TaskConfig::CharLm(c) => {
            Box::new(char_lm::CharLm::new(c, c.train_len(config.model.max_seq_len), seed, run_dir)?)
        }
        TaskConfig::BpeLm(c) => {
            Box::new(bpe_lm::BpeLm::new(c, config.model.max_seq_len, seed, run_dir)?)
        }
        TaskConfig::IclRegression(c) => {
            Box::new(icl_regression::IclRegression::new(c.clone(), seed))
        }
        TaskConfig::Mqar(c) => Box::new(mqar::Mqar::new(c.clone(), seed)),
        TaskConfig::Separation(c) => Box::new(separation::Separation::new(c.clone(), seed)),
        TaskConfig::MaxRetrieval(c) => Box::new(max_retrieval::MaxRetrieval::new(c.clone(), seed)),
        TaskConfig::StateTracking(c) => {
            Box::new(state_tracking::StateTracking::new(c.clone(), seed)?)
        }
        TaskConfig::Needle(c) => Box::new(needle::Needle::new(c.clone(), seed)?),
        TaskConfig::Mad(c) => Box::new(mad::Mad::new(c.clone(), seed)?),
    })
}
