//! attnlab's evaluation library: A/B comparisons of attention variants over seeds and learning
//! rates, the statistics behind a verdict, and the report writers.
//!
//! Builds on `attnlab-train` (which runs each arm) and never touches the command line.

pub mod stats;
pub mod svg;
