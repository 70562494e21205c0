//! `sam6d serve` driven by a Python client written like our users' (socket + struct + pickle),
//! and by `sam6d ping / shutdown / infer --connect`.
use super::{example_dir, s, sam6d, stderr};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `sam6d serve --port 0`; killed when dropped.
pub(crate) struct Server {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Server {
    pub(crate) fn start(args: &[&str]) -> Server {
        let mut child = crate::sam6d_command()
            .args(["serve", "--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sam6d serve");
        // Collect the log (one line per request) for the tests to read.
        let log = Arc::new(Mutex::new(String::new()));
        let (mut err, sink) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let Some(addr) = line.split("ready on ").nth(1).and_then(|rest| rest.split_whitespace().next()) else {
            let _ = child.wait();
            panic!("no ready line: {line:?}; log: {}", log.lock().unwrap());
        };
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        Server { child, port, log }
    }

    pub(crate) fn port(&self) -> String {
        self.port.to_string()
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the log shows `needle` within `limit`: stderr is read by its own thread, so a
    /// line logged before the ready line (on stdout) may arrive a moment after it.
    pub(crate) fn log_shows(&self, needle: &str, limit: Duration) -> bool {
        let t0 = Instant::now();
        while !self.log().contains(needle) {
            if t0.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Waits for the process to exit by itself.
    pub(crate) fn wait(&mut self, limit: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(t0.elapsed() < limit, "the server did not exit within {limit:?}; log: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn python(&self, command: &str, args: &[&str]) -> Value {
        let o = python(&[&self.port(), command], args);
        assert!(o.status.success(), "python client `{command}` failed: {}\nserver log:\n{}", stderr(&o), self.log());
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("client output is not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
    }
}

impl Server {
    /// SIGKILL: the process dies at once, with connections and requests in flight.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn python(head: &[&str], args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cli-tests/clients/legacy_client.py");
    Command::new("python3").arg(script).args(head).args(args).output().expect("python3 must be on PATH (scripts/env.sh puts the venv's first)")
}

pub(crate) fn bracket() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/synthetic-bracket")
}

fn bracket_args() -> Vec<String> {
    let d = bracket();
    vec!["--cad".into(), s(&d.join("model.ply")).into(), "--cam".into(), s(&d.join("camera.json")).into()]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn bracket_request(extra: &[&str]) -> Vec<String> {
    let d = bracket();
    let mut v = vec!["--rgb".to_string(), s(&d.join("rgb.png")).into(), "--depth".into(), s(&d.join("depth.png")).into()];
    v.extend(extra.iter().map(|x| x.to_string()));
    v
}

fn poses(v: &Value) -> Vec<Vec<f64>> {
    let rot = v["rotation"].as_array().unwrap();
    let tr = v["translation"].as_array().unwrap();
    rot.iter()
        .zip(tr)
        .map(|(r, t)| {
            let mut p: Vec<f64> = r.as_array().unwrap().iter().flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap())).collect();
            p.extend(t.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()));
            p
        })
        .collect()
}

fn assert_same_poses(a: &Value, b: &Value, what: &str) {
    let (pa, pb) = (poses(a), poses(b));
    assert!(!pa.is_empty(), "{what}: no pose in {a}");
    assert_eq!(pa.len(), pb.len(), "{what}: instance counts differ");
    for (x, y) in pa.iter().zip(&pb) {
        for (u, v) in x.iter().zip(y) {
            assert!((u - v).abs() < 1e-9, "{what}: poses differ: {x:?} vs {y:?}");
        }
    }
    assert_eq!(a["pose_scores"], b["pose_scores"], "{what}: scores differ");
}

#[test]
fn python_clients_get_the_same_pose_as_infer_over_protocols_2_4_5() {
    let d = bracket();
    let o = sam6d(&["infer", "--rgb", s(&d.join("rgb.png")), "--depth", s(&d.join("depth.png")), "--cam", s(&d.join("camera.json")), "--cad", s(&d.join("model.ply"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    let local: Value = serde_json::from_slice(&o.stdout).unwrap();

    let server = Server::start(&strs(&bracket_args()));
    for protocol in ["2", "4", "5"] {
        let r = server.python("infer", &strs(&bracket_request(&["--protocol", protocol])));
        assert_eq!(r["status"], "success", "protocol {protocol}: {r}");
        assert_eq!(r["message"], "");
        assert_eq!(r["data"]["object"], "model");
        assert_same_poses(&r["data"], &local, &format!("protocol {protocol}"));
    }
    // Our own client: same JSON shape as in-process infer.
    let addr = format!("127.0.0.1:{}", server.port);
    let o = sam6d(&["infer", "--rgb", s(&d.join("rgb.png")), "--depth", s(&d.join("depth.png")), "--connect", &addr]);
    assert!(o.status.success(), "{}", stderr(&o));
    let remote: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_same_poses(&remote, &local, "infer --connect");
    for key in ["object", "image_size", "pipeline", "device", "timings_ms"] {
        assert_eq!(remote[key].is_null(), local[key].is_null(), "infer --connect lacks {key}: {remote}");
    }
    // One log line per request: peer, action, bytes, ms, status.
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("action=sam6d_inference")).collect();
    assert_eq!(lines.len(), 4, "{log}");
    for field in ["peer=127.0.0.1:", "bytes=", "ms=", "status=ok"] {
        assert!(lines.iter().all(|l| l.contains(field)), "log lines lack {field}: {log}");
    }
}

#[test]
fn the_official_example_gives_the_same_pose_through_the_server() {
    let Some(ex) = example_dir() else {
        eprintln!("skipped: ../shared/testdata/sam6d-example is not there");
        return;
    };
    let (rgb, depth, cam, cad) = (ex.join("rgb.png"), ex.join("depth.png"), ex.join("camera.json"), ex.join("obj_000005.ply"));
    let o = sam6d(&["infer", "--rgb", s(&rgb), "--depth", s(&depth), "--cam", s(&cam), "--cad", s(&cad)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let local: Value = serde_json::from_slice(&o.stdout).unwrap();
    let server = Server::start(&["--cad", s(&cad), "--cam", s(&cam)]);
    let r = server.python("infer", &["--rgb", s(&rgb), "--depth", s(&depth)]);
    assert_eq!(r["status"], "success", "{r}");
    assert_same_poses(&r["data"], &local, "official example");
    // The request's det_score_thresh is honoured (0.0 keeps the weak second instance).
    let all = server.python("infer", &["--rgb", s(&rgb), "--depth", s(&depth), "--thresh", "0.0"]);
    assert!(poses(&all["data"]).len() >= poses(&r["data"]).len(), "{all}");
}

#[test]
fn every_bad_request_gets_its_error_and_the_connection_stays_usable() {
    let server = Server::start(&strs(&bracket_args()));
    for protocol in ["2", "4", "5"] {
        let r = server.python("bad-requests", &strs(&bracket_request(&["--protocol", protocol])));
        let cases = r.as_array().unwrap();
        assert!(cases.len() >= 20, "{r}");
        assert!(cases.iter().all(|c| c["code"] == "bad_request"), "protocol {protocol}: {r}");
    }
    // Still serving real requests afterwards.
    let r = server.python("infer", &strs(&bracket_request(&[])));
    assert_eq!(r["status"], "success", "{r}");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn broken_frames_close_only_their_connection() {
    let server = Server::start(&["--bench-noop", "--read-timeout", "1", "--max-frame-bytes", "1M"]);
    let r = server.python("bad-frames", &["--max-frame-bytes", &(1 << 20).to_string()]);
    assert!(r["too_large"].as_str().unwrap().contains("--max-frame-bytes"), "{r}");
    for key in ["half_sent_closed_after_s", "idle_closed_after_s"] {
        let t = r[key].as_f64().unwrap();
        assert!((0.8..10.0).contains(&t), "{key} = {t}");
    }
}

#[test]
fn sixteen_concurrent_clients_get_their_own_answers() {
    let server = Server::start(&["--bench-noop"]);
    let r = server.python("concurrent", &["--clients", "16", "--requests", "10"]);
    assert_eq!(r["answers"], 160, "{r}");
    let ping = server.python("ping", &[]);
    assert!(ping["data"]["requests"].as_u64().unwrap() >= 161, "{ping}");
}

#[test]
fn concurrent_inference_on_two_models_answers_each_request_with_its_own_pose() {
    let d = bracket();
    let Some(ex) = example_dir() else {
        eprintln!("skipped: ../shared/testdata/sam6d-example is not there");
        return;
    };
    // Two models, the example's camera by default; bracket requests bring their own cam_K.
    let server = Server::start(&["--cad", s(&ex.join("obj_000005.ply")), "--cad", s(&d.join("model.ply")), "--cam", s(&ex.join("camera.json"))]);
    let job_ex = serde_json::json!({"rgb": ex.join("rgb.png"), "depth": ex.join("depth.png"), "object": "obj_000005"});
    let job_br = serde_json::json!({"rgb": d.join("rgb.png"), "depth": d.join("depth.png"), "object": "model", "cam": d.join("camera.json")});
    let jobs = serde_json::json!([job_ex, job_br, job_ex, job_br, job_br, job_ex]);
    let answers = server.python("infer-many", &["--jobs", &jobs.to_string()]);
    let gt: Value = serde_json::from_slice(&std::fs::read(d.join("gt.json")).unwrap()).unwrap();
    for (i, a) in answers.as_array().unwrap().iter().enumerate() {
        assert_eq!(a["status"], "success", "{a}");
        assert_eq!(a["id"], i, "{a}");
        let want = jobs[i]["object"].as_str().unwrap();
        assert_eq!(a["data"]["object"], want, "{a}");
        let t = &a["data"]["translation"][0];
        let z = t[2].as_f64().unwrap();
        if want == "model" {
            let gz = gt[0]["t_mm"][2].as_f64().unwrap();
            assert!((z - gz).abs() < 20.0, "bracket at z {z}, truth {gz}");
        } else {
            assert!((z - 970.0).abs() < 30.0, "watering can at z {z}");
        }
    }
}

#[test]
fn a_full_queue_answers_busy() {
    let d = bracket();
    let server = Server::start(&[&strs(&bracket_args())[..], &["--queue-size", "1"]].concat());
    let job = serde_json::json!({"rgb": d.join("rgb.png"), "depth": d.join("depth.png"), "object": "model"});
    let jobs = Value::Array(vec![job; 6]);
    let answers = server.python("infer-many", &["--jobs", &jobs.to_string()]);
    let answers = answers.as_array().unwrap();
    let busy: Vec<&Value> = answers.iter().filter(|a| a["code"] == "busy").collect();
    let ok = answers.iter().filter(|a| a["status"] == "success").count();
    assert!(!busy.is_empty() && ok >= 2 && busy.len() + ok == 6, "{answers:?}");
    assert!(busy[0]["message"].as_str().unwrap().contains("retry"), "{:?}", busy[0]);
    // Pings never wait behind inference.
    let t0 = Instant::now();
    server.python("ping", &[]);
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn shutdown_during_inference_still_delivers_the_answers() {
    let d = bracket();
    let mut server = Server::start(&strs(&bracket_args()));
    let job = serde_json::json!({"rgb": d.join("rgb.png"), "depth": d.join("depth.png"), "object": "model"});
    let jobs = Value::Array(vec![job; 8]).to_string();
    let port = server.port();
    let client = std::thread::spawn(move || python(&[&port, "infer-many"], &["--jobs", &jobs]));
    // Once the first answer is out the other seven are queued or running: stop the server then
    // (with the Python client, which starts faster than a binary that loads libtorch).
    let t0 = Instant::now();
    while !server.log().contains("action=sam6d_inference") {
        assert!(t0.elapsed() < Duration::from_secs(60), "no inference answered: {}", server.log());
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = server.python("shutdown", &[]);
    assert_eq!((&r["status"], &r["message"]), (&Value::from("success"), &Value::from("shutting down")), "{r}");
    let out = client.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let answers: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(answers.as_array().unwrap().iter().all(|a| a["status"] == "success"), "{answers}");
    assert!(server.wait(Duration::from_secs(30)).success(), "exit status");
    // The shutdown came while requests were still being answered.
    let log = server.log();
    let shutdown_at = log.find("shutdown requested").expect("shutdown logged");
    assert!(log[shutdown_at..].contains("action=sam6d_inference"), "no inference answered after the shutdown request:\n{log}");
}

#[test]
fn sigterm_and_sigint_stop_the_server_cleanly() {
    for signal in ["TERM", "INT"] {
        let mut server = Server::start(&["--bench-noop"]);
        server.python("ping", &[]);
        let pid = server.child.id().to_string();
        assert!(Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap().success());
        assert!(server.wait(Duration::from_secs(10)).success(), "SIG{signal}: {}", server.log());
        assert!(server.log_shows(&format!("SIG{signal}"), Duration::from_secs(5)), "{}", server.log());
    }
}

#[test]
fn ping_and_shutdown_commands() {
    let mut server = Server::start(&strs(&bracket_args()));
    let o = sam6d(&["ping", "--port", &server.port()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("pong from 127.0.0.1:") && text.contains("models: model"), "{text}");
    let o = sam6d(&["ping", "--port", &server.port(), "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in ["version", "device", "models", "uptime_s", "requests", "inferences", "queue"] {
        assert!(!v["status"][key].is_null(), "ping status lacks {key}: {v}");
    }
    let o = sam6d(&["shutdown", "--port", &server.port()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(server.wait(Duration::from_secs(10)).success());
    // Nobody listening now: ping fails with exit 1 and says so.
    let o = sam6d(&["ping", "--port", &server.port(), "--timeout", "1"]);
    super::expect_error(&o, 1, &["cannot connect"]);
}

#[test]
fn shutdown_needs_loopback_or_the_token() {
    // A non-loopback address of this machine, if it has one (found without sending anything).
    let ip = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|u| u.connect("10.255.255.255:1").and_then(|_| u.local_addr())).map(|a| a.ip());
    let Ok(ip) = ip.map(|ip| ip.to_string()).map_err(|_| ()).and_then(|ip| if ip.starts_with("127.") || ip == "0.0.0.0" { Err(()) } else { Ok(ip) }) else {
        eprintln!("skipped: this machine has no non-loopback address");
        return;
    };
    let mut server = Server::start(&["--bench-noop", "--host", "0.0.0.0", "--shutdown-token", "s3cret"]);
    assert!(server.log_shows("no authentication or encryption", Duration::from_secs(5)), "{}", server.log());
    let o = sam6d(&["shutdown", "--host", &ip, "--port", &server.port()]);
    super::expect_error(&o, 1, &["forbidden", "shutdown refused", "token"]);
    let o = sam6d(&["shutdown", "--host", &ip, "--port", &server.port(), "--token", "wrong"]);
    super::expect_error(&o, 1, &["forbidden"]);
    let o = sam6d(&["shutdown", "--host", &ip, "--port", &server.port(), "--token", "s3cret"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(server.wait(Duration::from_secs(10)).success());
}

#[test]
fn visualize_writes_an_overlay_into_the_output_dir() {
    let out = tempfile::tempdir().unwrap();
    let server = Server::start(&[&strs(&bracket_args())[..], &["--output-dir", s(out.path())]].concat());
    let r = server.python("infer", &strs(&bracket_request(&["--visualize"])));
    let path = PathBuf::from(r["data"]["vis_path"].as_str().unwrap_or_else(|| panic!("{r}")));
    assert!(path.starts_with(out.path()), "{path:?}");
    let img = image::open(&path).unwrap();
    assert_eq!((img.width(), img.height()), (1280, 480), "input | overlay side by side");
    // Without an output dir the request says what is missing.
    let server = Server::start(&strs(&bracket_args()));
    let r = server.python("infer", &strs(&bracket_request(&["--visualize"])));
    assert!(r["message"].as_str().unwrap().contains("--output-dir"), "{r}");
}

/// A server with a segmenter runs it behind the same pipeline: ping names it, answers list the
/// proposals, and `visualize` adds the proposal overlay.
#[test]
fn a_segmenter_runs_behind_the_server_too() {
    let out = tempfile::tempdir().unwrap();
    let weights = super::tiny_vit_parity::weights_dir().parent().unwrap().to_path_buf();
    let seg = ["--segmenter", "sam-tiny", "--sam-points-per-side", "8", "--weights-dir", s(&weights), "--output-dir", s(out.path())];
    let server = Server::start(&[&strs(&bracket_args())[..], &seg].concat());
    let ping = server.python("ping", &[]);
    assert_eq!(ping["data"]["pipeline"], "sam-tiny+geometric", "{ping}");
    let r = server.python("infer", &strs(&bracket_request(&["--visualize"])));
    assert_eq!(r["data"]["pipeline"], "sam-tiny+geometric", "{r}");
    assert!(r["data"]["proposals"].as_array().is_some_and(|p| !p.is_empty()), "{r}");
    let ism = PathBuf::from(r["data"]["vis_ism_path"].as_str().unwrap_or_else(|| panic!("{r}")));
    let img = image::open(&ism).unwrap();
    assert_eq!((img.width(), img.height()), (1280, 480));
}

#[test]
fn start_up_fails_clearly() {
    let d = bracket();
    let o = sam6d(&["serve", "--port", "0", "--cad", "/nonexistent/model.ply"]);
    super::expect_error(&o, 1, &["/nonexistent/model.ply"]);
    let o = sam6d(&["serve", "--port", "0", "--cad", s(&d.join("model.ply")), "--cam", s(&d.join("gt.json"))]);
    super::expect_error(&o, 1, &["gt.json"]);
    let o = sam6d(&["serve", "--port", "0"]);
    super::expect_error(&o, 2, &["--cad"]);
    // A taken port.
    let server = Server::start(&["--bench-noop"]);
    let o = sam6d(&["serve", "--bench-noop", "--port", &server.port()]);
    super::expect_error(&o, 1, &["cannot listen on"]);
    // Two models with one name.
    let o = sam6d(&["serve", "--port", "0", "--cad", s(&d.join("model.ply")), "--cad", s(&d.join("model.ply"))]);
    super::expect_error(&o, 1, &["two models are named 'model'"]);
    // A worker device this machine lacks is named, before any model is loaded.
    if sam6d::device::cuda_device_count() < 8 {
        let o = sam6d(&["serve", "--port", "0", "--cad", s(&d.join("model.ply")), "--device", "cpu,cuda:7"]);
        super::expect_error(&o, 1, &["cuda:7"]);
    }
    let o = sam6d(&["serve", "--port", "0", "--cad", s(&d.join("model.ply")), "--workers", "0"]);
    super::expect_error(&o, 2, &["--workers"]);
}

#[test]
fn a_worker_pool_reports_each_worker_and_answers_every_request() {
    let d = bracket();
    let server = Server::start(&[&strs(&bracket_args())[..], &["--workers", "2", "--device", "cpu"]].concat());
    assert!(server.log_shows("", Duration::from_secs(1)));
    let job = serde_json::json!({"rgb": d.join("rgb.png"), "depth": d.join("depth.png"), "object": "model"});
    let answers = server.python("infer-many", &["--jobs", &Value::Array(vec![job; 6]).to_string()]);
    let gz = serde_json::from_slice::<Value>(&std::fs::read(d.join("gt.json")).unwrap()).unwrap()[0]["t_mm"][2].as_f64().unwrap();
    let mut by_worker = [0; 2];
    for (i, a) in answers.as_array().unwrap().iter().enumerate() {
        assert_eq!((&a["status"], &a["id"]), (&Value::from("success"), &Value::from(i)), "{a}");
        assert!((a["data"]["translation"][0][2].as_f64().unwrap() - gz).abs() < 20.0, "{a}");
        assert_eq!(a["data"]["device"], "cpu", "{a}");
        by_worker[a["data"]["worker"].as_u64().unwrap() as usize] += 1;
    }
    let ping = server.python("ping", &[]);
    let workers = ping["data"]["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{ping}");
    for (i, w) in workers.iter().enumerate() {
        assert_eq!((&w["id"], &w["device"], &w["state"]), (&Value::from(i), &Value::from("cpu"), &Value::from("idle")), "{ping}");
        assert_eq!(w["done"], by_worker[i], "{ping}");
        assert_eq!(w["errors"], 0, "{ping}");
    }
    assert_eq!(ping["data"]["queue"]["waiting"], 0, "{ping}");
    // Six requests at once on two workers: both took some.
    assert!(by_worker.iter().all(|&n| n > 0), "{by_worker:?}");
    let human = sam6d(&["ping", "--port", &server.port()]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("workers: 0 cpu idle") && text.contains("1 cpu idle"), "{text}");
}

#[test]
fn connections_beyond_the_limit_get_busy_and_are_closed() {
    use sam6d::protocol::{frame, pickle};
    let server = Server::start(&["--bench-noop", "--max-connections", "2"]);
    let addr = format!("127.0.0.1:{}", server.port);
    let held: Vec<_> = (0..2).map(|_| std::net::TcpStream::connect(&addr).unwrap()).collect();
    // Both are registered once the server answers a request on each.
    for s in &held {
        let mut buf = frame::buffer_with_header();
        sam6d::protocol::message::encode_into(&mut buf, &serde_json::json!({"action": "ping"})).unwrap();
        frame::write_framed(&mut &*s, buf).unwrap();
        frame::read_frame(&mut &*s, 1 << 20).unwrap();
    }
    let mut third = std::net::TcpStream::connect(&addr).unwrap();
    third.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let payload = frame::read_frame(&mut third, 1 << 20).expect("an answer before closing");
    let v = pickle::decode(&payload, &pickle::Limits::default()).unwrap();
    assert_eq!(v.get("code").and_then(|c| c.as_str()), Some("busy"), "{v:?}");
    assert!(v.get("message").and_then(|m| m.as_str()).unwrap().contains("--max-connections"));
    assert_eq!(third.read(&mut [0u8; 1]).unwrap(), 0, "closed after the answer");
    drop(held);
    // Freed slots take new clients again.
    let t0 = Instant::now();
    loop {
        let o = python(&[&server.port(), "ping"], &[]);
        if o.status.success() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", stderr(&o));
        std::thread::sleep(Duration::from_millis(50));
    }
}
