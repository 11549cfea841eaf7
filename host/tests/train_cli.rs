//! End-to-end tests of `host train`, `eval`, `predict` and `dataset export`
//! on a tiny exported folder and the `alexnet-tiny` preset, sized for a
//! 2-core CI machine (a few seconds each).
use host::checkpoint::Checkpoint;
use host::train::{train, StopReason, TrainConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;

fn host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host")).args(args).output().expect("run host")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Export the embedded set, `per_class` images of 40x40 per class.
fn export(dir: &Path, per_class: usize) {
    let o = host(&["dataset", "export", dir.to_str().unwrap(), "--per-class", &per_class.to_string(), "--size", "40"]);
    assert!(o.status.success(), "{:?}", text(&o));
}

fn tiny_train_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--arch",
        "alexnet-tiny",
        "--input",
        "67",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        out,
        "--no-progress",
    ]
}

#[test]
fn train_eval_predict_on_an_exported_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shapes");
    let out = tmp.path().join("run");
    export(&data, 4);
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());

    let r = host(&tiny_train_args(d, o));
    let (stdout, stderr) = text(&r);
    assert!(r.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("20 training, 4 validation images, 6 classes"), "{stdout}");
    assert!(stdout.contains("Epoch 1/1"), "{stdout}");
    assert!(stdout.contains("val_accuracy"), "{stdout}");
    for f in ["last.safetensors", "best.safetensors", "history.csv", "history.json", "curves.png"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(out.join("history.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let ck = Checkpoint::load(&out.join("last.safetensors")).unwrap();
    assert_eq!(ck.class_names, ["checker", "circle", "cross", "square", "stripes", "triangle"]);
    assert_eq!(ck.input_hw(), (67, 67));
    assert_eq!(ck.train.as_ref().unwrap().epoch, 1);

    // predict: the tutorial's sentence, then the top five.
    let img = data.join("circle/circle_0000.png");
    let ckp = out.join("last.safetensors");
    let r = host(&["predict", "--checkpoint", ckp.to_str().unwrap(), img.to_str().unwrap()]);
    let (stdout, stderr) = text(&r);
    assert!(r.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let first = lines[0];
    let rest = first.strip_prefix("This image most likely belongs to ").expect(first);
    let (class, tail) = rest.split_once(" with a ").expect(first);
    assert!(ck.class_names.iter().any(|c| c == class), "{first}");
    let pct = tail.strip_suffix(" percent confidence.").expect(first);
    let (int, frac) = pct.split_once('.').expect(first);
    assert!(int.parse::<u32>().unwrap() <= 100 && frac.len() == 2, "{first}");
    assert_eq!(lines.len(), 6, "{stdout}");
    assert!(lines[1].trim_start().starts_with("1. "), "{stdout}");

    let r = host(&["predict", "--checkpoint", ckp.to_str().unwrap(), "--json", img.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v[0]["top"].as_array().unwrap().len(), 5);
    // `--conv auto` tells on stderr what it timed and took; stdout stays JSON.
    let r =
        host(&["predict", "--conv", "auto", "--checkpoint", ckp.to_str().unwrap(), "--json", img.to_str().unwrap()]);
    let (_, stderr) = text(&r);
    assert!(r.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v[0]["top"].as_array().unwrap().len(), 5);
    assert!(stderr.contains("--conv auto, as timed on this machine:\n  "), "{stderr}");
    // Inference is timed in whole passes: the network's decision, then each layer's share.
    assert!(stderr.contains("  inference, batch 1, whole passes: "), "{stderr}");
    assert!(stderr.contains(", batch 1, forward in the network: ") && stderr.contains(" ms ("), "{stderr}");

    // eval on the whole folder (not the training data of the run -> all images).
    let r = host(&["eval", "--checkpoint", ckp.to_str().unwrap(), "--data", d, "--json"]);
    let (stdout, stderr) = text(&r);
    assert!(r.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["subset"], "val", "the folder is the run's training data: its validation split");
    assert_eq!(v["images"], 4);
    assert_eq!(v["confusion"].as_array().unwrap().len(), 6);
    assert!(Path::new(v["confusion_png"].as_str().unwrap()).exists());
    let r = host(&["eval", "--checkpoint", ckp.to_str().unwrap(), "--data", d, "--subset", "all"]);
    let (stdout, _) = text(&r);
    assert!(stdout.contains("24 images - loss:"), "{stdout}");
    assert!(stdout.contains("confusion matrix"), "{stdout}");
}

#[test]
fn corrupt_images_stop_with_the_path_or_are_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shapes");
    export(&data, 3);
    let bad1 = data.join("cross/zz_broken.jpg");
    std::fs::write(&bad1, b"\xFF\xD8\xFF\xE0 truncated jpeg").unwrap();
    let bad2 = data.join("square/zz_empty.png");
    std::fs::write(&bad2, b"").unwrap();
    let out = tmp.path().join("run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());

    let r = host(&tiny_train_args(d, o));
    let (_, stderr) = text(&r);
    assert!(!r.status.success());
    assert!(stderr.contains("zz_broken.jpg") || stderr.contains("zz_empty.png"), "{stderr}");
    assert!(stderr.contains("--skip-bad"), "{stderr}");

    let mut args = tiny_train_args(d, o);
    args.push("--skip-bad");
    let r = host(&args);
    let (stdout, stderr) = text(&r);
    assert!(r.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("skipped 2 unreadable images in total"), "{stdout}");
}

#[test]
fn bad_arguments_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no_such_dir");
    let r = host(&["train", "--data", missing.to_str().unwrap(), "--no-progress"]);
    let (_, stderr) = text(&r);
    assert!(!r.status.success());
    assert!(stderr.contains("no_such_dir") && stderr.contains("does not exist"), "{stderr}");

    let r = host(&["train", "--arch", "vgg", "--no-progress", "--out", tmp.path().to_str().unwrap()]);
    let err = text(&r).1;
    assert!(err.contains("'--arch") && err.contains("\"vgg\"") && err.contains("alexnet-micro"), "{err}");
    let r = host(&["train", "--lr-schedule", "cosine", "--out", tmp.path().to_str().unwrap()]);
    assert!(text(&r).1.contains("--lr-schedule"), "{:?}", text(&r));
    let r = host(&["predict", "--checkpoint", tmp.path().join("none.safetensors").to_str().unwrap(), "x.png"]);
    assert!(text(&r).1.contains("none.safetensors"), "{:?}", text(&r));
    // A stack ending in its own Softmax layer would have softmax applied twice by the loss.
    let stack = tmp.path().join("softmax.json");
    std::fs::write(
        &stack,
        r#"{"input": [16, 16, 3], "layers": [{"type": "Flatten"}, {"type": "Dense", "units": 6, "activation": "linear"}, {"type": "Softmax"}]}"#,
    )
    .unwrap();
    let out = tmp.path().join("sm");
    let r = host(&[
        "train",
        "--arch",
        stack.to_str().unwrap(),
        "--epochs",
        "1",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = text(&r).1;
    assert!(!r.status.success() && err.contains("Softmax layer") && err.contains("Dense(activation"), "{err}");
}

fn tiny_config(out: PathBuf, epochs: usize) -> TrainConfig {
    let mut c = TrainConfig::defaults(None);
    c.arch = host::arch::ArchSource::Preset(shared::spec::Arch::AlexNetTiny);
    c.input = Some(67);
    c.per_class = 6;
    c.batch_size = 8;
    c.epochs = epochs;
    c.out = out;
    c.progress = false;
    c
}

fn all_tensors(path: &Path) -> Vec<(String, Vec<u32>)> {
    let ck = Checkpoint::load(path).unwrap();
    let mut v: Vec<(String, Vec<u32>)> =
        ck.tensors.iter().map(|(k, t)| (k.clone(), t.iter().map(|x| x.to_bits()).collect())).collect();
    v.sort();
    v
}

/// 2 epochs straight == 1 epoch + resume, and == interrupted mid-epoch + resume,
/// bit for bit (weights, BN statistics and Adam state).
#[test]
fn resume_is_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let never = AtomicBool::new(false);

    let straight = tmp.path().join("straight");
    let r = train(&tiny_config(straight.clone(), 2), &never).unwrap();
    assert_eq!(r.stop, StopReason::Finished);
    assert_eq!(r.history.len(), 2);

    let split = tmp.path().join("split");
    train(&tiny_config(split.clone(), 1), &never).unwrap();
    let mut again = tiny_config(split.clone(), 2);
    again.resume = true;
    let r2 = train(&again, &never).unwrap();
    assert_eq!(r2.history.len(), 2);
    assert_eq!(all_tensors(&straight.join("last.safetensors")), all_tensors(&split.join("last.safetensors")));
    assert_eq!(r.history[1].loss.to_bits(), r2.history[1].loss.to_bits());

    // Interrupted after 3 steps (mid-epoch 1 of 4 steps per epoch), then resumed.
    let mid = tmp.path().join("mid");
    let mut c = tiny_config(mid.clone(), 2);
    c.max_steps = Some(3);
    let r3 = train(&c, &never).unwrap();
    assert_eq!(r3.stop, StopReason::Interrupted);
    let ck = Checkpoint::load(&mid.join("last.safetensors")).unwrap();
    assert_eq!((ck.train.as_ref().unwrap().epoch, ck.train.as_ref().unwrap().step), (0, 3));
    let mut c = tiny_config(mid.clone(), 2);
    c.resume = true;
    let r4 = train(&c, &never).unwrap();
    assert_eq!(r4.stop, StopReason::Finished);
    assert_eq!(all_tensors(&straight.join("last.safetensors")), all_tensors(&mid.join("last.safetensors")));
    assert_eq!(r.history[0].loss.to_bits(), r4.history[0].loss.to_bits());
}

#[test]
fn divergence_stops_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let r = host(&[
        "train",
        "--arch",
        "alexnet-tiny",
        "--input",
        "67",
        "--per-class",
        "6",
        "--batch-size",
        "4",
        "--epochs",
        "3",
        "--lr",
        "1e30",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&r);
    assert!(!r.status.success(), "{stdout}");
    assert!(stderr.contains("diverged") && stderr.contains("lower --lr"), "{stderr}");
}

/// A residual block as a stack file (the checkpoint layer JSON with
/// "inputs"): a stem whose output the block and the Add both read.
const RESIDUAL_JSON: &str = r#"{
  "input": [16, 16, 3],
  "layers": [
    {"type": "Conv2D", "filters": 4, "kernel": 3, "stride": 1, "padding": "same", "activation": "relu"},
    {"type": "Conv2D", "filters": 4, "kernel": 3, "stride": 2, "padding": "same", "activation": "linear"},
    {"type": "BatchNormalization", "epsilon": 0.001, "momentum": 0.99},
    {"type": "Activation", "activation": "relu"},
    {"type": "Conv2D", "filters": 4, "kernel": 1, "stride": 2, "padding": "valid", "activation": "linear", "inputs": [1]},
    {"type": "Add", "activation": "relu", "inputs": [4, 5]},
    {"type": "Concatenate", "inputs": [6, 4]},
    {"type": "GlobalAveragePooling2D"},
    {"type": "Dense", "units": 6, "activation": "softmax"}
  ]
}"#;

/// `--arch FILE` with a graph: checkpoints keep the graph, and 2 epochs
/// straight == 1 epoch + resume bit for bit, as for a stack.
#[test]
fn a_graph_stack_file_trains_and_resumes_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let never = AtomicBool::new(false);
    let arch = tmp.path().join("residual.json");
    std::fs::write(&arch, RESIDUAL_JSON).unwrap();
    let config = |out: PathBuf, epochs| {
        let mut c = tiny_config(out, epochs);
        c.arch = host::arch::ArchSource::File(arch.clone());
        c.input = None;
        c
    };
    let straight = tmp.path().join("straight");
    let r = train(&config(straight.clone(), 2), &never).unwrap();
    assert_eq!((r.stop, r.history.len()), (StopReason::Finished, 2));
    for f in ["last.safetensors", "best.safetensors", "history.csv", "history.json", "curves.png"] {
        assert!(straight.join(f).exists(), "{f} missing");
    }
    let ck = Checkpoint::load(&straight.join("last.safetensors")).unwrap();
    assert!(!ck.spec.is_stack());
    assert_eq!(ck.spec.inputs()[5].other, Some(5));

    let split = tmp.path().join("split");
    train(&config(split.clone(), 1), &never).unwrap();
    let mut again = config(split.clone(), 2);
    again.resume = true;
    let r2 = train(&again, &never).unwrap();
    assert_eq!(r2.history.len(), 2);
    assert_eq!(all_tensors(&straight.join("last.safetensors")), all_tensors(&split.join("last.safetensors")));
    assert_eq!(r.history[1].loss.to_bits(), r2.history[1].loss.to_bits());
}
