//! Device vs desktop: the same model file and input, run by the firmware on
//! an emulated Cortex-M (QEMU) and by `shared::engine::run` here, must give
//! the same output bytes and the same bytes at every layer. And the device's
//! session: refused models, garbled requests and wrong inputs get their
//! errors, and the device keeps serving after a request's error.
//!
//! These tests need `qemu-system-arm` and the thumb targets (scripts/setup.sh
//! installs both). Without them they FAIL with the install hint: a device
//! test that silently passes would prove nothing.

use host::flash::{self, exit_code, Board, DeviceRun, DeviceSession, Step};
use shared::convert::{self, OwnedModel, Ranges};
use shared::engine::{self, Observer};
use shared::format;
use shared::spec::{Activation, Conv2D, ModelSpec, Sequential, Shape};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use suite::{random_params, views, Rng};

/// QEMU runs of these small models take well under a second; the margin is
/// for a loaded CI machine. A hang fails the test at this bound.
const TIMEOUT: Duration = Duration::from_secs(120);

/// A small model with every layer kind of the AlexNet stack.
fn small_spec() -> ModelSpec {
    Sequential::new(Shape::image(16, 16, 3))
        .conv2d(Conv2D::new(6, 3).strides(2).relu())
        .batch_norm()
        .max_pool(2, 2)
        .conv2d(Conv2D::new(8, 3).same().relu())
        .batch_norm()
        .flatten()
        .dense(16, Activation::Relu)
        .dropout(0.5)
        .dense(5, Activation::Softmax)
        .build()
        .expect("valid test stack")
}

const LABELS: &str = "cat\ndog\nbird\nfish\nfrog";

/// Quantize random float parameters: int8 (calibrated on random inputs) or f16.
fn build_model(spec: &ModelSpec, f16: bool, seed: u64) -> (OwnedModel, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let params = random_params(spec, &mut rng);
    let views = views(&params);
    let n = spec.input().elements() as usize;
    let sample = rng.vec(n, -1.0, 1.0);
    let mut model = if f16 {
        convert::convert_f16(spec, &views).expect("f16 model")
    } else {
        let mut ranges = Ranges::new(spec);
        for _ in 0..3 {
            suite::observe(&mut ranges, spec, &views, &rng.vec(n, -1.0, 1.0)).expect("calibration");
        }
        suite::observe(&mut ranges, spec, &views, &sample).expect("calibration");
        convert::quantize_int8(spec, &views, &ranges).expect("int8 model")
    };
    if spec.output().elements() == 5 {
        model.labels = LABELS.into();
    }
    (model, sample)
}

/// The model's input bytes for `x`.
fn input_bytes(model: &OwnedModel, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; x.len() * model.precision.activation_bytes()];
    match model.precision {
        shared::model::Precision::Int8 => engine::quantize_input(x, model.input, &mut out),
        shared::model::Precision::F16 => engine::encode_f16_input(x, &mut out),
    }
    .expect("input encoding");
    out
}

/// Every layer's output on the desktop.
#[derive(Default)]
struct Record(Vec<(usize, Vec<u8>)>);

impl Observer for Record {
    fn layer_done(&mut self, index: usize, _shape: Shape, output: &[u8]) {
        self.0.push((index, output.to_vec()));
    }
}

fn desktop(model: &OwnedModel, input: &[u8]) -> (Vec<u8>, Record) {
    let view = model.view();
    let prepared = engine::prepare(&view).expect("prepare");
    let mut arena = vec![0u8; prepared.plan().arena_bytes];
    let mut rec = Record::default();
    let out = engine::run(&prepared, input, &mut arena, &mut rec).expect("desktop run").to_vec();
    (out, rec)
}

/// Build each board's firmware once per test binary.
fn firmware(board: Board) -> PathBuf {
    static AN386: OnceLock<PathBuf> = OnceLock::new();
    static AN524: OnceLock<PathBuf> = OnceLock::new();
    static F405: OnceLock<PathBuf> = OnceLock::new();
    let cell = match board {
        Board::QemuAn386 => &AN386,
        Board::QemuAn524 => &AN524,
        Board::Stm32f405 => &F405,
        Board::Stm32h743 | Board::Rp2350 => panic!("QEMU does not emulate {}", board.name()),
    };
    cell.get_or_init(|| {
        flash::build_firmware(board, &flash::default_firmware_dir())
            .unwrap_or_else(|e| panic!("building the {} firmware: {e:#}", board.name()))
    })
    .clone()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("device-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Boot `board` with `model_file` and take it through `steps`.
fn session(board: Board, dir: &Path, model_file: &[u8], steps: &[Step<'_>]) -> DeviceSession {
    let model = dir.join("model.axq");
    std::fs::write(&model, model_file).expect("write model");
    let elf = firmware(board);
    flash::run_qemu(board, &elf, &model, steps, TIMEOUT, Some(&dir.join("defmt.log")))
        .unwrap_or_else(|e| panic!("running {} in QEMU: {e:#}", board.name()))
}

/// Run `model_file` with `input` on `board` (every layer's bytes sent back):
/// the answer, or the boot's end when the device refused the model.
fn device(board: Board, dir: &Path, model_file: &[u8], input: &[u8]) -> DeviceRun {
    std::fs::write(dir.join("input.raw"), input).expect("write raw input");
    let s = session(board, dir, model_file, &[Step::Run { input, layer_bytes: true }]);
    s.run(0).unwrap_or_else(|| s.boot_run())
}

/// The device's output and every layer's bytes and hash equal the desktop's.
fn assert_same_bytes(board: Board, model: &OwnedModel, x: &[f32], name: &str) -> DeviceRun {
    let file = format::write(&model.view()).expect("write model file");
    let input = input_bytes(model, x);
    let (want, rec) = desktop(model, &input);
    let dir = scratch(name);
    let run = device(board, &dir, &file, &input);
    run.ensure_success().unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert_eq!(run.hello.as_ref().map(|h| h.board.as_str()), Some(board.name()));
    let (_, got) = run.output.clone().expect("output frame");
    assert_eq!(got, want, "{name}: output bytes differ between {} and the desktop", board.name());
    assert_eq!(run.layers.len(), rec.0.len(), "{name}: layer count");
    // The firmware runs the banded plan: its conv and BN layers of each band
    // group never hold a whole tensor, so the device sends the hash of
    // their rows (in order: the whole tensor's hash) and no bytes; every
    // other layer's bytes come whole.
    let view = model.view();
    let banded = shared::band::plan_banded(&view, shared::band::InputRows::Resident);
    assert_eq!(run.model.as_ref().map(|m| m.arena_needed as usize), Some(banded.arena_bytes), "{name}: arena");
    for (dev, (index, bytes)) in run.layers.iter().zip(&rec.0) {
        assert_eq!(dev.index as usize, *index);
        assert_eq!(dev.fnv, flash::fnv1a64(bytes), "{name}: layer {index} hash differs");
        assert_eq!(dev.output_len as usize, bytes.len(), "{name}: layer {index} length differs");
        let want = if banded.is_banded(*index) { None } else { Some(bytes.as_slice()) };
        assert_eq!(dev.bytes.as_deref(), want, "{name}: layer {index} bytes differ");
        assert!(dev.ticks > 0, "{name}: layer {index} was not timed");
    }
    assert_eq!(run.done, Some(0));
    let stack = run.stack_used.expect("a STATS frame");
    // The target of the scratch-in-the-arena work: at most 8 KiB of stack,
    // the boot (parse, plan, prepare) included.
    assert!(stack > 0 && stack <= 8 * 1024, "{name}: {stack} stack bytes");
    assert_log_tells_the_frames(&run, name);
    cleanup(&dir);
    run
}

/// The defmt log, decoded with the ELF's table, says what the frames say:
/// the format strings of `firmware/src/main.rs` filled with the same numbers.
fn assert_log_tells_the_frames(run: &DeviceRun, name: &str) {
    assert!(run.log_warnings.is_empty(), "{name}: defmt decoding problems: {:?}", run.log_warnings);
    let board = &run.hello.as_ref().expect("hello").board;
    let m = run.model.as_ref().expect("a MODEL frame");
    let (ticks, _) = run.output.as_ref().expect("output frame");
    let want = [
        format!("INFO {board}: model region "),
        format!("INFO model ok: {} bytes, {} layers, arena {}", m.model_len, m.layers, m.arena_needed),
        format!("INFO run 1: {ticks} ticks"),
        "INFO stop after 1 runs".to_string(),
    ];
    assert_eq!(run.log.len(), want.len(), "{name}: device log {:?}", run.log);
    for (line, want) in run.log.iter().zip(&want) {
        assert!(line.starts_with(want.as_str()), "{name}: device log line {line:?}, expected {want:?}...");
    }
}

/// Remove a test's scratch folder, unless DEVICE_TEST_KEEP is set (to replay
/// a run by hand: `host flash --model DIR/model.axq --input-raw ...`).
fn cleanup(dir: &Path) {
    if std::env::var_os("DEVICE_TEST_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        eprintln!("kept {}", dir.display());
    }
}

/// A ResNet-shaped graph with every graph operator: a residual block whose
/// input is read again by the Add (through a strided 1x1 shortcut conv), a
/// standalone ReLU after a BN, a ReLU6 Add, a BN that cannot run in place
/// (its input is concatenated later), a concatenation, a per-pixel Softmax
/// layer, a global average pool (TFLite's MEAN).
fn residual_spec() -> ModelSpec {
    use shared::spec::{Inputs, Layer};
    let st = Inputs::stack;
    let bn = Layer::BatchNorm { epsilon: 1e-3, momentum: 0.99 };
    let mut strided = Conv2D::new(8, 3).same();
    strided.stride = shared::spec::Hw::square(2);
    let mut shortcut = Conv2D::new(8, 1);
    shortcut.stride = shared::spec::Hw::square(2);
    let layers = [
        Layer::Conv2D(Conv2D::new(6, 3).same()),     // 0 -> t1
        bn,                                          // 1 -> t2
        Layer::Activation(Activation::Relu),         // 2 -> t3: block input
        Layer::Conv2D(strided),                      // 3 -> t4
        bn,                                          // 4 -> t5
        Layer::Activation(Activation::Relu6),        // 5 -> t6
        Layer::Conv2D(Conv2D::new(8, 3).same()),     // 6 -> t7
        Layer::Conv2D(shortcut),                     // 7 -> t8 (reads t3)
        Layer::Add { activation: Activation::Relu }, // 8 -> t9 = t7 + t8
        bn,                                          // 9 -> t10 (t9 read again by 10)
        Layer::Concat,                               // 10 -> t11 = [t10, t9]
        Layer::Softmax,                              // 11 -> t12, over each pixel's 16 channels
        Layer::GlobalAvgPool,                        // 12 -> t13
        Layer::Dense { units: 5, activation: Activation::Softmax },
    ];
    let mut inputs: Vec<Inputs> = (0..layers.len()).map(st).collect();
    inputs[7] = Inputs { main: 3, other: None };
    inputs[8] = Inputs { main: 7, other: Some(8) };
    inputs[10] = Inputs { main: 10, other: Some(9) };
    ModelSpec::graph(Shape::image(12, 12, 3), &layers, &inputs).expect("valid test graph")
}

#[test]
fn residual_graphs_give_the_desktop_bytes_on_every_core() {
    let spec = residual_spec();
    assert!(!spec.is_stack());
    for (board, f16, seed) in [
        (Board::QemuAn386, false, 11),
        (Board::QemuAn386, true, 12),
        (Board::QemuAn524, false, 13),
        (Board::Stm32f405, false, 14),
        (Board::Stm32f405, true, 15),
    ] {
        let (model, x) = build_model(&spec, f16, seed);
        assert_same_bytes(board, &model, &x, &format!("graph-{}-{}", board.name(), if f16 { "f16" } else { "int8" }));
    }
}

#[test]
fn int8_model_gives_the_desktop_bytes_on_the_cortex_m4() {
    let (model, x) = build_model(&small_spec(), false, 1);
    assert_same_bytes(Board::QemuAn386, &model, &x, "int8-an386");
}

#[test]
fn f16_model_gives_the_desktop_bytes_on_the_cortex_m4() {
    let (model, x) = build_model(&small_spec(), true, 2);
    assert_same_bytes(Board::QemuAn386, &model, &x, "f16-an386");
}

#[test]
fn int8_and_f16_models_give_the_desktop_bytes_on_the_cortex_m33() {
    let (model, x) = build_model(&small_spec(), false, 3);
    assert_same_bytes(Board::QemuAn524, &model, &x, "int8-an524");
    let (model, x) = build_model(&small_spec(), true, 4);
    assert_same_bytes(Board::QemuAn524, &model, &x, "f16-an524");
}

/// An f16 model whose weights, BatchNormalization constants and input hold
/// subnormals, infinities and NaNs (with payloads and both signs): the FPU
/// kernels (hardware VCVTB/VCVTT, VMLA.F32) give the desktop's bits at every
/// layer on the Cortex-M4, the M33 and the STM32F405, NaN results included
/// (stored as the one canonical NaN on both sides).
#[test]
fn f16_special_values_give_the_desktop_bits_on_every_core() {
    use half::f16;
    let spec = Sequential::new(Shape::image(12, 12, 3))
        .conv2d(Conv2D::new(7, 3).same().relu())
        .batch_norm()
        .max_pool(2, 2)
        .conv2d(Conv2D::new(5, 3).same())
        .batch_norm()
        .flatten()
        .dense(9, Activation::Relu)
        .dense(4, Activation::None)
        .build()
        .expect("valid test stack");
    let (mut model, x) = build_model(&spec, true, 31);
    let nan = |payload: u16, negative: bool| f16::from_bits(0x7c00 | payload | if negative { 0x8000 } else { 0 });
    let mut rng = Rng::new(32);
    for (i, (w, _)) in model.layers.iter_mut().enumerate() {
        let convert::OwnedWeights::F16 { weights, bias } = w else { continue };
        // A tenth of the weights subnormal (both signs), then one value of each kind.
        for v in weights.iter_mut() {
            if rng.chance(10) {
                *v = f16::from_bits(rng.range(1, 0x3ff) as u16 | if rng.chance(2) { 0x8000 } else { 0 });
            }
        }
        let n = weights.len();
        let specials = [f16::INFINITY, f16::NEG_INFINITY, nan(0x155, false), nan(0x201, true)];
        for (k, s) in specials.iter().enumerate() {
            weights[(k * 7 + 3 * i) % n] = *s;
        }
        let b = i % bias.len();
        bias[b] = f16::from_bits(0x0001);
    }
    let file = format::write(&model.view()).expect("write model file");
    let mut input = input_bytes(&model, &x);
    let pokes: [(usize, u16); 6] =
        [(0, 0x0001), (7, 0x8200), (40, 0x7c00), (101, 0xfc00), (222, 0x7d55), (300, 0x03ff)];
    for (at, bits) in pokes {
        input[2 * at..2 * at + 2].copy_from_slice(&bits.to_le_bytes());
    }
    let (want, rec) = desktop(&model, &input);
    // The test means something only if the specials reach the layers.
    let halves = |b: &[u8]| b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect::<Vec<_>>();
    let all: Vec<u16> = rec.0.iter().flat_map(|(_, b)| halves(b)).collect();
    assert!(all.contains(&0x7e00), "no NaN in any layer");
    assert!(all.iter().any(|h| h & 0x7fff == 0x7c00), "no infinity in any layer");
    assert!(all.iter().any(|h| h & 0x7c00 == 0 && h & 0x3ff != 0), "no subnormal in any layer");
    assert!(all.iter().all(|h| h & 0x7fff <= 0x7c00 || *h == 0x7e00), "a NaN that is not the canonical one");
    for board in [Board::QemuAn386, Board::QemuAn524, Board::Stm32f405] {
        let name = format!("f16-specials-{}", board.name());
        let dir = scratch(&name);
        let run = device(board, &dir, &file, &input);
        run.ensure_success().unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(run.output.as_ref().map(|(_, b)| b.as_slice()), Some(want.as_slice()), "{name}: output bits");
        assert_eq!(run.layers.len(), rec.0.len(), "{name}: layer count");
        for (dev, (index, bytes)) in run.layers.iter().zip(&rec.0) {
            assert_eq!(dev.fnv, flash::fnv1a64(bytes), "{name}: layer {index} bits differ");
        }
        cleanup(&dir);
    }
}

/// A firmware whose stack overflows (the `stack-overflow-test` build recurses
/// without bound after HELLO) ends in a HardFault frame that names the
/// overflow and exit code 102 on the Cortex-M4, the M33 and the STM32F405:
/// the stack sits at the bottom of RAM, and what lies below it faults (an MPU
/// guard on the M4s, the stack limit register on the M33) instead of the
/// stack running into .bss and the arena.
#[test]
fn a_stack_overflow_faults_and_names_itself_on_every_core() {
    let (model, _) = build_model(&small_spec(), false, 41);
    let file = format::write(&model.view()).expect("write model file");
    for board in [Board::QemuAn386, Board::QemuAn524, Board::Stm32f405] {
        let name = format!("overflow-{}", board.name());
        let dir = scratch(&name);
        let elf = flash::build_firmware_with(
            board,
            flash::Build::Qemu,
            &flash::default_firmware_dir(),
            Some("stack-overflow-test"),
        )
        .unwrap_or_else(|e| panic!("building the overflow firmware for {}: {e:#}", board.name()));
        let model_path = dir.join("model.axq");
        std::fs::write(&model_path, &file).expect("write model");
        let s = flash::run_qemu(board, &elf, &model_path, &[], TIMEOUT, None)
            .unwrap_or_else(|e| panic!("running {} in QEMU: {e:#}", board.name()));
        assert!(s.hello.is_some(), "{name}: no HELLO");
        let (code, message) = s.boot_error.clone().unwrap_or_else(|| panic!("{name}: no ERROR frame: {:?}", s.stderr));
        let fault = shared::protocol::exit_code::FAULT;
        assert_eq!(code, fault, "{name}: {message}");
        assert!(message.starts_with("HardFault: stack overflow"), "{name}: {message}");
        assert!(s.model.is_none(), "{name}: the device went on to load the model");
        assert_eq!(s.done, Some(fault), "{name}");
        assert_eq!(s.exit_code, Some(exit_code::FAULT), "{name}");
        cleanup(&dir);
    }
}

/// One boot of the emulated STM32F405 serves `n` requests, a seeded mix of
/// valid runs (8 inputs), frames with a bad CRC, oversized and unknown
/// requests, inputs cut short and junk before a valid run: every valid
/// answer equals the desktop's bytes, every bad request gets its ERROR
/// frame, the device never hangs (each answer within the session timeout)
/// and its stack and arena high-water marks are the same at the end as after
/// the first request of each kind. Returns the marks.
fn soak(n: usize, seed: u64) -> (u32, u32) {
    let (model, _) = build_model(&small_spec(), false, seed);
    let file = format::write(&model.view()).expect("write model file");
    let mut rng = Rng::new(seed);
    let elements = small_spec().input().elements() as usize;
    let inputs: Vec<Vec<u8>> = (0..8).map(|_| input_bytes(&model, &rng.vec(elements, -1.0, 1.0))).collect();
    let wants: Vec<Vec<u8>> = inputs.iter().map(|i| desktop(&model, i).0).collect();
    let frame = |r: shared::protocol::Request<'_>| {
        let mut f = Vec::new();
        r.write(|p| f.extend_from_slice(p)).expect("frame");
        f
    };
    let runs: Vec<Vec<u8>> =
        inputs.iter().map(|i| frame(shared::protocol::Request::Run { flags: 0, input: i })).collect();
    let stats = frame(shared::protocol::Request::GetStats);
    let short: Vec<Vec<u8>> =
        inputs.iter().map(|i| frame(shared::protocol::Request::Run { flags: 0, input: &i[..i.len() - 7] })).collect();
    let bad_crc: Vec<Vec<u8>> = runs
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let at = 8 + r.len() / 3;
            r[at] ^= 0x41;
            r
        })
        .collect();
    let oversized = b"AX\x10\x00\x00\x00\x10\x00".to_vec();
    let mut unknown = b"AX\x63\x00\x01\x00\x00\x00\x07".to_vec();
    unknown.extend(shared::protocol::CRC32.checksum(&unknown[2..]).to_le_bytes());
    let junk: Vec<Vec<u8>> = runs
        .iter()
        .map(|r| {
            let mut j = b"\x00\xff\x13junk\x58\x00".to_vec();
            j.extend(r);
            j
        })
        .collect();

    /// What a step must get back.
    #[derive(Clone, Copy)]
    enum Want {
        Output(usize),
        Error(i32),
        Stats,
    }
    // One request of each kind first (each reaches its own deepest stack),
    // then the marks, which must not move for the rest of the soak.
    let mut plan: Vec<(&[u8], Want)> = vec![
        (&runs[0], Want::Output(0)),
        (&bad_crc[1], Want::Error(exit_code::BAD_REQUEST)),
        (&oversized, Want::Error(exit_code::BAD_REQUEST)),
        (&unknown, Want::Error(exit_code::BAD_REQUEST)),
        (&short[2], Want::Error(exit_code::BAD_INPUT)),
        (&junk[3], Want::Output(3)),
        (&stats, Want::Stats),
    ];
    while plan.len() < n - 1 {
        let k = rng.range(0, 7) as usize;
        plan.push(match rng.range(0, 9) {
            0..=3 => (&runs[k], Want::Output(k)),
            4 => (&bad_crc[k], Want::Error(exit_code::BAD_REQUEST)),
            5 => (&oversized, Want::Error(exit_code::BAD_REQUEST)),
            6 => (&unknown, Want::Error(exit_code::BAD_REQUEST)),
            7 => (&short[k], Want::Error(exit_code::BAD_INPUT)),
            8 => (&junk[k], Want::Output(k)),
            _ => (&stats, Want::Stats),
        });
    }
    plan.push((&stats, Want::Stats));
    let steps: Vec<Step<'_>> = plan.iter().map(|(bytes, _)| Step::Raw(bytes)).collect();
    let dir = scratch(&format!("soak-{n}"));
    let s = session(Board::Stm32f405, &dir, &file, &steps);
    assert_eq!(s.answers.len(), n, "an answer per request");
    let mut marks = Vec::new();
    for (i, (a, (_, want))) in s.answers.iter().zip(&plan).enumerate() {
        match *want {
            Want::Output(k) => {
                assert_eq!(
                    a.output.as_ref().map(|o| &o.1),
                    Some(&wants[k]),
                    "request {i}: output bytes ({:?})",
                    a.error
                )
            }
            Want::Error(code) => {
                let got = a.error.as_ref().map(|e| e.0 as i32);
                assert_eq!(got, Some(code), "request {i}: {:?}", a.error);
            }
            Want::Stats => marks.push((a.stack_used.expect("stack mark"), a.arena_used.expect("arena mark"))),
        }
    }
    // A SysTick taken near a request's deepest point puts its exception frame
    // and the handler's push below that point, when QEMU's timing decides.
    // With the FPU's context active the frame is the extended one: 26 words
    // (lazy stacking reserves S0-S15 and FPSCR above the 8 words it writes,
    // so the written words lie at the frame's bottom), plus a word of
    // alignment; the handler pushes 2 more (`push {r7, lr}`): 29 words. CI
    // runs beside other load saw 4,592 -> 4,624 bytes at request 42 (the
    // basic frame) and 4,592 -> 4,672 at request 40. Anything that grows with
    // the requests goes past this slack within 500 of them.
    const IRQ_SLACK: u32 = 29 * 4;
    let first = marks[0];
    assert!(
        marks.iter().all(|m| m.1 == first.1 && m.0 >= first.0 && m.0 <= first.0 + IRQ_SLACK),
        "the stack and arena high-water marks grew during the soak: {marks:?}"
    );
    let arena = s.model.as_ref().expect("MODEL").arena_needed;
    assert!(first.1 <= arena, "the device wrote {} arena bytes past its plan of {arena}", first.1 - arena);
    assert_eq!((s.exit_code, s.done), (Some(0), Some(0)));
    cleanup(&dir);
    first
}

/// The soak in CI: 500 requests in one boot of the emulated STM32F405.
#[test]
fn one_boot_serves_500_mixed_requests() {
    soak(500, 51);
}

/// The long soak: 10,000 requests in one boot (`cargo test --release --test
/// device soak_10000 -- --ignored --nocapture`).
#[test]
#[ignore = "long: about 10,000 requests of emulated time"]
fn soak_10000_requests() {
    let (stack, arena) = soak(10_000, 52);
    eprintln!("soak: 10,000 requests, stack high-water {stack} bytes, arena high-water {arena} bytes");
}

/// `host flash` refuses a model whose run does not fit the board's RAM
/// before building anything, naming the arena, the stack, the static data
/// and the RAM; the same model fits a board with more. And the firmware
/// each emulated board builds keeps its static data within the table's
/// bound that this check counts on.
#[test]
fn a_model_too_big_for_the_ram_is_refused_before_flashing() {
    let spec = Sequential::new(Shape::image(128, 128, 3))
        .conv2d(Conv2D::new(8, 3).same().relu())
        .max_pool(2, 2)
        .flatten()
        .dense(4, Activation::None)
        .build()
        .expect("valid test stack");
    let (model, _) = build_model(&spec, true, 61);
    let view = model.view();
    let err = flash::check_ram(Board::Stm32f405, &view).expect_err("a 128x128 f16 model on the F405");
    let msg = format!("{err:#}");
    for part in ["does not fit stm32f405", "stack 16384", "static data 16384", "131072 bytes of RAM"] {
        assert!(msg.contains(part), "{msg}");
    }
    let fits = flash::check_ram(Board::QemuAn386, &view).expect("the same model on the AN386");
    assert!(fits.fits());

    for board in [Board::QemuAn386, Board::QemuAn524, Board::Stm32f405] {
        let elf = std::fs::read(firmware(board)).expect("firmware ELF");
        let statics = static_data_bytes(&elf);
        assert!(
            statics <= board.spec().static_bytes as u64,
            "{}: .data + .bss = {statics} bytes, over the table's {}",
            board.name(),
            board.spec().static_bytes
        );
    }
}

/// .data + .bss of a firmware ELF (cortex-m-rt's `__sdata` .. `__ebss`).
fn static_data_bytes(elf: &[u8]) -> u64 {
    use object::{Object, ObjectSymbol};
    let file = object::File::parse(elf).expect("an ELF");
    let sym = |name: &str| {
        file.symbols().find(|s| s.name() == Ok(name)).map(|s| s.address()).unwrap_or_else(|| panic!("no {name}"))
    };
    sym("__ebss") - sym("__sdata")
}

/// The scaled AlexNet the Cortex-M4 board is meant for, end to end, int8 and f16.
#[test]
fn alexnet_micro_gives_the_desktop_bytes_on_the_cortex_m4() {
    let spec = shared::spec::alexnet_micro(shared::spec::ALEXNET_MICRO_INPUT, 10).expect("preset");
    for (f16, name) in [(false, "alexnet-micro-int8-an386"), (true, "alexnet-micro-f16-an386")] {
        let (model, x) = build_model(&spec, f16, 5);
        let run = assert_same_bytes(Board::QemuAn386, &model, &x, name);
        let layer_ticks: u64 = run.layers.iter().map(|l| l.ticks).sum();
        eprintln!(
            "{name}: layers {layer_ticks} SysTick ticks = ~{} instructions, {:?} stack bytes",
            run.instructions(layer_ticks).unwrap_or(0),
            run.stack_used
        );
    }
}

/// The DSP (SMLAD) int8 Conv2D/Dense kernels' edge cases on both emulated
/// cores, against the desktop's bytes: odd channel counts, strides 2 and 3,
/// SAME and VALID padding (partial kernel windows at every border), a layer
/// of 130 filters (more than the kernel's 128-channel accumulator group) and
/// a filter row of 650 bytes (more than its 512-byte widening pass), runs
/// that are not a multiple of 4 bytes, and input zero points at both
/// extremes (-128 after a ReLU-like range, 127 after an all-negative one).
#[test]
fn dsp_kernel_edge_cases_give_the_desktop_bytes_on_both_cores() {
    let spec = Sequential::new(Shape::image(17, 13, 5))
        .conv2d(Conv2D::new(7, 3).strides(2).same())
        .conv2d(Conv2D::new(130, 3).relu())
        .conv2d(Conv2D::new(5, 5).strides(3).same())
        .flatten()
        .dense(11, Activation::Relu)
        .dense(3, Activation::None)
        .build()
        .expect("valid test stack");
    for (seed, board) in [(21, Board::QemuAn386), (22, Board::QemuAn524)] {
        let mut rng = Rng::new(seed);
        let params = random_params(&spec, &mut rng);
        let views = views(&params);
        let mut ranges = Ranges::new(&spec);
        // Zero points: input -128, conv 127, conv (ReLU) -128, conv ~0, dense -128, dense ~64.
        ranges.input = (0.0, 1.0);
        ranges.layers = vec![(-0.8, 0.0), (0.0, 0.9), (-0.5, 0.6), (0.0, 1.0), (-0.3, 0.1)];
        ranges.layers.resize(spec.layers().len(), (-1.0, 1.0));
        let model = convert::quantize_int8(&spec, &views, &ranges).expect("int8 model");
        let zps: Vec<i32> = model.layers.iter().map(|(_, q)| q.zero_point).collect();
        assert_eq!((model.input.zero_point, zps[0], zps[1]), (-128, 127, -128), "{zps:?}");
        let x = rng.vec(spec.input().elements() as usize, 0.0, 1.0);
        assert_same_bytes(board, &model, &x, &format!("dsp-edges-{}", board.name()));
    }
}

/// The conv tiles' window widening on inputs of whole quads of channels
/// (4, 8 and 12: kernel rows of odd and even quad counts, inside the image
/// and clipped by the padding, which the assembly widens two quads at a time
/// or one), strided and not, on both DSP cores.
#[test]
fn conv_window_widening_gives_the_desktop_bytes_on_both_cores() {
    let spec = Sequential::new(Shape::image(11, 9, 4))
        .conv2d(Conv2D::new(12, 3).same())
        .conv2d(Conv2D::new(8, 3).same().relu())
        .conv2d(Conv2D::new(4, 3).strides(2).same())
        .conv2d(Conv2D::new(6, 5).same())
        .flatten()
        .dense(3, Activation::None)
        .build()
        .expect("valid test stack");
    for (seed, board) in [(31, Board::QemuAn386), (32, Board::QemuAn524)] {
        let mut rng = Rng::new(seed);
        let params = random_params(&spec, &mut rng);
        let views = views(&params);
        let model = convert::quantize_int8(&spec, &views, &Ranges::new(&spec)).expect("int8 model");
        let x = rng.vec(spec.input().elements() as usize, -1.0, 1.0);
        assert_same_bytes(board, &model, &x, &format!("widening-{}", board.name()));
    }
}

#[test]
fn corrupted_model_is_refused_with_its_error_and_exit_code() {
    for board in [Board::QemuAn386, Board::Stm32f405] {
        corrupted_model_is_refused_on(board);
    }
}

fn corrupted_model_is_refused_on(board: Board) {
    let (model, x) = build_model(&small_spec(), false, 6);
    let mut file = format::write(&model.view()).expect("write model file");
    let input = input_bytes(&model, &x);
    let last = file.len() - 20;
    file[last] ^= 0x5a;
    let dir = scratch(&format!("corrupt-{}", board.name()));
    let run = device(board, &dir, &file, &input);
    assert_eq!(run.exit_code, Some(exit_code::BAD_MODEL), "{run:?}");
    let (code, msg) = run.error.clone().expect("an ERROR frame");
    assert_eq!(code as i32, exit_code::BAD_MODEL);
    let host_err = format::parse(&format::AlignedBytes::copy_from(&file)).expect_err("host refuses it too");
    assert!(msg.contains(&host_err.to_string()), "device said {msg:?}, host says {host_err}");
    // The log has the rejection at level ERROR, and no `done`. The firmware
    // logs the message with the `{=[u8]:a}` hint, which defmt shows as `b"..."`.
    let want = format!("model file rejected: {host_err}");
    assert!(
        run.log.iter().any(|l| l.starts_with("ERROR ") && l.contains(&want)),
        "device log {:?} lacks {want:?}",
        run.log
    );
    assert!(!run.log.iter().any(|l| l.contains("run 1:")), "{:?}", run.log);
    assert!(run.output.is_none() && run.layers.is_empty());
    assert_eq!(run.done, Some(exit_code::BAD_MODEL as u8));

    // Not a model at all.
    let run = device(board, &dir, b"definitely not a model file, just text", &input);
    assert_eq!(run.exit_code, Some(exit_code::BAD_MODEL));
    assert!(run.error.expect("an ERROR frame").1.contains("magic"));
    assert!(
        run.log.iter().any(|l| l.starts_with("ERROR ") && l.contains("model file rejected:") && l.contains("magic")),
        "{:?}",
        run.log
    );
    cleanup(&dir);
}

/// A garbled or truncated defmt stream, decoded with the real firmware's
/// table, gives warnings and the frames it can, never a panic or an error.
#[test]
fn garbled_defmt_log_gives_warnings_not_a_panic() {
    let (model, x) = build_model(&small_spec(), false, 10);
    let file = format::write(&model.view()).expect("write model file");
    let dir = scratch("garbled-log");
    let run = device(Board::QemuAn386, &dir, &file, &input_bytes(&model, &x));
    run.ensure_success().expect("a normal run");
    let raw = std::fs::read(dir.join("defmt.log")).expect("the raw defmt bytes were saved");
    let elf = std::fs::read(firmware(Board::QemuAn386)).expect("read the ELF");
    assert_eq!(flash::decode_defmt(&elf, &raw).lines, run.log, "decoding the saved bytes again");

    // Cut off inside the last frame: the earlier lines survive, the cut is reported.
    let cut = flash::decode_defmt(&elf, &raw[..raw.len() - 2]);
    assert_eq!(cut.lines[..], run.log[..run.log.len() - 1]);
    assert!(cut.warnings.iter().any(|w| w.contains("unfinished")), "{:?}", cut.warnings);

    // Noise, with and without frame separators, and every byte flipped in turn.
    let mut rng = Rng::new(11);
    let noise: Vec<u8> = rng.vec(4096, 0.0, 256.0).iter().map(|&v| v as u8).collect();
    for stream in [noise.clone(), noise.iter().map(|&b| b | 1).collect()] {
        let log = flash::decode_defmt(&elf, &stream);
        assert!(!log.warnings.is_empty(), "noise decoded without a warning: {log:?}");
    }
    for i in 0..raw.len() {
        let mut bad = raw.clone();
        bad[i] ^= 0xa5;
        let _ = flash::decode_defmt(&elf, &bad);
    }
    // An ELF without a .defmt table.
    let log = flash::decode_defmt(b"\x7fELF not really", &raw);
    assert!(log.lines.is_empty() && !log.warnings.is_empty(), "{log:?}");
    cleanup(&dir);
}

#[test]
fn model_too_big_for_the_arena_and_wrong_input_are_refused() {
    // 2.25 MB of int8 input: more than the M4 board's 2 MiB arena, whole-tensor or banded.
    let spec = Sequential::new(Shape::image(1024, 1100, 2))
        .conv2d(Conv2D::new(2, 1).relu())
        .max_pool(64, 64)
        .flatten()
        .dense(2, Activation::Softmax)
        .build()
        .expect("valid stack");
    let mut rng = Rng::new(7);
    let params = random_params(&spec, &mut rng);
    let views = views(&params);
    let mut ranges = Ranges::new(&spec);
    ranges.input = (-1.0, 1.0);
    ranges.layers = vec![(-1.0, 1.0); spec.layers().len()];
    let model = convert::quantize_int8(&spec, &views, &ranges).expect("int8 model");
    let file = format::write(&model.view()).expect("write");
    let dir = scratch("arena");
    let run = device(Board::QemuAn386, &dir, &file, &[0u8; 16]);
    assert_eq!(run.exit_code, Some(exit_code::ARENA_TOO_SMALL), "{run:?}");
    assert!(run.error.expect("an ERROR frame").1.contains("arena"));

    // A valid model with an input of the wrong size: an ERROR for that
    // request, and the device serves the next one.
    let (model, x) = build_model(&small_spec(), false, 8);
    let file = format::write(&model.view()).expect("write");
    let good = input_bytes(&model, &x);
    let s = session(
        Board::QemuAn386,
        &dir,
        &file,
        &[Step::Run { input: &[1u8; 7], layer_bytes: false }, Step::Run { input: &good, layer_bytes: false }],
    );
    let (code, msg) = s.answers[0].error.clone().expect("an ERROR frame");
    assert_eq!(code as i32, exit_code::BAD_INPUT);
    assert!(msg.contains("input rejected: 7 bytes"), "{msg}");
    assert_eq!(s.answers[1].output.as_ref().map(|o| &o.1), Some(&desktop(&model, &good).0));
    assert_eq!((s.exit_code, s.done), (Some(0), Some(0)));
    cleanup(&dir);
}

/// A quiet RUN (`Step::Time`, the protocol's FLAG_QUIET, what `host flash`
/// times a model with) answers its OUTPUT alone: the desktop's bytes, no
/// LAYER frame, in fewer ticks than the run that hashes and reports every
/// layer; the device serves a reported run after it as before.
#[test]
fn a_quiet_run_answers_the_same_output_alone_in_fewer_ticks() {
    let (model, x) = build_model(&small_spec(), false, 8);
    let file = format::write(&model.view()).expect("write");
    let input = input_bytes(&model, &x);
    let want = desktop(&model, &input).0;
    let dir = scratch("quiet");
    let s = session(
        Board::QemuAn386,
        &dir,
        &file,
        &[
            Step::Run { input: &input, layer_bytes: false },
            Step::Time { input: &input },
            Step::Run { input: &input, layer_bytes: false },
        ],
    );
    assert_eq!((s.exit_code, s.done), (Some(0), Some(0)));
    let (reported, quiet, again) = (&s.answers[0], &s.answers[1], &s.answers[2]);
    assert!(!reported.layers.is_empty() && quiet.layers.is_empty() && !again.layers.is_empty());
    for a in [reported, quiet, again] {
        assert_eq!(a.output.as_ref().map(|o| &o.1), Some(&want));
    }
    let ticks = |a: &flash::Answer| a.output.as_ref().expect("output").0;
    assert!(ticks(quiet) < ticks(reported), "quiet {} vs reported {}", ticks(quiet), ticks(reported));
    cleanup(&dir);
}

/// Garbled requests on the STM32F405 (through its HAL's USART): a RUN with
/// a bad CRC, a header claiming more bytes than the device holds, a frame of
/// an unknown kind, junk — each gets an ERROR frame of code BAD_REQUEST, and
/// the next request still works.
#[test]
fn garbled_requests_get_error_frames_and_the_next_request_works() {
    let (model, x) = build_model(&small_spec(), true, 12);
    let file = format::write(&model.view()).expect("write");
    let input = input_bytes(&model, &x);
    let mut run = Vec::new();
    shared::protocol::Request::Run { flags: 0, input: &input }.write(|p| run.extend_from_slice(p)).expect("frame");
    let mut bad_crc = run.clone();
    bad_crc[20] ^= 0x10;
    let oversized = b"AX\x10\x00\x00\x00\x10\x00".to_vec(); // 1 MiB: more than the arena
    let mut unknown = b"AX\x63\x00\x01\x00\x00\x00\x07".to_vec();
    unknown.extend(shared::protocol::CRC32.checksum(&unknown[2..]).to_le_bytes());
    let mut junk_then_run = b"\x00\xffjunkA".to_vec();
    junk_then_run.extend(&run);
    let steps = [
        Step::Raw(&bad_crc),
        Step::Raw(&oversized),
        Step::Raw(&unknown),
        Step::Run { input: &input, layer_bytes: true },
        Step::Raw(&junk_then_run),
    ];
    let dir = scratch("garbled");
    let s = session(Board::Stm32f405, &dir, &file, &steps);
    let errors: Vec<_> = s.answers[..3].iter().map(|a| a.error.clone().expect("an ERROR frame")).collect();
    for (code, _) in &errors {
        assert_eq!(*code as i32, exit_code::BAD_REQUEST, "{errors:?}");
    }
    assert!(errors[0].1.contains("CRC mismatch"), "{errors:?}");
    assert!(errors[1].1.contains("request of 1048576 bytes is too long"), "{errors:?}");
    assert!(errors[2].1.contains("unknown request kind 99"), "{errors:?}");
    let (want, rec) = desktop(&model, &input);
    for a in &s.answers[3..] {
        assert_eq!(a.output.as_ref().map(|o| &o.1), Some(&want), "the device serves after garbled requests");
    }
    // Every layer's hash; bytes for all but the banded ones (conv, BN of a band
    // group), which only have their rows' hash.
    let view = model.view();
    let banded = shared::band::plan_banded(&view, shared::band::InputRows::Resident);
    assert_eq!(s.answers[3].layers.len(), rec.0.len());
    for (dev, (index, bytes)) in s.answers[3].layers.iter().zip(&rec.0) {
        assert_eq!(dev.fnv, flash::fnv1a64(bytes), "layer {index} hash");
        let want = if banded.is_banded(*index) { None } else { Some(bytes) };
        assert_eq!(dev.bytes.as_ref(), want, "layer {index} bytes");
    }
    assert!(s.skipped_bytes == 0, "the device's frames arrive intact: {} bytes skipped", s.skipped_bytes);
    assert_eq!((s.exit_code, s.done), (Some(0), Some(0)));
    let hello = s.hello.as_ref().expect("HELLO");
    assert_eq!((hello.board.as_str(), hello.clock_name(), hello.cpu_hz), ("stm32f405", "SysTick", 168_000_000));
    cleanup(&dir);
}

/// The tutorial's full AlexNet (62M parameters, a 62 MB int8 file) on the
/// Cortex-M33 board with 2 GiB of DDR: about 4 billion emulated instructions,
/// some 10 s of QEMU time (plus the desktop run).
#[test]
fn full_alexnet_int8_gives_the_desktop_bytes_on_the_cortex_m33() {
    full_alexnet_on_the_cortex_m33(false);
}

/// The tutorial's AlexNet in f16 (a 125 MB model) on the emulated M33's FPU kernels.
#[test]
fn full_alexnet_f16_gives_the_desktop_bits_on_the_cortex_m33() {
    full_alexnet_on_the_cortex_m33(true);
}

fn full_alexnet_on_the_cortex_m33(f16: bool) {
    let spec = shared::spec::alexnet(shared::spec::ALEXNET_INPUT, 1000).expect("preset");
    let mut rng = Rng::new(9);
    let params = random_params(&spec, &mut rng);
    let views = views(&params);
    let model = if f16 {
        convert::convert_f16(&spec, &views).expect("f16 model")
    } else {
        // Fixed ranges instead of a float calibration pass (724M float MACs a sample).
        let mut ranges = Ranges::new(&spec);
        ranges.input = (0.0, 1.0);
        ranges.layers = vec![(-4.0, 4.0); spec.layers().len()];
        convert::quantize_int8(&spec, &views, &ranges).expect("int8 model")
    };
    drop(params);
    let x = rng.vec(spec.input().elements() as usize, 0.0, 1.0);
    let precision = if f16 { "f16" } else { "int8" };
    let run = assert_same_bytes(Board::QemuAn524, &model, &x, &format!("alexnet-{precision}-an524"));
    let (ticks, _) = run.output.clone().expect("output");
    let layer_ticks: u64 = run.layers.iter().map(|l| l.ticks).sum();
    eprintln!(
        "alexnet {precision} on qemu-an524: {ticks} SysTick ticks in run(), layers ~{} instructions, {:?} stack bytes",
        run.instructions(layer_ticks).unwrap_or(0),
        run.stack_used
    );
    for l in &run.layers {
        eprintln!("  layer {:>2}: {:>12} instructions", l.index, run.instructions(l.ticks).unwrap_or(0));
    }
}
