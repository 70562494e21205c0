//! N `sam6d serve` processes behind HAProxy, configured with the documented
//! `deploy/haproxy.cfg` (TCP mode, leastconn, health checks that send a ping frame): concurrent
//! clients written like our users' keep getting their own answers while one backend is killed
//! and another drains. A retried request is fine; a lost or mixed-up one fails the test.
use super::s;
use super::serve::{bracket, python, Server};
use serde_json::Value;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `haproxy -f deploy/haproxy.cfg` in front of the given backend ports.
struct Haproxy {
    child: Child,
    port: u16,
}

impl Haproxy {
    fn start(backends: [u16; 3]) -> Haproxy {
        let port = free_port();
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy.cfg");
        let mut cmd = Command::new("haproxy");
        cmd.arg("-f").arg(&cfg).arg("-db").env("SAM6D_FRONT", format!("127.0.0.1:{port}"));
        for (i, p) in backends.iter().enumerate() {
            cmd.env(format!("SAM6D_BACKEND_{}", i + 1), format!("127.0.0.1:{p}"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy must be installed (scripts/setup.sh installs the Debian package)");
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "haproxy is not listening on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Haproxy { child, port }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs the traffic client against `port` on its own thread; its JSON report comes back.
fn traffic(port: u16, args: Vec<String>) -> std::thread::JoinHandle<Value> {
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = python(&[&port.to_string(), "traffic"], &args);
        assert!(o.status.success(), "traffic client failed: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    })
}

fn served(server: &Server) -> u64 {
    server.python("ping", &[])["data"]["requests"].as_u64().unwrap()
}

#[test]
fn no_request_is_lost_or_mixed_when_one_backend_dies_and_another_drains() {
    let mut backends: Vec<Server> = (0..3).map(|_| Server::start(&["--bench-noop"])).collect();
    let ports = [0, 1, 2].map(|i| backends[i].port().parse().unwrap());
    let proxy = Haproxy::start(ports);
    let run = traffic(proxy.port, ["--clients", "8", "--seconds", "6"].map(String::from).to_vec());
    std::thread::sleep(Duration::from_millis(1500));
    // Every backend has had traffic before anything goes wrong (leastconn spreads 8 clients).
    for b in &backends {
        assert!(served(b) > 1, "a backend got no traffic: {}", b.log());
    }
    backends[0].kill();
    std::thread::sleep(Duration::from_millis(1500));
    let r = backends[1].python("shutdown", &[]);
    assert_eq!(r["status"], "success", "{r}");
    let status = backends[1].wait(Duration::from_secs(20));
    assert!(status.success(), "the drained backend exited with {status}: {}", backends[1].log());
    let report = run.join().unwrap();
    eprintln!("traffic: {report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["wrong"], 0, "{report}");
    assert!(report["answered"].as_u64().unwrap() > 500, "{report}");
    // The survivor took the traffic of the other two.
    assert!(served(&backends[2]) > report["answered"].as_u64().unwrap() / 3, "{report}");
}

#[test]
fn real_inference_through_haproxy_survives_a_draining_backend() {
    let d = bracket();
    let (ply, cam, rgb, depth) = (d.join("model.ply"), d.join("camera.json"), d.join("rgb.png"), d.join("depth.png"));
    let model = ["--cad", s(&ply), "--cam", s(&cam)];
    // One of them with two workers: answers from a worker pool stay matched to requests too.
    let mut backends = vec![Server::start(&model), Server::start(&[&model[..], &["--workers", "2"]].concat())];
    // The third configured backend is down from the start: health checks keep it out.
    let ports = [backends[0].port().parse().unwrap(), backends[1].port().parse().unwrap(), free_port()];
    let proxy = Haproxy::start(ports);
    let gt: Value = serde_json::from_slice(&std::fs::read(d.join("gt.json")).unwrap()).unwrap();
    let z = gt[0]["t_mm"][2].as_f64().unwrap().to_string();
    let args = vec!["--clients", "4", "--seconds", "5", "--rgb", s(&rgb), "--depth", s(&depth), "--want-z", &z];
    let run = traffic(proxy.port, args.iter().map(|a| a.to_string()).collect());
    std::thread::sleep(Duration::from_millis(2000));
    let r = backends[0].python("shutdown", &[]);
    assert_eq!(r["status"], "success", "{r}");
    assert!(backends[0].wait(Duration::from_secs(60)).success(), "{}", backends[0].log());
    let report = run.join().unwrap();
    eprintln!("traffic: {report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["wrong"], 0, "{report}");
    assert!(report["answered"].as_u64().unwrap() >= 8, "{report}");
    let ping = backends[1].python("ping", &[]);
    let workers = ping["data"]["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{ping}");
    assert!(workers.iter().all(|w| w["done"].as_u64().unwrap() > 0), "both workers ran requests: {ping}");
    backends.clear();
}
