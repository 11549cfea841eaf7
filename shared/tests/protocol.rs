//! The device protocol: every message and the frame codec round-trip, the
//! bytes on the wire are the documented ones, and the host-side decoder
//! meets arbitrary bytes with an error, never a panic.

use proptest::prelude::*;
use shared::model::Precision;
use shared::protocol::*;

fn examples() -> Vec<Message<'static>> {
    vec![
        Message::Hello(Hello {
            protocol: PROTOCOL,
            cpu_hz: 25_000_000,
            arena_capacity: 2 << 20,
            model_addr: 0x0010_0000,
            input_addr: 0x2100_0000,
            board: "qemu-an386",
        }),
        Message::Model(ModelInfo {
            precision: Precision::F16,
            layers: 9,
            model_len: 123_456,
            arena_needed: 7_890,
            input_len: 3 * 64 * 64,
        }),
        Message::Layer(LayerReport {
            index: 3,
            ticks: 0x1_2345_6789,
            output_len: 4,
            fnv: fnv1a64(&[1, 2, 3, 4]),
            bytes: Some(&[1, 2, 3, 4]),
        }),
        Message::Layer(LayerReport { index: 4, ticks: 1, output_len: 10, fnv: 42, bytes: None }),
        Message::Output(Output { ticks: u64::MAX, bytes: &[0x80, 0x7f, 0] }),
        Message::Output(Output { ticks: 0, bytes: &[] }),
        Message::Error(ErrorReport { code: exit_code::BAD_MODEL, message: "model file rejected: bad magic — ü" }),
        Message::Stats(Stats { stack_used: 4321 }),
        Message::Done(Done { code: exit_code::PANIC }),
    ]
}

#[test]
fn every_message_round_trips_through_its_payload_and_its_frame() {
    for msg in examples() {
        let mut payload = [0u8; 256];
        let n = msg.encode(&mut payload).expect("encode");
        assert_eq!(n, msg.len());
        assert_eq!(Message::decode(msg.kind(), &payload[..n]), Ok(msg), "{msg:?}");

        let mut frame = vec![0u8; frame_len(&msg)];
        assert_eq!(encode_frame(&msg, &mut frame), Ok(frame.len()));
        let (f, used) = Frame::parse(&frame).expect("parse");
        assert_eq!((f.kind, f.payload, used), (msg.kind(), &payload[..n], frame.len()));
        assert_eq!(f.message(), Ok(msg));

        // The streaming encoder sends the same bytes.
        let mut streamed = Vec::new();
        write_frame(&msg, |part| streamed.extend_from_slice(part)).expect("write");
        assert_eq!(streamed, frame);

        // A buffer one byte short is an error, not a panic.
        assert!(matches!(msg.encode(&mut payload[..n - 1]), Err(EncodeError::BufferTooSmall { .. })));
        assert!(matches!(encode_frame(&msg, &mut frame[1..]), Err(EncodeError::BufferTooSmall { .. })));
        // Every prefix of a frame asks for more bytes.
        for cut in 0..frame.len() {
            assert!(matches!(Frame::parse(&frame[..cut]), Err(DecodeError::Incomplete { .. })), "cut {cut}");
        }
    }
}

/// The bytes of the protocol's documentation, pinned: host and firmware of
/// different builds must keep talking.
#[test]
fn frames_have_the_documented_bytes() {
    let mut buf = [0u8; 64];
    let n = encode_frame(&Message::Done(Done { code: 4 }), &mut buf).expect("encode");
    let crc = CRC32.checksum(&[kind::DONE, 0, 1, 0, 0, 0, 4]).to_le_bytes();
    assert_eq!(&buf[..n], &[b'A', b'X', kind::DONE, 0, 1, 0, 0, 0, 4, crc[0], crc[1], crc[2], crc[3]]);

    let model = ModelInfo { precision: Precision::F16, layers: 2, model_len: 5, arena_needed: 6, input_len: 7 };
    let n = Message::Model(model).encode(&mut buf).expect("encode");
    assert_eq!(&buf[..n], &[1, 2, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0]);

    let hello = Hello { protocol: 1, cpu_hz: 2, arena_capacity: 3, model_addr: 4, input_addr: 5, board: "b" };
    let n = Message::Hello(hello).encode(&mut buf).expect("encode");
    assert_eq!(&buf[..n], &[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, b'b']);

    let layer = LayerReport { index: 1, ticks: 2, output_len: 3, fnv: 4, bytes: Some(&[9]) };
    let n = Message::Layer(layer).encode(&mut buf).expect("encode");
    assert_eq!(&buf[..n], &[1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 9]);

    let header = InputHeader { flags: FLAG_LAYER_BYTES, len: 0x0102_0304 };
    assert_eq!(header.to_bytes(), *b"AXIN\x01\x00\x01\x00\x04\x03\x02\x01\x00\x00\x00\x00");
}

#[test]
fn input_header_round_trips_and_refuses_what_is_not_one() {
    for header in [InputHeader { flags: 0, len: 0 }, InputHeader { flags: FLAG_LAYER_BYTES, len: 12_288 }] {
        let mut region = [0u8; 40];
        assert_eq!(header.encode(&mut region), Ok(INPUT_HEADER));
        assert_eq!(InputHeader::decode(&region), Ok(header));
        assert_eq!(InputHeader::decode(&region).map(|h| h.layer_bytes()), Ok(header.flags != 0));
    }
    let good = InputHeader { flags: 0, len: 3 }.to_bytes();
    assert_eq!(InputHeader::decode(&good[..INPUT_HEADER - 1]), Err(DecodeError::InputShort));
    let mut bad = good;
    bad[0] = b'B';
    assert_eq!(InputHeader::decode(&bad), Err(DecodeError::InputMagic));
    let mut bad = good;
    bad[4] = 2;
    assert_eq!(InputHeader::decode(&bad), Err(DecodeError::InputVersion(2)));
    assert!(InputHeader { flags: 0, len: 0 }.encode(&mut [0u8; 15]).is_err());
}

#[test]
fn malformed_payloads_are_typed_errors() {
    assert_eq!(Message::decode(99, &[]), Err(DecodeError::UnknownKind(99)));
    assert_eq!(
        Message::decode(kind::OUTPUT, &[1, 2, 3]),
        Err(DecodeError::Short { kind: kind::OUTPUT, need: 8, got: 3 })
    );
    assert_eq!(Message::decode(kind::ERROR, &[]), Err(DecodeError::Short { kind: kind::ERROR, need: 1, got: 0 }));
    let mut model = [0u8; 16];
    model[0] = 2;
    assert_eq!(Message::decode(kind::MODEL, &model), Err(DecodeError::BadPrecision(2)));
    assert_eq!(Message::decode(kind::ERROR, &[4, 0xff]), Err(DecodeError::NotUtf8 { kind: kind::ERROR }));
    let mut hello = [0u8; 21];
    hello[20] = 0xc3;
    assert_eq!(Message::decode(kind::HELLO, &hello), Err(DecodeError::NotUtf8 { kind: kind::HELLO }));
}

#[test]
fn the_frame_stream_resynchronises_after_junk_and_drops_bad_crcs() {
    let frame = |m: Message<'_>| {
        let mut v = vec![0u8; frame_len(&m)];
        encode_frame(&m, &mut v).expect("encode");
        v
    };
    let mut s = b"junkAX".to_vec();
    s.extend(frame(Message::Done(Done { code: 0 })));
    let mut bad = frame(Message::Error(ErrorReport { code: 2, message: "oops" }));
    let n = bad.len();
    bad[n - 1] ^= 1;
    s.extend(&bad);
    s.extend(frame(Message::Output(Output { ticks: 5, bytes: &[0xff] })));
    s.extend(b"AX\x06\x00\xff\xff\xff\xff"); // a frame cut short by a crash, claiming 4 GiB
    let mut frames = Frames::new(&s);
    let got: Vec<_> = frames.by_ref().map(|f| f.message()).collect();
    assert_eq!(got, [Ok(Message::Done(Done { code: 0 })), Ok(Message::Output(Output { ticks: 5, bytes: &[0xff] }))]);
    assert_eq!(frames.skipped(), 6 + bad.len() + 8);
}

fn any_message() -> impl Strategy<Value = (u8, Vec<u8>)> {
    (0u8..=8, proptest::collection::vec(any::<u8>(), 0..64))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random bytes into the host-side decoder (frame scan, then each
    /// frame's message): errors and skipped bytes, never a panic; every
    /// byte is either skipped or inside a frame.
    #[test]
    fn random_bytes_are_errors_never_panics(stream in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut frames = Frames::new(&stream);
        let mut framed = 0;
        for f in frames.by_ref() {
            framed += FRAME_HEADER + f.payload.len() + FRAME_TRAILER;
            let _ = f.message();
        }
        prop_assert_eq!(framed + frames.skipped(), stream.len());
        for k in 0..=255u8 {
            let _ = Message::decode(k, &stream);
        }
        let _ = Frame::parse(&stream);
        let _ = InputHeader::decode(&stream);
    }

    /// Valid frames around random payloads (past the CRC, where random bytes
    /// rarely get): the message decodes to an error, or to a message that
    /// encodes back to a payload that decodes to the same message.
    #[test]
    fn random_payloads_in_valid_frames_decode_or_fail_cleanly(
        (kind, payload) in any_message(),
        junk in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut stream = junk.clone();
        stream.extend_from_slice(&FRAME_MAGIC);
        stream.extend_from_slice(&[kind, 0]);
        stream.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        stream.extend_from_slice(&payload);
        let crc = CRC32.checksum(&stream[junk.len() + 2..]);
        stream.extend_from_slice(&crc.to_le_bytes());
        let frame = Frames::new(&stream).last();
        prop_assert_eq!(frame, Some(Frame { kind, payload: &payload }));
        if let Ok(msg) = Message::decode(kind, &payload) {
            let mut again = [0u8; 128];
            let n = msg.encode(&mut again).expect("fits");
            prop_assert_eq!(Message::decode(kind, &again[..n]), Ok(msg));
        }
    }
}
