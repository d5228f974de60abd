//! A comparison's plan on disk, the contract between its executors and its analysis.
//!
//! `comparison.json` is what was asked (the resolved [`Comparison`]); `plan.json` lists every run
//! it expands to, fully resolved: a stable index and id, the run directory (relative to the
//! report directory), a fingerprint of the config and the config itself. Any executor (this
//! process, `--jobs N` worker processes, a Slurm array task) runs an entry from `plan.json`
//! alone, and the analysis reads only the run directories the entries name, so it does not
//! matter which executor ran them.
//!
//! An entry's state is read from disk ([`RunStatus`]): finished (its `final/` checkpoint is of
//! the last step), failed (a `<run dir>.error` file beside the run directory holds the error),
//! started (interrupted or running) or queued.

use super::error::CompareError;
use super::spec::Comparison;
use attnlab_train::RunConfig;
use attnlab_train::run_dir::{LOCK_FILE, RunDirError, WriterLock, finished_state};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const COMPARISON_FILE: &str = "comparison.json";
pub const PLAN_FILE: &str = "plan.json";
/// Bumped when `plan.json`'s meaning changes.
pub const PLAN_FORMAT: u32 = 1;

/// One run of a comparison's plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanEntry {
    /// Position in the plan; a Slurm array task's `SLURM_ARRAY_TASK_ID`.
    pub index: usize,
    /// `<arm>/lr<lr>-seed<seed>`: the run directory under `runs/`, stable across reruns.
    pub id: String,
    pub arm: String,
    pub seed: u64,
    pub lr: f64,
    /// Run directory, relative to the report directory.
    pub dir: PathBuf,
    /// [`fingerprint`] of `config`.
    pub fingerprint: String,
    pub config: RunConfig,
}

#[derive(Serialize, Deserialize)]
struct PlanFile {
    format: u32,
    runs: Vec<PlanEntry>,
}

/// Where a planned run stands, as its directory shows it.
#[derive(Clone, Debug, PartialEq)]
pub enum RunStatus {
    /// Nothing written yet.
    Queued,
    /// Written but not finished: running now, or interrupted (a rerun resumes it).
    Started,
    Finished,
    /// The error the run stopped with (a rerun tries it again).
    Failed(String),
}

impl PlanEntry {
    pub fn run_dir(&self, out: &Path) -> PathBuf {
        out.join(&self.dir)
    }

    /// `<run dir>.error`: beside the run directory, not in it, so a run that failed before
    /// writing anything leaves its directory new or empty for the retry.
    pub fn error_file(&self, out: &Path) -> PathBuf {
        let mut name = self.dir.file_name().unwrap_or_default().to_os_string();
        name.push(".error");
        self.run_dir(out).with_file_name(name)
    }

    pub fn status(&self, out: &Path) -> RunStatus {
        let dir = self.run_dir(out);
        if finished_state(&dir, self.config.train.steps).is_some() {
            return RunStatus::Finished;
        }
        if let Ok(error) = std::fs::read_to_string(self.error_file(out)) {
            return RunStatus::Failed(error.trim().to_string());
        }
        if dir.join(attnlab_train::run_dir::CONFIG_FILE).is_file() {
            RunStatus::Started
        } else {
            RunStatus::Queued
        }
    }

    /// `softmax lr 1e-3 seed 2`, for progress lines.
    pub fn label(&self) -> String {
        format!("{} lr {:e} seed {}", self.arm, self.lr, self.seed)
    }
}

/// Every planned run of `spec`, in [`Comparison::plan`]'s order (arm, then lr, then seed).
pub fn entries(spec: &Comparison) -> Result<Vec<PlanEntry>, CompareError> {
    let runs = spec.plan()?;
    let entries: Vec<PlanEntry> = runs
        .into_iter()
        .enumerate()
        .map(|(index, run)| {
            let arm = spec.arms[run.arm].name.clone();
            let id = format!("{}/lr{:e}-seed{}", safe_name(&arm), run.lr, run.seed);
            PlanEntry {
                index,
                dir: Path::new("runs").join(&id),
                id,
                arm,
                seed: run.seed,
                lr: run.lr,
                fingerprint: fingerprint(&run.config),
                config: run.config,
            }
        })
        .collect();
    let mut ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(CompareError::SharedRunDir { id: pair[0].to_string() });
    }
    Ok(entries)
}

/// 64-bit FNV-1a of the config's TOML, as 16 hex digits: equal configs, equal fingerprints,
/// on every machine and build (unlike `std`'s hasher, whose algorithm may change).
pub fn fingerprint(config: &RunConfig) -> String {
    let hash = config
        .to_toml()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3));
    format!("{hash:016x}")
}

/// Takes the one-writer lock of the comparison directory `out` (an `flock` on the directory,
/// as for a run directory; see [`WriterLock`]), held until the returned lock is dropped.
/// Whoever prepares, runs or reports a comparison holds it; the `--run-only --index` workers
/// its executor starts do not (each run directory has its own lock).
pub fn lock_comparison(out: &Path) -> Result<WriterLock, CompareError> {
    WriterLock::take(out).map_err(|e| match e {
        RunDirError::Busy { holder, .. } => CompareError::Busy { out: out.to_path_buf(), holder },
        other => CompareError::Lock { out: out.to_path_buf(), reason: other.to_string() },
    })
}

/// What [`prepare_dir`] found, and the lock it took.
#[derive(Debug)]
pub struct Prepared {
    /// `out` already held this comparison (an interrupted or finished run of it): continued.
    pub resuming: bool,
    pub lock: WriterLock,
}

/// Prepares `out` for `spec` as its one writer: a new or empty directory gets the comparison
/// (`comparison.json`) and its plan (`plan.json`); one holding the same comparison (an
/// interrupted or finished run of this very comparison) is continued; anything else is
/// refused, untouched (the lock is taken only after that check, so a directory of someone
/// else's files gets no lock file either).
pub fn prepare_dir(spec: &Comparison, out: &Path) -> Result<Prepared, CompareError> {
    let comparison = serde_json::to_string_pretty(spec).expect("a comparison serialises");
    let plan =
        serde_json::to_string_pretty(&PlanFile { format: PLAN_FORMAT, runs: entries(spec)? })
            .expect("a plan serialises");
    let file = out.join(COMPARISON_FILE);
    let check = || -> Result<bool, CompareError> {
        match std::fs::read_to_string(&file) {
            Ok(saved) if saved != comparison => {
                Err(CompareError::OtherComparison { out: out.to_path_buf() })
            }
            Ok(_) => Ok(true),
            Err(_) => {
                // A writer that has just locked an empty directory leaves only these.
                let occupied = std::fs::read_dir(out)
                    .map(|d| {
                        d.flatten().any(|e| {
                            let name = e.file_name();
                            name != LOCK_FILE && !name.to_string_lossy().starts_with(".tmp-")
                        })
                    })
                    .unwrap_or(false);
                if occupied {
                    Err(CompareError::NotEmpty { out: out.to_path_buf() })
                } else {
                    Ok(false)
                }
            }
        }
    };
    check()?;
    std::fs::create_dir_all(out)
        .map_err(|reason| CompareError::Create { path: out.to_path_buf(), reason })?;
    let lock = lock_comparison(out)?;
    // Checked again under the lock: a writer that started first may have written by now.
    let resuming = check()?;
    if !resuming {
        write_atomic(&file, &comparison)?;
    }
    // Derived from the comparison, so (re)written whenever it is missing or stale.
    if std::fs::read_to_string(out.join(PLAN_FILE)).ok().as_deref() != Some(plan.as_str()) {
        write_atomic(&out.join(PLAN_FILE), &plan)?;
    }
    Ok(Prepared { resuming, lock })
}

/// The comparison in `out`, as [`prepare_dir`] wrote it.
pub fn read_comparison(out: &Path) -> Result<Comparison, CompareError> {
    read_json(out, COMPARISON_FILE)
}

/// The plan of the comparison in `out`.
pub fn read_plan(out: &Path) -> Result<Vec<PlanEntry>, CompareError> {
    let file: PlanFile = read_json(out, PLAN_FILE)?;
    if file.format != PLAN_FORMAT {
        return Err(CompareError::PlanFormat {
            path: out.join(PLAN_FILE),
            found: file.format,
            expected: PLAN_FORMAT,
        });
    }
    Ok(file.runs)
}

/// The JSON file `name` of the report directory `out`.
fn read_json<T: serde::de::DeserializeOwned>(out: &Path, name: &str) -> Result<T, CompareError> {
    let path = out.join(name);
    let text = std::fs::read_to_string(&path).map_err(|reason| CompareError::ReadPlan {
        path: path.clone(),
        out: out.to_path_buf(),
        reason,
    })?;
    serde_json::from_str(&text).map_err(|reason| CompareError::CorruptPlan { path, reason })
}

/// Writes `contents` to `path` through a temporary file beside it and a rename, so a reader
/// sees the old file or the new one, never half of one.
pub(crate) fn write_atomic(path: &Path, contents: &str) -> Result<(), CompareError> {
    let mut temp_name = std::ffi::OsString::from(".tmp-");
    temp_name.push(path.file_name().unwrap_or_default());
    temp_name.push(format!("-{}", std::process::id()));
    let temp = path.with_file_name(temp_name);
    std::fs::write(&temp, contents).and_then(|_| std::fs::rename(&temp, path)).map_err(|reason| {
        let _ = std::fs::remove_file(&temp);
        CompareError::Write { path: path.to_path_buf(), reason }
    })
}

/// `name` as a directory name: anything but ASCII letters, digits, `_` and `.` becomes `-`.
fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '.' { c } else { '-' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comparison(arms: &[(&str, &str)]) -> Comparison {
        let preset =
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/mqar-smoke.toml"));
        let base = RunConfig::load(preset, &[]).unwrap();
        Comparison::of_mixers(&base, arms, vec![1, 2], vec![1e-3]).unwrap()
    }

    #[test]
    fn entries_have_stable_ids_directories_and_fingerprints() {
        let spec = comparison(&[("soft max", "softmax"), ("linear", "linear:elu1")]);
        let plan = entries(&spec).unwrap();
        let ids: Vec<&str> = plan.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "soft-max/lr1e-3-seed1",
                "soft-max/lr1e-3-seed2",
                "linear/lr1e-3-seed1",
                "linear/lr1e-3-seed2"
            ]
        );
        assert!(
            plan.iter()
                .enumerate()
                .all(|(i, e)| e.index == i && e.dir == Path::new("runs").join(&e.id))
        );
        assert_eq!(
            plan[1].error_file(Path::new("/r")),
            Path::new("/r/runs/soft-max/lr1e-3-seed2.error")
        );
        // A fingerprint is a function of the config alone: 16 hex digits, equal for equal configs.
        assert!(
            plan.iter()
                .all(|e| e.fingerprint.len() == 16
                    && e.fingerprint == fingerprint(&e.config.clone()))
        );
        assert_ne!(plan[0].fingerprint, plan[1].fingerprint, "the seed is part of the config");
        assert_eq!(entries(&spec).unwrap(), plan, "the same comparison, the same plan");
        let clash = entries(&comparison(&[("a b", "softmax"), ("a-b", "sigmoid")]))
            .unwrap_err()
            .to_string();
        assert!(clash.contains("share the run directory runs/a-b/"), "{clash}");
    }

    #[test]
    fn a_report_directory_holds_one_comparison_and_its_plan() {
        let out = std::env::temp_dir().join(format!("attnlab-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let spec = comparison(&[("softmax", "softmax")]);
        let first = prepare_dir(&spec, &out).unwrap();
        assert!(!first.resuming, "a new directory");
        let err = prepare_dir(&spec, &out).err().unwrap().to_string();
        assert!(err.contains("is being written by another attnlab compare"), "{err}");
        drop(first);
        assert!(prepare_dir(&spec, &out).unwrap().resuming, "the same comparison continues");
        let plan = read_plan(&out).unwrap();
        assert_eq!(plan, entries(&spec).unwrap());
        assert_eq!(
            serde_json::to_string(&read_comparison(&out).unwrap()).unwrap(),
            serde_json::to_string(&spec).unwrap()
        );
        let other = comparison(&[("sigmoid", "sigmoid")]);
        assert!(
            prepare_dir(&other, &out).unwrap_err().to_string().contains("holds another comparison")
        );
        // A deleted plan.json is written again from comparison.json.
        std::fs::remove_file(out.join(PLAN_FILE)).unwrap();
        assert!(prepare_dir(&spec, &out).unwrap().resuming && read_plan(&out).unwrap() == plan);
        // Status from disk: queued, failed (its error file), started (a config), then queued
        // again once a retry clears the error.
        assert_eq!(plan[0].status(&out), RunStatus::Queued);
        std::fs::create_dir_all(plan[0].run_dir(&out)).unwrap();
        write_atomic(&plan[0].error_file(&out), "diverged at step 3\n").unwrap();
        assert_eq!(plan[0].status(&out), RunStatus::Failed("diverged at step 3".into()));
        std::fs::remove_file(plan[0].error_file(&out)).unwrap();
        std::fs::write(plan[0].run_dir(&out).join("config.toml"), plan[0].config.to_toml())
            .unwrap();
        assert_eq!(plan[0].status(&out), RunStatus::Started);
        let empty =
            std::env::temp_dir().join(format!("attnlab-plan-occupied-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::write(empty.join("notes.txt"), "mine").unwrap();
        assert!(
            prepare_dir(&spec, &empty).unwrap_err().to_string().contains("holds no comparison")
        );
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 1, "untouched");
        for d in [out, empty] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}
