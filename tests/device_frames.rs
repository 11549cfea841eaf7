//! The host's decoder of the device's UART stream (`host flash`'s
//! `DeviceRun::from_stream`, over `shared::protocol`) on arbitrary bytes: a
//! run or an error, never a panic; and a run's frames survive any junk
//! around them.
use host::flash::DeviceRun;
use proptest::prelude::*;
use shared::protocol::{encode_frame, frame_len, Done, Message, Output, Stats, CRC32};

fn frame<'a>(msg: impl Into<Message<'a>>) -> Vec<u8> {
    let msg = msg.into();
    let mut f = vec![0u8; frame_len(&msg)];
    encode_frame(&msg, &mut f).expect("encode");
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_bytes_give_a_run_or_an_error_never_a_panic(stream in proptest::collection::vec(any::<u8>(), 0..1024)) {
        if let Ok(run) = DeviceRun::from_stream(&stream) {
            prop_assert!(run.skipped_bytes <= stream.len());
        }
    }

    /// CRC-valid frames of every kind around random payloads: what random
    /// bytes seldom reach.
    #[test]
    fn valid_frames_with_random_payloads_never_panic(
        frames in proptest::collection::vec((0u8..=9, proptest::collection::vec(any::<u8>(), 0..48)), 0..8),
    ) {
        let mut stream = Vec::new();
        for (kind, payload) in &frames {
            let start = stream.len();
            stream.extend_from_slice(b"AX");
            stream.extend_from_slice(&[*kind, 0]);
            stream.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            stream.extend_from_slice(payload);
            let crc = CRC32.checksum(&stream[start + 2..]);
            stream.extend_from_slice(&crc.to_le_bytes());
        }
        let _ = DeviceRun::from_stream(&stream);
    }

    #[test]
    fn frames_survive_junk_between_them(
        a in proptest::collection::vec(any::<u8>(), 0..64),
        b in proptest::collection::vec(any::<u8>(), 0..64),
        ticks in any::<u64>(),
        out in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut s = a.clone();
        s.extend(frame(Output { ticks, bytes: &out }));
        s.extend(&b);
        s.extend(frame(Stats { stack_used: 1234, arena_used: 5678 }));
        s.extend(frame(Done { code: 0 }));
        // Junk may itself hold a malformed frame only by a 2^-32 CRC accident.
        let run = DeviceRun::from_stream(&s).expect("valid frames decode");
        prop_assert_eq!(run.output, Some((ticks, out)));
        prop_assert_eq!((run.stack_used, run.arena_used), (Some(1234), Some(5678)));
        prop_assert_eq!(run.done, Some(0));
    }
}
