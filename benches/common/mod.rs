//! What the benches share: command-line arguments, and waiting for CUDA before reading a clock.
#![allow(dead_code)] // each bench uses its own subset

/// `--name value` from the command line (cargo adds `--bench`, which is ignored).
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => match args.get(i + 1).map(|v| v.parse()) {
            Some(Ok(v)) => v,
            _ => {
                eprintln!("{name} needs a number");
                std::process::exit(2);
            }
        },
        None => default,
    }
}

/// `--name value` as a string, when given.
pub fn string_arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// Waits for the device's queued work (CUDA runs asynchronously), so that times are real.
pub fn sync(device: tch::Device) {
    if let tch::Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Runs `f` once untimed, then `runs` times timed (ms; CUDA work waited for); the last result.
pub fn time_runs<T>(device: tch::Device, runs: usize, mut f: impl FnMut() -> T) -> (Vec<f64>, T) {
    let mut last = f();
    sync(device);
    let ms = (0..runs)
        .map(|_| {
            let t = std::time::Instant::now();
            last = f();
            sync(device);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    (ms, last)
}
