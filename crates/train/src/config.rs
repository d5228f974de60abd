//! One serde tree for a whole run: `[model]`, `[train]`, `[task]`, plus `seed` and `device`.
//!
//! Loaded from a TOML preset, then `--set a.b=c` overrides are applied. Every key is checked:
//! an unknown key names its valid siblings, an ill-typed value names the key and the type, and
//! values that parse but cannot work together (width not divisible by heads, chunk size 0, ...)
//! are rejected by [`RunConfig::validate`] before anything is written.

use crate::message::one_line;
use crate::paths::resolve_beside;
use attnlab_model::{BackendKind, DeviceList, ModelConfig, ModelConfigError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Drives init, data order, dropout and sampling.
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default = "default_device")]
    pub device: BackendKind,
    /// Train data parallel on these devices of `device`'s backend (`"cuda:0,cuda:1"`,
    /// `"flex,flex"`): each takes an equal share of every micro-batch. Absent: `device` alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<DeviceList>,
    pub task: TaskConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub train: TrainConfig,
}

fn default_seed() -> u64 {
    1337
}
fn default_device() -> BackendKind {
    BackendKind::Flex
}

/// The optimisation schedule (nanoGPT's defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f64,
    /// Linear warmup steps from 0 to `lr`.
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Global gradient-norm clip; 0 = off.
    pub grad_clip: f64,
    /// Evaluate every N steps (and at the end); 0 = only at the end.
    pub eval_every: usize,
    /// Batches per evaluation.
    pub eval_batches: usize,
    /// Print/log a training line every N steps.
    pub log_every: usize,
    /// Write a checkpoint every N steps (and at the end); 0 = only at the end.
    pub checkpoint_every: usize,
    /// How many `checkpoints/step-N` to keep (plus `best/` and `final/`).
    pub keep_checkpoints: usize,
    /// Stop early once the task's main eval metric reaches this value; 0 = off.
    pub stop_at: f64,
    /// Start from this run's weights (every parameter whose name and shape match; see
    /// `attnlab swap`) instead of a fresh initialisation; "" = off.
    pub init_run: String,
    /// Which checkpoint of `init_run`: best, final, latest or a checkpoint directory.
    pub init_checkpoint: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch_size: 12,
            grad_accum: 1,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_steps: 100,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            grad_clip: 1.0,
            eval_every: 250,
            eval_batches: 20,
            log_every: 10,
            checkpoint_every: 500,
            keep_checkpoints: 2,
            stop_at: 0.0,
            init_run: String::new(),
            init_checkpoint: "best".into(),
        }
    }
}

/// Which task, with its options. `kind` selects the table's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskConfig {
    CharLm(TextConfig),
    BpeLm(BpeConfig),
    IclRegression(IclConfig),
    Mqar(MqarConfig),
    Separation(SeparationConfig),
    MaxRetrieval(MaxRetrievalConfig),
    StateTracking(StateTrackingConfig),
    Needle(NeedleConfig),
    Mad(MadConfig),
}

impl TaskConfig {
    pub fn name(&self) -> &'static str {
        match self {
            TaskConfig::CharLm(_) => "char_lm",
            TaskConfig::BpeLm(_) => "bpe_lm",
            TaskConfig::IclRegression(_) => "icl_regression",
            TaskConfig::Mqar(_) => "mqar",
            TaskConfig::Separation(_) => "separation",
            TaskConfig::MaxRetrieval(_) => "max_retrieval",
            TaskConfig::StateTracking(_) => "state_tracking",
            TaskConfig::Needle(_) => "needle",
            TaskConfig::Mad(_) => "mad",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextConfig {
    /// UTF-8 text file; a relative path is read relative to the config file (or, when nothing
    /// is there, the working directory).
    pub path: PathBuf,
    /// Last fraction of the text held out for evaluation (nanoGPT: 0.1).
    pub val_fraction: f64,
    /// Training context in characters (nanoGPT's block_size); unset: `model.max_seq_len`. Set it
    /// below `model.max_seq_len` to evaluate past the length the model was trained at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq_len: Option<usize>,
    /// Loss per position bucket, for length generalisation: for lengths ℓ₁ < … < ℓₖ, windows of
    /// ℓₖ characters are scored and `loss@ℓᵢ` is the mean loss at positions [ℓᵢ₋₁, ℓᵢ) (ℓ₀ = 0).
    /// `[L, 2L, 4L, 8L]` with L = `seq_len` gives the trained range, then each doubling past it.
    pub eval_lengths: Vec<usize>,
}

impl TextConfig {
    /// The training context, given the model's.
    pub fn train_len(&self, max_seq_len: usize) -> usize {
        self.seq_len.unwrap_or(max_seq_len)
    }
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("datasets/tinyshakespeare.txt"),
            val_fraction: 0.1,
            seq_len: None,
            eval_lengths: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BpeConfig {
    pub path: PathBuf,
    pub val_fraction: f64,
    /// Target vocabulary size of the byte-level BPE tokenizer (>= 256 + specials).
    pub vocab_size: usize,
    /// Set by `attnlab import`: the pretrained checkpoint's embedding rows (at least the
    /// vocabulary of the run's own `tokenizer.json`, which is used as it is, never retrained).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_rows: Option<usize>,
}

impl Default for BpeConfig {
    fn default() -> Self {
        let t = TextConfig::default();
        Self { path: t.path, val_fraction: t.val_fraction, vocab_size: 512, embedding_rows: None }
    }
}

/// In-context linear regression (Garg et al. 2022).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IclConfig {
    /// Dimension d of x and w.
    pub dim: usize,
    /// In-context examples per prompt.
    pub points: usize,
    /// Curriculum: start with this many active dimensions / points and grow (0 = no curriculum).
    pub curriculum_start_dim: usize,
    pub curriculum_start_points: usize,
    /// Grow by one dimension and two points every N steps.
    pub curriculum_every: usize,
    /// Prompts in the fixed evaluation set.
    pub eval_prompts: usize,
}

impl Default for IclConfig {
    fn default() -> Self {
        Self {
            dim: 5,
            points: 11,
            curriculum_start_dim: 0,
            curriculum_start_points: 0,
            curriculum_every: 200,
            eval_prompts: 256,
        }
    }
}

/// Multi-query associative recall (Arora et al. 2023, zoology).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqarConfig {
    pub vocab: usize,
    pub seq_len: usize,
    pub num_kv_pairs: usize,
    /// Power-law exponent parameter of the query gaps (zoology: 0.01).
    pub power_a: f64,
    /// Sequences in the fixed evaluation set.
    pub eval_examples: usize,
    /// Length generalisation: also evaluate at these lengths (e.g. `[64, 128, 256]` for a model
    /// trained at 32), with the number of pairs scaled in proportion (`num_kv_pairs·ℓ/seq_len`),
    /// so a longer sequence holds more pairs at longer gaps, not only more padding. Reported as
    /// `accuracy@ℓ` and `loss@ℓ`. Empty: off.
    pub eval_lengths: Vec<usize>,
    /// Forgetting MQAR (zoology's `forgetting_mqar`): this many of the keys are bound again to a
    /// new value after the first pairs, and their queries expect the latest value, so a mixer
    /// must overwrite, not only accumulate. Scales with the length like the pairs. 0: off.
    pub rebind_pairs: usize,
    /// A fixed training pool of this many sequences, which every batch samples (zoology trains
    /// 64 epochs over 100k); 0: a fresh sequence every draw. Left out of the saved config at 0,
    /// so runs from before it existed resume.
    #[serde(skip_serializing_if = "is_zero")]
    pub train_examples: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for MqarConfig {
    fn default() -> Self {
        Self {
            vocab: 256,
            seq_len: 64,
            num_kv_pairs: 4,
            power_a: 0.01,
            eval_examples: 512,
            eval_lengths: Vec::new(),
            rebind_pairs: 0,
            train_examples: 0,
        }
    }
}

impl MqarConfig {
    /// Key-value pairs in a sequence of `len` tokens: `num_kv_pairs` at the training length,
    /// in proportion elsewhere (at least one).
    pub fn pairs_at(&self, len: usize) -> usize {
        (self.num_kv_pairs * len / self.seq_len.max(1)).max(1)
    }

    /// Keys bound a second time in a sequence of `len` tokens (in proportion, at most the pairs).
    pub fn rebinds_at(&self, len: usize) -> usize {
        (self.rebind_pairs * len / self.seq_len.max(1)).min(self.pairs_at(len))
    }

    /// Tokens a sequence of `len` needs: the pairs, the second bindings and a query slot pair per key.
    fn tokens_needed(&self, len: usize) -> usize {
        4 * self.pairs_at(len) + 2 * self.rebinds_at(len)
    }
}

/// Max retrieval (Veličković et al. 2024): output the largest of `n` item tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaxRetrievalConfig {
    /// Item tokens are `1..vocab` (distinct within a sequence, so `vocab` must exceed the
    /// largest item count); 0 is the query.
    pub vocab: usize,
    /// Training draws `n` uniformly from `min_items..=max_items` per batch.
    pub min_items: usize,
    pub max_items: usize,
    /// Item counts to evaluate at besides `max_items` (`accuracy@n`, `max_weight@n`).
    pub eval_items: Vec<usize>,
    /// Sequences in each fixed evaluation set.
    pub eval_examples: usize,
}

impl Default for MaxRetrievalConfig {
    fn default() -> Self {
        Self {
            vocab: 512,
            min_items: 2,
            max_items: 16,
            eval_items: vec![16, 32, 64, 128, 256],
            eval_examples: 256,
        }
    }
}

/// State tracking (the word problem of a finite group): read a sequence of group elements and
/// output the running product after every one of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateTrackingConfig {
    /// Which group: `parity` (bits, the cyclic group of order 2), `mod<m>` (tokens 0..m summed
    /// mod m, m >= 2) or `s<n>` (the symmetric group on n points, one token per permutation,
    /// n! of them). See [`Problem`].
    pub problem: String,
    /// Training length L: every position is scored, so every prefix length 1..=L is trained.
    pub seq_len: usize,
    /// Length generalisation: also evaluate at these lengths (e.g. `[2L, 4L, 8L]`), reported as
    /// `accuracy@ℓ`, `final_accuracy@ℓ` and `loss@ℓ`. Empty: off.
    pub eval_lengths: Vec<usize>,
    /// Sequences in each fixed evaluation set.
    pub eval_examples: usize,
}

impl Default for StateTrackingConfig {
    fn default() -> Self {
        Self { problem: "parity".into(), seq_len: 32, eval_lengths: Vec::new(), eval_examples: 256 }
    }
}

/// The most states (= tokens) a state-tracking problem may have: `s7` (7! = 5040). Both the
/// embedding and the output layer have one row per state.
pub const MAX_STATES: usize = 5040;

/// A state-tracking problem, parsed from `task.problem`. One key rather than a `group` and a
/// `modulus`: no combination of the two can be wrong, and the names are the literature's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Bits; the state is the parity of the ones so far (the cyclic group of order 2).
    Parity,
    /// Tokens `0..m`; the state is their sum mod m (the cyclic group of order m).
    Modular(usize),
    /// Permutations of n points, one token each (lexicographic rank); the state is their
    /// composition (the symmetric group S_n, n! elements).
    Symmetric(usize),
}

impl Problem {
    /// The number of states, which is also the number of input tokens (the group's order).
    pub fn states(self) -> usize {
        match self {
            Problem::Parity => 2,
            Problem::Modular(m) => m,
            Problem::Symmetric(n) => (1..=n).product(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Parity => write!(f, "parity"),
            Problem::Modular(m) => write!(f, "mod{m}"),
            Problem::Symmetric(n) => write!(f, "s{n}"),
        }
    }
}

/// A `task.problem` that names nothing a task can build; the message names the key and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProblemError {
    #[error(
        "task.problem: unknown problem '{given}': expected parity, mod<m> (m >= 2, e.g. mod3) or s<n> (the symmetric group, n in 2..=7, e.g. s5)"
    )]
    Unknown { given: String },
    #[error(
        "task.problem: modulus {m} is below 2, so there is no state to track: use mod2 (or parity) or more"
    )]
    ModulusBelowTwo { m: usize },
    #[error(
        "task.problem: s{n} has a single element, so there is no state to track: use s2 or more"
    )]
    TrivialGroup { n: usize },
    #[error(
        "task.problem: s{n} has {n}! states, more than the {max} tokens a problem may have (s7): use n <= 7",
        max = MAX_STATES
    )]
    GroupTooLarge { n: usize },
    #[error(
        "task.problem: mod{m} has {m} states, more than the {max} tokens a problem may have: use m <= {max}",
        max = MAX_STATES
    )]
    ModulusTooLarge { m: usize },
    #[error(
        "task.problem: unknown needle problem '{given}': expected single, multikey, multivalue, multiquery or vartrack"
    )]
    UnknownNeedle { given: String },
}

impl std::str::FromStr for Problem {
    type Err = ProblemError;
    /// `parity`, `mod<m>` or `s<n>`; the error is one line naming `task.problem` and the fix.
    fn from_str(s: &str) -> Result<Self, ProblemError> {
        let number = |rest: &str| rest.parse::<usize>().ok();
        let problem = match s {
            "parity" => Problem::Parity,
            _ if s.starts_with("mod") && number(&s[3..]).is_some() => {
                Problem::Modular(number(&s[3..]).expect("checked"))
            }
            _ if s.starts_with('s') && number(&s[1..]).is_some() => {
                Problem::Symmetric(number(&s[1..]).expect("checked"))
            }
            _ => return Err(ProblemError::Unknown { given: s.to_string() }),
        };
        match problem {
            Problem::Modular(m) if m < 2 => Err(ProblemError::ModulusBelowTwo { m }),
            Problem::Symmetric(n) if n < 2 => Err(ProblemError::TrivialGroup { n }),
            // n! overflows long before it is computed for large n: compare n first.
            Problem::Symmetric(n) if n > 7 => Err(ProblemError::GroupTooLarge { n }),
            Problem::Modular(m) if m > MAX_STATES => Err(ProblemError::ModulusTooLarge { m }),
            p => Ok(p),
        }
    }
}

impl StateTrackingConfig {
    /// The parsed `problem` (its one-line error names `task.problem`).
    pub fn parsed(&self) -> Result<Problem, ProblemError> {
        self.problem.parse()
    }
}

/// Needle retrieval in the RULER style: needles `k = v` hidden in random filler, a query at
/// the end, only the answer scored (see `task::needle`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NeedleConfig {
    /// `single`, `multikey`, `multivalue`, `multiquery` or `vartrack` (variable tracking).
    pub problem: String,
    /// Training length, query and answer included.
    pub seq_len: usize,
    /// Key (variable) tokens.
    pub keys: usize,
    /// Value tokens.
    pub values: usize,
    /// Filler tokens the haystack is drawn from.
    pub filler: usize,
    /// Needles (multikey, multiquery), values under the key (multivalue) or the chain's length
    /// (vartrack); 1 for single.
    pub needles: usize,
    /// Also evaluate at these lengths (only the haystack grows), as `accuracy@ℓ`, `exact@ℓ`
    /// and `loss@ℓ`. Empty: off.
    pub eval_lengths: Vec<usize>,
    /// Sequences in each fixed evaluation set.
    pub eval_examples: usize,
}

impl Default for NeedleConfig {
    fn default() -> Self {
        Self {
            problem: "single".into(),
            seq_len: 64,
            keys: 16,
            values: 16,
            filler: 32,
            needles: 1,
            eval_lengths: Vec::new(),
            eval_examples: 256,
        }
    }
}

/// The MAD synthetic suite (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
/// Architectures"): six token tasks that each probe one capability, generated as the reference
/// (athms/mad-lab) generates them. The defaults are MAD's in-context recall baseline; the other
/// problems' baselines are in `configs/mad.toml`. Which key each problem reads is said per key;
/// a key set away from its default for a problem that does not read it is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MadConfig {
    /// Which task of the suite. See [`MadProblem`].
    pub problem: MadProblem,
    /// Every token id, specials and noise included, is below this (MAD's `vocab_size`).
    pub vocab_size: usize,
    /// MAD's `seq_len`: the length of a generated instance. The model sees `seq_len` tokens,
    /// except in multi-query (in-context/noisy) recall, where MAD's instance is `seq_len` long
    /// before the one-token autoregressive shift and the model sees `seq_len - 1`.
    pub seq_len: usize,
    /// The fixed training set: this many sequences, drawn once from the seed, which every
    /// training batch samples (MAD trains epochs over it); 0: a fresh sequence every draw.
    pub num_train_examples: usize,
    /// Sequences in the fixed evaluation set (MAD's `num_test_examples`).
    pub eval_examples: usize,
    /// Recall problems: probe the value of every key seen before (true, MAD's benchmark), or
    /// only a final key after a copy-prefix token (false).
    pub multi_query: bool,
    /// Fuzzy recall: keys and values are 1..=k_motif_size / 1..=v_motif_size tokens long.
    pub k_motif_size: usize,
    pub v_motif_size: usize,
    /// Tokens reserved for noise, below the special tokens (MAD subtracts them from the
    /// key/value vocabulary even while `frac_noise` is 0).
    pub noise_vocab_size: usize,
    /// The chance that a key-value slot (recall, memorization) or a token (compression) is
    /// noise instead, in [0, 1).
    pub frac_noise: f64,
    /// Selective copying: how many tokens to copy.
    pub num_tokens_to_copy: usize,
}

impl Default for MadConfig {
    fn default() -> Self {
        Self {
            problem: MadProblem::InContextRecall,
            vocab_size: 16,
            seq_len: 128,
            num_train_examples: 12_800,
            eval_examples: 1_280,
            multi_query: true,
            k_motif_size: 1,
            v_motif_size: 1,
            noise_vocab_size: 0,
            frac_noise: 0.0,
            num_tokens_to_copy: 0,
        }
    }
}

/// A needle problem, parsed from `task.problem`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeedleProblem {
    Single,
    MultiKey,
    MultiValue,
    MultiQuery,
    VariableTracking,
}

impl NeedleConfig {
    /// The parsed `problem` (its one-line error names `task.problem`).
    pub fn parsed(&self) -> Result<NeedleProblem, ProblemError> {
        Ok(match self.problem.as_str() {
            "single" => NeedleProblem::Single,
            "multikey" => NeedleProblem::MultiKey,
            "multivalue" => NeedleProblem::MultiValue,
            "multiquery" => NeedleProblem::MultiQuery,
            "vartrack" => NeedleProblem::VariableTracking,
            other => return Err(ProblemError::UnknownNeedle { given: other.to_string() }),
        })
    }

    /// Tokens: `?`, `=`, the keys, the values and the filler.
    pub fn vocab(&self) -> usize {
        2 + self.keys + self.values + self.filler
    }

    /// Needle and query tokens of one sequence: what the haystack leaves room for.
    pub fn fixed_tokens(&self, problem: NeedleProblem) -> usize {
        let n = self.needles;
        match problem {
            NeedleProblem::Single | NeedleProblem::MultiKey => 3 * n + 3,
            NeedleProblem::MultiValue => 3 * n + 2 + n,
            NeedleProblem::MultiQuery => 3 * n + 3 * n,
            NeedleProblem::VariableTracking => 6 * n + 2 + n,
        }
    }

    /// A setting that cannot make a sequence, as one line naming the key and the fix.
    fn check(&self, max_seq_len: usize) -> Result<(), (&'static str, String)> {
        let problem = self.parsed().map_err(|m| ("task.problem", m.to_string()))?;
        let n = self.needles;
        for (key, value) in [
            ("task.keys", self.keys),
            ("task.values", self.values),
            ("task.filler", self.filler),
            ("task.needles", n),
            ("task.eval_examples", self.eval_examples),
        ] {
            if value == 0 {
                return Err((key, format!("{key} is 0: it must be at least 1")));
            }
        }
        let (needed, what, have) = match problem {
            NeedleProblem::Single if n != 1 => {
                return Err((
                    "task.needles",
                    format!(
                        "task.needles ({n}): single hides one needle; set task.needles = 1, or use multikey for distractors"
                    ),
                ));
            }
            NeedleProblem::MultiKey | NeedleProblem::MultiQuery if n < 2 => {
                return Err((
                    "task.needles",
                    format!(
                        "task.needles ({n}): {} needs at least 2 needles (1 is single)",
                        self.problem
                    ),
                ));
            }
            NeedleProblem::Single | NeedleProblem::MultiKey | NeedleProblem::MultiQuery => {
                (n, "task.keys", self.keys)
            }
            NeedleProblem::MultiValue => (n, "task.values", self.values),
            NeedleProblem::VariableTracking => {
                if self.values < 2 {
                    return Err((
                        "task.values",
                        "task.values: vartrack needs 2 values (one per chain)".to_string(),
                    ));
                }
                (2 * n, "task.keys", self.keys)
            }
        };
        if have < needed {
            return Err((
                what,
                format!(
                    "{what} ({have}) is below the {needed} distinct ones {} needs with task.needles = {n}: raise {what} or lower task.needles",
                    self.problem
                ),
            ));
        }
        let fixed = self.fixed_tokens(problem);
        for (key, len) in std::iter::once(("task.seq_len", self.seq_len))
            .chain(self.eval_lengths.iter().map(|&l| ("task.eval_lengths", l)))
        {
            if len < fixed + 1 {
                return Err((
                    key,
                    format!(
                        "{key}: length {len} cannot hold {fixed} needle and query tokens and a haystack: use at least {}",
                        fixed + 1
                    ),
                ));
            }
            if len > max_seq_len {
                return Err((
                    key,
                    format!(
                        "{key}: length {len} exceeds model.max_seq_len ({max_seq_len}): raise model.max_seq_len"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The six tasks of MAD. Read from a string so that a name it does not know is refused naming
/// `task.problem` (serde's own message for an unknown variant names no key here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum MadProblem {
    /// Key-value pairs; recall a key's value when the key comes again.
    InContextRecall,
    /// In-context recall with keys and values of several tokens each.
    FuzzyRecall,
    /// In-context recall with noise pairs between the key-value pairs.
    NoisyRecall,
    /// Copy the data tokens of a stretch strewn with blanks, in order, after a copy token.
    SelectiveCopying,
    /// A key-to-value map fixed for the whole run, learned into the weights.
    Memorization,
    /// Reproduce a random sequence from the state at its last (compression) token alone.
    Compression,
}

impl MadProblem {
    /// The problem's name in configs.
    pub fn name(self) -> &'static str {
        match self {
            MadProblem::InContextRecall => "in_context_recall",
            MadProblem::FuzzyRecall => "fuzzy_recall",
            MadProblem::NoisyRecall => "noisy_recall",
            MadProblem::SelectiveCopying => "selective_copying",
            MadProblem::Memorization => "memorization",
            MadProblem::Compression => "compression",
        }
    }
}

/// Every problem, in the order of the paper's table.
pub const MAD_PROBLEMS: [MadProblem; 6] = [
    MadProblem::InContextRecall,
    MadProblem::FuzzyRecall,
    MadProblem::NoisyRecall,
    MadProblem::SelectiveCopying,
    MadProblem::Compression,
    MadProblem::Memorization,
];

impl TryFrom<String> for MadProblem {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        MAD_PROBLEMS.into_iter().find(|p| p.name() == name).ok_or_else(|| {
            let names: Vec<&str> = MAD_PROBLEMS.iter().map(|p| p.name()).collect();
            format!("task.problem: unknown problem '{name}': expected one of {}", names.join(", "))
        })
    }
}

impl From<MadProblem> for String {
    fn from(problem: MadProblem) -> String {
        problem.name().to_string()
    }
}

impl MadConfig {
    /// Positions the model sees in a sequence (see [`MadConfig::seq_len`]).
    pub fn input_len(&self) -> usize {
        match self.problem {
            MadProblem::InContextRecall | MadProblem::NoisyRecall if self.multi_query => {
                self.seq_len.saturating_sub(1)
            }
            _ => self.seq_len,
        }
    }

    /// The tokens below the special ones and the noise: what keys, values and data are drawn
    /// from. Specials at the top of the vocabulary: the copy prefix (single-query recall), the
    /// pad and copy prefix (fuzzy recall), the insert token (memorization), the compression
    /// token, the blank and copy tokens (selective copying).
    pub fn data_vocab(&self) -> usize {
        let specials = match self.problem {
            MadProblem::InContextRecall | MadProblem::NoisyRecall => usize::from(!self.multi_query),
            MadProblem::FuzzyRecall => 1 + usize::from(!self.multi_query),
            MadProblem::Memorization | MadProblem::Compression => 1,
            MadProblem::SelectiveCopying => 2,
        };
        self.vocab_size.saturating_sub(specials + self.noise_vocab_size)
    }

    /// Why this config cannot be generated: `(key, message naming the key and the fix)`.
    pub fn refusal(&self) -> Option<(&'static str, String)> {
        let problem = self.problem.name();
        let (data, nv, len) = (self.data_vocab(), self.noise_vocab_size, self.seq_len);
        if self.eval_examples == 0 {
            return Some((
                "task.eval_examples",
                "task.eval_examples is 0: it must be at least 1".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.frac_noise) {
            return Some((
                "task.frac_noise",
                format!(
                    "task.frac_noise ({}) must be in [0, 1): it is the chance a slot is noise",
                    self.frac_noise
                ),
            ));
        }
        if self.frac_noise > 0.0 && nv == 0 {
            return Some((
                "task.noise_vocab_size",
                format!(
                    "task.frac_noise is {} but task.noise_vocab_size is 0: reserve noise tokens (e.g. 16) or set frac_noise = 0",
                    self.frac_noise
                ),
            ));
        }
        if self.problem == MadProblem::SelectiveCopying && (self.frac_noise > 0.0 || nv > 0) {
            return Some((
                "task.frac_noise",
                "task.frac_noise / task.noise_vocab_size: selective_copying has no noise (its blanks are the distractors); set both to 0".into(),
            ));
        }
        if self.problem != MadProblem::FuzzyRecall
            && (self.k_motif_size, self.v_motif_size) != (1, 1)
        {
            return Some((
                "task.k_motif_size",
                format!(
                    "task.k_motif_size / task.v_motif_size apply to fuzzy_recall only; set both to 1 for {problem}"
                ),
            ));
        }
        if self.problem != MadProblem::SelectiveCopying && self.num_tokens_to_copy != 0 {
            return Some((
                "task.num_tokens_to_copy",
                format!(
                    "task.num_tokens_to_copy applies to selective_copying only; set it to 0 for {problem}"
                ),
            ));
        }
        let vocab_hint = |need: usize| {
            format!(
                "task.vocab_size ({}) leaves {data} key/value/data tokens after the specials and task.noise_vocab_size ({nv}); {problem} needs at least {need}: raise task.vocab_size to {} or more",
                self.vocab_size,
                self.vocab_size + need - data.min(need)
            )
        };
        match self.problem {
            MadProblem::InContextRecall | MadProblem::NoisyRecall => {
                if len % 2 != 0 || len < 4 {
                    return Some((
                        "task.seq_len",
                        format!(
                            "task.seq_len ({len}) must be even and at least 4: a sequence is key-value pairs, at least one before the final probe"
                        ),
                    ));
                }
                if data < 2 {
                    return Some(("task.vocab_size", vocab_hint(2)));
                }
            }
            MadProblem::FuzzyRecall => {
                let (k, v) = (self.k_motif_size, self.v_motif_size);
                if k == 0 || v == 0 {
                    return Some((
                        "task.k_motif_size",
                        "task.k_motif_size and task.v_motif_size must be at least 1".into(),
                    ));
                }
                // Keys are ordered tuples of distinct tokens of the lower half, values of the
                // upper half (the larger by one when the count is odd).
                let need = (2 * k).max(2 * v - 1);
                if data / 2 < k || data - data / 2 < v {
                    return Some(("task.vocab_size", vocab_hint(need)));
                }
                if len <= 2 * (k + v) {
                    return Some((
                        "task.seq_len",
                        format!(
                            "task.seq_len ({len}) must exceed 2·(k_motif_size + v_motif_size) = {}: the context needs room for the planted pair and its query",
                            2 * (k + v)
                        ),
                    ));
                }
            }
            MadProblem::Memorization => {
                if len % 2 != 0 || len < 2 {
                    return Some((
                        "task.seq_len",
                        format!(
                            "task.seq_len ({len}) must be even and at least 2: a sequence is (key, insert token) pairs"
                        ),
                    ));
                }
                if data < 2 {
                    return Some(("task.vocab_size", vocab_hint(2)));
                }
            }
            MadProblem::Compression => {
                if len < 2 {
                    return Some((
                        "task.seq_len",
                        format!(
                            "task.seq_len ({len}) must be at least 2: data tokens and the compression token"
                        ),
                    ));
                }
                if data < 2 {
                    return Some(("task.vocab_size", vocab_hint(2)));
                }
            }
            MadProblem::SelectiveCopying => {
                let n = self.num_tokens_to_copy;
                if n == 0 {
                    return Some((
                        "task.num_tokens_to_copy",
                        "task.num_tokens_to_copy is 0: selective_copying needs tokens to copy (MAD's baseline: 16)".into(),
                    ));
                }
                if len <= 2 * n + 1 {
                    return Some((
                        "task.num_tokens_to_copy",
                        format!(
                            "task.num_tokens_to_copy ({n}) needs task.seq_len > 2·{n} + 1 = {} (the tokens, at least one blank, the copy token and a blank per copied token): raise task.seq_len or copy fewer",
                            2 * n + 1
                        ),
                    ));
                }
                if data < 2 {
                    return Some(("task.vocab_size", vocab_hint(2)));
                }
            }
        }
        None
    }
}

/// Seed 1's separation task: does the input carry one planted large entry?
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeparationConfig {
    /// Rows n (sequence length) and columns d of each input matrix.
    pub rows: usize,
    pub cols: usize,
    /// Value of the planted entry in class 1, before the Frobenius renormalisation.
    pub spike: f64,
    pub eval_examples: usize,
}

impl Default for SeparationConfig {
    fn default() -> Self {
        Self { rows: 16, cols: 8, spike: 6.0, eval_examples: 512 }
    }
}

/// A config that cannot be loaded or cannot work; one line naming the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // `reason`, not `source`: the OS error is said once, here, not again as a cause.
    #[error("cannot read config {path}: {reason} (check the path; presets live in configs/)")]
    Read { path: PathBuf, reason: std::io::Error },
    /// What is wrong with the config read from `path`.
    #[error("{path}: {error}")]
    InFile { path: PathBuf, error: Box<ConfigError> },
    /// Text that is not TOML (the parser's message, on one line, with its position), or a
    /// config TOML cannot hold.
    #[error("{message}")]
    Syntax { message: String },
    #[error("--set '{item}': expected key=value, e.g. --set train.lr=3e-4")]
    SetSyntax { item: String },
    /// `--set a.b.c=…` where `a.b` holds a value, not a table.
    #[error("--set {key}: '{table}' is not a table")]
    NotATable { key: String, table: String },
    #[error("unknown key '{key}': valid keys in {place} are {valid}", valid = .valid.join(", "))]
    UnknownKey {
        key: String,
        /// `the top level` or the table, `[train]`.
        place: String,
        valid: Vec<String>,
    },
    /// A value of the wrong type, put there by the `--set` `set` (`train.steps=many`).
    #[error("--set {set}: {reason}")]
    SetValue { set: String, reason: String },
    /// A value of the wrong type at `key`.
    #[error("{key}: {reason}")]
    Value { key: String, reason: String },
    /// A value of the wrong type the parser could not place at a key.
    #[error("after --set: {reason}")]
    AfterSet { reason: String },
    #[error("{key} is 0: it must be at least 1")]
    Zero { key: &'static str },
    /// A value that parses but cannot work (alone or with others). `key` is the dotted key it
    /// is about (`task.eval_lengths`; `task` for the task's table as a whole); `message` says
    /// what is wrong and the fix, naming the key too.
    #[error("{message}")]
    Invalid { key: &'static str, message: String },
    /// The `[model]` table cannot build a model.
    #[error(transparent)]
    Model(#[from] ModelConfigError),
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, message: message.into() }
}

fn syntax(message: impl ToString) -> ConfigError {
    ConfigError::Syntax { message: one_line(&message.to_string()) }
}

impl RunConfig {
    /// Reads a preset and applies `--set key=value` overrides.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let in_file = |e| ConfigError::InFile { path: path.into(), error: Box::new(e) };
        Self::read(path)?.with_overrides(overrides).map_err(in_file)
    }

    /// Reads a preset without validating it, for callers that change fields (or apply
    /// overrides) first and validate the result.
    ///
    /// A relative data path (`task.path`) is resolved against the preset's directory when the
    /// file is there (see [`resolve_beside`]), so runs started outside the
    /// repository find their data. A `configs/...` path with no file there is the preset built
    /// into the binary ([`crate::presets`]).
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        // A `configs/...` preset not on disk is the copy built into the binary.
        let text = crate::presets::read(path)
            .map_err(|reason| ConfigError::Read { path: path.into(), reason })?;
        let mut config = Self::parse(&text)
            .map_err(|e| ConfigError::InFile { path: path.into(), error: Box::new(e) })?;
        match &mut config.task {
            TaskConfig::CharLm(t) => t.path = resolve_beside(path, &t.path),
            TaskConfig::BpeLm(t) => t.path = resolve_beside(path, &t.path),
            _ => {}
        }
        Ok(config)
    }

    /// Parses TOML text and applies overrides.
    pub fn from_toml(text: &str, overrides: &[String]) -> Result<Self, ConfigError> {
        Self::parse(text)?.with_overrides(overrides)
    }

    fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(syntax)
    }

    /// Applies `key=value` overrides. Keys are dotted paths into the resolved config
    /// (`train.lr`, `model.mixer`, `task.seq_len`); values are TOML (`3e-4`, `true`,
    /// `"text"`, `[1, 2]`) or, failing that, a bare string.
    pub fn with_overrides(self, overrides: &[String]) -> Result<Self, ConfigError> {
        if overrides.is_empty() {
            self.validate()?;
            return Ok(self);
        }
        let mut tree = toml::Value::try_from(&self).map_err(syntax)?;
        // Keys a config leaves out at their default are not in the tree; they are set anyway
        // and only refused (with the keys that do exist) when the config does not know them.
        let mut unverified = Vec::new();
        for item in overrides {
            let (key, raw) = item
                .split_once('=')
                .ok_or_else(|| ConfigError::SetSyntax { item: item.clone() })?;
            let value = parse_value(raw.trim());
            if let Some(unknown) = set_path(&mut tree, key.trim(), value)? {
                unverified.push(unknown);
            }
        }
        let text = toml::to_string(&tree).map_err(syntax)?;
        // The document parsed here is attnlab's own rendering of the config: name the key the
        // error is at (and the --set that put it there), not a line of that document.
        let config: RunConfig = toml::from_str(&text).map_err(|e| {
            let message = e.message();
            if let Some((key, place, valid)) = unverified.iter().find(|(key, _, _)| {
                let field = key.rsplit('.').next().unwrap_or(key);
                message.contains(&format!("unknown field `{field}`"))
            }) {
                let (key, place, valid) = (key.clone(), place.clone(), valid.clone());
                return ConfigError::UnknownKey { key, place, valid };
            }
            let key = e.span().and_then(|span| key_at(&text, span.start));
            let reason = one_line(e.message());
            match key {
                Some(key) => match overrides
                    .iter()
                    .rev()
                    .find(|o| o.split_once('=').is_some_and(|(k, _)| k.trim() == key))
                {
                    Some(set) => ConfigError::SetValue { set: set.clone(), reason },
                    None => ConfigError::Value { key, reason },
                },
                None => ConfigError::AfterSet { reason },
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.train;
        for (key, value) in [
            ("train.steps", t.steps),
            ("train.batch_size", t.batch_size),
            ("train.grad_accum", t.grad_accum),
            ("train.eval_batches", t.eval_batches),
            ("train.log_every", t.log_every),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { key });
            }
        }
        if let Some(devices) = &self.devices {
            if devices.backend() != self.device {
                return Err(invalid(
                    "devices",
                    format!(
                        "devices ({devices}) are not on device = {}: set device = {} as well (--devices alone sets both)",
                        self.device,
                        devices.backend()
                    ),
                ));
            }
            let distinct: std::collections::HashSet<_> = devices.specs().iter().collect();
            if distinct.len() < devices.len() && self.model.dropout > 0.0 {
                return Err(invalid(
                    "devices",
                    format!(
                        "devices ({devices}) list a device twice and model.dropout is {}: replicas on one device share its random stream, so their dropout masks would depend on thread timing and the run would not repeat; set model.dropout = 0 or list distinct devices",
                        self.model.dropout
                    ),
                ));
            }
            if !t.batch_size.is_multiple_of(devices.len()) {
                return Err(invalid(
                    "devices",
                    format!(
                        "train.batch_size ({}) does not split evenly over {} devices: each takes an equal share, so set it to a multiple of {}",
                        t.batch_size,
                        devices.len(),
                        devices.len()
                    ),
                ));
            }
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(invalid(
                "train.lr",
                format!("train.lr ({}) must be a positive number", t.lr),
            ));
        }
        if !(0.0..=t.lr).contains(&t.min_lr) {
            return Err(invalid(
                "train.min_lr",
                format!("train.min_lr ({}) must be in [0, train.lr = {}]", t.min_lr, t.lr),
            ));
        }
        for (key, b) in [("train.beta1", t.beta1), ("train.beta2", t.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(invalid(key, format!("{key} ({b}) must be in [0, 1)")));
            }
        }
        if t.grad_clip < 0.0 || t.weight_decay < 0.0 {
            let key = if t.grad_clip < 0.0 { "train.grad_clip" } else { "train.weight_decay" };
            return Err(invalid(key, "train.grad_clip and train.weight_decay must be >= 0"));
        }
        if t.keep_checkpoints == 0 {
            return Err(invalid(
                "train.keep_checkpoints",
                "train.keep_checkpoints is 0: keep at least 1 so a resume point exists",
            ));
        }
        self.model.validate_shape()?;
        match &self.task {
            TaskConfig::CharLm(c) => {
                check_fraction(c.val_fraction)?;
                let (trained, max) = (c.train_len(self.model.max_seq_len), self.model.max_seq_len);
                if trained == 0 || trained > max {
                    return Err(invalid(
                        "task.seq_len",
                        format!(
                            "task.seq_len ({trained}) must be in 1..=model.max_seq_len ({max}): raise model.max_seq_len or lower task.seq_len"
                        ),
                    ));
                }
                if !c.eval_lengths.windows(2).all(|w| w[0] < w[1])
                    || c.eval_lengths.first() == Some(&0)
                {
                    return Err(invalid(
                        "task.eval_lengths",
                        format!(
                            "task.eval_lengths ({:?}) must be positive and increasing, e.g. [{trained}, {}, {}]",
                            c.eval_lengths,
                            2 * trained,
                            4 * trained
                        ),
                    ));
                }
                if let Some(&longest) = c.eval_lengths.last() {
                    if longest > max {
                        return Err(invalid(
                            "task.eval_lengths",
                            format!(
                                "task.eval_lengths: {longest} exceeds model.max_seq_len ({max}): raise model.max_seq_len to the longest evaluation length"
                            ),
                        ));
                    }
                    self.refuse_learned_positions_past(trained, longest)?;
                }
            }
            TaskConfig::BpeLm(c) => {
                check_fraction(c.val_fraction)?;
                if c.vocab_size < 300 && c.embedding_rows.is_none() {
                    return Err(invalid(
                        "task.vocab_size",
                        format!(
                            "task.vocab_size ({}) must be at least 300 (256 byte symbols + merges)",
                            c.vocab_size
                        ),
                    ));
                }
            }
            TaskConfig::IclRegression(c) => {
                if c.dim == 0 || c.points == 0 || c.eval_prompts == 0 {
                    return Err(invalid(
                        "task.dim",
                        "task.dim, task.points and task.eval_prompts must be at least 1",
                    ));
                }
                if c.curriculum_start_dim > c.dim || c.curriculum_start_points > c.points {
                    return Err(invalid(
                        "task.curriculum_start_dim",
                        "task.curriculum_start_dim/points must not exceed task.dim/points",
                    ));
                }
                if 2 * c.points > self.model.max_seq_len {
                    return Err(invalid(
                        "task.points",
                        format!(
                            "task.points = {} needs 2·points = {} positions but model.max_seq_len is {}: raise model.max_seq_len",
                            c.points,
                            2 * c.points,
                            self.model.max_seq_len
                        ),
                    ));
                }
            }
            TaskConfig::Mqar(c) => {
                if c.seq_len % 2 != 0
                    || c.tokens_needed(c.seq_len) > c.seq_len
                    || c.vocab <= c.seq_len
                    || c.num_kv_pairs == 0
                {
                    return Err(invalid(
                        "task",
                        format!(
                            "task (mqar): need an even seq_len ({}), 4·num_kv_pairs + 2·rebind_pairs ({}) <= seq_len and vocab ({}) > seq_len",
                            c.seq_len,
                            c.tokens_needed(c.seq_len),
                            c.vocab
                        ),
                    ));
                }
                if c.rebind_pairs > c.num_kv_pairs {
                    return Err(invalid(
                        "task.rebind_pairs",
                        format!(
                            "task.rebind_pairs ({}) cannot exceed task.num_kv_pairs ({})",
                            c.rebind_pairs, c.num_kv_pairs
                        ),
                    ));
                }
                if c.vocab / 2 <= c.num_kv_pairs + c.rebind_pairs {
                    return Err(invalid(
                        "task.vocab",
                        "task.vocab must leave more than num_kv_pairs keys and num_kv_pairs + rebind_pairs values (each uses one half)",
                    ));
                }
                if c.seq_len > self.model.max_seq_len {
                    return Err(invalid(
                        "task.seq_len",
                        format!(
                            "task.seq_len ({}) exceeds model.max_seq_len ({}): raise model.max_seq_len",
                            c.seq_len, self.model.max_seq_len
                        ),
                    ));
                }
                for &len in &c.eval_lengths {
                    let pairs = c.pairs_at(len);
                    if len > self.model.max_seq_len {
                        return Err(invalid(
                            "task.eval_lengths",
                            format!(
                                "task.eval_lengths: {len} exceeds model.max_seq_len ({}): raise model.max_seq_len to the longest evaluation length",
                                self.model.max_seq_len
                            ),
                        ));
                    }
                    if len % 2 != 0 || c.tokens_needed(len) > len {
                        return Err(invalid(
                            "task.eval_lengths",
                            format!(
                                "task.eval_lengths: {len} must be even and hold 4·{pairs} pairs' worth of tokens"
                            ),
                        ));
                    }
                    if c.vocab / 2 <= pairs + c.rebinds_at(len) {
                        return Err(invalid(
                            "task.eval_lengths",
                            format!(
                                "task.eval_lengths: length {len} holds {pairs} pairs but task.vocab ({}) leaves only {} keys: raise task.vocab above {}",
                                c.vocab,
                                c.vocab / 2 - 1,
                                2 * pairs + 1
                            ),
                        ));
                    }
                    self.refuse_learned_positions_past(c.seq_len, len)?;
                }
            }
            TaskConfig::MaxRetrieval(c) => {
                if c.vocab < 3
                    || c.min_items == 0
                    || c.min_items > c.max_items
                    || c.eval_examples == 0
                {
                    return Err(invalid(
                        "task",
                        "task (max_retrieval): need vocab >= 3, 1 <= min_items <= max_items and eval_examples >= 1",
                    ));
                }
                let longest =
                    c.eval_items.iter().copied().chain([c.max_items]).max().unwrap_or(0) + 1;
                if longest > c.vocab {
                    return Err(invalid(
                        "task",
                        format!(
                            "task (max_retrieval): {} distinct items need task.vocab > {} (items are 1..vocab): raise task.vocab",
                            longest - 1,
                            longest - 1
                        ),
                    ));
                }
                if longest > self.model.max_seq_len {
                    return Err(invalid(
                        "task",
                        format!(
                            "task (max_retrieval): {} items and the query need {longest} positions but model.max_seq_len is {}: raise model.max_seq_len",
                            longest - 1,
                            self.model.max_seq_len
                        ),
                    ));
                }
                if longest - 1 > c.max_items
                    && self.model.positions == attnlab_model::position::PositionKind::Learned
                {
                    return Err(invalid(
                        "task.eval_items",
                        format!(
                            "task.eval_items: learned positions past the training length ({} items) are never trained: set model.positions = \"none\" (the items are a set)",
                            c.max_items
                        ),
                    ));
                }
            }
            TaskConfig::StateTracking(c) => {
                c.parsed().map_err(|message| invalid("task.problem", message.to_string()))?;
                let max = self.model.max_seq_len;
                if c.seq_len == 0 || c.seq_len > max {
                    return Err(invalid(
                        "task.seq_len",
                        format!(
                            "task.seq_len ({}) must be in 1..=model.max_seq_len ({max}): a sequence needs at least one element",
                            c.seq_len
                        ),
                    ));
                }
                if c.eval_examples == 0 {
                    return Err(ConfigError::Zero { key: "task.eval_examples" });
                }
                for &len in &c.eval_lengths {
                    if len == 0 || len > max {
                        return Err(invalid(
                            "task.eval_lengths",
                            format!(
                                "task.eval_lengths: {len} must be in 1..=model.max_seq_len ({max}): raise model.max_seq_len to the longest evaluation length"
                            ),
                        ));
                    }
                    self.refuse_learned_positions_past(c.seq_len, len)?;
                }
            }
            TaskConfig::Needle(c) => {
                c.check(self.model.max_seq_len).map_err(|(key, message)| invalid(key, message))?;
                for &len in &c.eval_lengths {
                    self.refuse_learned_positions_past(c.seq_len, len)?;
                }
            }
            TaskConfig::Mad(c) => {
                if let Some((key, message)) = c.refusal() {
                    return Err(invalid(key, message));
                }
                let (len, max) = (c.input_len(), self.model.max_seq_len);
                if len > max {
                    return Err(invalid(
                        "task.seq_len",
                        format!(
                            "task.seq_len ({}) gives sequences of {len} tokens but model.max_seq_len is {max}: raise model.max_seq_len to {len}",
                            c.seq_len
                        ),
                    ));
                }
            }
            TaskConfig::Separation(c) => {
                if c.rows < 2 || c.cols == 0 || c.eval_examples == 0 {
                    return Err(invalid(
                        "task.rows",
                        "task.rows must be >= 2, task.cols and task.eval_examples >= 1",
                    ));
                }
                if c.rows > self.model.max_seq_len {
                    return Err(invalid(
                        "task.rows",
                        format!(
                            "task.rows ({}) exceeds model.max_seq_len ({})",
                            c.rows, self.model.max_seq_len
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Learned position embeddings past the training length are never trained: evaluating a
    /// sequence task there would measure untrained weights, so it is refused.
    fn refuse_learned_positions_past(&self, trained: usize, len: usize) -> Result<(), ConfigError> {
        if len > trained && self.model.positions == attnlab_model::position::PositionKind::Learned {
            return Err(invalid(
                "task.eval_lengths",
                format!(
                    "task.eval_lengths: learned positions past the training length ({trained}) are never trained, so they cannot extrapolate to {len}: \
                 set model.positions = \"none\", \"rope\" or \"sinusoidal\""
                ),
            ));
        }
        Ok(())
    }

    /// The devices this run trains on, in rank order: `devices`, or `device` alone.
    pub fn device_list(&self) -> DeviceList {
        self.devices.clone().unwrap_or_else(|| DeviceList::single(self.device))
    }

    /// What defines the model and its data (seed, task, model, batch size, accumulation and the
    /// evaluation set), as JSON: a resume must find it unchanged. The step budget, schedule,
    /// logging, checkpointing and device may change between sessions of one run.
    pub fn identity(&self) -> serde_json::Value {
        let t = &self.train;
        let mut model = serde_json::to_value(&self.model).expect("the model config serialises");
        // Runs started before `model.init` existed recorded no such key and mean the default.
        if self.model.init.is_default() {
            model.as_object_mut().map(|m| m.remove("init"));
        }
        serde_json::json!({
            "seed": self.seed,
            "task": self.task,
            "model": model,
            "train": { "batch_size": t.batch_size, "grad_accum": t.grad_accum, "eval_batches": t.eval_batches },
        })
    }

    /// The keys whose values differ between two [`identity`](Self::identity) values, as
    /// `key: before -> after`.
    pub fn identity_changes(before: &serde_json::Value, after: &serde_json::Value) -> Vec<String> {
        fn flatten(
            prefix: &str,
            v: &serde_json::Value,
            out: &mut std::collections::BTreeMap<String, String>,
        ) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        flatten(
                            &if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") },
                            v,
                            out,
                        );
                    }
                }
                other => {
                    out.insert(prefix.to_string(), other.to_string());
                }
            }
        }
        let (mut a, mut b) = (Default::default(), Default::default());
        flatten("", before, &mut a);
        flatten("", after, &mut b);
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        let show = |m: &std::collections::BTreeMap<String, String>, k: &String| {
            m.get(k).cloned().unwrap_or_else(|| "(unset)".into())
        };
        keys.into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| format!("{k}: {} -> {}", show(&a, k), show(&b, k)))
            .collect()
    }

    /// The config as TOML, as saved in the run directory.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a config always serialises")
    }
}

/// The dotted key (`train.steps`) of the TOML line holding byte `offset` of `text`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let key = text[line_start..].lines().next()?.split('=').next()?.trim();
    let table = before[..line_start]
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']').map(str::to_string));
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

fn check_fraction(f: f64) -> Result<(), ConfigError> {
    if f > 0.0 && f < 0.5 {
        Ok(())
    } else {
        Err(invalid("task.val_fraction", format!("task.val_fraction ({f}) must be in (0, 0.5)")))
    }
}

fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Sets `key` in `tree`. A missing last key is inserted and its would-be error returned, for
/// the caller to raise if the config then refuses it (a key left out at its default is valid):
/// the key, the table it would be in, and the keys that table has.
type PendingKey = (String, String, Vec<String>);

fn set_path(
    tree: &mut toml::Value,
    key: &str,
    value: toml::Value,
) -> Result<Option<PendingKey>, ConfigError> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = tree;
    for (i, part) in parts.iter().enumerate() {
        let table = node.as_table_mut().ok_or_else(|| ConfigError::NotATable {
            key: key.to_string(),
            table: parts[..i].join("."),
        })?;
        let last = i + 1 == parts.len();
        // `task.kind` may switch the task; other keys must already exist.
        let switches_task = last && *part == "kind";
        let missing = !table.contains_key(*part) && !switches_task;
        let unknown = || {
            let mut valid: Vec<String> = table.keys().cloned().collect();
            valid.sort();
            let place = if i == 0 {
                "the top level".to_string()
            } else {
                format!("[{}]", parts[..i].join("."))
            };
            (key.to_string(), place, valid)
        };
        if missing && !last {
            let (key, place, valid) = unknown();
            return Err(ConfigError::UnknownKey { key, place, valid });
        }
        if last {
            let pending = missing.then(unknown);
            table.insert(part.to_string(), value);
            return Ok(pending);
        }
        node = table.get_mut(*part).expect("checked");
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[task]\nkind = \"char_lm\"\n";

    /// Keys a config leaves out at their default (`model.mlp`, `model.n_kv_heads`) are still
    /// `--set`-able; a key no table knows is still refused, naming the keys that exist.
    #[test]
    fn set_reaches_keys_left_out_at_their_default_and_refuses_unknown_ones() {
        let sets = ["model.mlp=swiglu".to_string(), "model.n_kv_heads=2".to_string()];
        let c = RunConfig::from_toml(MINIMAL, &sets).unwrap();
        assert_eq!(c.model.mlp, attnlab_model::block::MlpKind::Swiglu);
        assert_eq!(c.model.n_kv_heads, 2);
        let err = RunConfig::from_toml(MINIMAL, &["model.colour=red".to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.colour") && err.contains("d_model"), "{err}");
    }

    #[test]
    fn minimal_config_gets_nanogpt_defaults() {
        let c = RunConfig::from_toml(MINIMAL, &[]).unwrap();
        assert_eq!(c.seed, 1337);
        assert_eq!(c.model.d_model, 128);
        assert_eq!(c.train.batch_size, 12);
        assert_eq!(c.task.name(), "char_lm");
    }

    #[test]
    fn overrides_change_values_of_any_type() {
        let c = RunConfig::from_toml(
            MINIMAL,
            &[
                "train.lr=3e-4".into(),
                "model.mixer=softmax,linear:elu1,linear:elu1,linear:elu1".into(),
                "model.causal=true".into(),
                "seed=7".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.train.lr, 3e-4);
        assert_eq!(c.model.mixer.0.len(), 4);
        assert_eq!(c.seed, 7);
    }

    #[test]
    fn unknown_keys_name_the_valid_choices() {
        let err = RunConfig::from_toml(MINIMAL, &["train.learning_rate=1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key 'train.learning_rate'") && err.contains("lr"), "{err}");
        let err = RunConfig::from_toml("[task]\nkind = \"char_lm\"\n[train]\nlr2 = 1\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lr2") && err.contains("expected one of"), "{err}");
        let err = RunConfig::from_toml("[task]\nkind = \"poetry\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("char_lm") && err.contains("mqar"), "{err}");
    }

    #[test]
    fn ill_typed_and_unworkable_values_are_errors() {
        let cases = [
            ("train.steps=many", "steps"),
            ("model.mixer=linear:elu1:chunk=0", "chunk"),
            ("model.mixer=softmax:bogus", "scaling"),
            ("train.batch_size=0", "train.batch_size is 0"),
            ("device=tpu", "device"),
            ("train.min_lr=1", "min_lr"),
        ];
        for (set, needle) in cases {
            let err = RunConfig::from_toml(MINIMAL, &[set.into()]).unwrap_err().to_string();
            assert!(err.contains(needle), "{set}: {err}");
            assert!(!err.contains('\n'), "{set}: error spans lines: {err}");
        }
    }

    /// A model that cannot be built is refused when its config is read, not when its run starts:
    /// a comparison plans every arm through `validate`, so a bad arm costs one line, not a failed
    /// run after the others trained.
    #[test]
    fn models_that_cannot_be_built_are_refused_when_read() {
        let cases: [(&[&str], &str); 3] = [
            (&["model.n_heads=3"], "n_heads"),
            (&["model.mixer=softmax,linear:elu1"], "n_layers"),
            (&["model.positions=rope", "model.mixer=linear:taylor:feature_dim=6"], "feature_dim"),
        ];
        for (sets, needle) in cases {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            let err = RunConfig::from_toml(MINIMAL, &sets).unwrap_err().to_string();
            assert!(err.contains(needle), "{sets:?}: {err}");
            assert!(!err.contains('\n'), "{sets:?}: error spans lines: {err}");
        }
        // The narrower query Based projects to is rotated by its own width's RoPE when that
        // width divides the head's (32 here).
        let ok = RunConfig::from_toml(
            MINIMAL,
            &["model.positions=rope".into(), "model.mixer=linear:taylor:feature_dim=8".into()],
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    /// Length generalisation on MQAR: the pairs scale with the length, and the lengths a model
    /// cannot be evaluated at are refused with the key and the fix named.
    #[test]
    fn mqar_eval_lengths_are_checked() {
        const MQAR: &str = "[task]\nkind = \"mqar\"\nvocab = 128\nseq_len = 32\nnum_kv_pairs = 4\n[model]\nmax_seq_len = 256\npositions = \"none\"\n";
        let ok = RunConfig::from_toml(MQAR, &["task.eval_lengths=[64, 256]".into()]).unwrap();
        let TaskConfig::Mqar(c) = &ok.task else { panic!("mqar") };
        assert_eq!((c.pairs_at(32), c.pairs_at(64), c.pairs_at(256), c.pairs_at(8)), (4, 8, 32, 1));
        for (set, needle) in [
            ("task.eval_lengths=[512]", "exceeds model.max_seq_len (256)"),
            ("task.eval_lengths=[65]", "must be even"),
            ("model.positions=\"learned\"", "learned positions past the training length (32)"),
            ("task.rebind_pairs=5", "task.rebind_pairs (5) cannot exceed task.num_kv_pairs (4)"),
        ] {
            let overrides = if set.starts_with("task.") {
                vec![set.to_string()]
            } else {
                vec!["task.eval_lengths=[64]".to_string(), set.to_string()]
            };
            let err = RunConfig::from_toml(MQAR, &overrides).unwrap_err().to_string();
            assert!(err.contains(needle), "{set}: {err}");
        }
        let err =
            RunConfig::from_toml(MQAR, &["task.vocab=64".into(), "task.eval_lengths=[256]".into()])
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("holds 32 pairs") && err.contains("raise task.vocab above 65"),
            "{err}"
        );
    }

    /// The character LM trains at `task.seq_len` and scores position buckets up to the longest
    /// evaluation length; lengths it cannot be evaluated at are refused, naming the fix.
    #[test]
    fn char_lm_eval_lengths_are_checked() {
        const LM: &str = "[task]\nkind = \"char_lm\"\nseq_len = 32\neval_lengths = [32, 64, 128]\n[model]\nmax_seq_len = 128\npositions = \"rope\"\n";
        let ok = RunConfig::from_toml(LM, &[]).unwrap();
        let TaskConfig::CharLm(c) = &ok.task else { panic!("char_lm") };
        assert_eq!((c.train_len(128), TextConfig::default().train_len(128)), (32, 128));
        assert_eq!(RunConfig::from_toml(&ok.to_toml(), &[]).unwrap(), ok);
        for (set, needle) in [
            ("task.seq_len=256", "task.seq_len (256) must be in 1..=model.max_seq_len (128)"),
            ("task.eval_lengths=[64, 32]", "must be positive and increasing, e.g. [32, 64, 128]"),
            ("task.eval_lengths=[32, 256]", "256 exceeds model.max_seq_len (128)"),
            (
                "model.positions=\"learned\"",
                "learned positions past the training length (32) are never trained, so they cannot extrapolate to 128",
            ),
        ] {
            let err = RunConfig::from_toml(LM, &[set.to_string()]).unwrap_err().to_string();
            assert!(err.contains(needle), "{set}: {err}");
        }
    }

    /// Max retrieval: item counts past the context or past the training range under learned
    /// positions are refused, naming the key and the fix.
    #[test]
    fn max_retrieval_item_counts_are_checked() {
        const TASK: &str = "[task]\nkind = \"max_retrieval\"\nvocab = 128\nmax_items = 8\neval_items = [8, 64]\n[model]\nmax_seq_len = 65\npositions = \"none\"\n";
        assert_eq!(RunConfig::from_toml(TASK, &[]).unwrap().task.name(), "max_retrieval");
        for (set, needle) in [
            ("model.max_seq_len=64", "64 items and the query need 65 positions"),
            ("model.positions=\"learned\"", "learned positions past the training length (8 items)"),
            ("task.min_items=9", "min_items <= max_items"),
            ("task.vocab=64", "64 distinct items need task.vocab > 64"),
        ] {
            let err = RunConfig::from_toml(TASK, &[set.to_string()]).unwrap_err().to_string();
            assert!(err.contains(needle), "{set}: {err}");
        }
    }

    /// State tracking: the problem names a group attnlab can build, the lengths fit the model,
    /// and each impossible setting is refused in one line naming the key and the fix.
    #[test]
    fn state_tracking_settings_are_checked() {
        const TASK: &str = "[task]\nkind = \"state_tracking\"\nproblem = \"s5\"\nseq_len = 16\neval_lengths = [32, 128]\n[model]\nmax_seq_len = 128\npositions = \"none\"\n";
        let ok = RunConfig::from_toml(TASK, &[]).unwrap();
        let TaskConfig::StateTracking(c) = &ok.task else { panic!("state_tracking") };
        assert_eq!(c.parsed(), Ok(Problem::Symmetric(5)));
        assert_eq!(RunConfig::from_toml(&ok.to_toml(), &[]).unwrap(), ok);
        for (problem, parsed, states) in [
            ("parity", Problem::Parity, 2),
            ("mod2", Problem::Modular(2), 2),
            ("mod3", Problem::Modular(3), 3),
            ("mod5", Problem::Modular(5), 5),
            ("s3", Problem::Symmetric(3), 6),
            ("s5", Problem::Symmetric(5), 120),
            ("s7", Problem::Symmetric(7), MAX_STATES),
        ] {
            let p: Problem = problem.parse().unwrap();
            assert_eq!((p, p.states(), p.to_string()), (parsed, states, problem.to_string()));
        }
        for (set, needle) in [
            ("task.problem=mod1", "task.problem: modulus 1 is below 2"),
            ("task.problem=mod0", "task.problem: modulus 0 is below 2"),
            ("task.problem=s1", "task.problem: s1 has a single element"),
            ("task.problem=a5", "task.problem: unknown problem 'a5': expected parity, mod<m>"),
            ("task.problem=mod", "task.problem: unknown problem 'mod'"),
            ("task.problem=s8", "task.problem: s8 has 8! states, more than the 5040 tokens"),
            ("task.problem=s40", "task.problem: s40 has 40! states"),
            ("task.problem=mod5041", "task.problem: mod5041 has 5041 states"),
            ("task.seq_len=0", "task.seq_len (0) must be in 1..=model.max_seq_len (128)"),
            ("task.seq_len=129", "task.seq_len (129) must be in 1..=model.max_seq_len (128)"),
            ("task.eval_lengths=[0]", "task.eval_lengths: 0 must be in 1..=model.max_seq_len"),
            ("task.eval_lengths=[256]", "task.eval_lengths: 256 must be in 1..=model.max_seq_len"),
            ("task.eval_examples=0", "task.eval_examples is 0"),
            ("model.positions=\"learned\"", "learned positions past the training length (16)"),
        ] {
            let err = RunConfig::from_toml(TASK, &[set.to_string()]).unwrap_err().to_string();
            assert!(err.contains(needle), "{set}: {err}");
            assert!(!err.contains('\n'), "{set}: error spans lines: {err}");
        }
    }

    /// Needle settings that cannot make a sequence are refused, one line each, naming the key.
    #[test]
    fn needle_settings_are_checked() {
        const TASK: &str = "[task]\nkind = \"needle\"\nproblem = \"multikey\"\nneedles = 4\nseq_len = 64\neval_lengths = [128]\n[model]\nmax_seq_len = 128\npositions = \"rope\"\n";
        let ok = RunConfig::from_toml(TASK, &[]).unwrap();
        let TaskConfig::Needle(c) = &ok.task else { panic!("needle") };
        assert_eq!(c.parsed(), Ok(NeedleProblem::MultiKey));
        assert_eq!(c.vocab(), 2 + 16 + 16 + 32);
        assert_eq!(RunConfig::from_toml(&ok.to_toml(), &[]).unwrap(), ok);
        for (set, needle) in [
            ("task.problem=\"haystack\"", "task.problem: unknown needle problem 'haystack'"),
            ("task.problem=\"single\"", "task.needles (4): single hides one needle"),
            ("task.needles=1", "task.needles (1): multikey needs at least 2"),
            ("task.needles=0", "task.needles is 0"),
            ("task.keys=3", "task.keys (3) is below the 4 distinct ones multikey needs"),
            ("task.filler=0", "task.filler is 0"),
            ("task.seq_len=15", "task.seq_len: length 15 cannot hold 15 needle and query tokens"),
            ("task.eval_lengths=[256]", "task.eval_lengths: length 256 exceeds model.max_seq_len"),
            ("task.eval_examples=0", "task.eval_examples is 0"),
            ("model.positions=\"learned\"", "learned positions past the training length (64)"),
        ] {
            let err = RunConfig::from_toml(TASK, &[set.to_string()]).unwrap_err().to_string();
            assert!(err.contains(needle), "{set}: {err}");
            assert!(!err.contains('\n'), "{set}: error spans lines: {err}");
        }
        // vartrack needs two chains of distinct variables and two values.
        let vt = ["task.problem=\"vartrack\"".to_string(), "task.needles=9".to_string()];
        let err = RunConfig::from_toml(TASK, &vt).unwrap_err().to_string();
        assert!(
            err.contains("task.keys (16) is below the 18 distinct ones vartrack needs"),
            "{err}"
        );
    }

    /// MAD: the defaults are the in-context recall baseline, every problem's MAD baseline
    /// loads, and each impossible setting is refused in one line naming the key and the fix.
    #[test]
    fn mad_settings_are_checked() {
        const TASK: &str = "[task]\nkind = \"mad\"\n[model]\nmax_seq_len = 256\n";
        let ok = RunConfig::from_toml(TASK, &[]).unwrap();
        let TaskConfig::Mad(c) = &ok.task else { panic!("mad") };
        assert_eq!(c, &MadConfig::default());
        assert_eq!(
            (c.problem, c.vocab_size, c.seq_len, c.num_train_examples, c.multi_query),
            (MadProblem::InContextRecall, 16, 128, 12_800, true)
        );
        assert_eq!((c.input_len(), c.data_vocab()), (127, 16));
        for p in MAD_PROBLEMS {
            assert_eq!(MadProblem::try_from(String::from(p)), Ok(p));
        }
        assert_eq!(RunConfig::from_toml(&ok.to_toml(), &[]).unwrap(), ok);
        // MAD's baselines (configs/tasks/*.yml), as configs/mad.toml lists them.
        for sets in [
            &["task.problem=fuzzy_recall", "task.k_motif_size=3", "task.v_motif_size=3"][..],
            &[
                "task.problem=noisy_recall",
                "task.vocab_size=32",
                "task.noise_vocab_size=16",
                "task.frac_noise=0.2",
            ],
            &["task.problem=selective_copying", "task.seq_len=256", "task.num_tokens_to_copy=16"],
            &[
                "task.problem=memorization",
                "task.vocab_size=256",
                "task.seq_len=32",
                "task.num_train_examples=256",
            ],
            &["task.problem=compression", "task.seq_len=32"],
        ] {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            RunConfig::from_toml(TASK, &sets).unwrap_or_else(|e| panic!("{sets:?}: {e}"));
        }
        for (sets, needle) in [
            (
                &["task.problem=recall"][..],
                "task.problem: unknown problem 'recall': expected one of in_context_recall, fuzzy_recall, noisy_recall, selective_copying, compression, memorization",
            ),
            (&["task.seq_len=127"], "task.seq_len (127) must be even and at least 4"),
            (&["task.seq_len=2"], "task.seq_len (2) must be even and at least 4"),
            (&["task.vocab_size=1"], "task.vocab_size (1) leaves 1 key/value/data tokens"),
            (
                &["task.multi_query=false", "task.vocab_size=2"],
                "raise task.vocab_size to 3 or more",
            ),
            (
                &["task.noise_vocab_size=15"],
                "task.vocab_size (16) leaves 1 key/value/data tokens after the specials and task.noise_vocab_size (15)",
            ),
            (
                &["task.frac_noise=1.0", "task.noise_vocab_size=4"],
                "task.frac_noise (1) must be in [0, 1)",
            ),
            (&["task.frac_noise=-0.1"], "task.frac_noise (-0.1) must be in [0, 1)"),
            (&["task.frac_noise=0.2"], "task.frac_noise is 0.2 but task.noise_vocab_size is 0"),
            (&["task.eval_examples=0"], "task.eval_examples is 0"),
            (
                &["task.k_motif_size=3"],
                "task.k_motif_size / task.v_motif_size apply to fuzzy_recall only",
            ),
            (
                &["task.num_tokens_to_copy=4"],
                "task.num_tokens_to_copy applies to selective_copying only",
            ),
            (
                &["task.seq_len=512"],
                "task.seq_len (512) gives sequences of 511 tokens but model.max_seq_len is 256: raise model.max_seq_len to 511",
            ),
            (
                &["task.problem=fuzzy_recall", "task.k_motif_size=9", "task.v_motif_size=3"],
                "fuzzy_recall needs at least 18: raise task.vocab_size to 19 or more",
            ),
            (&["task.problem=fuzzy_recall", "task.k_motif_size=0"], "must be at least 1"),
            (
                &[
                    "task.problem=fuzzy_recall",
                    "task.k_motif_size=3",
                    "task.v_motif_size=3",
                    "task.seq_len=12",
                ],
                "task.seq_len (12) must exceed 2·(k_motif_size + v_motif_size) = 12",
            ),
            (&["task.problem=selective_copying"], "task.num_tokens_to_copy is 0"),
            (
                &["task.problem=selective_copying", "task.num_tokens_to_copy=64"],
                "task.num_tokens_to_copy (64) needs task.seq_len > 2·64 + 1 = 129",
            ),
            (
                &[
                    "task.problem=selective_copying",
                    "task.num_tokens_to_copy=2",
                    "task.vocab_size=3",
                ],
                "selective_copying needs at least 2: raise task.vocab_size to 4 or more",
            ),
            (
                &[
                    "task.problem=selective_copying",
                    "task.num_tokens_to_copy=2",
                    "task.noise_vocab_size=2",
                ],
                "selective_copying has no noise",
            ),
            (&["task.problem=memorization", "task.seq_len=31"], "task.seq_len (31) must be even"),
            (
                &["task.problem=memorization", "task.vocab_size=2"],
                "memorization needs at least 2: raise task.vocab_size to 3 or more",
            ),
            (
                &["task.problem=compression", "task.seq_len=1"],
                "task.seq_len (1) must be at least 2",
            ),
        ] {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            let err = RunConfig::from_toml(TASK, &sets).unwrap_err().to_string();
            assert!(err.contains(needle), "{sets:?}: {err}");
            assert!(!err.contains('\n'), "{sets:?}: error spans lines: {err}");
        }
    }

    /// A bad --set value is reported at its key and --set, never at a line of the internal
    /// document the overrides are applied to.
    #[test]
    fn bad_set_values_name_their_key() {
        for (set, needle) in [
            (
                "train.steps=many",
                "--set train.steps=many: invalid type: string \"many\", expected usize",
            ),
            ("model.mixer=3", "--set model.mixer=3:"),
            ("model.d_model=-4", "--set model.d_model=-4:"),
        ] {
            let err = RunConfig::from_toml(MINIMAL, &[set.to_string()]).unwrap_err().to_string();
            assert!(err.contains(needle) && !err.contains("line "), "{set}: {err}");
        }
        let text = "seed = 1\n[train]\nlr = 0.1\nsteps = 5\n";
        assert_eq!(key_at(text, text.find("5").unwrap()).as_deref(), Some("train.steps"));
        assert_eq!(key_at(text, 3).as_deref(), Some("seed"));
    }

    #[test]
    fn saved_config_round_trips() {
        let c = RunConfig::from_toml(MINIMAL, &["model.mixer=linear:taylor".into()]).unwrap();
        assert_eq!(RunConfig::from_toml(&c.to_toml(), &[]).unwrap(), c);
    }

    /// A preset's data path is read beside the preset, from any working directory; with nothing
    /// there it stays as written (the working directory's, as older presets and runs mean it).
    #[test]
    fn data_paths_resolve_beside_the_preset() {
        let dir = std::env::temp_dir().join(format!("attnlab-config-paths-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("presets")).unwrap();
        std::fs::write(dir.join("corpus.txt"), "hello").unwrap();
        let preset = dir.join("presets/p.toml");
        std::fs::write(&preset, "[task]\nkind = \"char_lm\"\npath = \"../corpus.txt\"\n").unwrap();
        let c = RunConfig::load(&preset, &[]).unwrap();
        let TaskConfig::CharLm(t) = &c.task else { panic!("char_lm") };
        assert!(t.path.is_absolute(), "{}", t.path.display());
        assert_eq!(std::fs::read_to_string(&t.path).unwrap(), "hello");
        std::fs::write(&preset, "[task]\nkind = \"bpe_lm\"\npath = \"datasets/elsewhere.txt\"\n")
            .unwrap();
        let TaskConfig::BpeLm(t) = RunConfig::load(&preset, &[]).unwrap().task else {
            panic!("bpe_lm")
        };
        assert_eq!(t.path, PathBuf::from("datasets/elsewhere.txt"));
        std::fs::remove_dir_all(dir).ok();
    }

    /// A run started before `model.init` existed recorded an identity without it; the default
    /// init must give that same identity, so such runs still resume, and gpt2 must not.
    #[test]
    fn the_default_init_keeps_older_identities() {
        let c = RunConfig::from_toml(MINIMAL, &[]).unwrap();
        assert!(c.identity()["model"].get("init").is_none());
        assert!(c.to_toml().contains("init = \"burn\""));
        let g = RunConfig::from_toml(MINIMAL, &["model.init=gpt2".into()]).unwrap();
        assert_eq!(RunConfig::identity_changes(&c.identity(), &g.identity()).len(), 1);
    }
}
