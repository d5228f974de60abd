//! The run directory: everything a run leaves behind, written so that a crash at any moment
//! leaves the previous state loadable.
//!
//! ```text
//! <run>/config.toml           the resolved config (what `--resume` and `eval` reload)
//! <run>/meta.json             provenance, config identity, parameters, main metric (`run_meta`)
//! <run>/metrics.jsonl         one JSON object per logged step and per evaluation (see `metrics`)
//! <run>/vocab.json | tokenizer.json   the task's codec, where it has one
//! <run>/checkpoints/step-N/   model.bpk, optim.bpk, state.json (the last `keep_checkpoints`)
//! <run>/best/                 the checkpoint with the best main eval metric
//! <run>/final/                the checkpoint after the last step
//! <run>/writer.lock           the pid of the directory's writer (the lock is on the directory)
//! ```
//!
//! A checkpoint directory is complete once its `state.json` exists; it is first written under a
//! hidden temporary name and renamed into place, so readers never see half a checkpoint.
//!
//! One writer: training, resuming and every run a comparison or swap trains take an exclusive
//! advisory lock on the run directory itself for the life of the process
//! ([`std::fs::File::try_lock`], `flock`; [`WriterLock`]). The kernel drops it when the process
//! dies however it dies, so a killed run's lock is never stale: the next writer simply takes it.
//! Readers (`eval`, `sample`, `export`) do not lock; they read only complete, renamed files.

use crate::metrics::{MetricsLog, MetricsRecord};
pub use crate::run_dir_error::RunDirError;
use crate::tensorboard;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const CONFIG_FILE: &str = "config.toml";
pub const META_FILE: &str = "meta.json";
pub use crate::metrics::METRICS_FILE;
pub const MODEL_FILE: &str = "model.bpk";
pub const OPTIM_FILE: &str = "optim.bpk";
pub const STATE_FILE: &str = "state.json";
const CHECKPOINTS: &str = "checkpoints";
const TEMP_PREFIX: &str = ".tmp-";
pub const LOCK_FILE: &str = "writer.lock";

/// What a checkpoint needs besides the weights and optimizer moments. The data stream and the
/// dropout randomness are pure functions of (seed, step), so the step is all the position there is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: usize,
    /// Best main eval metric so far and the step it was reached at.
    pub best_metric: Option<f64>,
    pub best_step: Option<usize>,
    /// Input positions consumed so far.
    pub tokens_seen: u64,
    /// The run reached `train.stop_at` at `step` (a resume finishes it instead of training on).
    #[serde(default)]
    pub stopped_early: bool,
}

/// A run directory on disk.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub path: PathBuf,
    /// The writer lock, for a directory opened to write ([`create`](Self::create),
    /// [`open_for_writing`](Self::open_for_writing)); released when the last clone is dropped.
    lock: Option<Arc<WriterLock>>,
    /// Whether [`create`](Self::create) made the directory (only then may a failed start
    /// remove it again).
    created: bool,
}

/// An exclusive lock on a run directory, held until dropped.
///
/// The lock is an `flock` on the directory itself, not on a file inside it: deleting or
/// replacing `writer.lock` while a writer runs cannot let a second writer in (a lock on a file
/// that was unlinked would guard nothing the next process opens). `writer.lock` only names the
/// holder's pid for the message another writer gets; it is written by temp file and rename, so
/// a link planted under that name is replaced, never followed into someone's file.
#[derive(Debug)]
pub struct WriterLock {
    _dir: fs::File,
}

impl WriterLock {
    /// Takes the lock of the directory at `dir`, or says which process holds it.
    pub fn take(dir: &Path) -> Result<Self, RunDirError> {
        let path = dir.join(LOCK_FILE);
        if fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
            return Err(RunDirError::NotALockFile { path });
        }
        let handle = fs::File::open(dir)
            .map_err(|reason| RunDirError::OpenLock { path: dir.to_path_buf(), reason })?;
        // A lock this process has just released can stay held for an instant: a thread that
        // forks to start a command (git, sbatch) gives the child a copy of every descriptor
        // until it execs. A second look a little later tells that from a live writer.
        let mut attempt = handle.try_lock();
        for _ in 0..10 {
            if !matches!(attempt, Err(fs::TryLockError::WouldBlock)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            attempt = handle.try_lock();
        }
        match attempt {
            Ok(()) => {
                // The pid is for the message another writer gets; the lock is the flock.
                let temp = dir.join(format!("{TEMP_PREFIX}{LOCK_FILE}-{}", std::process::id()));
                let _ = fs::write(&temp, std::process::id().to_string())
                    .and_then(|_| fs::rename(&temp, &path));
                Ok(Self { _dir: handle })
            }
            Err(fs::TryLockError::WouldBlock) => {
                Err(RunDirError::Busy { path: dir.to_path_buf(), holder: lock_holder(&path) })
            }
            Err(fs::TryLockError::Error(reason)) => {
                Err(RunDirError::Lock { path: dir.to_path_buf(), reason })
            }
        }
    }
}

/// The pid a writer left in `writer.lock`, read only from a plain file of pid size.
fn lock_holder(path: &Path) -> Option<String> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > 32 {
        return None;
    }
    let text = fs::read_to_string(path).ok()?;
    let pid = text.trim();
    pid.chars().all(|c| c.is_ascii_digit()).then(|| pid.to_string()).filter(|p| !p.is_empty())
}

impl RunDir {
    /// Opens an existing run directory to read it (eval, sample, export).
    pub fn open(path: &Path) -> Result<Self, RunDirError> {
        if !path.join(CONFIG_FILE).is_file() {
            return Err(RunDirError::NotARun { path: path.to_path_buf() });
        }
        Ok(Self { path: path.to_path_buf(), lock: None, created: false })
    }

    /// Opens an existing run directory to continue writing it (resume), as its one writer.
    pub fn open_for_writing(path: &Path) -> Result<Self, RunDirError> {
        let mut run = Self::open(path)?;
        run.lock = Some(Arc::new(WriterLock::take(path)?));
        Ok(run)
    }

    /// Creates a new run directory as its one writer. `path` may be new or an empty directory;
    /// one that holds a run, or anything else, is refused (attnlab never writes into files it
    /// did not make).
    pub fn create(path: &Path) -> Result<Self, RunDirError> {
        let held_run = || RunDirError::HoldsRun { path: path.to_path_buf() };
        let created = !path.exists();
        if !created {
            if !path.is_dir() {
                return Err(RunDirError::NotADirectory { path: path.to_path_buf() });
            }
            if path.join(CONFIG_FILE).exists() {
                // Say so if it is being written right now.
                return Err(WriterLock::take(path).map_or_else(|busy| busy, |_| held_run()));
            }
            let mut others: Vec<String> = fs::read_dir(path)
                .map_err(|reason| RunDirError::ReadDir { path: path.to_path_buf(), reason })?
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                // A start stopped before its config was renamed into place leaves only these.
                .filter(|n| n != LOCK_FILE && !n.starts_with(TEMP_PREFIX))
                .collect();
            if !others.is_empty() {
                if path.join(CONFIG_FILE).exists() {
                    // A writer started here between the two looks (its config is the first file
                    // it puts in place): it is that run, not someone else's files.
                    return Err(WriterLock::take(path).map_or_else(|busy| busy, |_| held_run()));
                }
                others.sort();
                return Err(RunDirError::NotEmpty { path: path.to_path_buf(), entries: others });
            }
        }
        fs::create_dir_all(path)
            .map_err(|reason| RunDirError::Create { path: path.to_path_buf(), reason })?;
        let lock = WriterLock::take(path)?;
        // Checked again under the lock: a writer that started first and has finished by now
        // left its config behind.
        if path.join(CONFIG_FILE).exists() {
            return Err(held_run());
        }
        let run = Self { path: path.to_path_buf(), lock: Some(Arc::new(lock)), created };
        run.clean_staging();
        Ok(run)
    }

    /// Opens a directory attnlab made for work other than a run (a linearisation's working
    /// directory, which `marker` identifies) to continue writing it, as its one writer;
    /// leftovers of a write killed midway are cleaned.
    pub fn open_work_dir_for_writing(path: &Path, marker: &str) -> Result<Self, RunDirError> {
        if !path.join(marker).is_file() {
            return Err(RunDirError::NotARun { path: path.to_path_buf() });
        }
        let run = Self {
            path: path.to_path_buf(),
            lock: Some(Arc::new(WriterLock::take(path)?)),
            created: false,
        };
        run.clean_staging();
        Ok(run)
    }

    /// Whether this process holds the directory's writer lock.
    pub fn is_writer(&self) -> bool {
        self.lock.is_some()
    }

    /// After a start that failed before training wrote anything: removes the lock file, and the
    /// directory too if [`create`](Self::create) made it, so a failed start leaves the path as
    /// it found it. A directory holding anything else is left alone. (Unlinking a lock file is
    /// only safe for its holder, which this is.)
    pub fn discard_if_unused(&self) {
        let only_lock = fs::read_dir(&self.path)
            .map(|d| d.flatten().all(|e| e.file_name() == LOCK_FILE))
            .unwrap_or(false);
        if self.is_writer() && only_lock {
            let _ = fs::remove_file(self.path.join(LOCK_FILE));
            if self.created {
                let _ = fs::remove_dir(&self.path);
            }
        }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a small file atomically (temp file + rename).
    pub fn write_file(&self, name: &str, contents: &str) -> Result<(), RunDirError> {
        let target = self.file(name);
        let temp = self.file(&format!("{TEMP_PREFIX}{name}"));
        fs::write(&temp, contents).map_err(RunDirError::io(&temp))?;
        fs::rename(&temp, &target).map_err(RunDirError::io(&target))
    }

    /// Appends one record to `metrics.jsonl`, and its scalars to the TensorBoard event file.
    pub fn append_metrics(&self, record: &MetricsRecord) -> Result<(), RunDirError> {
        let path = self.file(METRICS_FILE);
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(RunDirError::io(&path))?;
        writeln!(f, "{}", record.to_line()).map_err(RunDirError::io(&path))?;
        let events = self.tensorboard_file();
        if !events.exists() {
            // First line of a run that has none yet: the file opens with its version event.
            self.rewrite_tensorboard(&[])?;
        }
        let mut f =
            fs::OpenOptions::new().append(true).open(&events).map_err(RunDirError::io(&events))?;
        f.write_all(&tensorboard::scalars_event(
            tensorboard::now(),
            record.step(),
            &tensorboard::scalars_of(record),
        ))
        .map_err(RunDirError::io(&events))
    }

    /// `tensorboard/events.out.tfevents.0.attnlab`.
    pub fn tensorboard_file(&self) -> PathBuf {
        self.path.join(tensorboard::DIR).join(tensorboard::EVENTS_FILE)
    }

    /// Writes the event file anew (atomically) from `records`: what keeps it equal to
    /// `metrics.jsonl` whenever that file is rewritten.
    fn rewrite_tensorboard(&self, records: &[MetricsRecord]) -> Result<(), RunDirError> {
        let dir = self.path.join(tensorboard::DIR);
        fs::create_dir_all(&dir).map_err(RunDirError::io(&dir))?;
        let temp = dir.join(format!("{TEMP_PREFIX}{}", tensorboard::EVENTS_FILE));
        fs::write(&temp, tensorboard::event_file(records, tensorboard::now()))
            .map_err(RunDirError::io(&temp))?;
        let target = self.tensorboard_file();
        fs::rename(&temp, &target).map_err(RunDirError::io(&target))
    }

    /// Empties `metrics.jsonl` and the event file (a run restarted from step 0).
    pub fn clear_metrics(&self) -> Result<(), RunDirError> {
        self.write_file(METRICS_FILE, "")?;
        self.rewrite_tensorboard(&[])
    }

    /// Drops metric lines logged after `step` (a resumed run re-logs them), torn lines and
    /// damaged ones (with a warning naming them). The kept lines are kept byte for byte.
    pub fn truncate_metrics_after(&self, step: usize) -> Result<(), RunDirError> {
        let log = MetricsLog::read(&self.path)?;
        if let Some(warning) = log.warning(&self.path) {
            eprintln!("{warning}; they are dropped");
        }
        let kept: Vec<&(MetricsRecord, String)> =
            log.records.iter().filter(|(r, _)| r.step() <= step).collect();
        let out: String = kept.iter().map(|(_, line)| format!("{line}\n")).collect();
        self.write_file(METRICS_FILE, &out)?;
        let records: Vec<MetricsRecord> = kept.into_iter().map(|(r, _)| r.clone()).collect();
        self.rewrite_tensorboard(&records)
    }

    /// A fresh hidden directory to build a checkpoint in before [`publish`](Self::publish).
    pub fn staging(&self, label: &str) -> Result<PathBuf, RunDirError> {
        let dir = self.file(&format!("{TEMP_PREFIX}{label}-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(RunDirError::io(&dir))?;
        }
        fs::create_dir_all(&dir).map_err(RunDirError::io(&dir))?;
        Ok(dir)
    }

    /// Moves a finished staging directory to `relative` (e.g. `checkpoints/step-500`, `best`),
    /// replacing what was there. The old copy is renamed away first and removed last, so at
    /// every instant one complete copy exists.
    pub fn publish(&self, staging: &Path, relative: &str) -> Result<PathBuf, RunDirError> {
        let target = self.file(relative);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(RunDirError::io(parent))?;
        }
        let old = self.file(&format!("{TEMP_PREFIX}old-{}", relative.replace('/', "-")));
        if target.exists() {
            if old.exists() {
                fs::remove_dir_all(&old).map_err(RunDirError::io(&old))?;
            }
            fs::rename(&target, &old).map_err(RunDirError::io(&target))?;
        }
        fs::rename(staging, &target).map_err(RunDirError::io(&target))?;
        if old.exists() {
            fs::remove_dir_all(&old).map_err(RunDirError::io(&old))?;
        }
        Ok(target)
    }

    /// Complete `checkpoints/step-N` directories, oldest first.
    pub fn step_checkpoints(&self) -> Vec<(usize, PathBuf)> {
        let mut found: Vec<(usize, PathBuf)> = fs::read_dir(self.file(CHECKPOINTS))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let step = name.strip_prefix("step-")?.parse().ok()?;
                e.path().join(STATE_FILE).is_file().then(|| (step, e.path()))
            })
            .collect();
        found.sort();
        found
    }

    pub fn step_checkpoint_name(step: usize) -> String {
        format!("{CHECKPOINTS}/step-{step:06}")
    }

    /// Moves the step checkpoint of `step`, if there is one, to `checkpoints/diverged-step-N`:
    /// its weights gave a non-finite loss, so it is kept for inspection but is no longer a
    /// checkpoint to resume from or to call good.
    pub fn set_aside(&self, step: usize) -> Result<(), RunDirError> {
        let from = self.file(&Self::step_checkpoint_name(step));
        if from.is_dir() {
            let to = self.file(&format!("{CHECKPOINTS}/diverged-step-{step:06}"));
            if to.exists() {
                fs::remove_dir_all(&to).map_err(RunDirError::io(&to))?;
            }
            fs::rename(&from, &to).map_err(RunDirError::io(&from))?;
        }
        Ok(())
    }

    /// Removes all but the newest `keep` step checkpoints. Each is first renamed to a staging
    /// name, so a kill during the (non-atomic) removal leaves a leftover that the next start
    /// cleans, never a half-deleted `step-N`.
    pub fn prune(&self, keep: usize) -> Result<(), RunDirError> {
        let all = self.step_checkpoints();
        for (step, dir) in all.iter().take(all.len().saturating_sub(keep)) {
            let doomed = self.file(&format!("{TEMP_PREFIX}pruned-step-{step}"));
            fs::rename(dir, &doomed).map_err(RunDirError::io(dir))?;
            fs::remove_dir_all(&doomed).map_err(RunDirError::io(&doomed))?;
        }
        Ok(())
    }

    /// The checkpoint to resume from: the newest complete one among `final/` and `step-N`.
    pub fn latest_checkpoint(&self) -> Option<(TrainState, PathBuf)> {
        let mut candidates: Vec<PathBuf> =
            self.step_checkpoints().into_iter().map(|(_, p)| p).collect();
        candidates.push(self.file("final"));
        candidates
            .into_iter()
            .filter_map(|dir| read_state(&dir).ok().map(|s| (s, dir)))
            .max_by_key(|(s, _)| s.step)
    }

    /// Removes staging leftovers (directories and files) of a run that was killed mid-write.
    pub fn clean_staging(&self) {
        for entry in fs::read_dir(&self.path).into_iter().flatten().flatten() {
            let is_temp = entry.file_name().to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX));
            if is_temp && entry.path().is_dir() {
                let _ = fs::remove_dir_all(entry.path());
            } else if is_temp {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Reads `state.json` of a checkpoint directory.
pub fn read_state(dir: &Path) -> Result<TrainState, RunDirError> {
    let path = dir.join(STATE_FILE);
    let text = fs::read_to_string(&path)
        .map_err(|reason| RunDirError::ReadState { path: path.clone(), reason })?;
    serde_json::from_str(&text).map_err(|reason| RunDirError::CorruptState { path, reason })
}

/// The state of the run in `dir` if it has finished (its `final/` checkpoint is of the last step,
/// or of an early stop); `None` for a run not started, still running, interrupted or failed.
/// `steps` is the run's `train.steps`.
pub fn finished_state(dir: &Path, steps: usize) -> Option<TrainState> {
    read_state(&dir.join("final")).ok().filter(|s| s.step >= steps || s.stopped_early)
}

/// `YYYYMMDD-HHMMSS` in UTC, for run directory names.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::TrainRecord;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("attnlab-rundir-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn dates_convert() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_507), (2026, 2, 23));
    }

    #[test]
    fn publish_replaces_and_incomplete_checkpoints_are_ignored() {
        let dir = temp_dir("publish");
        let run = RunDir::create(&dir).unwrap();
        let state = |step| TrainState {
            step,
            best_metric: None,
            best_step: None,
            tokens_seen: 0,
            stopped_early: false,
        };
        for step in [10, 20, 30] {
            let s = run.staging("ckpt").unwrap();
            fs::write(s.join(STATE_FILE), serde_json::to_string(&state(step)).unwrap()).unwrap();
            run.publish(&s, &RunDir::step_checkpoint_name(step)).unwrap();
        }
        // A checkpoint killed before its state.json was written does not count.
        fs::create_dir_all(run.file(&RunDir::step_checkpoint_name(40))).unwrap();
        assert_eq!(run.latest_checkpoint().unwrap().0.step, 30);
        run.prune(2).unwrap();
        let steps: Vec<usize> = run.step_checkpoints().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![20, 30]);
        fs::remove_dir_all(dir).unwrap();
    }

    /// One writer: a second create or resume of a directory being written is refused, naming
    /// the holder's pid; once the holder is gone (here dropped; a killed process's flock is
    /// dropped by the kernel) the next writer takes the lock, whatever pid the file still holds.
    #[test]
    fn a_run_directory_has_one_writer() {
        let dir = temp_dir("one-writer");
        let first = RunDir::create(&dir).unwrap();
        let pid = std::process::id().to_string();
        assert_eq!(fs::read_to_string(dir.join(LOCK_FILE)).unwrap(), pid);
        let err = RunDir::create(&dir).unwrap_err().to_string();
        assert!(
            err.contains(&format!("is being written by another attnlab process (pid {pid})"))
                && err.contains("one writer"),
            "{err}"
        );
        fs::write(dir.join(CONFIG_FILE), "seed = 1\n").unwrap();
        let err = RunDir::open_for_writing(&dir).unwrap_err().to_string();
        assert!(err.contains("is being written by"), "{err}");
        assert!(RunDir::open(&dir).is_ok(), "readers do not lock");
        // Deleting the pid file does not unlock the directory.
        fs::remove_file(dir.join(LOCK_FILE)).unwrap();
        let err = RunDir::open_for_writing(&dir).unwrap_err().to_string();
        assert!(err.contains("is being written by another attnlab process"), "{err}");
        let clone = first.clone();
        drop(first);
        assert!(RunDir::open_for_writing(&dir).is_err(), "a clone still holds the lock");
        drop(clone);
        let second = RunDir::open_for_writing(&dir).unwrap();
        assert!(second.is_writer());
        drop(second);
        // A lock file left by a dead writer names a pid nobody holds the lock for.
        fs::write(dir.join(LOCK_FILE), "999999999").unwrap();
        assert!(RunDir::open_for_writing(&dir).is_ok());
        assert!(RunDir::create(&dir).unwrap_err().to_string().contains("already holds a run"));
        // A link planted as the pid file is neither followed nor replaced.
        let precious = dir.with_extension("precious");
        fs::write(&precious, "the user's words").unwrap();
        fs::remove_file(dir.join(LOCK_FILE)).unwrap();
        std::os::unix::fs::symlink(&precious, dir.join(LOCK_FILE)).unwrap();
        let err = RunDir::open_for_writing(&dir).unwrap_err().to_string();
        assert!(err.contains("is not attnlab's lock file"), "{err}");
        assert_eq!(fs::read_to_string(&precious).unwrap(), "the user's words");
        assert!(fs::symlink_metadata(dir.join(LOCK_FILE)).unwrap().is_symlink());
        fs::remove_file(precious).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    /// Nothing of the user's is written over: a non-empty directory that is not a run (or a
    /// file) is refused untouched, an empty one is used, and a failed start leaves each path as
    /// it found it (a directory it made is removed, the user's empty one stays).
    #[test]
    fn only_new_or_empty_directories_become_runs() {
        let dir = temp_dir("user-dir");
        fs::create_dir_all(dir.join("best")).unwrap();
        fs::write(dir.join("meta.json"), "mine").unwrap();
        let err = RunDir::create(&dir).unwrap_err().to_string();
        assert!(
            err.contains("is not empty and holds no run (it has best, meta.json)")
                && err.contains("choose another --out"),
            "{err}"
        );
        let mut left: Vec<_> =
            fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        left.sort();
        assert_eq!(left, ["best", "meta.json"], "nothing added");
        assert_eq!(fs::read_to_string(dir.join("meta.json")).unwrap(), "mine");
        let file = dir.join("meta.json");
        assert!(RunDir::create(&file).unwrap_err().to_string().contains("is not a directory"));

        let empty = dir.join("empty");
        fs::create_dir_all(&empty).unwrap();
        let run = RunDir::create(&empty).unwrap();
        run.discard_if_unused();
        assert!(
            empty.is_dir() && fs::read_dir(&empty).unwrap().next().is_none(),
            "the user's empty directory stays, empty"
        );
        let fresh = dir.join("fresh");
        let run = RunDir::create(&fresh).unwrap();
        run.discard_if_unused();
        assert!(!fresh.exists(), "a directory create made is removed again");
        let kept = dir.join("kept");
        let run = RunDir::create(&kept).unwrap();
        fs::write(kept.join(CONFIG_FILE), "seed = 1\n").unwrap();
        run.discard_if_unused();
        assert!(
            kept.join(CONFIG_FILE).is_file() && kept.join(LOCK_FILE).is_file(),
            "a started run is kept"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn metrics_after_a_step_are_dropped() {
        let dir = temp_dir("metrics");
        let run = RunDir::create(&dir).unwrap();
        for step in 1..=5 {
            let record =
                TrainRecord { step, loss: 1.0, lr: 1e-3, grad_norm: 0.5, tokens_per_s: 100.0 };
            run.append_metrics(&record.into()).unwrap();
        }
        // A line torn by a kill mid-write is dropped too.
        fs::OpenOptions::new()
            .append(true)
            .open(run.file(METRICS_FILE))
            .unwrap()
            .write_all(b"{\"step\":2,\"lo")
            .unwrap();
        run.truncate_metrics_after(3).unwrap();
        let text = fs::read_to_string(run.file(METRICS_FILE)).unwrap();
        assert_eq!(text.lines().count(), 3);
        let steps: Vec<usize> =
            crate::metrics::read_metrics(&dir).unwrap().iter().map(MetricsRecord::step).collect();
        assert_eq!(steps, vec![1, 2, 3]);
        // The event file mirrors what is kept: the version event and steps 1..=3 (each record
        // the same length here, wall times aside).
        let events = fs::read(run.tensorboard_file()).unwrap();
        let expected = tensorboard::event_file(&crate::metrics::read_metrics(&dir).unwrap(), 0.0);
        assert_eq!(events.len(), expected.len());
        let step_tags = events.windows(2).filter(|w| w[0] == 0x10).count();
        assert!(step_tags >= 3, "{step_tags}");
        fs::remove_dir_all(dir).unwrap();
    }
}
