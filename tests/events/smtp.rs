//! A real SMTP server for the tests: Debian's `python3-aiosmtpd`, storing what it accepts in a
//! maildir the test reads.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The Python that has Debian's aiosmtpd (the test command installs `python3-aiosmtpd`).
const PYTHON: &str = "/usr/bin/python3";

pub struct Smtp {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Smtp {
    /// A server on a free port.
    pub async fn start() -> Smtp {
        let mut smtp = Smtp::stopped(free_port());
        smtp.resume().await;
        smtp
    }

    /// A server that will listen on `port` once resumed.
    pub fn stopped(port: u16) -> Smtp {
        Smtp { port, dir: tempfile::tempdir().unwrap(), child: None }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(PYTHON)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{}", self.port)])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(self.maildir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd (install python3-aiosmtpd)");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        crate::eventually("the SMTP server to listen", || async {
            tokio::net::TcpStream::connect(&addr).await.is_ok()
        })
        .await;
    }

    /// Stops the server: connections are refused until it resumes.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every mail accepted so far, as raw text.
    pub fn mails(&self) -> Vec<String> {
        let mut mails = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir().join(sub)) else { continue };
            for entry in entries {
                mails.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
            }
        }
        mails
    }

    /// Waits until `count` mails have arrived; answers them.
    pub async fn wait_for(&self, count: usize) -> Vec<String> {
        crate::eventually(&format!("{count} mails"), || async { self.mails().len() >= count })
            .await;
        self.mails()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A mail's header `name` (unfolded), if present.
pub fn header(mail: &str, name: &str) -> Option<String> {
    let head = mail.split("\n\n").next().unwrap_or_default().replace("\r\n", "\n");
    let unfolded = head.replace("\n ", " ").replace("\n\t", " ");
    unfolded.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
    })
}
