//! What a comparison runs: the comparison file ([`CompareSpec`], one [`ArmSpec`] per arm), the
//! presets behind `--task`, the typed [`Comparison`] a file resolves to, and its plan: one
//! [`PlannedRun`] per arm, learning rate and seed, each config validated before any training.

use super::error::CompareError;
use attnlab_train::RunConfig;
use attnlab_train::message::one_line;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One arm: a name and the config overrides that make it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmSpec {
    pub name: String,
    #[serde(default)]
    pub set: Vec<String>,
}

/// A whole comparison, as read from its TOML file or built from command-line flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareSpec {
    pub preset: PathBuf,
    #[serde(default)]
    pub set: Vec<String>,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    #[serde(default)]
    pub lrs: Vec<f64>,
    #[serde(default)]
    pub target: Option<f64>,
    #[serde(default)]
    pub baseline: Option<String>,
    /// Config keys swept for every arm, each over a list of values: `model.d_model = [32, 64]`
    /// under `[grid]` makes every `[[arm]]` into one arm per value (every combination, for
    /// several keys), named `<arm> d_model=32`. Each is judged against the baseline arm at the
    /// same grid point.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub grid: toml::Table,
    /// `[slurm]`: resources for `--executor slurm` (its flags override them). Not part of what
    /// the comparison is, so changing them between submissions is allowed.
    #[serde(default)]
    pub slurm: SlurmOptions,
    #[serde(rename = "arm")]
    pub arms: Vec<ArmSpec>,
}

fn default_seeds() -> Vec<u64> {
    vec![1, 2, 3]
}

/// The preset a task name maps to for `attnlab compare --task NAME` (the one-minute presets).
pub fn task_preset(task: &str) -> Result<PathBuf, CompareError> {
    let name = match task {
        "mqar" => "mqar",
        "icl" | "icl_regression" | "icl-regression" => "icl-regression",
        "char" | "char_lm" | "shakespeare-char" => "shakespeare-char",
        "bpe" | "bpe_lm" | "shakespeare-bpe" => "shakespeare-bpe",
        "separation" => "separation",
        "max_retrieval" | "max-retrieval" => "max-retrieval",
        "state_tracking" | "state-tracking" => "state-tracking",
        "needle" => "needle",
        "mad" => "mad",
        other => return Err(CompareError::UnknownTask { task: other.to_string() }),
    };
    Ok(PathBuf::from(format!("configs/{name}-smoke.toml")))
}

impl CompareSpec {
    /// Reads a comparison file.
    pub fn load(path: &Path) -> Result<Self, CompareError> {
        // `configs/compare/...` not on disk is the copy built into the binary.
        let text = attnlab_train::presets::read(path)
            .map_err(|reason| CompareError::ReadSpec { path: path.into(), reason })?;
        let mut spec: CompareSpec = toml::from_str(&text).map_err(|e| CompareError::ParseSpec {
            path: path.into(),
            message: one_line(&e.to_string()),
        })?;
        // Relative to the comparison file, so it runs from any working directory.
        spec.preset = attnlab_train::presets::resolve_beside(path, &spec.preset);
        Ok(spec)
    }

    /// Index of the baseline among the `[[arm]]`s (before the grid expands them).
    pub fn baseline_index(&self) -> Result<usize, CompareError> {
        match &self.baseline {
            None => Ok(0),
            Some(name) => self.arms.iter().position(|a| &a.name == name).ok_or_else(|| {
                CompareError::UnknownBaseline {
                    name: name.clone(),
                    arms: self.arms.iter().map(|a| a.name.clone()).collect(),
                }
            }),
        }
    }

    /// Reads the preset once and applies the file's overrides, shared, per arm and per grid
    /// point, to a copy of it for each arm (together, so validation sees the finished arm).
    pub fn resolve(&self) -> Result<Comparison, CompareError> {
        let baseline = self.baseline_index()?;
        let points = grid_points(&self.grid)?;
        let preset = RunConfig::read(&self.preset).map_err(CompareError::Preset)?;
        let mut arms = Vec::with_capacity(self.arms.len() * points.len());
        for arm in &self.arms {
            for point in &points {
                let point_sets = point.iter().map(|(key, value)| format!("{key}={value}"));
                let sets: Vec<String> =
                    self.set.iter().chain(&arm.set).cloned().chain(point_sets).collect();
                let (name, grid) = if point.is_empty() {
                    (arm.name.clone(), None)
                } else {
                    (
                        format!("{} {}", arm.name, point_label(point)),
                        Some(GridPoint { arm: arm.name.clone(), point: point.clone() }),
                    )
                };
                let config = preset.clone().with_overrides(&sets).map_err(|e| {
                    CompareError::ArmOverrides {
                        arm: name.clone(),
                        preset: self.preset.clone(),
                        error: Box::new(e),
                    }
                })?;
                arms.push(Arm { name, config, grid });
            }
        }
        let baseline = baseline * points.len();
        Ok(Comparison {
            title: String::new(),
            seeds: self.seeds.clone(),
            lrs: self.lrs.clone(),
            target: self.target,
            baseline,
            arms,
        })
    }

    /// Resolves every run's config up front, so a bad override fails before any training.
    pub fn plan(&self) -> Result<Vec<PlannedRun>, CompareError> {
        self.resolve()?.plan()
    }
}

/// A comparison ready to run: every arm's config resolved and typed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    /// The report's title (empty: the caller names it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    pub seeds: Vec<u64>,
    /// Learning rates every arm is trained at; empty: each arm's own `train.lr`.
    pub lrs: Vec<f64>,
    /// Main-metric threshold for steps-to-target.
    pub target: Option<f64>,
    /// Index into `arms` of the arm the others are judged against.
    pub baseline: usize,
    pub arms: Vec<Arm>,
}

/// One arm of a comparison: its name and the config its runs start from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Arm {
    pub name: String,
    pub config: RunConfig,
    /// For an arm a `[grid]` made: the `[[arm]]` it came from and its grid point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<GridPoint>,
}

/// Where an arm sits in a comparison's `[grid]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridPoint {
    /// The `[[arm]]` the grid expanded.
    pub arm: String,
    /// `(config key, value)` for every grid key, in key order.
    pub point: Vec<(String, String)>,
}

/// Every combination of the grid's values (the last key varying fastest), each as
/// `(key, value)` pairs in key order; one empty point for an empty grid. Nested tables are
/// dotted keys (`[grid] model.d_model = [..]` is `model.d_model`).
fn grid_points(grid: &toml::Table) -> Result<Vec<Vec<(String, String)>>, CompareError> {
    let mut axes: Vec<(String, Vec<String>)> = Vec::new();
    flatten_grid("", grid, &mut axes)?;
    let mut points = vec![Vec::new()];
    for (key, values) in &axes {
        points = points
            .into_iter()
            .flat_map(|point: Vec<(String, String)>| {
                values.iter().map(move |v| {
                    let mut next = point.clone();
                    next.push((key.clone(), v.clone()));
                    next
                })
            })
            .collect();
    }
    Ok(points)
}

fn flatten_grid(
    prefix: &str,
    table: &toml::Table,
    axes: &mut Vec<(String, Vec<String>)>,
) -> Result<(), CompareError> {
    for (key, value) in table {
        let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) => flatten_grid(&key, inner, axes)?,
            toml::Value::Array(values) if !values.is_empty() => {
                if key == "seed" || key == "train.lr" {
                    let list = if key == "seed" { "seeds" } else { "lrs" };
                    return Err(CompareError::GridSweepsOwnKey { key, list });
                }
                let values = values
                    .iter()
                    .map(|v| match v {
                        toml::Value::String(s) => Ok(s.clone()),
                        toml::Value::Integer(_)
                        | toml::Value::Float(_)
                        | toml::Value::Boolean(_) => Ok(v.to_string()),
                        other => Err(CompareError::GridValue {
                            key: key.clone(),
                            found: other.type_str(),
                        }),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                axes.push((key, values));
            }
            _ => return Err(CompareError::GridNotAList { key }),
        }
    }
    Ok(())
}

/// `d_model=64 num_pairs=4`: each grid key by its last part, unless two keys share it.
fn point_label(point: &[(String, String)]) -> String {
    let short = |key: &str| key.rsplit('.').next().unwrap_or(key).to_string();
    point
        .iter()
        .map(|(key, value)| {
            let shared = point.iter().filter(|(other, _)| short(other) == short(key)).count() > 1;
            format!("{}={value}", if shared { key.clone() } else { short(key) })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Comparison {
    /// One arm per attention spec on the same base config: arm `name` is `base` with its
    /// `model.mixer` set to `mixer`. The first arm is the baseline.
    pub fn of_mixers(
        base: &RunConfig,
        arms: &[(&str, &str)],
        seeds: Vec<u64>,
        lrs: Vec<f64>,
    ) -> Result<Self, CompareError> {
        let arms = arms
            .iter()
            .map(|&(name, mixer)| {
                let mut config = base.clone();
                config.model.mixer = mixer
                    .parse()
                    .map_err(|error| CompareError::ArmMixer { arm: name.to_string(), error })?;
                Ok(Arm { name: name.to_string(), config, grid: None })
            })
            .collect::<Result<_, CompareError>>()?;
        Ok(Self { title: String::new(), seeds, lrs, target: None, baseline: 0, arms })
    }

    /// `attnlab compare --variants a,b`: one arm per variant on `preset` with the `--set`
    /// overrides, seeds `1..=seeds`.
    pub fn from_variants(
        preset: &Path,
        variants: &[String],
        seeds: usize,
        lrs: Vec<f64>,
        sets: &[String],
    ) -> Result<Self, CompareError> {
        let base = RunConfig::load(preset, sets).map_err(CompareError::Preset)?;
        let arms: Vec<(&str, &str)> = variants.iter().map(|v| (v.as_str(), v.as_str())).collect();
        Self::of_mixers(&base, &arms, (1..=seeds as u64).collect(), lrs)
    }

    /// The arm `arm` is judged against: the baseline, or for an arm of a `[grid]`, the
    /// baseline's arm at the same grid point.
    pub fn baseline_of(&self, arm: usize) -> usize {
        let base = &self.arms[self.baseline];
        let (Some(mine), Some(theirs)) = (&self.arms[arm].grid, &base.grid) else {
            return self.baseline;
        };
        self.arms
            .iter()
            .position(|a| {
                a.grid.as_ref().is_some_and(|g| g.arm == theirs.arm && g.point == mine.point)
            })
            .unwrap_or(self.baseline)
    }

    /// Every run's config: each arm's, at each learning rate and seed, validated before any
    /// training starts.
    pub fn plan(&self) -> Result<Vec<PlannedRun>, CompareError> {
        if self.arms.is_empty() {
            return Err(CompareError::NoArms);
        }
        if self.seeds.is_empty() {
            return Err(CompareError::NoSeeds);
        }
        if let Some(value) = self.target.filter(|t| !t.is_finite()) {
            return Err(CompareError::Target { value });
        }
        if let Some(&value) = self.lrs.iter().find(|lr| !(lr.is_finite() && **lr > 0.0)) {
            return Err(CompareError::LearningRate { value });
        }
        let mut names: Vec<&str> = self.arms.iter().map(|a| a.name.as_str()).collect();
        names.sort();
        names.dedup();
        if names.len() != self.arms.len() {
            return Err(CompareError::DuplicateArms);
        }
        if self.baseline >= self.arms.len() {
            return Err(CompareError::NoBaseline { index: self.baseline, arms: self.arms.len() });
        }
        let mut runs = Vec::new();
        for (index, arm) in self.arms.iter().enumerate() {
            let lrs =
                if self.lrs.is_empty() { vec![arm.config.train.lr] } else { self.lrs.clone() };
            for &lr in &lrs {
                for &seed in &self.seeds {
                    let mut config = arm.config.clone();
                    config.train.lr = lr;
                    // The decay floor may not exceed the peak, so a low lr lowers it too.
                    config.train.min_lr = config.train.min_lr.min(lr);
                    config.seed = seed;
                    config.validate().map_err(|e| CompareError::ArmConfig {
                        arm: arm.name.clone(),
                        error: Box::new(e),
                    })?;
                    runs.push(PlannedRun { arm: index, seed, lr, config });
                }
            }
        }
        Ok(runs)
    }
}

/// One training run of a comparison.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    pub arm: usize,
    pub seed: u64,
    pub lr: f64,
    pub config: RunConfig,
}

/// Resources and extras for the array's tasks: `[slurm]` in a comparison file, each overridden
/// by its `--slurm-*` flag.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmOptions {
    /// At most this many array tasks at once (`--array=...%M`).
    pub max_parallel: Option<usize>,
    /// CPUs per task (default 1); the run uses that many threads.
    pub cpus_per_task: Option<usize>,
    /// `--mem` per task (e.g. `4G`).
    pub mem: Option<String>,
    /// `--time` per task (e.g. `01:00:00`).
    pub time: Option<String>,
    pub partition: Option<String>,
    /// Further `#SBATCH` options, passed through as given (e.g. `--gres=gpu:1`, `--account=lab`).
    pub sbatch: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_files_parse_and_task_names_map_to_presets() {
        let spec: CompareSpec = toml::from_str(
            "preset = \"configs/mqar-smoke.toml\"\nseeds = [1, 2]\n[[arm]]\nname = \"a\"\nset = [\"model.mixer=softmax\"]\n[[arm]]\nname = \"b\"\n",
        )
        .unwrap();
        assert_eq!(spec.arms.len(), 2);
        assert_eq!(spec.baseline_index().unwrap(), 0);
        assert!(
            toml::from_str::<CompareSpec>("preset = \"x\"\nbogus = 1\n[[arm]]\nname = \"a\"\n")
                .is_err()
        );
        assert_eq!(task_preset("icl").unwrap(), PathBuf::from("configs/icl-regression-smoke.toml"));
        assert_eq!(task_preset("mad").unwrap(), PathBuf::from("configs/mad-smoke.toml"));
        assert_eq!(task_preset("needle").unwrap(), PathBuf::from("configs/needle-smoke.toml"));
        let unknown = task_preset("poetry").unwrap_err().to_string();
        assert!(unknown.contains("mqar") && unknown.contains("needle or mad"), "{unknown}");
        let bad = CompareSpec { baseline: Some("c".into()), ..spec };
        assert!(bad.baseline_index().unwrap_err().to_string().contains("a, b"));
    }

    #[test]
    fn typed_plan_matches_the_configs_the_override_strings_give() {
        let preset =
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/mqar-smoke.toml"));
        let spec = CompareSpec {
            preset: preset.clone(),
            set: vec!["train.steps=7".into(), "train.min_lr=1e-4".into()],
            seeds: vec![4, 9],
            lrs: vec![3e-3, 1e-5],
            target: None,
            baseline: Some("linear".into()),
            grid: Default::default(),
            slurm: Default::default(),
            arms: vec![
                ArmSpec { name: "softmax".into(), set: vec!["model.mixer=softmax".into()] },
                ArmSpec { name: "linear".into(), set: vec!["model.mixer=linear:elu1".into()] },
            ],
        };
        let comparison = spec.resolve().unwrap();
        assert_eq!(comparison.baseline, 1);
        // reproduce writes what ran as spec.toml.
        let written = toml::to_string(&comparison).unwrap();
        assert!(written.contains("[[arms]]") && written.contains("linear:elu1"), "{written}");
        let plan = comparison.plan().unwrap();
        assert_eq!(plan.len(), 8);
        for run in &plan {
            let arm = &spec.arms[run.arm];
            // What compare used to do: the preset re-read with every change as a --set string.
            let mut sets = [&spec.set[..], &arm.set[..]].concat();
            sets.push(format!("train.lr={:e}", run.lr));
            if run.lr < 1e-4 {
                sets.push(format!("train.min_lr={:e}", run.lr));
            }
            sets.push(format!("seed={}", run.seed));
            assert_eq!(
                run.config,
                RunConfig::load(&preset, &sets).unwrap(),
                "{} lr {} seed {}",
                arm.name,
                run.lr,
                run.seed
            );
        }
        // A TOML file can write `nan` and `inf`: refused before any run, naming the key.
        for (target, lrs, key) in
            [(Some(f64::NAN), vec![], "target NaN"), (None, vec![1e-3, f64::INFINITY], "lrs: inf")]
        {
            let bad = CompareSpec { target, lrs, ..spec.clone() };
            let err = bad.plan().unwrap_err().to_string();
            assert!(err.starts_with(key), "{err}");
        }
        let unknown = CompareSpec {
            arms: vec![ArmSpec { name: "x".into(), set: vec!["model.mixer=linear:gelu".into()] }],
            baseline: None,
            ..spec
        };
        let err = unknown.plan().unwrap_err().to_string();
        assert!(err.starts_with("arm 'x': ") && err.contains("mqar-smoke.toml"), "{err}");
        let base = RunConfig::load(&preset, &[]).unwrap();
        assert!(
            Comparison::of_mixers(&base, &[("y", "linear:gelu")], vec![1], vec![])
                .unwrap_err()
                .to_string()
                .starts_with("arm 'y': ")
        );
    }

    #[test]
    fn a_grid_makes_one_arm_per_point_judged_against_the_baseline_at_that_point() {
        let preset = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/mqar-smoke.toml");
        let file = |grid: &str| {
            format!(
                "preset = \"{preset}\"\nseeds = [1]\nbaseline = \"softmax\"\n[grid]\n{grid}\n[[arm]]\nname = \"linear\"\nset = [\"model.mixer=linear:elu1\"]\n[[arm]]\nname = \"softmax\"\n"
            )
        };
        let spec: CompareSpec =
            toml::from_str(&file("model.d_model = [32, 64]\ntask.num_kv_pairs = [2, 4]")).unwrap();
        let comparison = spec.resolve().unwrap();
        let names: Vec<&str> = comparison.arms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "linear d_model=32 num_kv_pairs=2",
                "linear d_model=32 num_kv_pairs=4",
                "linear d_model=64 num_kv_pairs=2",
                "linear d_model=64 num_kv_pairs=4",
                "softmax d_model=32 num_kv_pairs=2",
                "softmax d_model=32 num_kv_pairs=4",
                "softmax d_model=64 num_kv_pairs=2",
                "softmax d_model=64 num_kv_pairs=4",
            ]
        );
        let arm = &comparison.arms[2];
        let attnlab_train::TaskConfig::Mqar(task) = &arm.config.task else { panic!("mqar preset") };
        assert_eq!(
            (
                arm.config.model.d_model,
                task.num_kv_pairs,
                arm.config.model.mixer.to_string().as_str()
            ),
            (64, 2, "linear:elu1")
        );
        // The baseline is softmax at the first point; each arm is judged against softmax at its own.
        assert_eq!(comparison.baseline, 4);
        let baselines: Vec<usize> = (0..8).map(|a| comparison.baseline_of(a)).collect();
        assert_eq!(baselines, [4, 5, 6, 7, 4, 5, 6, 7]);
        assert_eq!(comparison.plan().unwrap().len(), 8);
        // Written and read back (comparison.json) it is the same comparison.
        let back: Comparison =
            serde_json::from_str(&serde_json::to_string(&comparison).unwrap()).unwrap();
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&comparison).unwrap()
        );

        let err = |grid: &str| {
            toml::from_str::<CompareSpec>(&file(grid)).unwrap().resolve().unwrap_err().to_string()
        };
        assert!(err("seed = [1, 2]").contains("`seeds` list"), "{}", err("seed = [1, 2]"));
        assert!(err("train.lr = [1e-3]").contains("`lrs` list"));
        assert!(err("model.d_model = []").contains("non-empty list"));
        assert!(err("model.d_model = 32").contains("model.d_model = [32, 64]"));
        assert!(err("model.bogus = [1]").contains("bogus"), "{}", err("model.bogus = [1]"));
    }
}
