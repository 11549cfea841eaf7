//! The firmware's defmt log: raw bytes over semihosting, decoded with the
//! format strings of the ELF that ran.

/// The firmware's defmt log lines and the problems met decoding them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DefmtLog {
    /// One `"LEVEL message"` per decoded frame (as `defmt-print` shows it, uncoloured).
    pub lines: Vec<String>,
    /// What could not be decoded, and why.
    pub warnings: Vec<String>,
}

/// Decode the raw defmt bytes the firmware wrote over semihosting, with the
/// format strings of `elf`'s `.defmt` table (the bytes carry only indices
/// into it, so the very ELF that ran is needed).
///
/// Never fails and never panics: a broken log must not hide the result
/// frames, so every problem becomes a warning. The encoding (rzcobs, defmt's
/// default, or raw) is the one the table records. Garbled rzcobs frames are
/// skipped and counted (the encoding resynchronises on the next zero byte);
/// a raw stream cannot resynchronise, so decoding stops at the first bad frame.
pub fn decode_defmt(elf: &[u8], stream: &[u8]) -> DefmtLog {
    let mut log = DefmtLog::default();
    if stream.is_empty() {
        return log;
    }
    let table = match defmt_decoder::Table::parse(elf) {
        Ok(Some(t)) => t,
        Ok(None) => {
            log.warnings.push(format!(
                "{} bytes of defmt log, but the ELF has no .defmt section to decode them with",
                stream.len()
            ));
            return log;
        }
        Err(e) => {
            log.warnings.push(format!("cannot read the ELF's defmt table: {e:#}"));
            return log;
        }
    };
    let encoding = table.encoding();
    // The decoder has `unwrap`s and `panic!`s on its formatting paths; a log
    // line is not worth a crash, so a panic ends decoding with a warning.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lines = Vec::new();
        let mut malformed = 0usize;
        let mut decoder = table.new_stream_decoder();
        decoder.received(stream);
        loop {
            match decoder.decode() {
                Ok(frame) => lines.push(frame.display(false).to_string()),
                Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
                Err(defmt_decoder::DecodeError::Malformed) => {
                    malformed += 1;
                    if !encoding.can_recover() {
                        break;
                    }
                }
            }
        }
        (lines, malformed)
    }));
    match decoded {
        Ok((lines, malformed)) => {
            log.lines = lines;
            if malformed > 0 {
                let what = if encoding.can_recover() { "skipped" } else { "stopped at" };
                log.warnings.push(format!("{what} {malformed} malformed defmt frame(s) ({encoding:?} encoding)"));
            }
        }
        Err(_) => log.warnings.push("the defmt decoder panicked on this log; no lines decoded".into()),
    }
    // rzcobs frames end with a zero byte: anything after the last one is a
    // frame the firmware did not finish (it stopped mid-write).
    if encoding == defmt_decoder::Encoding::Rzcobs {
        let tail = stream.len() - stream.iter().rposition(|&b| b == 0).map_or(0, |i| i + 1);
        if tail > 0 {
            log.warnings.push(format!("the defmt log ends with an unfinished frame ({tail} bytes)"));
        }
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defmt_decoding_problems_are_warnings_not_errors() {
        assert_eq!(decode_defmt(b"not an elf", b""), DefmtLog::default(), "no log, nothing to say");
        let log = decode_defmt(b"not an elf", &[1, 2, 3, 0]);
        assert!(log.lines.is_empty());
        assert!(log.warnings[0].contains("defmt table"), "{log:?}");
    }
}
