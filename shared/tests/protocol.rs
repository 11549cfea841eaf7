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
            clock: clock::DWT,
            cpu_hz: 25_000_000,
            arena_capacity: 2 << 20,
            model_addr: 0x0010_0000,
            model_capacity: 3 << 20,
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
        Message::Stats(Stats { stack_used: 4321, arena_used: 8765 }),
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

    let hello =
        Hello { protocol: 1, clock: 9, cpu_hz: 2, arena_capacity: 3, model_addr: 4, model_capacity: 5, board: "b" };
    let n = Message::Hello(hello).encode(&mut buf).expect("encode");
    assert_eq!(&buf[..n], &[1, 0, 9, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, b'b']);

    let layer = LayerReport { index: 1, ticks: 2, output_len: 3, fnv: 4, bytes: Some(&[9]) };
    let n = Message::Layer(layer).encode(&mut buf).expect("encode");
    assert_eq!(&buf[..n], &[1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 9]);

    let mut run = Vec::new();
    Request::Run { flags: FLAG_LAYER_BYTES, input: &[7, 8] }.write(|p| run.extend_from_slice(p)).expect("write");
    let crc = CRC32.checksum(&[kind::RUN, 0, 6, 0, 0, 0, 1, 0, 0, 0, 7, 8]).to_le_bytes();
    assert_eq!(run, [b'A', b'X', kind::RUN, 0, 6, 0, 0, 0, 1, 0, 0, 0, 7, 8, crc[0], crc[1], crc[2], crc[3]]);
}

fn request_bytes(req: Request<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    req.write(|p| v.extend_from_slice(p)).expect("write");
    v
}

/// The device's reader on a stream: `Err(())` when the stream runs dry.
fn receive_from<'t>(
    stream: &mut impl Iterator<Item = u8>,
    tail: &'t mut [u8],
) -> Result<Request<'t>, ReceiveError<()>> {
    receive(|| stream.next().ok_or(()), tail)
}

#[test]
fn requests_round_trip_through_the_devices_reader_after_junk() {
    let input: Vec<u8> = (0..40u8).collect();
    let reqs = [Request::Run { flags: FLAG_LAYER_BYTES, input: &input }, Request::GetStats, Request::Stop];
    let mut stream = b"noise A".to_vec();
    for r in reqs {
        stream.extend(request_bytes(r));
        stream.extend(b"AY");
    }
    let mut bytes = stream.into_iter();
    for r in reqs {
        let mut tail = [0u8; 40];
        assert_eq!(receive_from(&mut bytes, &mut tail), Ok(r));
    }
    assert_eq!(receive_from(&mut bytes, &mut [0u8; 40]), Err(ReceiveError::Serial(())));
}

/// A garbled request is one error, and the reader then finds the next
/// request: a bad CRC, an oversized frame (its payload not read), an unknown
/// kind, a RUN without its head.
#[test]
fn garbled_requests_are_errors_and_the_next_request_reads() {
    let input = [5u8; 8];
    let good = request_bytes(Request::Run { flags: 0, input: &input });
    let mut bad_crc = good.clone();
    bad_crc[10] ^= 1;
    let oversized = request_bytes(Request::Run { flags: 0, input: &[1u8; 9] });
    let mut unknown = b"AX\x63\x00\x00\x00\x00\x00".to_vec();
    unknown.extend(CRC32.checksum(&unknown[2..]).to_le_bytes());
    let mut short = b"AX\x10\x00\x02\x00\x00\x00\x01\x00".to_vec();
    short.extend(CRC32.checksum(&short[2..]).to_le_bytes());
    type Expect = fn(&ReceiveError<()>) -> bool;
    let cases: [(Vec<u8>, Expect); 4] = [
        (bad_crc, |e| matches!(e, ReceiveError::BadCrc { .. })),
        (oversized[..8].to_vec(), |e| *e == ReceiveError::Oversized { len: 13, max: 12 }),
        (unknown, |e| *e == ReceiveError::UnknownKind(0x63)),
        (short, |e| *e == ReceiveError::Short { kind: kind::RUN, need: 4, got: 2 }),
    ];
    for (bytes, want) in cases {
        let mut stream = bytes.clone();
        stream.extend(&good);
        let mut it = stream.into_iter();
        let mut tail = [0u8; 8];
        let err = receive_from(&mut it, &mut tail).expect_err("garbled");
        assert!(want(&err), "{err:?} for {bytes:?}");
        assert!(!err.to_string().is_empty());
        let mut tail = [0u8; 8];
        assert_eq!(receive_from(&mut it, &mut tail), Ok(Request::Run { flags: 0, input: &input }));
    }
}

#[test]
fn answers_end_with_one_of_four_frames() {
    let ends: Vec<u8> = (0..=255u8).filter(|&k| ends_answer(k)).collect();
    assert_eq!(ends, [kind::OUTPUT, kind::ERROR, kind::DONE, kind::STATS]);
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
        let mut tail = [0u8; 64];
        let mut bytes = stream.iter().copied();
        let _ = receive(|| bytes.next().ok_or(()), &mut tail);
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
