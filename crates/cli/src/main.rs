//! `attnlab`: train small transformers with the attention swapped freely, and compare them.
//!
//! Thin by design: parse arguments, call one library function per subcommand, print, and turn
//! any error into one line on stderr with a non-zero exit code.

use anyhow::{Context, Result, bail};
use attnlab_model::{BackendKind, DeviceList, MixerSpec};
use attnlab_train::message::one_line;
use attnlab_train::progress::text_chart;
use attnlab_train::runs::{default_run_dir, load_run};
use attnlab_train::sample::{SamplingOptions, generate};
use attnlab_train::{RunConfig, RunDir, TaskConfig, Verbosity, run_dir, train};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod alloc;

#[derive(Parser)]
#[command(
    name = "attnlab",
    version,
    about = "Train small transformers with swappable attention; compare softmax and linear attention."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a preset (or continue a run with --resume).
    Train(TrainArgs),
    /// Generate text from a trained language model (KV cache / recurrent state).
    Sample(SampleArgs),
    /// Evaluate a checkpoint on its task's evaluation set.
    Eval(EvalArgs),
    /// Write a checkpoint's weights and config to a .safetensors file.
    Export(ExportArgs),
    /// Make a run directory from a local Hugging Face model directory (Llama, Mistral, Qwen2,
    /// Qwen3, GPT-2), for eval, sample, compare, swap, export and train --init-run.
    Import(ImportArgs),
    /// A/B-compare attention variants over seeds and learning rates; writes a report.
    Compare(CompareArgs),
    /// Run one of the reproductions of the seed papers (no name: list them); writes a report.
    Reproduce(ReproduceArgs),
    /// Swap the attention of a trained run in some layers, finetune, and compare with the original.
    Swap(SwapArgs),
    /// Linearise a trained softmax run: attention transfer, then distillation, judged against
    /// the control (swap + cross-entropy); writes a student run and a report.
    Linearize(LinearizeArgs),
    /// Measure training-step time, attention scaling with length, and decoding latency.
    Bench(BenchArgs),
    /// List the attention variants with their formulas.
    Variants(VariantsArgs),
}

#[derive(Args)]
struct VariantsArgs {
    /// The registry as JSON: every family's grammar, options with defaults, conventions and
    /// catalogue (python/attnlab_torch/registry.json is this output).
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// The variants and families as markdown tables (docs/architecture.md holds this output).
    #[arg(long, conflicts_with = "parameters")]
    markdown: bool,
    /// Each family's parameters with their shapes, read off real modules, as a markdown table
    /// (docs/architecture.md holds this output).
    #[arg(long, conflicts_with = "json")]
    parameters: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// Preset TOML (see configs/).
    #[arg(long, required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Override a config value, e.g. --set train.lr=3e-4 --set model.mixer=linear:elu1 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", conflicts_with = "resume")]
    sets: Vec<String>,
    /// Backend: flex (default CPU), ndarray, wgpu, cuda.
    #[arg(long, conflicts_with_all = ["resume", "devices"])]
    device: Option<String>,
    /// Train data parallel on these devices, e.g. cuda:0,cuda:1 (flex,flex: two replicas on
    /// the CPU). Each takes an equal share of every batch; with --resume, the devices the
    /// session continues on (any count: the step is the same whatever the split).
    #[arg(long, value_name = "LIST")]
    devices: Option<String>,
    /// Seed for init, data order, dropout.
    #[arg(long, conflicts_with = "resume")]
    seed: Option<u64>,
    /// Run directory (default: checkpoints/<task>-<attention>-<timestamp>).
    #[arg(long, conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its newest complete checkpoint.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// Print nothing while training (the final summary is still printed).
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct SampleArgs {
    /// Run directory (what `attnlab train` printed).
    #[arg(long)]
    run: PathBuf,
    /// Text to continue (default: a newline).
    #[arg(long, default_value = "\n", conflicts_with = "prompt_file")]
    prompt: String,
    /// Read the text to continue from this file (UTF-8) instead of --prompt.
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// Independent samples to draw; sample i uses seed --seed + i (so the first is the one a
    /// single sample gives), printed one after another under a `--- sample i (seed s) ---` line.
    #[arg(long, default_value_t = 1, value_name = "N")]
    num_samples: usize,
    /// Tokens to generate.
    #[arg(long, default_value_t = 300)]
    tokens: usize,
    /// Softmax temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Keep the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Seed of the sampling draws (same seed, same text).
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// best, final, latest, or a checkpoint directory (e.g. DIR/checkpoints/step-200).
    #[arg(long, default_value = "best")]
    checkpoint: String,
    /// Backend to sample on: flex, ndarray, wgpu or cuda (default: the run's own).
    #[arg(long)]
    device: Option<String>,
}

#[derive(Args)]
struct EvalArgs {
    /// Run directory (what `attnlab train` printed, e.g. checkpoints/char_lm-softmax-<time>).
    #[arg(long)]
    run: PathBuf,
    /// best, final, latest, or a checkpoint directory (e.g. DIR/checkpoints/step-200).
    #[arg(long, default_value = "best")]
    checkpoint: String,
    /// Backend to evaluate on: flex, ndarray, wgpu or cuda (default: the run's own).
    #[arg(long)]
    device: Option<String>,
    /// Evaluate on this UTF-8 text file (or .jsonl, one {"text": ...} object per line) instead
    /// of the run's own text; its last 10% is scored (language-model runs).
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
    /// Evaluation batches (default: the run's train.eval_batches).
    #[arg(long)]
    batches: Option<usize>,
    /// Print the metrics as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the first evaluation batch's inputs and the model's logits for them to this
    /// .safetensors file (tensors `tokens` or `vectors`, and `logits`), for a parity check with
    /// python/attnlab_torch.
    #[arg(long, value_name = "FILE")]
    dump_logits: Option<PathBuf>,
    /// With --dump-logits: sequences to dump (at most the run's batch size).
    #[arg(long, default_value_t = 4, requires = "dump_logits")]
    rows: usize,
    /// With --dump-logits: replace the file if it exists.
    #[arg(long, requires = "dump_logits")]
    force: bool,
}

#[derive(Args)]
struct CompareArgs {
    /// Comparison file (see configs/compare/).
    #[arg(long, conflicts_with_all = ["task", "variants", "preset"])]
    config: Option<PathBuf>,
    /// Quick use: a task (mqar, icl_regression, char_lm, bpe_lm, separation, max_retrieval,
    /// state_tracking, needle, mad); runs its smoke preset.
    #[arg(long, requires = "variants")]
    task: Option<String>,
    /// Quick use: another preset file instead of the task's smoke preset.
    #[arg(long, requires = "variants")]
    preset: Option<PathBuf>,
    /// Quick use: comma-separated attention specs, one arm each; the first is the baseline.
    #[arg(long, value_delimiter = ',')]
    variants: Vec<String>,
    /// Quick use: number of seeds (1..=N).
    #[arg(long, default_value_t = 3, conflicts_with = "config")]
    seeds: usize,
    /// Quick use: learning rates; each arm is reported at its best.
    #[arg(long, value_delimiter = ',', conflicts_with = "config", value_parser = positive_finite)]
    lrs: Vec<f64>,
    /// Quick use: main-metric threshold for steps-to-target.
    #[arg(long, conflicts_with = "config", value_parser = finite)]
    target: Option<f64>,
    /// Overrides for every arm (repeatable); with --config, applied after the file's own `set`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Report directory (default: reports/compare-<timestamp>). Running the same command on it
    /// again continues the comparison: finished runs are kept, interrupted ones resumed.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print only the summary.
    #[arg(long)]
    quiet: bool,
    /// Runs at a time on this machine, the cores divided between them (each run is its own
    /// worker process when N > 1).
    #[arg(long, default_value_t = 1, value_name = "N")]
    jobs: usize,
    /// Where the runs execute: local (this machine, --jobs at a time) or slurm (one job array,
    /// then the analysis as a job that depends on it).
    #[arg(long, default_value = "local", value_parser = ["local", "slurm"], conflicts_with_all = ["run_only", "analyse_only"])]
    executor: String,
    /// Only write the plan (comparison.json, plan.json) into --out and list it.
    #[arg(long, conflicts_with_all = ["run_only", "analyse_only"])]
    plan_only: bool,
    /// Only run the plan in --out (all of it, or entry --index), without the analysis.
    #[arg(long, requires = "out", conflicts_with = "analyse_only")]
    run_only: bool,
    /// With --run-only: run only this plan entry (what a Slurm array task runs).
    #[arg(long, requires = "run_only", value_name = "I")]
    index: Option<usize>,
    /// Only analyse the run directories in --out and write the report (missing runs are named).
    #[arg(long, requires = "out")]
    analyse_only: bool,
    #[command(flatten)]
    slurm: SlurmArgs,
}

/// Options of `--executor slurm`.
#[derive(Args)]
struct SlurmArgs {
    /// Slurm: block until the analysis job has written the report, showing progress.
    #[arg(long)]
    wait: bool,
    /// Slurm: at most M array tasks at once (--array=...%M).
    #[arg(long, value_name = "M")]
    slurm_max_parallel: Option<usize>,
    /// Slurm: CPUs per array task, the run's threads (default 1).
    #[arg(long, value_name = "C")]
    slurm_cpus_per_task: Option<usize>,
    /// Slurm: memory per task (--mem), e.g. 4G.
    #[arg(long, value_name = "MEM")]
    slurm_mem: Option<String>,
    /// Slurm: time limit per task (--time), e.g. 01:00:00.
    #[arg(long, value_name = "TIME")]
    slurm_time: Option<String>,
    /// Slurm: partition (--partition).
    #[arg(long, value_name = "NAME")]
    slurm_partition: Option<String>,
    /// Slurm: an extra #SBATCH option for the array's tasks, e.g. --sbatch=--gres=gpu:1 (repeatable).
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    sbatch: Vec<String>,
}

#[derive(Args)]
struct ReproduceArgs {
    /// scaling-sim, scaling-train, mqar-gap, icl-gap, lm-gap, separation, length-scaling, hybrid-ratio, recall-frontier, linearize, state-tracking or mad (omit to list them).
    name: Option<String>,
    /// smoke (minutes on 2 CPU cores), full (the numbers in docs/reproductions.md) or paper (the published configuration: a GPU or a cluster).
    #[arg(long, default_value = "smoke")]
    size: String,
    /// Train every run on this backend (flex, ndarray, wgpu, cuda), whatever its preset says.
    #[arg(long, conflicts_with = "devices")]
    device: Option<String>,
    /// Train every run data parallel on these devices (e.g. cuda:0,cuda:1).
    #[arg(long, value_name = "LIST")]
    devices: Option<String>,
    /// List the comparisons, runs and steps the reproduction would train, and the effects it checks; train nothing, write nothing.
    #[arg(long, conflicts_with_all = ["out", "strict", "jobs"])]
    plan: bool,
    /// Report directory (default: reports/<name>-<size>-<timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Exit with an error when an expected effect does not show.
    #[arg(long)]
    strict: bool,
    /// Print only the summary.
    #[arg(long)]
    quiet: bool,
    /// Runs at a time, the cores divided between them (see `compare --jobs`).
    #[arg(long, default_value_t = 1, value_name = "N")]
    jobs: usize,
    /// Regenerate the sections of --docs-file from these finished report directories (their
    /// outcome.json); train nothing.
    #[arg(long, num_args = 1.., value_name = "REPORT_DIR", conflicts_with_all = ["name", "plan", "out"])]
    docs: Vec<PathBuf>,
    /// The document --docs rewrites.
    #[arg(long, default_value = "docs/reproductions.md")]
    docs_file: PathBuf,
    /// `linearize --size paper`: the Hugging Face model directory to import as the teacher.
    #[arg(long, value_name = "DIR")]
    hf: Option<PathBuf>,
    /// `linearize --size paper`: the text to fine-tune and score on.
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
}

#[derive(Args)]
struct SwapArgs {
    /// Run directory of the trained model.
    #[arg(long)]
    run: PathBuf,
    /// The attention to swap in (any spec from `attnlab variants`).
    #[arg(long)]
    to: String,
    /// Comma-separated layer indices to swap (default: all).
    #[arg(long, value_delimiter = ',')]
    layers: Vec<usize>,
    /// Finetuning steps for both the swapped model and the unchanged control.
    #[arg(long)]
    finetune_steps: usize,
    /// Seeds (data orders) per arm.
    #[arg(long, default_value_t = 2)]
    seeds: usize,
    /// Finetuning learning rates (default: the run's train.lr); each arm at its best.
    #[arg(long, value_delimiter = ',', value_parser = positive_finite)]
    lrs: Vec<f64>,
    /// best, final, latest, or a checkpoint directory.
    #[arg(long, default_value = "best")]
    checkpoint: String,
    /// Report directory (default: reports/swap-<timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print only the summary.
    #[arg(long)]
    quiet: bool,
    /// Runs at a time, the cores divided between them (see `compare --jobs`).
    #[arg(long, default_value_t = 1, value_name = "N")]
    jobs: usize,
}

#[derive(Args)]
struct BenchArgs {
    /// Preset whose model and batch are timed (default: nanoGPT's CPU recipe).
    #[arg(long, default_value = "configs/shakespeare-char.toml")]
    config: PathBuf,
    /// Attention variants for the training-step and decoding sections (default: the registry's
    /// bench specs, one representative per family that names one; `attnlab variants --json`).
    #[arg(long, value_delimiter = ',')]
    variants: Vec<String>,
    /// Timed training steps (median reported) after --warmup untimed ones.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Sequence lengths for the one-layer scaling section (empty: skip it).
    #[arg(long, value_delimiter = ',', default_values_t = [64usize, 128, 256, 512, 1024, 2048, 4096])]
    lengths: Vec<usize>,
    /// Attention specs for the scaling section.
    #[arg(long, value_delimiter = ',', default_values_t = ["softmax".to_string(), "linear:elu1".to_string(), "linear:elu1:form=parallel".to_string(), "linear:elu1:form=recurrent".to_string(), "decay:retnet".to_string(), "decay:mamba2".to_string(), "decay:gla".to_string(), "delta".to_string(), "delta:gated".to_string()])]
    scaling: Vec<String>,
    /// Longest sequence the recurrent form is timed at (one token per step is slow).
    #[arg(long, default_value_t = 1024)]
    recurrent_max: usize,
    /// Tokens to decode (0: skip the decoding section).
    #[arg(long, default_value_t = 1024)]
    decode_tokens: usize,
    /// Sections to run: train, scaling, decode, and (only when named) matmul: the GFLOP/s of
    /// the model's linear maps at the preset's batch.
    #[arg(long, value_delimiter = ',', default_values_t = ["train".to_string(), "scaling".to_string(), "decode".to_string()])]
    only: Vec<String>,
    /// Backend.
    #[arg(long, conflicts_with = "devices")]
    device: Option<String>,
    /// Time the training step data parallel on these devices (e.g. flex,flex or cuda:0,cuda:1).
    #[arg(long, value_name = "LIST")]
    devices: Option<String>,
    /// Also write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct LinearizeArgs {
    /// Run directory of the trained (teacher) model, e.g. one `attnlab import` made.
    #[arg(long)]
    run: PathBuf,
    /// The attention the swapped layers get (any spec from `attnlab variants`).
    #[arg(long)]
    to: String,
    /// all, comma-separated layer indices (1,3,5), or keep:K (swap all, then keep the teacher's
    /// attention in the K layers attention transfer fits worst).
    #[arg(long, default_value = "all")]
    layers: String,
    /// Stage 1 (attention transfer) steps.
    #[arg(long, default_value_t = 200)]
    transfer_steps: usize,
    /// Stage 2 (cross-entropy + distillation) steps; the control trains for both stages' steps.
    #[arg(long, default_value_t = 200)]
    recover_steps: usize,
    /// Stage 1 learning rate (constant AdamW).
    #[arg(long, default_value_t = 1e-3)]
    transfer_lr: f64,
    /// What stage 1 trains: all (every parameter of the swapped mixers) or new (only their own
    /// feature maps, gates, β, convolutions; the carried-over q/k/v/o frozen, as LoLCATs does).
    #[arg(long, default_value = "all", value_parser = ["all", "new"])]
    transfer_params: String,
    /// Stage 2's and the control's learning rate (default: the run's train.lr).
    #[arg(long)]
    lr: Option<f64>,
    /// Weight of the distillation term α·τ²·KL(teacher ‖ student).
    #[arg(long, default_value_t = 1.0)]
    alpha: f64,
    /// Distillation temperature τ.
    #[arg(long, default_value_t = 2.0)]
    tau: f64,
    /// Stage 2 trains LoRA adapters of this rank on the q/k/v and output projections (merged
    /// into the weights afterwards) instead of the whole student; 0 = the whole student.
    #[arg(long, default_value_t = 0, value_name = "R")]
    lora: usize,
    /// Stage 2 and the control evaluate the held-out loss every N steps (and at their last),
    /// keep their best weights and checkpoint; stage 1 checkpoints every N steps.
    #[arg(long, default_value_t = 50, value_name = "N")]
    eval_every: usize,
    /// Stop stage 2 and the control after this many evaluations without a lower held-out loss
    /// (0: never early).
    #[arg(long, default_value_t = 3)]
    patience: usize,
    /// Skip the control arm (swap + cross-entropy for both stages' steps).
    #[arg(long)]
    no_control: bool,
    /// Recall probes (passkey, key-value) of each kind at each of 1×, 2× and 4× the context.
    #[arg(long, default_value_t = 32, value_name = "N")]
    probe_examples: usize,
    /// best, final, latest, or a checkpoint directory.
    #[arg(long, default_value = "best")]
    checkpoint: String,
    /// Working and report directory (default: reports/linearize-<timestamp>): every stage's
    /// checkpoints, report.md, results.json and the student run `student/`. The same command
    /// again resumes it.
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct ImportArgs {
    /// A local Hugging Face model directory: config.json, model.safetensors (or a sharded
    /// index) and tokenizer.json.
    #[arg(long, value_name = "DIR")]
    hf: PathBuf,
    /// The new run directory (must not exist, or be empty).
    #[arg(long, value_name = "RUN")]
    out: PathBuf,
    /// UTF-8 text the run evaluates on (its task.path; the last 10% is the evaluation split).
    #[arg(long, value_name = "FILE", default_value = "datasets/tinyshakespeare.txt")]
    text: PathBuf,
    /// Context length (model.max_seq_len), at most the checkpoint's positions (default: the
    /// checkpoint's, at most 4096).
    #[arg(long, value_name = "N")]
    context: Option<usize>,
}

#[derive(Args)]
struct ExportArgs {
    /// Run directory (what `attnlab train` printed).
    #[arg(long)]
    run: PathBuf,
    /// Output: a file ending in .safetensors (--format attnlab), or a directory (--format hf).
    #[arg(long)]
    to: PathBuf,
    /// best, final, latest, or a checkpoint directory (e.g. DIR/checkpoints/step-200).
    #[arg(long, default_value = "best")]
    checkpoint: String,
    /// attnlab: every parameter under its module path, with config and vocabulary as metadata
    /// (python/attnlab_torch loads it); hf: a Hugging Face directory
    /// (transformers.AutoModelForCausalLM.from_pretrained) for GPT-2 and Llama/Mistral/Qwen2/Qwen3
    /// stacks; any other stack gets the attnlab export and a README saying why.
    #[arg(long, default_value = "attnlab", value_parser = ["attnlab", "hf"])]
    format: String,
    /// Replace --to if it exists.
    #[arg(long)]
    force: bool,
}

/// A float flag that must be a finite number (NaN or inf would be saved as null and compare
/// with nothing).
fn finite(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err("not a finite number: give one like 0.9".into()),
        Err(e) => Err(format!("{e}: give a number like 0.9")),
    }
}

/// A learning rate: finite and above 0.
fn positive_finite(text: &str) -> Result<f64, String> {
    match finite(text)? {
        v if v > 0.0 => Ok(v),
        _ => Err("a learning rate must be above 0: give one like 3e-3".into()),
    }
}

fn main() -> ExitCode {
    alloc::set_up();
    // Output piped into `head` and closed early ends the process quietly, as for any Unix
    // tool, instead of a panic on the failed write (Rust ignores SIGPIPE by default).
    // SAFETY: restoring a signal's default disposition before any other thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // Burn materialises loaded optimizer state on its default device, which would be a GPU
    // backend whenever one is compiled in; pin it to the CPU unless the user chose otherwise.
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: first statement of main, before any other thread exists.
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        // Bad flags get one line, like every other error: clap's message without its usage block.
        Err(e) => {
            let text = e.to_string();
            let what: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:"))
                .filter(|l| !l.is_empty())
                .collect();
            let what = what.join(" ");
            eprintln!("{} (see --help)", what.trim_end_matches('.'));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("error: {}", one_line(&msg));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => cmd_train(a),
        Command::Sample(a) => cmd_sample(a),
        Command::Eval(a) => cmd_eval(a),
        Command::Export(a) => cmd_export(a),
        Command::Import(a) => cmd_import(a),
        Command::Linearize(a) => cmd_linearize(a),
        Command::Compare(a) => cmd_compare(a),
        Command::Reproduce(a) => cmd_reproduce(a),
        Command::Swap(a) => cmd_swap(a),
        Command::Bench(a) => cmd_bench(a),
        Command::Variants(a) if a.json => {
            println!("{}", MixerSpec::registry_json());
            Ok(())
        }
        Command::Variants(a) if a.parameters => {
            print!("{}", attnlab_train::mixer_parameters::mixer_parameters_markdown());
            Ok(())
        }
        Command::Variants(a) if a.markdown => {
            print!("{}", MixerSpec::catalogue_markdown());
            Ok(())
        }
        Command::Variants(_) => {
            for v in MixerSpec::catalogue() {
                println!("{:<22} {}", v.spec, v.formula);
            }
            println!();
            for syntax in MixerSpec::syntax() {
                println!("{syntax}");
            }
            println!(
                "per-layer stacks: --set model.mixer=softmax,linear:elu1,linear:elu1,linear:elu1"
            );
            Ok(())
        }
    }
}

fn parse_device(name: Option<&str>) -> Result<Option<BackendKind>> {
    name.map(|d| d.parse::<BackendKind>().map_err(anyhow::Error::from)).transpose()
}

fn parse_devices(list: Option<&str>) -> Result<Option<DeviceList>> {
    list.map(|l| l.parse::<DeviceList>().map_err(|e| anyhow::anyhow!("--devices: {e}"))).transpose()
}

fn cmd_train(a: TrainArgs) -> Result<()> {
    let verbosity = if a.quiet { Verbosity::Quiet } else { Verbosity::Auto };
    let (config, run, resume) = match a.resume {
        Some(dir) => {
            let run = RunDir::open_for_writing(&dir)?;
            let mut config = RunConfig::load(&run.file(run_dir::CONFIG_FILE), &[])?;
            if let Some(list) = parse_devices(a.devices.as_deref())? {
                // Which devices train is not part of the run's identity: this session's only.
                config.device = list.backend();
                config.devices = (list.len() > 1).then_some(list);
                config.validate()?;
            }
            (config, run, true)
        }
        None => {
            let path = a.config.expect("clap requires --config without --resume");
            let device = parse_device(a.device.as_deref())?;
            // --device and --seed win over the same keys in --set.
            let mut config = RunConfig::load(&path, &a.sets)?;
            if let Some(d) = device {
                config.device = d;
            }
            if let Some(list) = parse_devices(a.devices.as_deref())? {
                config.device = list.backend();
                config.devices = (list.len() > 1).then_some(list);
            }
            if let Some(s) = a.seed {
                config.seed = s;
            }
            config.validate()?;
            let out = a.out.unwrap_or_else(|| default_run_dir(&config));
            let run = RunDir::create(&out)?;
            if verbosity != Verbosity::Quiet {
                println!(
                    "# resolved config (saved to {}/config.toml)\n{}",
                    out.display(),
                    config.to_toml()
                );
            }
            (config, run, false)
        }
    };
    let outcome = match train(&config, &run, resume, verbosity) {
        Ok(o) => o,
        Err(e) => {
            if !resume {
                // A run that failed before writing anything leaves the path as it found it.
                run.discard_if_unused();
            }
            bail!(e);
        }
    };
    let chart = text_chart(&outcome.losses, 60, 10);
    if !chart.is_empty() {
        println!("\ntraining loss\n{chart}");
    }
    if outcome.evals.len() > 1 {
        println!("eval {}\n{}", config.task.name(), text_chart(&outcome.evals, 60, 6));
    }
    let metrics: Vec<String> = outcome
        .final_metrics
        .iter()
        .filter(|(k, _)| !k.contains("_k"))
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect();
    println!("final eval after {} steps: {}", outcome.steps, metrics.join(" | "));
    if let (Some(b), Some(s)) = (outcome.best_metric, outcome.best_step) {
        println!("best {b:.4} at step {s}");
    }
    let dir = outcome.run_dir.display();
    println!("checkpoints: {dir}/final (last), {dir}/best (best eval)");
    if matches!(
        config.task,
        attnlab_train::TaskConfig::CharLm(_) | attnlab_train::TaskConfig::BpeLm(_)
    ) {
        println!("next: attnlab sample --run {dir} --prompt \"ROMEO:\"");
    } else {
        println!("next: attnlab eval --run {dir}");
    }
    Ok(())
}

fn cmd_sample(a: SampleArgs) -> Result<()> {
    let opts = SamplingOptions {
        tokens: a.tokens,
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    };
    opts.validate()?;
    let loaded = load_run(&a.run, &a.checkpoint, parse_device(a.device.as_deref())?)?;
    let codec = loaded.task.codec().with_context(|| {
        format!("the run's task ({}) is not text: sample works on char_lm and bpe_lm runs; use `attnlab eval`", loaded.config.task.name())
    })?;
    let text = match &a.prompt_file {
        Some(path) => std::fs::read_to_string(path).with_context(|| {
            format!("--prompt-file {}: cannot read it as UTF-8 text", path.display())
        })?,
        None => a.prompt.clone(),
    };
    let prompt = codec.encode(&text)?;
    if prompt.is_empty() {
        bail!("the prompt encodes to no tokens: give at least one character");
    }
    if a.num_samples == 0 {
        bail!("--num-samples must be at least 1");
    }
    for i in 0..a.num_samples {
        let seed = opts.seed.wrapping_add(i as u64);
        let ids = generate(
            &loaded.model,
            &prompt,
            &SamplingOptions { seed, ..opts.clone() },
            &loaded.device,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "checkpoint {}: {e}; sample an earlier one (--checkpoint step-N)",
                loaded.checkpoint.display()
            )
        })?;
        if a.num_samples > 1 {
            println!("--- sample {i} (seed {seed}) ---");
        }
        println!("{text}{}", codec.decode(&ids));
    }
    Ok(())
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
    let mut loaded = load_run(&a.run, &a.checkpoint, parse_device(a.device.as_deref())?)?;
    if let Some(text) = &a.text {
        match &mut loaded.config.task {
            TaskConfig::CharLm(t) => t.path = text.clone(),
            TaskConfig::BpeLm(t) => t.path = text.clone(),
            other => bail!(
                "--text applies to language-model runs (char_lm, bpe_lm); this run's task is {}",
                other.name()
            ),
        }
        loaded.task = attnlab_train::task::build(&loaded.config, Some(&a.run))?;
    }
    if let Some(b) = a.batches {
        if b == 0 {
            bail!("--batches must be at least 1");
        }
        loaded.config.train.eval_batches = b;
    }
    let (mut metrics, layers) = attnlab_train::trainer::evaluate(
        &loaded.config,
        loaded.task.as_ref(),
        &loaded.model,
        &loaded.device,
    );
    // Language models: perplexity, e^loss (nats per token), beside the loss it restates.
    if matches!(loaded.config.task, TaskConfig::CharLm(_) | TaskConfig::BpeLm(_))
        && let Some(loss) = metrics.get("loss").copied()
    {
        metrics.insert("perplexity".to_string(), loss.exp());
    }
    if let Some((k, v)) = metrics.iter().find(|(_, v)| !v.is_finite()) {
        bail!(
            "checkpoint {} gives a non-finite {k} ({v}): its weights are unusable; evaluate an earlier one (--checkpoint step-N)",
            loaded.checkpoint.display()
        );
    }
    let dumped = match &a.dump_logits {
        Some(path) => Some(attnlab_train::export::dump_logits(
            &loaded.model,
            &loaded.config,
            loaded.task.as_ref(),
            a.rows,
            path,
            a.force,
            &loaded.device,
        )?),
        None => None,
    };
    if a.json {
        let json = serde_json::json!({
            "checkpoint": loaded.checkpoint.display().to_string(),
            "task": loaded.config.task.name(),
            "device": loaded.backend.name(),
            "metrics": metrics,
            "entropy_per_layer": layers.entropy,
            "sink_mass_per_layer": layers.sink_mass,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "checkpoint {} ({} on {})",
        loaded.checkpoint.display(),
        loaded.config.task.name(),
        loaded.backend
    );
    for (k, v) in &metrics {
        println!("{k:<16} {v:.5}");
    }
    let per_layer = |v: &[f64]| v.iter().map(|e| format!("{e:.3}")).collect::<Vec<_>>().join(" ");
    println!(
        "attention entropy per layer (1 = uniform, 0 = one-hot): {}",
        per_layer(&layers.entropy)
    );
    println!("sink mass per layer (mean weight on position 0): {}", per_layer(&layers.sink_mass));
    if let (Some(path), Some([b, t, v])) = (&a.dump_logits, dumped) {
        println!("wrote inputs and logits [{b}, {t}, {v}] to {}", path.display());
    }
    Ok(())
}

fn cmd_linearize(a: LinearizeArgs) -> Result<()> {
    use attnlab_train::linearize::{LayerChoice, LinearizeOptions, linearize};
    let to: MixerSpec = a.to.parse().map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let layers: LayerChoice = a.layers.parse()?;
    let out = a.out.unwrap_or_else(|| {
        PathBuf::from("reports").join(format!("linearize-{}", attnlab_train::run_dir::timestamp()))
    });
    let options = LinearizeOptions {
        run: a.run,
        checkpoint: a.checkpoint,
        to,
        layers,
        transfer_steps: a.transfer_steps,
        recover_steps: a.recover_steps,
        transfer_lr: a.transfer_lr,
        transfer_own_only: a.transfer_params == "new",
        recover_lr: a.lr,
        alpha: a.alpha,
        tau: a.tau,
        lora_rank: a.lora,
        eval_every: a.eval_every,
        patience: a.patience,
        control: !a.no_control,
        probe_examples: a.probe_examples,
        out: out.clone(),
        quiet: a.quiet,
    };
    let result = linearize(&options, &attnlab_eval::linearize::render)?;
    println!("{}", attnlab_eval::linearize::report_markdown(&result));
    println!("wrote {} (report.md, transfer.svg, results.json, student/)", out.display());
    Ok(())
}

fn cmd_import(a: ImportArgs) -> Result<()> {
    let start = std::time::Instant::now();
    let report = attnlab_train::import::import_hf(&attnlab_train::import::ImportOptions {
        hf_dir: a.hf,
        out: a.out.clone(),
        text: a.text,
        context: a.context,
    })?;
    let m = &report.config.model;
    println!(
        "imported {} ({} layers, width {}, {} heads / {} key-value heads, {} parameters, {} tensors, tokenizer of {} tokens) into {} in {:.1} s",
        report.architecture,
        m.n_layers,
        m.d_model,
        m.n_heads,
        m.kv_heads(),
        report.parameters,
        report.tensors,
        report.tokenizer_vocab,
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    println!("next: attnlab eval --run {0} · attnlab sample --run {0}", a.out.display());
    Ok(())
}

fn cmd_export(a: ExportArgs) -> Result<()> {
    let loaded = load_run(&a.run, &a.checkpoint, None)?;
    if a.format == "hf" {
        let n = attnlab_train::export::hf::export_gpt2(
            &loaded.model,
            &loaded.config,
            loaded.task.as_ref(),
            &a.to,
            a.force,
        )?;
        let config = std::fs::read_to_string(a.to.join("config.json")).ok();
        let architecture = config
            .and_then(|c| serde_json::from_str::<serde_json::Value>(&c).ok())
            .and_then(|c| c["architectures"][0].as_str().map(String::from));
        match architecture {
            Some(arch) => println!(
                "wrote a Hugging Face {arch} directory ({n} tensors, config.json, tokenizer files) to {}",
                a.to.display()
            ),
            None => println!(
                "{} is no Hugging Face architecture: wrote the attnlab export ({n} tensors) and a README.md saying why to {}",
                loaded.config.model.mixer,
                a.to.display()
            ),
        }
        return Ok(());
    }
    let n = attnlab_train::export::export_safetensors(
        &loaded.model,
        &loaded.config,
        loaded.task.as_ref(),
        &a.to,
        a.force,
    )?;
    println!("wrote {n} tensors, the config and the vocabulary to {}", a.to.display());
    Ok(())
}

/// The local executor for `--jobs N`: worker processes of this very binary when N > 1.
fn local_executor(jobs: usize, quiet: bool) -> Result<attnlab_eval::compare::LocalExecutor> {
    if jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let worker = if jobs > 1 {
        Some(std::env::current_exe().context("cannot find the attnlab binary to start workers")?)
    } else {
        None
    };
    Ok(attnlab_eval::compare::LocalExecutor {
        jobs,
        worker,
        ..attnlab_eval::compare::LocalExecutor::sequential(quiet)
    })
}

/// The comparison the flags describe (`None`: none given, for --run-only / --analyse-only on an
/// existing report directory), and the `[slurm]` options of its file.
fn comparison_from_args(
    a: &CompareArgs,
) -> Result<(Option<attnlab_eval::compare::Comparison>, attnlab_eval::compare::slurm::SlurmOptions)>
{
    use attnlab_eval::compare::{CompareSpec, Comparison, task_preset};
    if let Some(path) = &a.config {
        let mut file = CompareSpec::load(path)?;
        file.set.extend(a.sets.iter().cloned());
        let mut spec = file.resolve()?;
        spec.title =
            format!("attnlab compare: {}", path.file_stem().unwrap_or_default().to_string_lossy());
        return Ok((Some(spec), file.slurm));
    }
    if a.variants.is_empty() {
        return Ok((None, Default::default()));
    }
    let preset = match (&a.preset, &a.task) {
        (Some(p), _) => p.clone(),
        (None, Some(t)) => task_preset(t)?,
        (None, None) => bail!("--variants needs --task NAME or --preset FILE"),
    };
    if a.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let mut spec =
        Comparison::from_variants(&preset, &a.variants, a.seeds, a.lrs.clone(), &a.sets)?;
    spec.target = a.target;
    spec.title = format!("attnlab compare: {}", a.variants.join(" vs "));
    Ok((Some(spec), Default::default()))
}

fn cmd_compare(a: CompareArgs) -> Result<()> {
    use attnlab_eval::compare::{
        execute, lock_comparison, prepare_dir, read_comparison, read_plan, run_entry, slurm,
    };
    let (spec, slurm_file) = comparison_from_args(&a)?;
    if spec.is_none() && !(a.run_only || a.analyse_only) {
        bail!("give --config FILE, or --task NAME (or --preset FILE) with --variants A,B,...");
    }
    let slurm_executor = a.executor == "slurm";
    let out = match &a.out {
        Some(out) => out.clone(),
        None => PathBuf::from("reports").join(format!("compare-{}", run_dir::timestamp())),
    };
    // Batch scripts run elsewhere: they need the absolute path.
    let out = if slurm_executor { slurm::absolute(&out)? } else { out };
    // Each flag overrides the same option of the file's [slurm] table.
    let slurm_options = slurm::SlurmOptions {
        max_parallel: a.slurm.slurm_max_parallel.or(slurm_file.max_parallel),
        cpus_per_task: a.slurm.slurm_cpus_per_task.or(slurm_file.cpus_per_task),
        mem: a.slurm.slurm_mem.clone().or(slurm_file.mem),
        time: a.slurm.slurm_time.clone().or(slurm_file.time),
        partition: a.slurm.slurm_partition.clone().or(slurm_file.partition),
        sbatch: [slurm_file.sbatch, a.slurm.sbatch.clone()].concat(),
    };
    let batch_binary =
        || std::env::current_exe().context("cannot find the attnlab binary for the batch scripts");
    if slurm_executor {
        // Before the plan is written: a value the scripts cannot carry writes nothing.
        slurm::check(&out, &batch_binary()?, &slurm_options)?;
    }
    // One comparison writer per --out: whoever prepares, runs or reports it holds the lock
    // (released before a Slurm --wait, whose analysis job takes it); the --run-only --index
    // workers an executor starts are covered by the executor's.
    let worker = a.run_only && a.index.is_some();
    let mut writer = None;
    if let Some(spec) = &spec {
        // Validates every run's config before anything is written.
        let prepared = prepare_dir(spec, &out)?;
        let resuming = prepared.resuming;
        writer = Some(prepared.lock);
        if resuming && !a.run_only && !a.analyse_only {
            // Said even when quiet: finished runs are read back, interrupted ones continued.
            println!(
                "{} holds this comparison already: continuing it (finished runs are kept, interrupted ones resumed)",
                out.display()
            );
        }
    }
    let entries = read_plan(&out)?;
    let comparison = read_comparison(&out)?;
    if writer.is_none() && !worker {
        writer = Some(lock_comparison(&out)?);
    }
    if a.plan_only {
        for e in &entries {
            println!("{:>4}  {}  {}  {}", e.index, e.fingerprint, e.id, e.dir.display());
        }
        println!(
            "plan: {} runs in {} (plan.json); run it with `attnlab compare --run-only --out {}` (or --index I for one entry), then `--analyse-only`",
            entries.len(),
            out.display(),
            out.display()
        );
        return Ok(());
    }
    if a.run_only {
        if let Some(i) = a.index {
            die_with_executor();
            let entry = entries.get(i).with_context(|| {
                format!(
                    "--index {i}: the plan in {} has entries 0 to {}",
                    out.display(),
                    entries.len().saturating_sub(1)
                )
            })?;
            return match run_entry(&out, entry) {
                Ok(()) => Ok(()),
                Err(attnlab_eval::compare::EntryError::Failed(e)) => bail!("{}: {e}", entry.id),
                Err(attnlab_eval::compare::EntryError::NotTaken(e)) => {
                    // Exit 2: nothing was recorded (another process holds the run).
                    eprintln!("error: {}", one_line(&e.to_string()));
                    std::process::exit(2);
                }
            };
        }
        execute(&out, &entries, &local_executor(a.jobs, a.quiet)?)?;
        let unfinished = entries
            .iter()
            .filter(|e| e.status(&out) != attnlab_eval::compare::RunStatus::Finished)
            .count();
        println!(
            "{} of {} runs finished in {}; analyse with `attnlab compare --analyse-only --out {}`",
            entries.len() - unfinished,
            entries.len(),
            out.display(),
            out.display()
        );
        return Ok(());
    }
    let results = if a.analyse_only {
        analyse_and_report(&comparison, &entries, &out)?
    } else if slurm_executor {
        let Some(submission) = slurm::submit(&out, &entries, &batch_binary()?, &slurm_options)?
        else {
            println!("every run of the plan has finished: analysing here");
            return finish_compare(
                &comparison,
                &analyse_and_report(&comparison, &entries, &out)?,
                &out,
            );
        };
        println!(
            "submitted {} run(s) as Slurm array job {} and the analysis as job {} (after it); scripts and jobs.json in {}/slurm/",
            submission.tasks.len(),
            submission.array_job,
            submission.analysis_job,
            out.display()
        );
        if !a.slurm.wait {
            println!(
                "watch: squeue -j {},{}; the report will be {}/report.html",
                submission.array_job,
                submission.analysis_job,
                out.display()
            );
            return Ok(());
        }
        drop(writer.take());
        match slurm::wait(&out, &entries, &submission, a.quiet) {
            Ok(()) => {}
            // The analysis job fails, by design, after writing a report in which some arm has
            // no finished run: its verdicts are still worth printing (with the same error).
            Err(slurm::SlurmError::AnalysisFailed { .. }) if out.join("results.json").is_file() => {
            }
            Err(e) => return Err(e.into()),
        }
        if !out.join("results.json").is_file() {
            bail!("the analysis job left no {}/results.json", out.display());
        }
        // The verdicts are read from the run directories as the analysis job read them, not
        // parsed from results.json, where a number no run produced is null.
        analysis(&comparison, &entries, &out)
    } else {
        if !a.quiet {
            let lrs = entries.len() / comparison.arms.len() / comparison.seeds.len();
            println!(
                "{} runs: {} arms x {} seeds x {lrs} learning rate(s) -> {}",
                entries.len(),
                comparison.arms.len(),
                comparison.seeds.len(),
                out.display()
            );
        }
        execute(&out, &entries, &local_executor(a.jobs, a.quiet)?)?;
        analyse_and_report(&comparison, &entries, &out)?
    };
    finish_compare(&comparison, &results, &out)
}

/// A `--jobs` worker (started with the executor's pid in `EXECUTOR_PID_VAR`) is killed when its
/// executor dies, so a killed `compare` leaves no runs training on, locked against its rerun.
/// (Linux only; elsewhere the worker finishes its run, and the rerun waits for nothing: it
/// reports that run as held by another process.)
fn die_with_executor() {
    let Some(executor) = std::env::var(attnlab_eval::compare::EXECUTOR_PID_VAR)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return;
    };
    #[cfg(target_os = "linux")]
    // SAFETY: two syscalls about this process only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The executor died before the prctl took effect: nobody is waiting for this run.
        if libc::getppid() != executor {
            libc::_exit(2);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = executor;
}

/// Reads every run directory of the plan, analyses and writes the report.
fn analyse_and_report(
    comparison: &attnlab_eval::compare::Comparison,
    entries: &[attnlab_eval::compare::PlanEntry],
    out: &std::path::Path,
) -> Result<attnlab_eval::compare::Results> {
    let results = analysis(comparison, entries, out);
    attnlab_eval::report::write(&results, out)?;
    Ok(results)
}

/// The results of the plan's run directories, without writing them.
fn analysis(
    comparison: &attnlab_eval::compare::Comparison,
    entries: &[attnlab_eval::compare::PlanEntry],
    out: &std::path::Path,
) -> attnlab_eval::compare::Results {
    let records = attnlab_eval::compare::read_records(out, entries);
    let title = if comparison.title.is_empty() {
        format!("attnlab compare: {}", out.display())
    } else {
        comparison.title.clone()
    };
    attnlab_eval::compare::analyse(comparison, records, &title)
}

/// Prints the verdicts; fails when some arm has no finished run (nothing to judge it by).
fn finish_compare(
    comparison: &attnlab_eval::compare::Comparison,
    results: &attnlab_eval::compare::Results,
    out: &std::path::Path,
) -> Result<()> {
    println!("\ndecision: {}", results.decision);
    println!(
        "\n{} ({} is better), each arm at its best lr:",
        results.metric,
        if results.higher_is_better { "higher" } else { "lower" }
    );
    for v in &results.verdicts {
        println!("- {v}");
    }
    if !results.missing.is_empty() {
        println!(
            "{} run(s) not finished: {}; run the same command again to finish them",
            results.missing.len(),
            results.missing.join(", ")
        );
    }
    println!("report: {}/report.html (also report.md, results.json, plots/)", out.display());
    let unfinished: Vec<&str> = comparison
        .arms
        .iter()
        .map(|a| a.name.as_str())
        .filter(|name| {
            results.runs.iter().all(|r| &r.arm != name || r.error.is_some() || r.pending)
        })
        .collect();
    if !unfinished.is_empty() {
        bail!(
            "no run of {} finished, so the report cannot judge it; see {}/report.md, then run the same command again to retry",
            unfinished.join(", "),
            out.display()
        );
    }
    Ok(())
}

/// Refuses a report directory that already holds a report, then creates it.
fn fresh_report_dir(out: &std::path::Path) -> Result<()> {
    if out.join("results.json").exists() {
        bail!("{} already holds a report: choose another --out", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))
}

fn cmd_reproduce(a: ReproduceArgs) -> Result<()> {
    use attnlab_eval::reproduce::{
        Inputs, OutcomeRecord, REPRODUCTIONS, Size, check_name, machine, run_with, update_docs,
    };
    let inputs = Inputs { hf: a.hf.clone(), text: a.text.clone() };
    let run = |name: &str, size, out: &std::path::Path, exec: &_| {
        run_with(name, size, out, exec, &inputs)
    };
    if !a.docs.is_empty() {
        for line in update_docs(&a.docs_file, &a.docs)? {
            println!("{line}");
        }
        return Ok(());
    }
    let Some(name) = a.name else {
        for (name, what) in REPRODUCTIONS {
            println!("{name:<14} {what}");
        }
        println!("\nrun one: attnlab reproduce <name> [--size smoke|full|paper] [--plan]");
        return Ok(());
    };
    check_name(&name)?;
    let size: Size = a.size.parse()?;
    let mut exec = local_executor(a.jobs, a.quiet)?;
    exec.device = parse_device(a.device.as_deref())?;
    exec.devices = parse_devices(a.devices.as_deref())?;
    let missing_backend = exec
        .device
        .or(exec.devices.as_ref().map(|d| d.backend()))
        .filter(|d| !d.is_compiled())
        .map(attnlab_model::BackendError::NotCompiled);
    if a.plan {
        exec.plan_only = true;
        // The runner writes its (unmeasured) pages; they go to a scratch directory, removed after.
        let scratch = std::env::temp_dir().join(format!("attnlab-plan-{}", std::process::id()));
        let outcome = run(&name, size, &scratch, &exec);
        let _ = std::fs::remove_dir_all(&scratch);
        let outcome = outcome?;
        let (runs, steps) = exec.planned.get();
        println!(
            "\n{name} --size {}: {runs} runs, {steps} optimizer steps in all; the effects it checks:",
            size.name()
        );
        for c in &outcome.checks {
            println!("- {}", c.claim);
        }
        if let Some(e) = missing_backend {
            println!("note: to run it, {e}");
        }
        return Ok(());
    }
    if let Some(e) = missing_backend {
        bail!(e);
    }
    let out = a.out.unwrap_or_else(|| {
        PathBuf::from("reports").join(format!("{name}-{}-{}", a.size, run_dir::timestamp()))
    });
    fresh_report_dir(&out)?;
    let started = std::time::Instant::now();
    let outcome = run(&name, size, &out, &exec)?;
    let date = run_dir::timestamp();
    let date = format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..8]);
    OutcomeRecord::new(&name, size, &outcome, &date, &machine()).write(&out)?;
    println!("\n{}", outcome.summary.header.join(" | "));
    for row in &outcome.summary.rows {
        println!("{}", row.join(" | "));
    }
    println!();
    for c in &outcome.checks {
        println!("- {}", c.line());
    }
    println!(
        "report: {}/report.html (also report.md, results.json, plots/); {:.0} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    let failed = outcome.checks.iter().filter(|c| !c.holds).count();
    if a.strict && failed > 0 {
        bail!(
            "{failed} expected effect(s) did not show (see above and {}/report.md)",
            out.display()
        );
    }
    Ok(())
}

fn cmd_swap(a: SwapArgs) -> Result<()> {
    use attnlab_eval::swap::{SwapSpec, plan, run};
    let spec = SwapSpec {
        run: a.run,
        checkpoint: a.checkpoint,
        to: a.to,
        layers: a.layers,
        finetune_steps: a.finetune_steps,
        seeds: a.seeds,
        lrs: a.lrs,
    };
    // Check everything before creating the report directory.
    plan(&spec)?.0.plan()?;
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from("reports").join(format!("swap-{}", run_dir::timestamp())));
    fresh_report_dir(&out)?;
    let results = run(&spec, &out, &local_executor(a.jobs, a.quiet)?)?;
    println!("\ndecision: {}", results.decision);
    println!(
        "\n{} ({} is better), each arm at its best lr:",
        results.metric,
        if results.higher_is_better { "higher" } else { "lower" }
    );
    for v in &results.verdicts {
        println!("- {v}");
    }
    println!("report: {}/report.html (also report.md, results.json, plots/)", out.display());
    Ok(())
}

fn cmd_bench(a: BenchArgs) -> Result<()> {
    use attnlab_eval::bench;
    for s in &a.only {
        if !["train", "scaling", "decode", "matmul"].contains(&s.as_str()) {
            bail!("--only: unknown section '{s}': expected train, scaling, decode or matmul");
        }
    }
    // Before anything is measured: a bad length would otherwise fail after the other sections.
    bench::check_lengths(&a.lengths)?;
    let mut base = RunConfig::load(&a.config, &[])?;
    if let Some(d) = parse_device(a.device.as_deref())? {
        base.device = d;
    }
    if let Some(list) = parse_devices(a.devices.as_deref())? {
        base.device = list.backend();
        base.devices = (list.len() > 1).then_some(list);
        base.validate()?;
    }
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "attnlab bench | {} | device {} | {threads} hardware threads | {}",
        a.config.display(),
        base.device_list(),
        run_dir::timestamp()
    );
    println!("cpu: {} | SIMD: {}", attnlab_eval::host::machine(), attnlab_eval::host::simd_flags());
    let mut json = serde_json::Map::new();
    let variants: Vec<String> = if a.variants.is_empty() {
        MixerSpec::bench_specs().into_iter().map(String::from).collect()
    } else {
        a.variants.clone()
    };
    let configs = variants
        .iter()
        .map(|v| {
            let mut config = base.clone();
            config.model.mixer = v.parse().with_context(|| format!("--variants {v}"))?;
            Ok(config)
        })
        .collect::<Result<Vec<_>>>()?;
    let print_line = |line: String| println!("{line}");
    if a.only.iter().any(|s| s == "train") {
        if a.steps == 0 {
            bail!("--steps must be at least 1");
        }
        let rows = bench::train_table(&base, &configs, a.warmup, a.steps, print_line)?;
        json.insert("train_step".into(), serde_json::to_value(rows)?);
    }
    if a.only.iter().any(|s| s == "scaling") && !a.lengths.is_empty() {
        let device = base.device.device()?;
        let specs = a
            .scaling
            .iter()
            .map(|s| s.parse::<MixerSpec>().map_err(anyhow::Error::from))
            .collect::<Result<Vec<_>>>()?;
        let points = bench::scaling_table(
            &specs,
            base.model.d_model,
            base.model.n_heads,
            &a.lengths,
            a.recurrent_max,
            &device,
            print_line,
        );
        json.insert("scaling".into(), serde_json::to_value(points)?);
    }
    if a.only.iter().any(|s| s == "matmul") {
        let device = base.device.device()?;
        let shapes = bench::model_matmul_shapes(&base)?;
        let points = bench::matmul_table(&shapes, a.warmup, a.steps.max(1), &device, print_line);
        json.insert("matmul".into(), serde_json::to_value(points)?);
    }
    if a.only.iter().any(|s| s == "decode") && a.decode_tokens > 0 {
        let points = bench::decode_table(&configs, a.decode_tokens, print_line)?;
        json.insert("decode".into(), serde_json::to_value(points)?);
    }
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}
