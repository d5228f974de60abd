//! The Slurm executor: a comparison's plan submitted as one job array (task `i` trains plan
//! entry `i`) and its analysis as a job that depends on the array (`afterany`, so a report is
//! written, naming what is missing, even when tasks fail).
//!
//! attnlab schedules nothing itself: it writes two batch scripts into `<report>/slurm/` and
//! calls `sbatch`. A task is `attnlab compare --run-only --index $SLURM_ARRAY_TASK_ID`, which
//! resumes its run from the newest checkpoint, so a requeued task, or the array submitted again
//! after a failure (only the entries not finished are), continues where it stopped. The report
//! directory and the `attnlab` binary must be on a file system every node sees.

use super::error::CompareError;
use super::plan::{PlanEntry, RunStatus, write_atomic};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use super::spec::SlurmOptions;

/// Why a plan could not be submitted to Slurm or waited for; one line naming the job or command
/// and where to look.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// The scripts or `jobs.json` could not be written.
    #[error(transparent)]
    Files(#[from] CompareError),
    #[error("cannot run sbatch ({reason}): --executor slurm needs Slurm's sbatch on PATH")]
    NoSbatch { reason: std::io::Error },
    #[error("sbatch {script} failed: {stderr}")]
    Sbatch { script: PathBuf, stderr: String },
    #[error("sbatch printed no job id (\"{stdout}\")")]
    NoJobId { stdout: String },
    #[error("cannot run squeue: {reason}")]
    Squeue { reason: std::io::Error },
    #[error("analysis job {job} is gone and left no report; see {out}/logs/")]
    AnalysisGone { job: String, out: PathBuf },
    #[error("analysis job {job} ended {state}; see {out}/logs/slurm-analyse-{job}.log")]
    AnalysisFailed { job: String, state: String, out: PathBuf },
    #[error("cannot resolve {path}: {reason}")]
    Absolute { path: PathBuf, reason: std::io::Error },
    /// A value bound for a batch script holds a newline or another control character: it would
    /// end the line it is written on and start a command of its own.
    #[error(
        "{option} {value:?} holds a control character (newline, tab, ...), which a batch script cannot carry: give it without one"
    )]
    ControlCharacter { option: &'static str, value: String },
}

/// Refuses any value bound for the batch scripts that holds a control character: the report
/// directory, the `attnlab` binary and every option. Called before anything is written.
pub fn check(out: &Path, attnlab: &Path, options: &SlurmOptions) -> Result<(), SlurmError> {
    let out = out.to_string_lossy();
    let attnlab = attnlab.to_string_lossy();
    let mut values: Vec<(&'static str, &str)> =
        vec![("--out", out.as_ref()), ("the attnlab binary's path", attnlab.as_ref())];
    for (option, value) in [
        ("--slurm-mem (or [slurm] mem)", &options.mem),
        ("--slurm-time (or [slurm] time)", &options.time),
        ("--slurm-partition (or [slurm] partition)", &options.partition),
    ] {
        if let Some(value) = value {
            values.push((option, value.as_str()));
        }
    }
    for extra in &options.sbatch {
        values.push(("--sbatch (or [slurm] sbatch)", extra.as_str()));
    }
    match values.into_iter().find(|(_, value)| value.chars().any(char::is_control)) {
        Some((option, value)) => {
            Err(SlurmError::ControlCharacter { option, value: value.to_string() })
        }
        None => Ok(()),
    }
}

/// What one submission sent to Slurm; the list of them is kept in `slurm/jobs.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub array_job: String,
    pub analysis_job: String,
    /// Plan entries the array runs (those not finished when it was submitted).
    pub tasks: Vec<usize>,
    pub submitted: String,
}

/// The batch script every array task runs. It is submitted with the report directory `out` as
/// its working directory, so no line but the command names that path, and the command quotes it.
pub fn array_script(
    out: &Path,
    attnlab: &Path,
    options: &SlurmOptions,
) -> Result<String, SlurmError> {
    check(out, attnlab, options)?;
    let mut lines = header(&format!("attnlab-{}", job_name(out)), "slurm-%A_%a.log");
    lines.push(format!("#SBATCH --cpus-per-task={}", options.cpus_per_task.unwrap_or(1).max(1)));
    // A task preempted or failed on a node is worth running again: it resumes.
    lines.push("#SBATCH --requeue".into());
    if let Some(mem) = &options.mem {
        lines.push(format!("#SBATCH --mem={mem}"));
    }
    if let Some(time) = &options.time {
        lines.push(format!("#SBATCH --time={time}"));
    }
    if let Some(partition) = &options.partition {
        lines.push(format!("#SBATCH --partition={partition}"));
    }
    for extra in &options.sbatch {
        lines.push(format!("#SBATCH {extra}"));
    }
    lines.push(
        "# Written by `attnlab compare --executor slurm`, which submits it from the report directory\n\
         # (--out below): task i trains entry i of its plan.json, resuming it from its newest\n\
         # checkpoint when it was started before."
            .into(),
    );
    lines.push("export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"".into());
    lines.push(format!(
        "exec {} compare --run-only --quiet --out {} --index \"$SLURM_ARRAY_TASK_ID\"",
        quote(attnlab),
        quote(out)
    ));
    Ok(lines.join("\n") + "\n")
}

/// The batch script of the analysis job, submitted like [`array_script`]'s.
pub fn analysis_script(
    out: &Path,
    attnlab: &Path,
    options: &SlurmOptions,
) -> Result<String, SlurmError> {
    check(out, attnlab, options)?;
    let mut lines = header(&format!("attnlab-{}-analyse", job_name(out)), "slurm-analyse-%j.log");
    lines.push("#SBATCH --cpus-per-task=1".into());
    if let Some(partition) = &options.partition {
        lines.push(format!("#SBATCH --partition={partition}"));
    }
    lines.push("# Written by `attnlab compare --executor slurm`: the report, from the run directories alone.".into());
    lines.push(format!(
        "exec {} compare --analyse-only --quiet --out {}",
        quote(attnlab),
        quote(out)
    ));
    Ok(lines.join("\n") + "\n")
}

/// The log path is relative to the job's working directory, the report directory: an
/// `#SBATCH` line cannot quote a path.
fn header(name: &str, log: &str) -> Vec<String> {
    vec![
        "#!/bin/bash".into(),
        format!("#SBATCH --job-name={name}"),
        format!("#SBATCH --output=logs/{log}"),
    ]
}

/// The report directory's name, as a job name.
fn job_name(out: &Path) -> String {
    out.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect()
}

/// `path` quoted for a POSIX shell: in single quotes, each `'` in it written `'\''`, so
/// nothing in it (`$`, backquotes, spaces) is expanded.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

/// `0-3,5,7-9`: sorted indices as Slurm's `--array` list.
pub fn array_list(indices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            indices[i].to_string()
        } else {
            format!("{}-{}", indices[i], indices[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// Submits the entries of `entries` not finished as one array, then the analysis job after it.
/// `Ok(None)` when every entry has finished (nothing to submit).
pub fn submit(
    out: &Path,
    entries: &[PlanEntry],
    attnlab: &Path,
    options: &SlurmOptions,
) -> Result<Option<Submission>, SlurmError> {
    check(out, attnlab, options)?;
    let tasks: Vec<usize> =
        entries.iter().filter(|e| e.status(out) != RunStatus::Finished).map(|e| e.index).collect();
    if tasks.is_empty() {
        return Ok(None);
    }
    let dir = out.join("slurm");
    for d in [&dir, &out.join("logs")] {
        std::fs::create_dir_all(d)
            .map_err(|reason| CompareError::Create { path: d.to_path_buf(), reason })?;
    }
    let array = dir.join("array.sh");
    let analysis = dir.join("analyse.sh");
    write_atomic(&array, &array_script(out, attnlab, options)?)?;
    write_atomic(&analysis, &analysis_script(out, attnlab, options)?)?;
    let list = match options.max_parallel {
        Some(m) => format!("{}%{m}", array_list(&tasks)),
        None => array_list(&tasks),
    };
    let array_job = sbatch(&[format!("--array={list}")], &array, out)?;
    let analysis_job = sbatch(&[format!("--dependency=afterany:{array_job}")], &analysis, out)?;
    let submission = Submission {
        array_job,
        analysis_job,
        tasks,
        submitted: attnlab_train::run_dir::timestamp(),
    };
    let jobs_file = dir.join("jobs.json");
    let mut all: Vec<Submission> = std::fs::read_to_string(&jobs_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    all.push(submission.clone());
    write_atomic(&jobs_file, &serde_json::to_string_pretty(&all).expect("submissions serialise"))?;
    Ok(Some(submission))
}

/// `sbatch --parsable --chdir=CWD ARGS SCRIPT`, run in `cwd`; the job id. The job runs in
/// `cwd` too, where the script's relative log path points.
fn sbatch(args: &[String], script: &Path, cwd: &Path) -> Result<String, SlurmError> {
    let mut chdir = std::ffi::OsString::from("--chdir=");
    chdir.push(cwd);
    let output = Command::new("sbatch")
        .arg("--parsable")
        .arg(chdir)
        .args(args)
        .arg(script)
        .current_dir(cwd)
        .output()
        .map_err(|reason| SlurmError::NoSbatch { reason })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(SlurmError::Sbatch {
            script: script.to_path_buf(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    // `--parsable` prints `jobid` or `jobid;cluster`.
    let id = stdout.trim().split(';').next().unwrap_or_default().to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(SlurmError::NoJobId { stdout: stdout.trim().to_string() });
    }
    Ok(id)
}

/// The state of job `id` as `squeue` shows it (`None` once Slurm has forgotten it).
fn job_state(id: &str) -> Result<Option<String>, SlurmError> {
    let output = Command::new("squeue")
        .args(["-h", "-t", "all", "-j", id, "-o", "%T"])
        .output()
        .map_err(|reason| SlurmError::Squeue { reason })?;
    // squeue fails for a job id it no longer knows.
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().map(|l| l.trim().to_string()).filter(|s| !s.is_empty()))
}

/// Blocks until the submission's analysis job has ended, printing the plan's progress
/// (finished / started / queued runs, read from the run directories) whenever it changes.
/// `Err` when the analysis job did not complete.
pub fn wait(
    out: &Path,
    entries: &[PlanEntry],
    submission: &Submission,
    quiet: bool,
) -> Result<(), SlurmError> {
    let started = Instant::now();
    let mut last = None;
    loop {
        let state = job_state(&submission.analysis_job)?;
        if !quiet {
            let counts = counts(out, entries);
            if last != Some(counts) {
                let (finished, started_runs, failed, queued) = counts;
                println!(
                    "[{}] {finished}/{} finished | {started_runs} running or interrupted | {failed} failed | {queued} queued",
                    super::run::format_duration(started.elapsed().as_secs_f64()),
                    entries.len()
                );
                last = Some(counts);
            }
        }
        match state.as_deref() {
            Some(
                "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "REQUEUED" | "REQUEUE_HOLD"
                | "REQUEUE_FED" | "SUSPENDED" | "RESIZING",
            ) => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Some("COMPLETED") => return Ok(()),
            // Forgotten (MinJobAge passed): judged by the report it leaves.
            None if out.join("results.json").is_file() => return Ok(()),
            None => {
                return Err(SlurmError::AnalysisGone {
                    job: submission.analysis_job.clone(),
                    out: out.to_path_buf(),
                });
            }
            Some(other) => {
                return Err(SlurmError::AnalysisFailed {
                    job: submission.analysis_job.clone(),
                    state: other.to_string(),
                    out: out.to_path_buf(),
                });
            }
        }
    }
}

/// `(finished, started, failed, queued)` runs of the plan.
fn counts(out: &Path, entries: &[PlanEntry]) -> (usize, usize, usize, usize) {
    let mut c = (0, 0, 0, 0);
    for e in entries {
        match e.status(out) {
            RunStatus::Finished => c.0 += 1,
            RunStatus::Started => c.1 += 1,
            RunStatus::Failed(_) => c.2 += 1,
            RunStatus::Queued => c.3 += 1,
        }
    }
    c
}

/// The absolute path of `path` (a report directory must be absolute in a batch script).
pub fn absolute(path: &Path) -> Result<PathBuf, SlurmError> {
    std::path::absolute(path)
        .map_err(|reason| SlurmError::Absolute { path: path.to_path_buf(), reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_lists_compress_runs_of_indices() {
        assert_eq!(array_list(&[0, 1, 2, 3, 5, 7, 8, 9]), "0-3,5,7-9");
        assert_eq!(array_list(&[4]), "4");
        assert_eq!(array_list(&[]), "");
    }

    #[test]
    fn scripts_run_the_plan_entry_of_the_task_with_its_resources() {
        let options = SlurmOptions {
            max_parallel: Some(4),
            cpus_per_task: Some(2),
            mem: Some("4G".into()),
            time: None,
            partition: Some("gpu".into()),
            sbatch: vec!["--account=lab".into()],
        };
        let script =
            array_script(Path::new("/shared/rep ort"), Path::new("/opt/attnlab"), &options)
                .unwrap();
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[0], "#!/bin/bash");
        for expected in [
            "#SBATCH --job-name=attnlab-rep-ort",
            "#SBATCH --output=logs/slurm-%A_%a.log",
            "#SBATCH --cpus-per-task=2",
            "#SBATCH --mem=4G",
            "#SBATCH --partition=gpu",
            "#SBATCH --account=lab",
            "exec '/opt/attnlab' compare --run-only --quiet --out '/shared/rep ort' --index \"$SLURM_ARRAY_TASK_ID\"",
        ] {
            assert!(lines.contains(&expected), "{expected} missing from\n{script}");
        }
        // Every #SBATCH line comes before the first command (sbatch stops reading them there).
        let first_command = lines.iter().position(|l| !l.starts_with('#')).unwrap();
        assert!(lines[first_command..].iter().all(|l| !l.starts_with("#SBATCH")), "{script}");
        let analysis = analysis_script(Path::new("/r"), Path::new("/opt/it's"), &options).unwrap();
        assert!(
            analysis.ends_with("exec '/opt/it'\\''s' compare --analyse-only --quiet --out '/r'\n"),
            "{analysis}"
        );
    }

    /// A newline in any value would end its script line and start a command; every such value
    /// is refused, naming its option, before any script is written.
    #[test]
    fn values_with_control_characters_are_refused() {
        let injected = "x\ntouch /tmp/pwned".to_string();
        let (out, attnlab) = (Path::new("/r"), Path::new("/opt/attnlab"));
        let cases = [
            (
                SlurmOptions { partition: Some(injected.clone()), ..Default::default() },
                "--slurm-partition",
            ),
            (SlurmOptions { mem: Some("4G\r".into()), ..Default::default() }, "--slurm-mem"),
            (SlurmOptions { time: Some("1:00\0".into()), ..Default::default() }, "--slurm-time"),
            (
                SlurmOptions {
                    sbatch: vec!["--gres=gpu:1".into(), "--qos=\tlow".into()],
                    ..Default::default()
                },
                "--sbatch",
            ),
        ];
        for (options, option) in cases {
            for script in
                [array_script(out, attnlab, &options), analysis_script(out, attnlab, &options)]
            {
                let err = script.unwrap_err().to_string();
                assert!(err.starts_with(option) && !err.contains('\n'), "{err}");
            }
        }
        let fine = SlurmOptions::default();
        let err = array_script(Path::new("/r\ntouch x"), attnlab, &fine).unwrap_err().to_string();
        assert!(err.starts_with("--out \"/r\\ntouch x\""), "{err}");
        assert!(array_script(out, Path::new("/bin/a\nb"), &fine).is_err());
        // Refused before anything is written or submitted.
        let dir =
            std::env::temp_dir().join(format!("attnlab-slurm-refused-{}", std::process::id()));
        let options = SlurmOptions { partition: Some(injected), ..Default::default() };
        assert!(matches!(
            submit(&dir, &[], attnlab, &options),
            Err(SlurmError::ControlCharacter {
                option: "--slurm-partition (or [slurm] partition)",
                ..
            })
        ));
        assert!(!dir.exists());
    }

    /// Paths with quotes, `$(...)`, backquotes and spaces reach the command as themselves: a
    /// real bash runs the script against a stand-in `attnlab` that records its arguments, and no
    /// injected command runs.
    #[test]
    fn a_real_shell_runs_the_script_with_every_path_literal() {
        let dir = std::env::temp_dir().join(format!("attnlab-slurm-quote-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let nasty = "it's $(touch pwned1) `touch pwned2` ; touch pwned3 \\ \"q\" *";
        let bin_dir = dir.join(nasty);
        std::fs::create_dir_all(&bin_dir).unwrap();
        let attnlab = bin_dir.join(format!("attnlab {nasty}"));
        let args_file = dir.join("args");
        std::fs::write(
            &attnlab,
            format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n", args_file.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&attnlab, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = dir.join(format!("report {nasty}"));
        let options = SlurmOptions {
            sbatch: vec!["--comment=$(touch pwned4)".into()],
            partition: Some("`touch pwned5`".into()),
            ..Default::default()
        };
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let out_text = out.to_string_lossy().into_owned();
        for (script, expected) in [
            (
                array_script(&out, &attnlab, &options).unwrap(),
                vec!["compare", "--run-only", "--quiet", "--out", &out_text, "--index", "3"],
            ),
            (
                analysis_script(&out, &attnlab, &options).unwrap(),
                vec!["compare", "--analyse-only", "--quiet", "--out", &out_text],
            ),
        ] {
            // Only the command, which quotes it, names the report directory: an `#SBATCH` or
            // comment line cannot quote it.
            // (Matched on a piece of the path without a quote: the command carries it quoted.)
            let naming: Vec<&str> = script.lines().filter(|l| l.contains("/report it")).collect();
            assert!(naming.len() == 1 && naming[0].starts_with("exec "), "{script}");
            let file = dir.join("script.sh");
            std::fs::write(&file, &script).unwrap();
            let parsed = Command::new("bash").arg("-n").arg(&file).status().unwrap();
            assert!(parsed.success(), "bash -n refuses\n{script}");
            let ran = Command::new("bash")
                .arg(&file)
                .current_dir(&work)
                .env("SLURM_ARRAY_TASK_ID", "3")
                .status()
                .unwrap();
            assert!(ran.success(), "{script}");
            let args = std::fs::read_to_string(&args_file).unwrap();
            assert_eq!(args.lines().collect::<Vec<_>>(), expected, "{script}");
            let made: Vec<String> = std::fs::read_dir(&work)
                .unwrap()
                .chain(std::fs::read_dir(&dir).unwrap())
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("pwned"))
                .collect();
            assert!(made.is_empty(), "an injected command ran: {made:?}\n{script}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
