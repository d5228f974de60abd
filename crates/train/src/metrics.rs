//! `metrics.jsonl`, typed: one [`MetricsRecord`] per line, written by the trainer and read back
//! by everything that plots or resumes a run.
//!
//! ```text
//! {"step":10,"loss":3.91,"lr":0.001,"grad_norm":0.82,"tokens_per_s":51200.0}     a logged step
//! {"step":250,"eval":{"accuracy":0.93,"loss":0.21},"attention_entropy":[0.71,0.55]}  an evaluation
//! ```
//!
//! JSON has no NaN: a non-finite number is written as `null` and read back as NaN, so a line
//! with one odd value still reads. Lines that are not records (a line torn by a kill mid-write)
//! are skipped.

use crate::run_dir_error::RunDirError;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The run directory's metrics log, one JSON record per line.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// One line of `metrics.jsonl`. Untagged: the keys tell the kinds apart, as they always have.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricsRecord {
    Train(TrainRecord),
    Eval(EvalRecord),
}

/// A logged optimizer step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    /// Optimizer steps completed.
    pub step: usize,
    /// Mean training loss over the step's micro-batches.
    #[serde(deserialize_with = "null_as_nan")]
    pub loss: f64,
    /// Learning rate the step used.
    #[serde(deserialize_with = "null_as_nan")]
    pub lr: f64,
    /// Global gradient norm before clipping.
    #[serde(deserialize_with = "null_as_nan")]
    pub grad_norm: f64,
    /// Input positions per second since the previous logged step.
    #[serde(deserialize_with = "null_as_nan")]
    pub tokens_per_s: f64,
}

/// An evaluation on the task's fixed evaluation set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Optimizer steps completed (0: a run started from another run's weights, before training).
    pub step: usize,
    /// Every metric the task reports, by name.
    #[serde(deserialize_with = "null_as_nan_map")]
    pub eval: BTreeMap<String, f64>,
    /// Mean normalised attention entropy per layer (1 = uniform, 0 = one-hot).
    #[serde(deserialize_with = "null_as_nan_vec")]
    pub attention_entropy: Vec<f64>,
    /// Sink mass per layer: the mean weight on position 0, averaged over heads (absent in runs
    /// written before it was recorded).
    #[serde(default, deserialize_with = "null_as_nan_vec", skip_serializing_if = "Vec::is_empty")]
    pub sink_mass: Vec<f64>,
}

impl MetricsRecord {
    pub fn step(&self) -> usize {
        match self {
            MetricsRecord::Train(r) => r.step,
            MetricsRecord::Eval(r) => r.step,
        }
    }

    /// The record on one line, or `None` for a line that holds none.
    pub fn parse_line(line: &str) -> Option<Self> {
        serde_json::from_str(line).ok()
    }

    /// The record as one JSON line, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a metrics record always serialises")
    }
}

impl From<TrainRecord> for MetricsRecord {
    fn from(r: TrainRecord) -> Self {
        MetricsRecord::Train(r)
    }
}

impl From<EvalRecord> for MetricsRecord {
    fn from(r: EvalRecord) -> Self {
        MetricsRecord::Eval(r)
    }
}

/// `metrics.jsonl` read line by line: each line that is a record, with its bytes, and the
/// 1-based numbers of the lines that are not (torn by a kill, or damaged: invalid UTF-8 and
/// other garbage spoil their own line only, never the rest of the file).
#[derive(Debug, Default)]
pub struct MetricsLog {
    pub records: Vec<(MetricsRecord, String)>,
    pub unreadable: Vec<usize>,
}

impl MetricsLog {
    /// Reads `run_dir`'s log; a run that never logged (no file yet) has an empty one.
    pub fn read(run_dir: &Path) -> Result<Self, RunDirError> {
        let path = run_dir.join(METRICS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(reason) => return Err(RunDirError::Io { path, reason }),
        };
        let mut log = Self::default();
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let text = std::str::from_utf8(line).ok();
            match text.and_then(|t| MetricsRecord::parse_line(t).map(|r| (r, t.to_string()))) {
                Some(record) => log.records.push(record),
                None => log.unreadable.push(i + 1),
            }
        }
        Ok(log)
    }

    /// One line for the user when lines were skipped, `None` when none were.
    pub fn warning(&self, run_dir: &Path) -> Option<String> {
        let shown: Vec<String> = self.unreadable.iter().take(5).map(usize::to_string).collect();
        (!self.unreadable.is_empty()).then(|| {
            format!(
                "warning: {}: skipped {} unreadable line(s) (line {}{})",
                run_dir.join(METRICS_FILE).display(),
                self.unreadable.len(),
                shown.join(", "),
                if self.unreadable.len() > 5 { ", …" } else { "" }
            )
        })
    }
}

/// Every record of the run in `run_dir`, in file order. A run that never logged (no file yet)
/// has none; unreadable lines are skipped, with a warning on stderr.
pub fn read_metrics(run_dir: &Path) -> Result<Vec<MetricsRecord>, RunDirError> {
    let log = MetricsLog::read(run_dir)?;
    if let Some(warning) = log.warning(run_dir) {
        eprintln!("{warning}");
    }
    Ok(log.records.into_iter().map(|(record, _)| record).collect())
}

fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn null_as_nan_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(d)?.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

fn null_as_nan_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let map = BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.unwrap_or(f64::NAN))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_written_before_the_typed_record_still_read() {
        // Byte for byte what the trainer wrote with `json!` (keys sorted).
        let train = r#"{"grad_norm":0.5,"loss":4.25,"lr":0.001,"step":10,"tokens_per_s":1234.5}"#;
        let eval =
            r#"{"attention_entropy":[0.75,0.5],"eval":{"accuracy":0.25,"loss":2.0},"step":20}"#;
        let t = MetricsRecord::parse_line(train).unwrap();
        assert_eq!(
            t,
            MetricsRecord::Train(TrainRecord {
                step: 10,
                loss: 4.25,
                lr: 1e-3,
                grad_norm: 0.5,
                tokens_per_s: 1234.5
            })
        );
        let MetricsRecord::Eval(e) = MetricsRecord::parse_line(eval).unwrap() else {
            panic!("an eval line")
        };
        assert_eq!(
            (e.step, e.eval["accuracy"], e.attention_entropy.clone()),
            (20, 0.25, vec![0.75, 0.5])
        );
        // Same keys going out, and back in unchanged.
        for line in [train, eval] {
            let record = MetricsRecord::parse_line(line).unwrap();
            let written: serde_json::Value = serde_json::from_str(&record.to_line()).unwrap();
            assert_eq!(written, serde_json::from_str::<serde_json::Value>(line).unwrap());
            assert_eq!(MetricsRecord::parse_line(&record.to_line()).unwrap(), record);
        }
    }

    #[test]
    fn non_finite_values_round_trip_as_nan_and_torn_lines_are_skipped() {
        let record = MetricsRecord::Eval(EvalRecord {
            step: 3,
            eval: BTreeMap::from([("err_k1".to_string(), f64::NAN), ("loss".to_string(), 1.5)]),
            attention_entropy: vec![f64::INFINITY, 0.5],
            sink_mass: vec![0.25, f64::NAN],
        });
        let line = record.to_line();
        assert!(line.contains("null"), "{line}");
        let MetricsRecord::Eval(back) = MetricsRecord::parse_line(&line).unwrap() else {
            panic!("an eval line")
        };
        assert!(back.eval["err_k1"].is_nan() && back.attention_entropy[0].is_nan());
        assert_eq!((back.eval["loss"], back.attention_entropy[1]), (1.5, 0.5));
        assert!(back.sink_mass[0] == 0.25 && back.sink_mass[1].is_nan());
        assert_eq!(MetricsRecord::parse_line(&line[..line.len() / 2]), None);
        assert_eq!(MetricsRecord::parse_line(r#"{"step":4}"#), None);
    }

    /// Damage in the middle of the file (bytes that are not UTF-8, a line of junk) costs its
    /// own lines only: every record around it is read, and the damaged line numbers reported.
    #[test]
    fn garbage_in_the_middle_spoils_only_its_own_lines() {
        let dir = std::env::temp_dir().join(format!("attnlab-metrics-junk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line = |step| {
            MetricsRecord::Train(TrainRecord {
                step,
                loss: 1.0,
                lr: 1e-3,
                grad_norm: 0.5,
                tokens_per_s: 10.0,
            })
            .to_line()
        };
        let mut bytes = format!("{}\n{}\n", line(1), line(2)).into_bytes();
        bytes.extend_from_slice(b"\xff\xfe\x00garbage\n{not json}\n");
        bytes.extend_from_slice(format!("{}\n{}", line(3), &line(4)[..9]).as_bytes());
        std::fs::write(dir.join(METRICS_FILE), bytes).unwrap();
        let log = MetricsLog::read(&dir).unwrap();
        let steps: Vec<usize> = log.records.iter().map(|(r, _)| r.step()).collect();
        assert_eq!(steps, [1, 2, 3]);
        assert_eq!(log.unreadable, [3, 4, 6]);
        let warning = log.warning(&dir).unwrap();
        assert!(warning.contains("skipped 3 unreadable line(s) (line 3, 4, 6)"), "{warning}");
        assert_eq!(read_metrics(&dir).unwrap().len(), 3);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
