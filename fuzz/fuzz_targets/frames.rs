//! `cargo fuzz run frames`: the host-side decoder of the device's UART
//! stream (`shared::protocol`'s frame scan and message decoders, what
//! `host flash` reads the firmware with) and the device's request reader on
//! arbitrary bytes.
//!
//! Random bytes seldom carry a valid CRC, so every input is read twice: as a
//! raw stream, and with the CRC that makes it a frame (first byte the kind,
//! the rest the payload), so the fuzzer works on the message decoders too.
//! Panics only on a bug: a decoder that panics, a frame scan that loses
//! track of bytes, or a decoded message that does not survive re-encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::protocol::{encode_frame, frame_len, receive, Frame, Frames, Message, CRC32, FRAME_HEADER, FRAME_TRAILER};

fn check_message(kind: u8, payload: &[u8]) {
    let Ok(msg) = Message::decode(kind, payload) else { return };
    assert_eq!(msg.kind(), kind);
    let mut frame = vec![0u8; frame_len(&msg)];
    let n = encode_frame(&msg, &mut frame).expect("a decoded message encodes");
    assert_eq!(n, frame.len());
    let (again, used) = Frame::parse(&frame).expect("an encoded frame parses");
    assert_eq!(used, n);
    assert_eq!(again.message(), Ok(msg), "decode(encode(m)) != m");
}

fn scan(stream: &[u8]) {
    let mut frames = Frames::new(stream);
    let mut framed = 0usize;
    for f in frames.by_ref() {
        framed += FRAME_HEADER + f.payload.len() + FRAME_TRAILER;
        check_message(f.kind, f.payload);
    }
    assert_eq!(framed + frames.skipped(), stream.len(), "bytes neither framed nor skipped");
}

fuzz_target!(|data: &[u8]| {
    scan(data);
    let _ = Frame::parse(data);
    // The device's request reader on the same bytes.
    let mut tail = [0u8; 256];
    let mut bytes = data.iter().copied();
    let _ = receive(|| bytes.next().ok_or(()), &mut tail);
    if let Some((&kind, payload)) = data.split_first() {
        let mut stream = Vec::with_capacity(data.len() + FRAME_HEADER + FRAME_TRAILER);
        stream.extend_from_slice(b"AX");
        stream.extend_from_slice(&[kind, 0]);
        stream.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        stream.extend_from_slice(payload);
        let crc = CRC32.checksum(&stream[2..]);
        stream.extend_from_slice(&crc.to_le_bytes());
        let (frame, used) = Frame::parse(&stream).expect("a frame with its CRC parses");
        assert_eq!((frame.kind, frame.payload, used), (kind, payload, stream.len()));
        check_message(kind, payload);
        scan(&stream);
    }
});
