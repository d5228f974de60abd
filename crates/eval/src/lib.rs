//! attnlab's evaluation library: A/B comparisons of attention variants over seeds and learning
//! rates, the reproductions of the seed papers, the swap workflow, the statistics behind a
//! verdict, and the report writers.
//!
//! Builds on `attnlab-train` (which runs each arm) and never touches the command line.

pub mod bench;
pub mod compare;
pub mod plots;
pub mod report;
pub mod reproduce;
pub mod stats;
pub mod swap;
