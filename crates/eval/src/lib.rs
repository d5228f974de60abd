//! attnlab's evaluation library: A/B comparisons of attention variants over seeds and learning
//! rates, the reproductions of the seed papers, the swap workflow, the statistics behind a
//! verdict, and the report writers.
//!
//! Builds on `attnlab-train` (which runs each arm) and never touches the command line.
//!
//! Errors are typed per concern, each message one line naming the file, arm or flag and the fix:
//! [`compare::CompareError`] (reading, planning, writing and running a comparison),
//! [`compare::slurm::SlurmError`], [`compare::EntryError`], [`report::ReportError`],
//! [`plots::RenderError`], [`reproduce::ReproduceError`], [`swap::SwapError`] and
//! [`bench::BenchError`].
//!
//! ```text
//! compare/     A/B comparisons: spec.rs (the comparison file, the typed Comparison and its plan),
//!              run.rs (training every run, RunRecord), analyse.rs (each arm at its best lr,
//!              judged against the baseline), advice.rs (the verdict and monitoring lines)
//! stats.rs     summaries, medians and quantiles, Welch and bootstrap intervals, verdicts,
//!              steps to target
//! report.rs    the report document: what a page holds, written as Markdown, HTML and files
//! plots/       the charts on it: SVG line and bar charts (ticks, axes, canvas), PNG via resvg
//! reproduce/   the seed papers' experiments
//! swap.rs      swap an attention variant in, fine-tune, and compare with a control
//! bench.rs     throughput, scaling and decode benchmarks
//! host.rs      the CPU model and SIMD flags printed beside every speed figure
//! ```

pub mod bench;
pub mod compare;
pub mod host;
pub mod linearize;
pub mod plots;
pub mod report;
pub mod reproduce;
pub mod stats;
pub mod swap;
