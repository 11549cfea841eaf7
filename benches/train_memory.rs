//! Peak memory of full-AlexNet training steps (forward, loss, backward, Adam)
//! at a batch size: `cargo bench --bench train_memory -- 128` prints one JSON
//! line with the process's peak RSS (Linux `VmHWM`), for the peer table of
//! `benches/peers/run.sh` (PyTorch's figure is measured the same way).
use host::nn::{softmax_cross_entropy, ChaCha8Rng, Mode, Network};
use host::optim::{Optimizer, OptimizerKind};
use ndarray::Array4;
use rand::SeedableRng;

fn main() {
    // `cargo bench` passes `--bench`; the batch is the first number given.
    let batch = std::env::args().skip(1).find_map(|a| a.parse::<usize>().ok()).unwrap_or(128);
    let spec = shared::spec::alexnet(227, 1000).expect("alexnet");
    let mut net = Network::new(&spec, 0);
    let mut opt = Optimizer::new(OptimizerKind::adam());
    let x = Array4::from_shape_fn((batch, 227, 227, 3), |(n, y, x, c)| ((n + y * 3 + x * 5 + c) % 256) as f32 / 255.0);
    let labels: Vec<usize> = (0..batch).map(|i| (i * 37) % 1000).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let t = std::time::Instant::now();
    for _ in 0..2 {
        let logits = net.forward(x.view(), Mode::Train(&mut rng));
        let (_, g, _) = softmax_cross_entropy(logits.view(), &labels);
        net.backward(g.view());
        opt.step(&mut net);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    eprintln!("2 steps of batch {batch} in {:.1} s", t.elapsed().as_secs_f64());
    println!("{{\"name\": \"ours_train_rss_batch{batch}\", \"peak_rss_kib\": {kib}, \"batch\": {batch}}}");
}
