//! TensorBoard event files beside `metrics.jsonl`, so `tensorboard --logdir checkpoints/` and
//! `wandb sync` read a run as it trains.
//!
//! The file is TFRecord framing around `Event` protobufs: per record a little-endian `u64`
//! length, the masked CRC-32C of those 8 bytes, the bytes, and their masked CRC-32C
//! (mask: `((c >> 15) | (c << 17)) + 0xa282ead8`). The first event carries
//! `file_version = "brain.Event:2"`; each later one a step and a `Summary` of scalar values.
//! The handful of protobuf fields used are encoded here by hand (a protobuf dependency for four
//! field types would outweigh this file).
//!
//! Fields: `Event { wall_time: double = 1; step: int64 = 2; file_version: string = 3;
//! summary: Summary = 5 }`, `Summary { repeated Value value = 1 }`,
//! `Value { tag: string = 1; simple_value: float = 2 }`.
//!
//! The event file mirrors `metrics.jsonl`, which stays the run's record: every appended line is
//! appended here too, and whenever the metrics file is rewritten (a resumed run drops what was
//! logged after its checkpoint) this file is rewritten from it, so the two never disagree.
//! Non-finite values are left out (TensorBoard would plot them as real numbers).

use crate::metrics::MetricsRecord;

/// The event file's name inside `<run>/tensorboard/` (TensorBoard reads any name containing
/// `tfevents`).
pub const EVENTS_FILE: &str = "events.out.tfevents.0.attnlab";
pub const DIR: &str = "tensorboard";

/// CRC-32C (Castagnoli), bitwise-reflected polynomial 0x82F63B78.
pub fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0x82F6_3B78 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |c, &b| TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8))
}

fn masked_crc(bytes: &[u8]) -> u32 {
    let c = crc32c(bytes);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its CRC, the payload, its CRC.
pub fn record(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc(payload).to_le_bytes());
    out
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (wire type 2).
fn bytes_field(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(field << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn event(wall_time: f64, step: Option<i64>, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut e = Vec::new();
    varint(1 << 3 | 1, &mut e);
    e.extend_from_slice(&wall_time.to_le_bytes());
    if let Some(step) = step {
        varint(2 << 3, &mut e);
        varint(step as u64, &mut e);
    }
    body(&mut e);
    e
}

/// The opening event every event file starts with.
pub fn file_version_event(wall_time: f64) -> Vec<u8> {
    record(&event(wall_time, None, |e| bytes_field(3, b"brain.Event:2", e)))
}

/// One event holding `scalars` (tag, value) at `step`; non-finite values are dropped, and
/// nothing is written when none is left.
pub fn scalars_event(wall_time: f64, step: usize, scalars: &[(String, f64)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, v) in scalars.iter().filter(|(_, v)| v.is_finite()) {
        let mut value = Vec::new();
        bytes_field(1, tag.as_bytes(), &mut value);
        varint(2 << 3 | 5, &mut value);
        value.extend_from_slice(&(*v as f32).to_le_bytes());
        bytes_field(1, &value, &mut summary);
    }
    if summary.is_empty() {
        return Vec::new();
    }
    record(&event(wall_time, Some(step as i64), |e| bytes_field(5, &summary, e)))
}

/// The scalars a metrics line becomes: `train/loss`, `train/lr`, `train/grad_norm`,
/// `train/tokens_per_s`; `eval/<metric>`; `attention_entropy/layer<i>`, `sink_mass/layer<i>`.
pub fn scalars_of(record: &MetricsRecord) -> Vec<(String, f64)> {
    match record {
        MetricsRecord::Train(t) => vec![
            ("train/loss".into(), t.loss),
            ("train/lr".into(), t.lr),
            ("train/grad_norm".into(), t.grad_norm),
            ("train/tokens_per_s".into(), t.tokens_per_s),
        ],
        MetricsRecord::Eval(e) => {
            let mut s: Vec<(String, f64)> =
                e.eval.iter().map(|(k, v)| (format!("eval/{k}"), *v)).collect();
            s.extend(
                e.attention_entropy
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("attention_entropy/layer{i}"), *v)),
            );
            s.extend(
                e.sink_mass.iter().enumerate().map(|(i, v)| (format!("sink_mass/layer{i}"), *v)),
            );
            s
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A whole event file for `records` (the file-version event, then one event per record).
pub fn event_file(records: &[MetricsRecord], wall_time: f64) -> Vec<u8> {
    let mut out = file_version_event(wall_time);
    for r in records {
        out.extend(scalars_event(wall_time, r.step(), &scalars_of(r)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{EvalRecord, TrainRecord};
    use std::collections::BTreeMap;

    #[test]
    fn crc32c_matches_the_standard_check_values() {
        // The CRC catalogue's check value for CRC-32C, and RFC 3720's 32 zero bytes.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
    }

    /// Reads records back with the framing checked, as TensorBoard's reader does.
    fn read_records(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len_bytes = &bytes[..8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), masked_crc(len_bytes));
            let payload = &bytes[12..12 + len];
            assert_eq!(
                u32::from_le_bytes(bytes[12 + len..16 + len].try_into().unwrap()),
                masked_crc(payload)
            );
            out.push(payload.to_vec());
            bytes = &bytes[16 + len..];
        }
        out
    }

    #[test]
    fn events_frame_and_encode_the_scalars_and_drop_non_finite_ones() {
        let records = vec![
            MetricsRecord::Train(TrainRecord {
                step: 300,
                loss: 2.5,
                lr: 1e-3,
                grad_norm: f64::NAN,
                tokens_per_s: 10.0,
            }),
            MetricsRecord::Eval(EvalRecord {
                step: 300,
                eval: BTreeMap::from([("loss".to_string(), 1.25)]),
                attention_entropy: vec![0.5],
                sink_mass: vec![],
            }),
        ];
        let file = event_file(&records, 1.5);
        let events = read_records(&file);
        assert_eq!(events.len(), 3);
        // wall_time (field 1, fixed64) then file_version (field 3).
        assert_eq!(events[0][0], 0x09);
        assert_eq!(f64::from_le_bytes(events[0][1..9].try_into().unwrap()), 1.5);
        assert_eq!(&events[0][9..], b"\x1a\x0dbrain.Event:2");
        // step 300 as a varint (0xac 0x02) after field tag 0x10, then the summary (0x2a).
        assert_eq!(&events[1][9..12], &[0x10, 0xac, 0x02]);
        assert_eq!(events[1][12], 0x2a);
        let text = String::from_utf8_lossy(&events[1]);
        assert!(
            text.contains("train/loss") && text.contains("train/lr") && !text.contains("grad_norm"),
            "{text}"
        );
        // The value: tag 0x15 then the f32 little-endian.
        let at = events[1].windows(4).position(|w| w == 2.5f32.to_le_bytes()).unwrap();
        assert_eq!(events[1][at - 1], 0x15);
        assert!(String::from_utf8_lossy(&events[2]).contains("attention_entropy/layer0"));
        // A record with only non-finite values writes nothing.
        assert!(scalars_event(0.0, 1, &[("x".into(), f64::INFINITY)]).is_empty());
    }
}
