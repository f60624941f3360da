//! Harness for the black-box tests: starts the real `api-service` and `pipeline-service`
//! binaries (built by `cargo test --workspace`) on free ports against one DATA_DIR, and
//! stops them with SIGTERM.

use std::{
    collections::HashMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const ROOT_KEY: &str = "e2e-root-key-0123456789-abcdefghijklmnopqrstuv";

/// Path of a workspace binary next to the test executable (`target/<profile>/<name>`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test path {}", exe.display()));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (it builds both binaries)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    l.local_addr().unwrap_or_else(|e| panic!("addr: {e}")).port()
}

pub fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// A running service process; killed on drop if still running.
pub struct Service {
    pub name: &'static str,
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
    pub ready_after: Duration,
}

impl Service {
    /// Starts a binary with the given environment and waits until `/health/ready` is 200.
    pub fn start(name: &'static str, data_dir: &Path, env: &HashMap<&str, String>) -> Service {
        let port = free_port();
        let log = data_dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log file: {e}"));
        let err_file = log_file.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let started = Instant::now();
        let child = Command::new(binary(name))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATA_DIR", data_dir)
            .env("CONFIGS_DIR", configs_dir())
            .env("CA_ROOT_API_KEY", ROOT_KEY)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(err_file))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let base = format!("http://127.0.0.1:{port}");
        let mut svc = Service {
            name,
            child,
            base,
            log,
            ready_after: Duration::ZERO,
        };
        svc.ready_after = svc.wait_ready(started);
        svc
    }

    fn wait_ready(&mut self, started: Instant) -> Duration {
        let probe = probe::Probe;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited early ({status}): {}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if probe.ready(&format!("{}/health/ready", self.base)) {
                return started.elapsed();
            }
            if started.elapsed() > Duration::from_secs(30) {
                panic!(
                    "{} not ready after 30 s: {}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{} did not exit after SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal readiness probe over a raw TCP socket (no async runtime needed while polling).
mod probe {
    use std::{
        io::{Read, Write},
        net::TcpStream,
        time::Duration,
    };

    pub struct Probe;

    impl Probe {
        pub fn ready(&self, url: &str) -> bool {
            let Some(rest) = url.strip_prefix("http://") else {
                return false;
            };
            let Some((host, path)) = rest.split_once('/') else {
                return false;
            };
            let Ok(mut stream) = TcpStream::connect(host) else {
                return false;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            if stream.write_all(req.as_bytes()).is_err() {
                return false;
            }
            let mut buf = [0u8; 16];
            matches!(stream.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
        }
    }
}

/// Every file under `dir`, recursively.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
