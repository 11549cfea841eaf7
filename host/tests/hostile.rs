//! Hostile input (issue 22): files and options built to hang, crash or
//! exhaust the `host` binary. Each case runs the real binary under a time
//! limit and an address-space limit (`ulimit -v`, so an allocation that the
//! size checks should have refused fails loudly instead of swapping), and
//! asserts a named error (or the right result), never a panic (exit 101).
//! Fixtures are built on the fly; the whole file runs in a few seconds.
use host::checkpoint::Checkpoint;
use host::nn::Network;
use shared::spec::{Activation, Sequential, Shape};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Kill a command that runs longer than this.
const TIME_LIMIT: Duration = Duration::from_secs(60);

/// Address space for each command (KiB): well under what the size bombs ask for.
const ADDRESS_SPACE_KIB: u64 = 6 << 20;

/// Run `host args` under the limits, with `stdout` as given (piped when None).
fn host_with(args: &[&str], stdout: Option<Stdio>) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(stdout.unwrap_or_else(Stdio::piped));
    let mut child = cmd.spawn().expect("run host");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("host {args:?} ran over {TIME_LIMIT:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn host(args: &[&str]) -> Output {
    host_with(args, None)
}

/// The command failed cleanly (exit 1, no panic) with every one of `want` in its message.
fn assert_named_error(o: &Output, want: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(o.status.code(), Some(1), "exit status {:?}: {err}", o.status);
    for w in want {
        assert!(err.contains(w), "want {w:?} in: {err}");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn png(path: &Path, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(6, 4, image::Rgb(rgb)).save(path).unwrap();
}

/// A small float checkpoint on `input`, three classes.
fn checkpoint(dir: &Path, name: &str, input: Shape) -> PathBuf {
    let spec = Sequential::new(input)
        .conv2d(shared::spec::Conv2D::new(2, 3).same().relu())
        .flatten()
        .dense(3, Activation::Softmax)
        .build()
        .unwrap();
    let net = Network::new(&spec, 1);
    let ck = Checkpoint::capture("tiny", &net, &["a".into(), "b".into(), "c".into()], None, None);
    let p = dir.join(name);
    ck.save(&p).unwrap();
    p
}

/// A closed standard error (its reader gone) does not turn a run into a
/// panic: predict on the golden checkpoint warns on stderr (a format-1 file
/// without checksums) and still predicts, exit 0.
#[test]
fn a_closed_stderr_is_not_a_panic() {
    let ckpt = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/micro.safetensors");
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/images/circle.png");
    let script = r#"(sleep 0.3; exec "$0" predict --checkpoint "$1" "$2" 2>&1 >/dev/null) | (exec 0<&-; sleep 1); echo "status ${PIPESTATUS[0]}""#;
    let o = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_host"))
        .arg(&ckpt)
        .arg(&image)
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.trim(), "status 0", "{err}");
}

#[test]
fn a_closed_or_full_stdout_ends_quietly_not_in_a_panic() {
    // The reader is gone before host writes: EPIPE, a quiet exit. The pipe
    // is made inside bash, so no other test's child can inherit its read end
    // and keep it open; host starts after the reader has closed it.
    let script = r#"(sleep 0.3; exec "$0" summary) | (exec 0<&-; sleep 1); echo "status ${PIPESTATUS[0]}""#;
    let o = Command::new("bash").arg("-c").arg(script).arg(env!("CARGO_BIN_EXE_host")).output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!err.contains("panicked") && err.is_empty(), "{err}");
    assert_eq!(out.trim(), "status 141");
    // A reader that leaves while train runs: the epoch in progress is still
    // saved, then the run ends quietly (and --resume can continue it).
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let script = r#""$0" train --arch alexnet-tiny --input 67 --per-class 8 --batch-size 8 --epochs 3 \
        --no-progress --out "$1" | head -1 >/dev/null; echo "status ${PIPESTATUS[0]}""#;
    let o = Command::new("bash").arg("-c").arg(script).arg(env!("CARGO_BIN_EXE_host")).arg(&run).output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!err.contains("panicked") && err.is_empty(), "{err}");
    assert_eq!(out.trim(), "status 141");
    let saved = Checkpoint::load(&run.join("last.safetensors")).expect("the first epoch was saved");
    assert_eq!(saved.train.map(|t| t.epoch), Some(1));
    // A full disk is an error message.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let o = host_with(&["summary"], Some(Stdio::from(full)));
    assert_named_error(&o, &["writing to standard output", "No space left"]);
}

#[test]
fn symlink_loops_in_a_class_folder_end_and_escapes_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    png(&d.join("a/1.png"), [1, 2, 3]);
    png(&d.join("a/2.png"), [1, 2, 3]);
    png(&d.join("b/1.png"), [3, 2, 1]);
    std::os::unix::fs::symlink(".", d.join("a/s1")).unwrap();
    std::os::unix::fs::symlink(".", d.join("a/s2")).unwrap();
    let o = host(&["dataset", "info", s(&d)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("Found 3 files belonging to 2 classes"), "{out}");
    // A link to the dataset's root would train b's image under a's label.
    let up = d.join("a/up");
    std::os::unix::fs::symlink("..", &up).unwrap();
    let o = host(&["dataset", "info", s(&d)]);
    assert_named_error(&o, &[s(&up), "outside its class folder"]);
    std::fs::remove_file(&up).unwrap();
    // A class folder named with a control character.
    png(&d.join("c\u{1b}[31m/1.png"), [9, 9, 9]);
    let o = host(&["dataset", "info", s(&d)]);
    assert_named_error(&o, &["control character", "\\u{1b}[31m"]);
}

/// A minimal protobuf writer: enough of ONNX's messages for a tiny model.
mod pb {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    pub fn int(out: &mut Vec<u8>, field: u64, v: i64) {
        varint(out, field << 3);
        varint(out, v as u64);
    }
    pub fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        varint(out, (field << 3) | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    /// ValueInfoProto: a float tensor input of fixed `dims`.
    pub fn input(name: &str, dims: &[i64]) -> Vec<u8> {
        let mut shape = Vec::new();
        for &d in dims {
            let mut dim = Vec::new();
            int(&mut dim, 1, d);
            bytes(&mut shape, 1, &dim);
        }
        let mut tensor = Vec::new();
        int(&mut tensor, 1, 1);
        bytes(&mut tensor, 2, &shape);
        let mut ty = Vec::new();
        bytes(&mut ty, 1, &tensor);
        let mut v = Vec::new();
        bytes(&mut v, 1, name.as_bytes());
        bytes(&mut v, 2, &ty);
        v
    }
    /// NodeProto with integer-list attributes.
    pub fn node(op: &str, input: &str, output: &str, attrs: &[(&str, &[i64])]) -> Vec<u8> {
        let mut n = Vec::new();
        bytes(&mut n, 1, input.as_bytes());
        bytes(&mut n, 2, output.as_bytes());
        bytes(&mut n, 3, format!("{op}_0").as_bytes());
        bytes(&mut n, 4, op.as_bytes());
        for (name, ints) in attrs {
            let mut a = Vec::new();
            bytes(&mut a, 1, name.as_bytes());
            for &i in *ints {
                int(&mut a, 8, i);
            }
            int(&mut a, 20, 7); // INTS
            bytes(&mut n, 5, &a);
        }
        n
    }
    /// TensorProto with raw data.
    pub fn tensor(name: &str, dims: &[i64], data_type: i64, raw: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        for &d in dims {
            int(&mut t, 1, d);
        }
        int(&mut t, 2, data_type);
        bytes(&mut t, 8, name.as_bytes());
        bytes(&mut t, 9, raw);
        t
    }
    /// ModelProto around one graph.
    pub fn model(nodes: &[Vec<u8>], initializers: &[Vec<u8>], input: Vec<u8>) -> Vec<u8> {
        let mut g = Vec::new();
        for n in nodes {
            bytes(&mut g, 1, n);
        }
        bytes(&mut g, 2, b"g");
        for t in initializers {
            bytes(&mut g, 5, t);
        }
        bytes(&mut g, 11, &input);
        let mut m = Vec::new();
        int(&mut m, 1, 7);
        let mut opset = Vec::new();
        int(&mut opset, 2, 13);
        bytes(&mut m, 8, &opset);
        bytes(&mut m, 7, &g);
        m
    }
}

#[test]
fn hostile_onnx_attributes_and_initializers_are_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let input = || pb::input("x", &[1, 3, 8, 8]);
    let cases: Vec<(Vec<u8>, Vec<&str>)> = vec![
        (
            pb::model(
                &[pb::node("MaxPool", "x", "y", &[("kernel_shape", &[2, 2]), ("strides", &[0, 0])])],
                &[],
                input(),
            ),
            vec!["MaxPool_0", "positive 32-bit"],
        ),
        (
            pb::model(
                &[pb::node("MaxPool", "x", "y", &[("kernel_shape", &[2, 2]), ("strides", &[-3, -3])])],
                &[],
                input(),
            ),
            vec!["MaxPool_0", "positive 32-bit"],
        ),
        (pb::model(&[], &[pb::tensor("w", &[4, 4], 1, &[0; 7])], input()), vec!["\"w\"", "holds 7 bytes"]),
        (pb::model(&[], &[pb::tensor("w", &[4, 4], 77, &[0; 64])], input()), vec!["\"w\"", "data type 77"]),
        (pb::model(&[], &[pb::tensor("w", &[-4, 4], 1, &[0; 64])], input()), vec!["\"w\"", "dimension -4"]),
        (
            pb::model(&[], &[pb::tensor("w", &[1_000_000, 1_000_000], 1, &[0; 64])], input()),
            vec!["\"w\"", "over the memory limit"],
        ),
    ];
    for (bytes, want) in cases {
        let f = tmp.path().join("m.onnx");
        std::fs::write(&f, bytes).unwrap();
        let o = host(&["import", s(&f), "--out", s(&out)]);
        assert_named_error(&o, &want);
        assert!(!out.exists());
    }
}

#[test]
fn an_input_that_is_not_rgb_is_a_named_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = checkpoint(tmp.path(), "gray.safetensors", Shape::image(8, 8, 1));
    let img = tmp.path().join("x.png");
    png(&img, [1, 2, 3]);
    let o = host(&["predict", "--checkpoint", s(&ck), s(&img)]);
    assert_named_error(&o, &["(None, 8, 8, 1)", "not an RGB image"]);
    let d = tmp.path().join("d");
    png(&d.join("a/1.png"), [1, 2, 3]);
    png(&d.join("b/1.png"), [3, 2, 1]);
    png(&d.join("c/1.png"), [3, 2, 9]);
    let o = host(&["eval", "--checkpoint", s(&ck), "--data", s(&d)]);
    assert_named_error(&o, &["(None, 8, 8, 1)", "not an RGB image"]);
    // A stack file with a one-channel input, trained on RGB images.
    let stack = tmp.path().join("gray.json");
    let layers = serde_json::json!({"input": [8, 8, 1], "layers": [
        {"type": "Flatten"}, {"type": "Dense", "units": 3, "activation": "softmax"}]});
    std::fs::write(&stack, layers.to_string()).unwrap();
    let run = tmp.path().join("run");
    let o =
        host(&["train", "--arch", s(&stack), "--data", s(&d), "--val-split", "0", "--out", s(&run), "--no-progress"]);
    assert_named_error(&o, &["(None, 8, 8, 1)", "not an RGB image"]);
}

#[test]
fn sizes_a_file_or_option_declares_are_checked_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    // A 1 KB checkpoint whose layer list says Dense 65536 -> 65536.
    let layers = serde_json::json!({"input": [1, 1, 65536], "layers": [
        {"type": "Flatten"}, {"type": "Dense", "units": 65536, "activation": "softmax"}]});
    let names: Vec<String> = (0..65536).map(|i| format!("c{i}")).collect();
    let meta: std::collections::HashMap<String, String> = [
        ("format", "host-checkpoint/2".to_string()),
        ("arch", "bomb".into()),
        ("layers", layers.to_string()),
        ("class_names", serde_json::json!(names).to_string()),
        ("checksums", "{}".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bomb = tmp.path().join("bomb.safetensors");
    let none: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
    std::fs::write(&bomb, safetensors::serialize(none, Some(meta)).unwrap()).unwrap();
    let img = tmp.path().join("x.png");
    png(&img, [1, 2, 3]);
    let o = host(&["predict", "--checkpoint", s(&bomb), s(&img)]);
    assert_named_error(&o, &["bomb.safetensors", "4295032832 parameters", "the file holds only"]);

    // A training input size whose activations cannot fit.
    let run = tmp.path().join("run");
    let o = host(&["train", "--input", "30000", "--epochs", "1", "--per-class", "2", "--out", s(&run)]);
    assert_named_error(&o, &["at 30000x30000", "over the memory limit"]);

    // A PNG whose header declares 23000 x 23000 pixels (the pixels are never read).
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&23000u32.to_be_bytes());
    ihdr.extend_from_slice(&23000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut big = b"\x89PNG\r\n\x1a\n".to_vec();
    for chunk in [ihdr, b"IDAT\x78\x9c\x03\x00".to_vec(), b"IEND".to_vec()] {
        big.extend_from_slice(&(chunk.len() as u32 - 4).to_be_bytes());
        big.extend_from_slice(&chunk);
        big.extend_from_slice(&shared::protocol::CRC32.checksum(&chunk).to_be_bytes());
    }
    let big_png = tmp.path().join("big.png");
    std::fs::write(&big_png, big).unwrap();
    let ck = checkpoint(tmp.path(), "ok.safetensors", Shape::image(8, 8, 3));
    let o = host(&["predict", "--checkpoint", s(&ck), s(&big_png)]);
    assert_named_error(&o, &["big.png", "23000x23000", "memory limit"]);
    // An image file longer than its share of the limit is not read at all.
    let long = tmp.path().join("long.png");
    let mut bytes = std::fs::read(&img).unwrap();
    bytes.resize(4096, 0);
    std::fs::write(&long, bytes).unwrap();
    let o = host(&["--max-memory", "16K", "predict", "--checkpoint", s(&ck), s(&long)]);
    assert_named_error(&o, &["long.png is a 4.0 KiB file", "over its share (2.0 KiB) of the memory limit"]);
    // Whole-file reads are held to the limit by the file's length.
    let o = host(&["--max-memory", "1K", "predict", "--checkpoint", s(&ck), s(&img)]);
    assert_named_error(&o, &["reading the checkpoint", "ok.safetensors", "over the memory limit of 1.0 KiB"]);
    // --max-memory lowers the limit for every command.
    let o = host(&["--max-memory", "4K", "predict", "--checkpoint", s(&ck), s(&img)]);
    assert_named_error(&o, &["over the memory limit of 4.0 KiB"]);
}

#[test]
fn a_truncated_jpeg_is_an_error_and_predict_does_not_offer_skip_bad() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = checkpoint(tmp.path(), "ok.safetensors", Shape::image(8, 8, 3));
    // Big enough that half of it ends inside the entropy-coded scan, where
    // the decoder fills the missing rows with grey and reports success.
    let img = image::RgbImage::from_fn(256, 256, |x, y| image::Rgb([(x ^ y) as u8, (x * y) as u8, (x + 3 * y) as u8]));
    let mut jpeg = std::io::Cursor::new(Vec::new());
    img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    let jpeg = jpeg.into_inner();
    let cut = tmp.path().join("cut.jpg");
    std::fs::write(&cut, &jpeg[..jpeg.len() / 2]).unwrap();
    let o = host(&["predict", "--checkpoint", s(&ck), s(&cut)]);
    assert_named_error(&o, &["cut.jpg", "truncated"]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("--skip-bad"));
}

#[test]
fn an_output_onto_its_own_input_is_refused_and_the_input_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = checkpoint(tmp.path(), "c.safetensors", Shape::image(8, 8, 3));
    let before = std::fs::read(&ck).unwrap();
    let same = tmp.path().join("./sub/../c.safetensors");
    std::fs::create_dir(tmp.path().join("sub")).unwrap();
    let o = host(&["quantize", "--checkpoint", s(&ck), "--to", "f16", "--out", s(&same)]);
    assert_named_error(&o, &["--out", "would destroy the input"]);
    assert_eq!(std::fs::read(&ck).unwrap(), before);
    let onnx = tmp.path().join("v.onnx");
    std::fs::write(&onnx, pb::model(&[], &[], pb::input("x", &[1, 3, 8, 8]))).unwrap();
    let o = host(&["import", s(&onnx), "--out", s(&onnx)]);
    assert_named_error(&o, &["--out", "would destroy the input"]);
}

#[test]
fn train_options_that_would_do_nothing_or_contradict_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let o = host(&["train", "--epochs", "0", "--out", s(&run)]);
    assert_named_error(&o, &["--epochs 0"]);
    assert!(!run.join("last.safetensors").exists());
    // Every image unreadable with --skip-bad: an error, not a NaN run.
    let d = tmp.path().join("bad");
    for c in ["a", "b"] {
        std::fs::create_dir_all(d.join(c)).unwrap();
        for i in 0..3 {
            std::fs::write(d.join(format!("{c}/{i}.png")), b"not a png").unwrap();
        }
    }
    let args = ["--arch", "alexnet-tiny", "--input", "67", "--epochs", "1", "--batch-size", "2", "--no-progress"];
    let mut a = vec!["train", "--data", s(&d), "--skip-bad", "--out", s(&run)];
    a.extend(args);
    let o = host(&a);
    assert_named_error(&o, &["trained on no image", "unreadable"]);
    // And eval with every image unreadable: an error, not a NaN accuracy.
    std::fs::create_dir_all(d.join("c")).unwrap();
    std::fs::write(d.join("c/0.png"), b"not a png either").unwrap();
    let ck = checkpoint(tmp.path(), "ok.safetensors", Shape::image(8, 8, 3));
    let o = host(&["eval", "--checkpoint", s(&ck), "--data", s(&d), "--subset", "all", "--skip-bad"]);
    assert_named_error(&o, &["all 7 images were unreadable"]);
}

#[test]
fn resume_refuses_an_arch_input_or_data_that_contradicts_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shapes");
    let o = host(&["dataset", "export", s(&data), "--per-class", "2", "--size", "40"]);
    assert!(o.status.success());
    let other = tmp.path().join("other");
    let o = host(&["dataset", "export", s(&other), "--per-class", "3", "--size", "40"]);
    assert!(o.status.success());
    let run = tmp.path().join("run");
    let base = ["--arch", "alexnet-tiny", "--input", "67", "--batch-size", "4", "--no-progress", "--out", s(&run)];
    let mut a = vec!["train", "--data", s(&data), "--epochs", "1"];
    a.extend(base);
    let o = host(&a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (extra, want) in [
        (vec!["--data", s(&other)], "is not the folder the run was trained on"),
        (vec!["--input", "99"], "another network"),
        (vec!["--arch", "alexnet-micro"], "another network"),
    ] {
        let mut a = vec!["train", "--resume", "--epochs", "2", "--no-progress", "--out", s(&run)];
        a.extend(extra);
        let o = host(&a);
        assert_named_error(&o, &["--resume", want]);
    }
    // The same --data, spelled differently, is fine.
    let spelled = tmp.path().join("./shapes/../shapes");
    let o = host(&["train", "--resume", "--epochs", "2", "--no-progress", "--out", s(&run), "--data", s(&spelled)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn finite_weights_that_overflow_are_named_not_printed_as_nan() {
    let tmp = tempfile::tempdir().unwrap();
    let p = checkpoint(tmp.path(), "huge.safetensors", Shape::image(8, 8, 3));
    let mut ck = Checkpoint::load(&p).unwrap();
    for (name, t) in ck.tensors.iter_mut() {
        if name.ends_with("kernel") {
            t.fill(3e38);
        }
    }
    ck.save(&p).unwrap();
    let img = tmp.path().join("x.png");
    png(&img, [200, 200, 200]);
    let o = host(&["predict", "--checkpoint", s(&p), s(&img)]);
    assert_named_error(&o, &["x.png", "overflow f32"]);
    let d = tmp.path().join("d");
    for c in ["a", "b", "c"] {
        png(&d.join(format!("{c}/1.png")), [200, 200, 200]);
    }
    let o = host(&["eval", "--checkpoint", s(&p), "--data", s(&d), "--subset", "all"]);
    assert_named_error(&o, &["overflow f32"]);
    let model = tmp.path().join("m.int8");
    let o = host(&["quantize", "--checkpoint", s(&p), "--data", s(&d), "--to", "int8", "--out", s(&model)]);
    assert_named_error(&o, &["calibration: layer 0", "overflow f32"]);
    let o = host(&["quantize", "--checkpoint", s(&p), "--to", "f16", "--out", s(&model)]);
    assert_named_error(&o, &["layer 0", "beyond f16's range", "inf"]);
    assert!(!model.exists());
}

/// Jenkins's lookup3 `hashlittle` (initval 0): the checksum of HDF5's
/// version-2 object headers, needed to patch one.
fn lookup3(data: &[u8]) -> u32 {
    let w = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let init = 0xdead_beefu32.wrapping_add(data.len() as u32);
    let (mut a, mut b, mut c) = (init, init, init);
    let mut k = data;
    while k.len() > 12 {
        a = a.wrapping_add(w(&k[0..]));
        b = b.wrapping_add(w(&k[4..]));
        c = c.wrapping_add(w(&k[8..]));
        a = a.wrapping_sub(c) ^ c.rotate_left(4);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a) ^ a.rotate_left(6);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b) ^ b.rotate_left(8);
        b = b.wrapping_add(a);
        a = a.wrapping_sub(c) ^ c.rotate_left(16);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a) ^ a.rotate_left(19);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b) ^ b.rotate_left(4);
        b = b.wrapping_add(a);
        k = &k[12..];
    }
    if k.is_empty() {
        return c;
    }
    let mut t = [0u8; 12];
    t[..k.len()].copy_from_slice(k);
    a = a.wrapping_add(w(&t[0..]));
    b = b.wrapping_add(w(&t[4..]));
    c = c.wrapping_add(w(&t[8..]));
    c = (c ^ b).wrapping_sub(b.rotate_left(14));
    a = (a ^ c).wrapping_sub(c.rotate_left(11));
    b = (b ^ a).wrapping_sub(a.rotate_left(25));
    c = (c ^ b).wrapping_sub(b.rotate_left(16));
    a = (a ^ c).wrapping_sub(c.rotate_left(4));
    b = (b ^ a).wrapping_sub(a.rotate_left(14));
    (c ^ b).wrapping_sub(b.rotate_left(24))
}

/// What h5py makes with `f["b1/loop"] = f["/"]`: a group hard-linked to the
/// root below itself. hdf5-pure cannot write one, so the file is written with
/// a group `b1/loop`, and the link's address is pointed at the root's object
/// header (its checksum recomputed).
fn h5_with_a_cycle() -> Vec<u8> {
    let mut b = hdf5_pure::FileBuilder::new();
    let mut b1 = b.create_group("b1");
    let inner = b1.create_group("loop");
    b1.add_group(inner.finish());
    b.add_group(b1.finish());
    let mut bytes = b.finish().unwrap();
    assert_eq!(bytes[8], 3, "a version 3 superblock");
    let root = bytes[36..44].to_vec();
    let name = bytes.windows(4).position(|w| w == b"loop").expect("the link named loop");
    let header = bytes[..name].windows(4).rposition(|w| w == b"OHDR").expect("b1's object header");
    let flags = bytes[header + 5];
    let mut start = header + 6 + if flags & 0x20 != 0 { 16 } else { 0 } + if flags & 0x10 != 0 { 4 } else { 0 };
    let width = 1usize << (flags & 3);
    let mut size = 0usize;
    for i in 0..width {
        size |= (bytes[start + i] as usize) << (8 * i);
    }
    start += width;
    let end = start + size;
    let stored = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap());
    assert_eq!(lookup3(&bytes[header..end]), stored, "the checksum is understood");
    bytes[name + 4..name + 12].copy_from_slice(&root);
    let sum = lookup3(&bytes[header..end]);
    bytes[end..end + 4].copy_from_slice(&sum.to_le_bytes());
    bytes
}

#[test]
fn an_hdf5_group_linked_into_itself_is_a_named_error_not_a_stack_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let h5 = tmp.path().join("cycle.weights.h5");
    std::fs::write(&h5, h5_with_a_cycle()).unwrap();
    let check = hdf5_pure::File::from_bytes(std::fs::read(&h5).unwrap()).unwrap();
    assert_eq!(check.group("b1/loop/b1/loop").unwrap().groups().unwrap(), vec!["b1".to_string()]);
    let out = tmp.path().join("out.safetensors");
    let o = host(&["import", s(&h5), "--arch", "alexnet-tiny", "--classes", "2", "--out", s(&out)]);
    assert_named_error(&o, &["cycle.weights.h5", "/b1/loop/b1/loop", "linked inside itself"]);
    // The same weights inside a .keras zip.
    let keras = tmp.path().join("cycle.keras");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&keras).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    zip.start_file("config.json", opts).unwrap();
    std::io::Write::write_all(
        &mut zip,
        br#"{"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [null, 4, 4, 3]}},
        {"class_name": "Flatten", "config": {"name": "f"}},
        {"class_name": "Dense", "config": {"name": "d", "units": 2}}]}}"#,
    )
    .unwrap();
    zip.start_file("model.weights.h5", opts).unwrap();
    std::io::Write::write_all(&mut zip, &std::fs::read(&h5).unwrap()).unwrap();
    zip.finish().unwrap();
    let o = host(&["import", s(&keras), "--out", s(&out)]);
    assert_named_error(&o, &["cycle.keras", "linked inside itself"]);
    assert!(!out.exists());
}

#[test]
fn a_weights_file_with_40000_empty_groups_is_listed_quickly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = hdf5_pure::FileBuilder::new();
    for i in 0..40_000 {
        let g = b.create_group(&format!("g{i}"));
        b.add_group(g.finish());
    }
    let h5 = tmp.path().join("many.weights.h5");
    std::fs::write(&h5, b.finish().unwrap()).unwrap();
    let out = tmp.path().join("out.safetensors");
    let started = Instant::now();
    let o = host(&["import", s(&h5), "--arch", "alexnet-tiny", "--classes", "2", "--out", s(&out)]);
    assert_named_error(&o, &["many.weights.h5", "the file has 0 Conv2D layers"]);
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}

/// A `.keras` zip whose weights member is 1 MiB of zeros, with the inflated
/// size its headers declare set to `declared`.
fn keras_declaring(path: &Path, declared: u32) {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("config.json", opts).unwrap();
    std::io::Write::write_all(&mut zip, b"{}").unwrap();
    zip.start_file("model.weights.h5", opts).unwrap();
    std::io::Write::write_all(&mut zip, &vec![0u8; 1 << 20]).unwrap();
    let mut bytes = zip.finish().unwrap().into_inner();
    // The weights member's local header (size at 22) and central directory entry (size at 24).
    for (sig, at) in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)] {
        let name_at = |i: usize| if sig == b"PK\x03\x04" { i + 30 } else { i + 46 };
        let i = (0..bytes.len() - 4)
            .find(|&i| &bytes[i..i + 4] == sig && bytes[name_at(i)..].starts_with(b"model.weights.h5"))
            .expect("the member's header");
        assert_eq!(&bytes[i + at..i + at + 4], &(1u32 << 20).to_le_bytes());
        bytes[i + at..i + at + 4].copy_from_slice(&declared.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_keras_member_is_held_to_its_declared_size_and_the_memory_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let bomb = tmp.path().join("bomb.keras");
    keras_declaring(&bomb, 3 << 30);
    let o = host(&["--max-memory", "1G", "import", s(&bomb), "--out", s(&out)]);
    assert_named_error(
        &o,
        &["bomb.keras", "model.weights.h5, inflated to 3221225472 bytes", "memory limit of 1.0 GiB"],
    );
    // A member that inflates past what its header says stops there.
    let liar = tmp.path().join("liar.keras");
    keras_declaring(&liar, 1000);
    let o = host(&["import", s(&liar), "--out", s(&out)]);
    assert_named_error(&o, &["liar.keras", "model.weights.h5", "declared uncompressed size"]);
    assert!(!out.exists());
}

#[test]
fn a_tiny_model_with_a_huge_input_is_refused_by_every_command_that_runs_it() {
    let tmp = tempfile::tempdir().unwrap();
    // 37800 x 37800 x 3 pixels pooled to 1 x 1 x 3: fifteen parameters, 17 GB of input.
    let spec = Sequential::new(Shape::image(37800, 37800, 3))
        .max_pool(37800, 1)
        .flatten()
        .dense(3, Activation::Softmax)
        .build()
        .unwrap();
    let net = Network::new(&spec, 1);
    let ck = Checkpoint::capture("huge-input", &net, &["a".into(), "b".into(), "c".into()], None, None);
    let ck_path = tmp.path().join("huge.safetensors");
    ck.save(&ck_path).unwrap();
    assert!(std::fs::metadata(&ck_path).unwrap().len() < 2048);
    let img = tmp.path().join("x.png");
    png(&img, [1, 2, 3]);
    let o = host(&["predict", "--checkpoint", s(&ck_path), s(&img)]);
    assert_named_error(&o, &["huge.safetensors", "its layer stack needs", "over the memory limit"]);
    let out = tmp.path().join("m.f16");
    let o = host(&["quantize", "--checkpoint", s(&ck_path), "--to", "f16", "--out", s(&out)]);
    assert_named_error(&o, &["huge.safetensors", "over the memory limit"]);
    // The same model as a model file (written by the library, which does not run it).
    let model = host::quantize::quantize_checkpoint(
        &ck,
        shared::model::Precision::F16,
        &host::quantize::Calibration::default(),
    )
    .unwrap();
    host::quantize::write_model_file(&model, &out).unwrap();
    let o = host(&["simulate", "--model", s(&out), s(&img)]);
    assert_named_error(&o, &["m.f16", "running the model (its activation arena and input)", "over the memory limit"]);
    let o = host(&["inspect", s(&out)]);
    assert!(o.status.success(), "inspect only reads: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn option_sizes_are_checked_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let o = host(&["train", "--per-class", "1000000000", "--epochs", "1", "--out", s(&run)]);
    assert_named_error(&o, &["--per-class 1000000000 (6000000000 images)", "over the memory limit"]);
    let o = host(&["train", "--per-class", "18446744073709551615", "--epochs", "1", "--out", s(&run)]);
    assert_named_error(&o, &["--per-class 18446744073709551615", "overflows"]);
    let o = host(&["train", "--batch-size", "100000000", "--epochs", "1", "--out", s(&run)]);
    assert_named_error(&o, &["with batch 100000000", "over the memory limit"]);
    let o = host(&["dataset", "export", s(&tmp.path().join("exp")), "--per-class", "1", "--size", "60000"]);
    assert_named_error(&o, &["rendering 60000x60000 images", "over the memory limit"]);
    let o = host(&["train", "--max-memory", "lots", "--epochs", "1", "--out", s(&run)]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a byte count"), "{:?}", o);
    assert_eq!(o.status.code(), Some(2));
}

/// Graph stack files that name impossible tensors are errors naming the
/// layer, never panics: a tensor computed later, an Add without its second
/// input or of two shapes, a second input on a one-input layer, a
/// Concatenate of an image and a vector, a malformed "inputs".
#[test]
fn bad_graph_stack_files_are_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let conv = r#"{"type": "Conv2D", "filters": 4, "kernel": 3, "stride": 1, "padding": "same", "activation": "relu"}"#;
    let conv2 =
        r#"{"type": "Conv2D", "filters": 4, "kernel": 3, "stride": 2, "padding": "same", "activation": "relu"}"#;
    let tail = r#"{"type": "GlobalAveragePooling2D"}, {"type": "Dense", "units": 6, "activation": "softmax"}"#;
    let cases = [
        (format!(r#"{conv}, {{"type": "Add", "activation": "relu", "inputs": [1, 7]}}, {tail}"#), "reads tensor 7"),
        (format!(r#"{conv}, {{"type": "Add", "activation": "relu"}}, {tail}"#), "second input"),
        (format!(r#"{conv}, {conv2}, {{"type": "Add", "activation": "linear", "inputs": [2, 1]}}, {tail}"#), "Add"),
        (format!(r#"{conv}, {{"type": "Activation", "activation": "relu", "inputs": [1, 0]}}, {tail}"#), "one input"),
        (format!(r#"{conv}, {{"type": "Activation", "activation": "softmax"}}, {tail}"#), "softmax"),
        (
            format!(r#"{conv}, {{"type": "Flatten"}}, {{"type": "Concatenate", "inputs": [2, 1]}}, {tail}"#),
            "Concatenate",
        ),
        (format!(r#"{conv}, {{"type": "Add", "activation": "relu", "inputs": "1"}}, {tail}"#), "inputs"),
        (format!(r#"{conv}, {{"type": "Add", "activation": "relu", "inputs": [1, -1]}}, {tail}"#), "bad tensor"),
    ];
    for (i, (layers, want)) in cases.iter().enumerate() {
        let arch = tmp.path().join(format!("bad{i}.json"));
        std::fs::write(&arch, format!(r#"{{"input": [16, 16, 3], "layers": [{layers}]}}"#)).unwrap();
        let run = tmp.path().join(format!("run{i}"));
        let o = host(&["train", "--arch", s(&arch), "--epochs", "1", "--no-progress", "--out", s(&run)]);
        assert_named_error(&o, &[&format!("bad{i}.json"), want]);
    }
}
