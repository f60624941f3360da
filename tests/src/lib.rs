//! Harness for the black-box tests: starts the real `api-service` and `pipeline-service`
//! binaries (built by `cargo test --workspace`) on free ports against one DATA_DIR, and
//! stops them with SIGTERM.

pub mod inproc;

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
        Self::start_until(name, data_dir, env, "/health/ready")
    }

    /// Starts a binary and waits only until it serves `/health/live` (a degraded service,
    /// whose readiness is 503, is still started).
    pub fn start_live(name: &'static str, data_dir: &Path, env: &HashMap<&str, String>) -> Service {
        Self::start_until(name, data_dir, env, "/health/live")
    }

    /// Runs a binary that is expected to refuse to start: its exit status and output.
    pub fn run_to_exit(
        name: &'static str,
        data_dir: &Path,
        env: &HashMap<&str, String>,
    ) -> (std::process::ExitStatus, String) {
        let out = Command::new(binary(name))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", free_port().to_string())
            .env("DATA_DIR", data_dir)
            .env("CONFIGS_DIR", configs_dir())
            .env("CA_ROOT_API_KEY", ROOT_KEY)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status, text)
    }

    fn start_until(name: &'static str, data_dir: &Path, env: &HashMap<&str, String>, probe_path: &str) -> Service {
        let port = free_port();
        // A second instance (or a restart) on the same DATA_DIR gets its own log file.
        let log = (1..)
            .map(|i| match i {
                1 => data_dir.join(format!("{name}.log")),
                n => data_dir.join(format!("{name}-{n}.log")),
            })
            .find(|p| !p.exists())
            .unwrap_or_else(|| data_dir.join(format!("{name}.log")));
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
        svc.ready_after = svc.wait_ready(started, probe_path);
        svc
    }

    fn wait_ready(&mut self, started: Instant, probe_path: &str) -> Duration {
        let probe = probe::Probe;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited early ({status}): {}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if probe.ready(&format!("{}{probe_path}", self.base)) {
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

/// The Python venv holding the local protocol peers (bqemulator, drongo): `CLOUDACT_VENV`,
/// else `.venv` at the repository root. Panics with install instructions when absent: these
/// tests never skip silently.
pub fn venv_bin(tool: &str) -> PathBuf {
    let venv = std::env::var("CLOUDACT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv"));
    let bin = venv.join("bin").join(tool);
    assert!(
        bin.exists(),
        "{} is missing. Install the test peers once with:\n  python3 -m venv .venv && .venv/bin/pip install \
         -r tests/requirements.txt\n\
         (or run .ci/run, which does it)",
        bin.display()
    );
    bin
}

/// A local BigQuery REST emulator (`bqemulator`), in memory, killed on drop.
pub struct BigQueryEmulator {
    child: Child,
    pub base_url: String,
    pub project: String,
}

impl BigQueryEmulator {
    pub fn start() -> BigQueryEmulator {
        let bin = venv_bin("bqemulator");
        let python = bin.with_file_name("python");
        // Install DuckDB's spatial extension from the wheel so start-up needs no network.
        let install = "import duckdb, duckdb_extension_spatial, glob, os; \
            p = glob.glob(os.path.join(os.path.dirname(duckdb_extension_spatial.__file__), '**', '*.duckdb_extension'), recursive=True)[0]; \
            duckdb.connect().execute(f\"INSTALL '{p}'\")";
        let status = Command::new(&python)
            .args(["-c", install])
            .status()
            .unwrap_or_else(|e| panic!("python: {e}"));
        assert!(
            status.success(),
            "could not install the DuckDB spatial extension from the wheel"
        );
        let port = free_port();
        let child = Command::new(&bin)
            .args([
                "start",
                "--rest-host",
                "127.0.0.1",
                "--rest-port",
                &port.to_string(),
                "--grpc-port",
                "0",
                "--project",
                "test-proj",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start bqemulator: {e}"));
        let mut emu = BigQueryEmulator {
            child,
            base_url: format!("http://127.0.0.1:{port}/bigquery/v2"),
            project: "test-proj".to_string(),
        };
        let started = Instant::now();
        let probe = probe::Probe;
        while !probe.ready(&format!("http://127.0.0.1:{port}/healthz")) {
            if let Ok(Some(status)) = emu.child.try_wait() {
                panic!("bqemulator exited early: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "bqemulator not ready after 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        emu
    }
}

impl Drop for BigQueryEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local Cloud KMS REST peer (`drongo server`), killed on drop.
pub struct KmsEmulator {
    child: Child,
    pub endpoint: String,
}

impl KmsEmulator {
    pub fn start() -> KmsEmulator {
        let bin = venv_bin("drongo");
        let port = free_port();
        let child = Command::new(&bin)
            .args(["server", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start drongo: {e}"));
        let mut emu = KmsEmulator {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = emu.child.try_wait() {
                panic!("drongo exited early: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "drongo not listening after 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        emu
    }
}

impl KmsEmulator {
    /// Creates a key ring and an ENCRYPT_DECRYPT key through the official client; returns
    /// the key's resource name.
    pub async fn create_key(&self, ring: &str, key: &str) -> String {
        use google_cloud_kms_v1::model::{crypto_key::CryptoKeyPurpose, CryptoKey, KeyRing};
        const PARENT: &str = "projects/test-proj/locations/global";
        let key_name = format!("{PARENT}/keyRings/{ring}/cryptoKeys/{key}");
        let kms = cloudact_core::kms::gcp::GcpKms::connect(&key_name, Some(&self.endpoint))
            .await
            .unwrap_or_else(|e| panic!("KMS client: {e}"));
        let ring = kms
            .client()
            .create_key_ring()
            .set_parent(PARENT)
            .set_key_ring_id(ring)
            .set_key_ring(KeyRing::new())
            .send()
            .await
            .unwrap_or_else(|e| panic!("create key ring: {e}"));
        let created = kms
            .client()
            .create_crypto_key()
            .set_parent(&ring.name)
            .set_crypto_key_id(key)
            .set_crypto_key(CryptoKey::new().set_purpose(CryptoKeyPurpose::EncryptDecrypt))
            .send()
            .await
            .unwrap_or_else(|e| panic!("create crypto key: {e}"));
        assert_eq!(created.name, key_name);
        key_name
    }
}

impl Drop for KmsEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment that points both services at the emulators (`WAREHOUSE=bigquery KMS=gcp`).
pub fn cloud_env(bq: &BigQueryEmulator, kms: &KmsEmulator, key_name: String) -> HashMap<&'static str, String> {
    [
        ("WAREHOUSE", "bigquery".to_string()),
        ("GCP_PROJECT_ID", bq.project.clone()),
        ("BIGQUERY_BASE_URL", bq.base_url.clone()),
        ("KMS", "gcp".to_string()),
        ("KMS_KEY_NAME", key_name),
        ("KMS_ENDPOINT", kms.endpoint.clone()),
    ]
    .into_iter()
    .collect()
}

/// A real local SMTP server (`aiosmtpd` from PyPI) delivering into a maildir; killed on drop.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    maildir: tempfile::TempDir,
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let python = venv_bin("python");
        let maildir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(maildir.path().join(sub)).unwrap_or_else(|e| panic!("{e}"));
        }
        let port = free_port();
        let child = Command::new(&python)
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(maildir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("aiosmtpd: {e}"));
        let server = SmtpServer { child, port, maildir };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        drop(server);
        panic!("aiosmtpd did not listen on {port}");
    }

    /// The messages delivered so far, as raw RFC 5322 text.
    pub fn messages(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.maildir.path().join("new"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fixture service account (`tests/fixtures/sandbox-service-account.json`, the JSON a
/// customer would paste into the GCP integration) and the URL of a sandbox Google token
/// endpoint started here that knows the account's public key (`GCP_OAUTH_TOKEN_URL`).
pub async fn sandbox_service_account() -> (serde_json::Value, String) {
    let fixtures = configs_dir().join("../tests/fixtures");
    let read =
        |name: &str| std::fs::read_to_string(fixtures.join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    let sa: serde_json::Value =
        serde_json::from_str(&read("sandbox-service-account.json")).unwrap_or_else(|e| panic!("fixture: {e}"));
    let public = read("sandbox-service-account.pub.pem");
    let email = sa["client_email"].as_str().unwrap_or_default().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        axum::serve(
            listener,
            sandbox_providers::router_with_service_accounts(42, vec![(email, public)]),
        )
        .await
    });
    (sa, format!("http://{addr}/token"))
}

impl Service {
    /// Kills the process with SIGKILL (no shutdown, no cleanup: a crash).
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Google's own Pub/Sub emulator from the Cloud SDK (`gcloud beta emulators pubsub start`,
/// Java), in its own process group so the JVM it forks is killed with it on drop.
pub struct PubSubEmulator {
    child: Child,
    /// `host:port`, the value of `PUBSUB_EMULATOR_HOST`.
    pub host: String,
    pub project: String,
}

impl PubSubEmulator {
    pub fn start() -> PubSubEmulator {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let child = Command::new("gcloud")
            .args(["beta", "emulators", "pubsub", "start", "--quiet"])
            .arg(format!("--host-port={host}"))
            .arg("--project=test-proj")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the Pub/Sub emulator ({e}): it comes with the Google Cloud SDK \
                     (`gcloud components install pubsub-emulator`, needs Java)"
                )
            });
        let mut emu = PubSubEmulator {
            child,
            host,
            project: "test-proj".into(),
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = emu.child.try_wait() {
                panic!("the Pub/Sub emulator exited early: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "the Pub/Sub emulator is not listening after 90 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        emu
    }
}

impl Drop for PubSubEmulator {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}
